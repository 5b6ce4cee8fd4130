"""Links across nodes on real Docker (containers on network none), real orchestrator
and mTLS on loopback: the shop answers from outside through web to db on another node;
another application and another tenant reach nothing of it, by name or by address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.links._cluster import (
    DB_ADDRESS,
    NODE_IPS,
    answers,
    connect_from,
    instances,
    node_of,
    shop,
    start,
    stop_node,
)
from tests.security.conftest import Cluster
from tests.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def cluster(
    tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str
) -> Iterator[Cluster]:
    orch = start_orchestrator(tmp_path / "orch")
    c = Cluster(orch, tmp_path)
    try:
        start(c, runtime="docker")
        yield c
    finally:
        for node in c.nodes.values():
            stop_node(node)
        stop_orchestrator(c.orch)


def test_linked_service_answers_across_docker_nodes(cluster: Cluster) -> None:
    cluster.admin().Apply(shop())
    wait_for(
        lambda: len(instances(cluster, "web")) == 3 and len(instances(cluster, "db")) == 1,
        timeout=60,
        what="web and db running",
    )
    (db,) = instances(cluster, "db")
    db_node = node_of(cluster, db)
    for name, (_, netns) in instances(cluster, "web").items():
        wait_for(lambda netns=netns: answers(netns), what=f"{name} reaching db")
    remote = {t.peer for t in cluster.nodes[db_node].agent.links.inbound()}
    assert remote == {f"spiffe://orch.test/node/{n}" for n in NODE_IPS if n != db_node}


def test_other_app_and_tenant_reach_nothing(cluster: Cluster) -> None:
    admin = cluster.admin()
    admin.Apply(shop(web_replicas=1))
    admin.Apply(shop(app="other", web_replicas=3, db_replicas=0))
    admin.Apply(shop(tenant="evil", web_replicas=3, db_replicas=0))
    wait_for(
        lambda: (
            len(instances(cluster, "web")) == 1
            and len(instances(cluster, "web", app="other")) == 3
            and len(instances(cluster, "web", tenant="evil")) == 3
        ),
        timeout=60,
        what="every web running",
    )
    (own,) = instances(cluster, "web").values()
    wait_for(lambda: answers(own[1]), what="shop's own web reaching db")
    strangers = [
        *instances(cluster, "web", app="other").values(),
        *instances(cluster, "web", tenant="evil").values(),
    ]
    # By db's link address (theirs resolves db to the same address: it is derived
    # from tenant/app/service, and their own db does not run), by any node address,
    # by their own loopback.
    for _, netns in strangers:
        for host in [*NODE_IPS.values(), DB_ADDRESS, "127.0.0.1"]:
            with pytest.raises(OSError):
                connect_from(netns, host, 5432, timeout=1).close()
    granted = [e for e in cluster.audit() if e.get("event") == "link.granted"]
    # (shop's own web and db may share a node: then nothing is granted at all)
    assert all(e["res"].startswith("acme/shop/") for e in granted)
