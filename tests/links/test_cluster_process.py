"""Links across nodes on the process runtime (each instance in a network namespace of
its own), real orchestrator, real mTLS on loopback: a linked service answers from
every node; tunnels exist only where the orchestrator delegated them; a killed
instance gets no new connections; withdrawing a link or revoking a node ends its
tunnels, open connections included, within 2 s; 200 concurrent connections through
one link all complete."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos import control_pb2
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.links._cluster import (
    DB_ADDRESS,
    NODE_IPS,
    answers,
    connect_from,
    http_from,
    instances,
    node_of,
    shop,
    start,
    stop_node,
)
from tests.security.conftest import Cluster, join_node
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    orch = start_orchestrator(tmp_path / "orch")
    c = Cluster(orch, tmp_path)
    try:
        start(c)
        yield c
    finally:
        for node in c.nodes.values():
            stop_node(node)
        stop_orchestrator(c.orch)


def settled(c: Cluster, web: int = 3, db: int = 1) -> None:
    wait_for(
        lambda: len(instances(c, "web")) == web and len(instances(c, "db")) == db,
        timeout=60,
        what=f"{web} web and {db} db instances running",
    )


def echo_through(netns: str, payload: bytes) -> bytes:
    with connect_from(netns, DB_ADDRESS, 7000) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


def test_linked_service_answers_from_every_node(cluster: Cluster) -> None:
    cluster.admin().Apply(shop())
    settled(cluster)
    webs = instances(cluster, "web")
    (db_name,) = instances(cluster, "db")
    db_node = node_of(cluster, db_name)
    assert len({node_of(cluster, w) for w in webs}) == 3  # spread: two are remote from db
    for name, (_, netns) in webs.items():
        wait_for(lambda netns=netns: answers(netns), what=f"{name} reaching db")
        assert echo_through(netns, b"x" * 300_000) == b"x" * 300_000
    # Exactly the two other nodes opened tunnels, each to the one link it was given.
    target = cluster.nodes[db_node].agent.links
    others = sorted(n for n in cluster.nodes if n != db_node)
    target = cluster.nodes[db_node].agent.links
    peers = sorted((t.peer, t.res) for t in target.inbound())
    assert peers == sorted(
        (f"spiffe://orch.test/node/{n}", f"acme/shop/db:{port}")
        for n in others
        for port in (5432, 7000)
    )
    # Audited on the orchestrator (grants) and on the target node (open, with bytes).
    granted = [e for e in cluster.audit() if e.get("event") == "link.granted"]
    assert {(e["source"], e["target"]) for e in granted} >= {(n, db_node) for n in others}
    who = cluster.admin().WhoCan(control_pb2.WhoCanRequest(node=db_node))
    assert {(c.identity, c.op, c.resource) for c in who.capabilities} >= {
        (f"spiffe://orch.test/node/{n}", "link.open", "acme/shop/db:5432") for n in others
    }
    opened = [
        e for e in cluster.nodes[db_node].agent.audit.entries() if e["event"] == "link.opened"
    ]
    assert len(opened) == 4


def test_an_unlinked_service_reaches_nothing(cluster: Cluster) -> None:
    cluster.admin().Apply(shop(links=False))
    settled(cluster)
    for node, netns in instances(cluster, "web").values():
        for host in (DB_ADDRESS, "127.0.0.1", *(n.host for n in cluster.nodes.values())):
            with pytest.raises(OSError):
                connect_from(netns, host, 5432, timeout=1).close()
        # Not the node agent nor the orchestrator either.
        with pytest.raises(OSError):
            connect_from(netns, node.host, node.port, timeout=1).close()
    assert all(not n.agent.links.inbound() for n in cluster.nodes.values())


def test_a_killed_instance_gets_no_new_connections(cluster: Cluster) -> None:
    cluster.admin().Apply(shop(db_replicas=2))
    settled(cluster, db=2)
    webs = instances(cluster, "web")
    netns = next(iter(webs.values()))[1]
    wait_for(lambda: answers(netns), what="db answers")
    victim, (node, _) = sorted(instances(cluster, "db").items())[0]
    node.agent.runtime.stop(victim, timeout=0)
    # A connection already on its way to the victim's node when it stopped is reset,
    # not retried (docs/links.md); once the next plan is out (within about a second),
    # every new connection lands on the survivor: 10 in a row, none lost.
    # (Connections alternate over the instances: four answers in a row say the
    # victim is out of the plan.)
    wait_for(lambda: all(answers(netns) for _ in range(4)), what="db answers again")
    for _ in range(10):
        assert b"db-answer" in http_from(netns)


def test_withdrawn_link_ends_open_connections_within_2s(cluster: Cluster) -> None:
    cluster.admin().Apply(shop())
    settled(cluster)
    (db_name,) = instances(cluster, "db")
    db_node = node_of(cluster, db_name)
    remote = [
        (n, ns)
        for n, (node, ns) in instances(cluster, "web").items()
        if node_of(cluster, n) != db_node
    ]
    _, netns = remote[0]
    wait_for(lambda: answers(netns), what="db answers")
    held = connect_from(netns, DB_ADDRESS, 7000)
    held.sendall(b"ping")
    assert held.recv(4) == b"ping"
    t0 = time.monotonic()
    cluster.admin().Apply(shop(links=False))
    wait_for(
        lambda: not cluster.nodes[db_node].agent.links.inbound(),
        timeout=2.0,
        what="tunnels closed",
    )
    held.settimeout(2)
    try:
        end = held.recv(4)
    except OSError:
        end = b""
    assert end == b"" and time.monotonic() - t0 < 2.5
    held.close()


def test_revoked_source_node_loses_its_tunnels_within_2s(cluster: Cluster) -> None:
    cluster.admin().Apply(shop())
    settled(cluster)
    (db_name,) = instances(cluster, "db")
    db_node = node_of(cluster, db_name)
    webs = {node_of(cluster, n): ns for n, (_, ns) in instances(cluster, "web").items()}
    source = sorted(n for n in webs if n != db_node)[0]
    wait_for(lambda: answers(webs[source]), what="db answers")
    held = connect_from(webs[source], DB_ADDRESS, 7000)
    held.sendall(b"ping")
    assert held.recv(4) == b"ping"
    t0 = time.monotonic()
    cluster.admin().RevokeNode(control_pb2.RevokeNodeRequest(name=source))
    source_id = f"spiffe://orch.test/node/{source}"
    wait_for(
        lambda: all(t.peer != source_id for t in cluster.nodes[db_node].agent.links.inbound()),
        timeout=2.0,
        what="the revoked node's tunnels closed",
    )
    held.settimeout(2)
    try:
        end = held.recv(4)
    except OSError:
        end = b""
    assert end == b"" and time.monotonic() - t0 < 2.5
    held.close()


def test_200_concurrent_connections_through_one_link(cluster: Cluster) -> None:
    cluster.admin().Apply(shop())
    settled(cluster)
    (db_name,) = instances(cluster, "db")
    db_node = node_of(cluster, db_name)
    netns = next(
        ns for n, (_, ns) in instances(cluster, "web").items() if node_of(cluster, n) != db_node
    )
    wait_for(lambda: answers(netns), what="db answers")
    # (db forks a process per connection: slow on a loaded machine, hence the timeout)
    socks = [connect_from(netns, DB_ADDRESS, 7000, timeout=120) for _ in range(200)]

    def roundtrip(i: int) -> bool:
        payload = f"conn-{i:03d}-".encode() * 100
        socks[i].sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = socks[i].recv(65536)
            if not chunk:
                break
            got += chunk
        socks[i].close()
        return got == payload

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(roundtrip, range(200)))
    assert all(results)
    (tunnel,) = [
        t for t in cluster.nodes[db_node].agent.links.inbound() if t.res == "acme/shop/db:7000"
    ]
    assert tunnel.counters.connections >= 200


def test_pull_nodes_get_links_the_same_way(tmp_path: Path) -> None:
    """Nodes in pull mode receive their link plans on the same Report stream."""
    orch = start_orchestrator(tmp_path / "orch")
    c = Cluster(orch, tmp_path)
    try:
        for name, ip in NODE_IPS.items():
            join_node(c, name, ip, mode="pull")
        wait_for(
            lambda: (
                len(
                    [
                        n
                        for n in c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
                        if n.state == "ready" and n.mode == "pull"
                    ]
                )
                == 3
            ),
            what="three ready pull nodes",
        )
        c.admin().Apply(shop())
        settled(c)
        (db_name,) = instances(c, "db")
        db_node = node_of(c, db_name)
        for name, (_, netns) in instances(c, "web").items():
            wait_for(lambda netns=netns: answers(netns), what=f"{name} reaching db")
        peers = {(t.peer, t.res) for t in c.nodes[db_node].agent.links.inbound()}
        assert peers == {
            (f"spiffe://orch.test/node/{n}", "acme/shop/db:5432") for n in NODE_IPS if n != db_node
        }
    finally:
        for node in c.nodes.values():
            stop_node(node)
        stop_orchestrator(c.orch)
