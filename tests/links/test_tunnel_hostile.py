"""What a hostile node can do with NodeService.Tunnel: nothing beyond the links the
orchestrator delegated to it. Each case gives node S (which holds a genuine link to
db on node D) its own certificate and tokens, and asserts the exact refusal and that
nothing was connected on D (no tunnel, no connection, the refusal audited)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from node.join import load_joined
from pki.certs import load_pem_chain, thumbprint
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint
from protos import control_pb2, node_pb2, node_pb2_grpc
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.links._cluster import answers, instances, node_of, shop, stop_node
from tests.security.conftest import Cluster, join_node
from tests.waiting import wait_for

Frame = node_pb2.TunnelFrame
LINK = "acme/shop/db:5432"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("hostile")
    orch = start_orchestrator(root / "orch")
    c = Cluster(orch, root)
    try:
        for name, ip in (("node-1", "127.0.0.61"), ("node-2", "127.0.0.62")):
            join_node(c, name, ip)
        wait_for(
            lambda: (
                len(
                    [
                        n
                        for n in c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
                        if n.state == "ready"
                    ]
                )
                == 2
            ),
            what="two ready nodes",
        )
        c.admin().Apply(shop(web_replicas=2))
        wait_for(
            lambda: len(instances(c, "web")) == 2 and len(instances(c, "db")) == 1,
            timeout=60,
            what="web and db running",
        )
        (db,) = instances(c, "db")
        d = node_of(c, db)
        s = next(n for n in c.nodes if n != d)
        web_ns = next(ns for n, (_, ns) in instances(c, "web").items() if node_of(c, n) == s)
        wait_for(lambda: answers(web_ns), what="the genuine link works")
        yield c
    finally:
        for node in c.nodes.values():
            stop_node(node)
        stop_orchestrator(c.orch)


def roles(c: Cluster) -> tuple[str, str]:
    """(S, D): the node with the genuine link, and the node running db."""
    (db,) = instances(c, "db")
    d = node_of(c, db)
    return next(n for n in c.nodes if n != d), d


def cert_thumbprint(c: Cluster, name: str) -> str:
    joined = load_joined(c.root / name)
    assert joined is not None
    return thumbprint(load_pem_chain(joined.files.cert.read_bytes())[0])


def link_token(
    c: Cluster,
    *,
    sub: str,
    aud: str,
    res: str = LINK,
    op: str = "link.open",
    ttl: float = 10,
    now: float | None = None,
    cnf_of: str | None = None,
) -> str:
    """A token minted with the orchestrator's key, the way the link planner mints."""
    signer = TokenKeyStore.open(c.orch.orch.config.pki_dir / "token-keys").signer()
    return mint(
        signer,
        iss=c.orch.orch.identity,
        sub=c.nodes[sub].node_id,
        aud=c.nodes[aud].node_id,
        op=op,
        res=res,
        cnf=cert_thumbprint(c, cnf_of or sub),
        ttl=ttl,
        epoch=c.orch.orch.gateway.epoch(),
        now=time.time() if now is None else now,
    )


def tunnel(
    c: Cluster, caller: str, target: str, token: str, res: str, *, request: bytes = b""
) -> tuple[grpc.StatusCode | None, str, list[Any]]:
    """Open a tunnel as ``caller`` (its own certificate); with ``request``, carry one
    connection sending it. Returns (status code or None, details, frames received)."""
    channel = grpc.secure_channel(c.nodes[target].listening, c.node_credentials(caller))
    stub = node_pb2_grpc.NodeServiceStub(channel)
    out: queue.Queue[Any] = queue.Queue()
    out.put(Frame(res=res))
    if request:
        out.put(Frame(conn=1, kind=Frame.OPEN))
        out.put(Frame(conn=1, data=request))
        out.put(Frame(conn=1, kind=Frame.EOF))

    def requests() -> Iterator[Any]:
        while (item := out.get()) is not None:
            yield item

    frames: list[Any] = []
    call = stub.Tunnel(requests(), metadata=(("authorization", f"Bearer {token}"),), timeout=6)
    try:
        for frame in call:
            frames.append(frame)
            if not request or frame.kind in (Frame.EOF, Frame.RESET):
                break
        call.cancel()
        return None, "", frames
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", frames
    finally:
        out.put(None)
        channel.close()


def nothing_connected(c: Cluster, target: str, before: int) -> None:
    links = c.nodes[target].agent.links
    foreign = [t for t in links.inbound() if t.peer != c.nodes[roles(c)[0]].node_id]
    assert foreign == []
    opened = [e for e in c.nodes[target].agent.audit.entries() if e["event"] == "link.opened"]
    assert len(opened) == before


def opened_count(c: Cluster, target: str) -> int:
    return len([e for e in c.nodes[target].agent.audit.entries() if e["event"] == "link.opened"])


def test_a_genuine_link_token_opens_a_tunnel_to_db_only(shop_cluster: Cluster) -> None:
    c = shop_cluster
    s, d = roles(c)
    request = b"GET / HTTP/1.0\r\nHost: db\r\n\r\n"
    code, _, frames = tunnel(c, s, d, link_token(c, sub=s, aud=d), LINK, request=request)
    assert code is None
    assert frames[0].res == LINK  # accepted
    answer = b"".join(f.data for f in frames[1:] if f.conn == 1 and f.kind == Frame.DATA)
    assert b"db-answer" in answer
    assert frames[-1].kind == Frame.EOF


@pytest.mark.parametrize(
    "stretched",
    [
        "acme/shop/web:8080",  # another service of the same application
        "acme/shop/db:7000",  # another port of the same service
        "acme/other/db:5432",  # another application
        "other/shop/db:5432",  # another tenant
    ],
)
def test_token_cannot_be_stretched(shop_cluster: Cluster, stretched: str) -> None:
    c = shop_cluster
    s, d = roles(c)
    before = opened_count(c, d)
    code, details, frames = tunnel(c, s, d, link_token(c, sub=s, aud=d), stretched)
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "wrong resource")
    assert frames == []
    nothing_connected(c, d, before)


@pytest.mark.parametrize(
    "res",
    [
        "acme/shop/db:22",  # a port db never declared
        "acme/shop/web:8080",  # a service the node holds no link to
        "other/shop/db:5432",  # another tenant's service
    ],
)
def test_a_valid_token_without_the_orchestrators_grant_connects_nothing(
    shop_cluster: Cluster, res: str
) -> None:
    """Even a correctly signed token (say, from a compromised signing path) opens
    nothing the orchestrator's current plan does not grant this source."""
    c = shop_cluster
    s, d = roles(c)
    before = opened_count(c, d)
    code, details, frames = tunnel(c, s, d, link_token(c, sub=s, aud=d, res=res), res)
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "link not granted")
    assert frames == []
    nothing_connected(c, d, before)
    refused = [e for e in c.nodes[d].agent.audit.entries() if e["event"] == "link.refused"]
    assert refused[-1]["res"] == res


def test_replayed_token_is_refused(shop_cluster: Cluster) -> None:
    c = shop_cluster
    s, d = roles(c)
    token = link_token(c, sub=s, aud=d)
    assert tunnel(c, s, d, token, LINK)[0] is None
    before = opened_count(c, d)
    code, details, frames = tunnel(c, s, d, token, LINK)
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "replayed")
    assert frames == []
    nothing_connected(c, d, before)


def test_expired_token_is_refused(shop_cluster: Cluster) -> None:
    c = shop_cluster
    s, d = roles(c)
    before = opened_count(c, d)
    token = link_token(c, sub=s, aud=d, ttl=5, now=time.time() - 120)
    code, details, frames = tunnel(c, s, d, token, LINK)
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "expired")
    assert frames == []
    nothing_connected(c, d, before)


def test_token_presented_with_a_foreign_certificate_is_refused(shop_cluster: Cluster) -> None:
    """S's token, but the call comes from D's own certificate (any other node's)."""
    c = shop_cluster
    s, d = roles(c)
    before = opened_count(c, d)
    token = link_token(c, sub=s, aud=d)
    code, details, frames = tunnel(c, d, d, token, LINK)
    assert code == grpc.StatusCode.PERMISSION_DENIED and details == "not for this caller"
    assert frames == []
    nothing_connected(c, d, before)


def test_token_for_another_target_node_is_refused(shop_cluster: Cluster) -> None:
    c = shop_cluster
    s, d = roles(c)
    before = opened_count(c, d)
    token = link_token(c, sub=s, aud=s)  # minted for S itself as the target
    code, details, _ = tunnel(c, s, d, token, LINK)
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "not for this node")
    nothing_connected(c, d, before)


def test_link_token_opens_no_other_operation(shop_cluster: Cluster) -> None:
    c = shop_cluster
    s, d = roles(c)
    (db,) = instances(c, "db")
    channel = grpc.secure_channel(c.nodes[d].listening, c.node_credentials(s))
    stub = node_pb2_grpc.NodeServiceStub(channel)
    token = link_token(c, sub=s, aud=d, res=db)
    with pytest.raises(grpc.RpcError) as exc:
        stub.StopContainer(
            node_pb2.StopRequest(name=db), metadata=(("authorization", f"Bearer {token}"),)
        )
    channel.close()
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(instances(c, "db")) == 1


def test_revoked_node_cannot_open_a_tunnel(shop_cluster: Cluster) -> None:
    """Last in the module: revokes S."""
    c = shop_cluster
    s, d = roles(c)
    c.admin().RevokeNode(control_pb2.RevokeNodeRequest(name=s))
    wait_for(lambda: not c.nodes[d].agent.links.inbound(), timeout=2.5, what="S's tunnels gone")
    before = opened_count(c, d)
    results: list[tuple[Any, str, list[Any]]] = []

    def refused_as_revoked() -> bool:
        # Each try with a fresh token: the deny list reaches D within seconds.
        results.append(tunnel(c, s, d, link_token(c, sub=s, aud=d), LINK))
        return results[-1][:2] == (grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")

    wait_for(refused_as_revoked, timeout=10, what="D refusing S's certificate")
    assert all(r[0] is not None and r[2] == [] for r in results)
    assert opened_count(c, d) == before
