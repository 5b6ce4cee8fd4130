"""Draining a node moves a workload with a volume, and its data arrives intact: the
new node fetches the volume from the old one with a delegated, single-use token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos import control_pb2, topology_pb2
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.security.conftest import Cluster, join_node
from tests.waiting import wait_for

pytestmark = pytest.mark.docker

WRITE_ONCE = (
    "if [ ! -f /data/id ]; then cat /proc/sys/kernel/random/uuid > /data/id; "
    "dd if=/dev/urandom of=/data/blob bs=1024 count=512 2>/dev/null; fi; sleep 600"
)


@pytest.fixture
def docker_cluster(tmp_path: Path, busybox_image: str) -> Iterator[tuple[Cluster, list[str]]]:
    orch = start_orchestrator(tmp_path / "orch")
    c = Cluster(orch, tmp_path)
    # Unique names: the engine is shared with any other run on this machine.
    names = [f"vm{secrets.token_hex(3)}-{i}" for i in (1, 2)]
    try:
        join_node(c, names[0], "127.0.0.31", runtime="docker")
        join_node(c, names[1], "127.0.0.32", runtime="docker")
        wait_for(
            lambda: (
                sum(
                    n.state == "ready"
                    for n in c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
                )
                == 2
            ),
            what="two ready nodes",
        )
        yield c, names
    finally:
        for node in c.nodes.values():
            for ct in node.agent.runtime.list():
                node.agent.runtime.remove(ct.name, force=True)
            forget = getattr(node.agent.runtime, "forget_images", None)
            if forget:
                forget()
            node.stop(0)
        stop_orchestrator(orch)


def _volume(c: Cluster, node: str) -> Path:
    return c.root / node / "volumes" / "default.db.data"


def test_drain_moves_the_volume_with_its_data(docker_cluster: tuple[Cluster, list[str]]) -> None:
    c, names = docker_cluster
    app = topology_pb2.Application(
        name="db",
        services=[
            topology_pb2.Service(
                name="store",
                image="local/busybox:1",
                command=["sh", "-c", WRITE_ONCE],
                replicas=1,
                volumes=[topology_pb2.ServiceVolume(name="data", path="/data")],
            )
        ],
    )
    c.admin().Apply(control_pb2.ApplyRequest(app=app))
    wait_for(lambda: [w.state for w in c.workloads()] == ["running"], what="db running")
    first = c.workloads()[0].node
    other = next(n for n in names if n != first)
    wait_for(
        lambda: (
            (_volume(c, first) / "blob").is_file()
            and (_volume(c, first) / "blob").stat().st_size == 512 * 1024
        ),
        what="data written",
    )
    original = {p.name: p.read_bytes() for p in _volume(c, first).iterdir()}

    c.admin().Drain(control_pb2.NodeRef(name=first))
    wait_for(
        lambda: [(w.node, w.state) for w in c.workloads()] == [(other, "running")],
        timeout=60,
        what="moved",
    )
    moved = {p.name: p.read_bytes() for p in _volume(c, other).iterdir()}
    assert moved == original  # same id, same 512 KiB of random bytes: not a fresh start
    events = c.audit()
    issued = [e for e in events if e["event"] == "delegation.issued" and e["op"] == "volume.export"]
    assert issued and issued[0]["target"] == other and issued[0]["source"] == first
    assert any(
        e["event"] == "task.completed" and e["ok"] and e["kind"] == "volume.fetch" for e in events
    )
    # The old copy is gone from the drained node (it was removed before the copy).
    assert c.nodes[first].agent.runtime.list() == []
    removed = next(
        i
        for i, e in enumerate(events)
        if e["event"] == "token.minted" and e["op"] == "container.remove"
    )
    copied = next(
        i
        for i, e in enumerate(events)
        if e["event"] == "delegation.issued" and e["op"] == "volume.export"
    )
    assert removed < copied


def test_migration_cannot_overwrite_another_tenants_same_named_volume(
    docker_cluster: tuple[Cluster, list[str]],
) -> None:
    # Tenant acme's application "db" with volume "data" already holds data on the node
    # default's same-named application is about to move to (issue 10, item 1).
    from node.volumes import VolumeStore
    from orchestrator.reconciler import volume_name
    from protos import control_pb2 as cpb

    c, names = docker_cluster
    app = topology_pb2.Application(
        name="db",
        services=[
            topology_pb2.Service(
                name="store",
                image="local/busybox:1",
                command=["sh", "-c", WRITE_ONCE],
                volumes=[topology_pb2.ServiceVolume(name="data", path="/data")],
            )
        ],
    )
    c.admin().Apply(control_pb2.ApplyRequest(app=app))
    wait_for(lambda: [w.state for w in c.workloads()] == ["running"], what="db running")
    first = c.workloads()[0].node
    other = next(n for n in names if n != first)
    theirs = volume_name(cpb.Workload(tenant="acme", app="db"), "data")
    acme = VolumeStore.for_state_dir(c.root / other).ensure(theirs)
    (acme / "id").write_text("acme's own id")
    wait_for((_volume(c, first) / "blob").is_file, what="data written")

    c.admin().Drain(control_pb2.NodeRef(name=first))
    wait_for(
        lambda: [(w.node, w.state) for w in c.workloads()] == [(other, "running")],
        timeout=60,
        what="moved",
    )
    assert theirs != "default.db.data"
    assert sorted(p.name for p in acme.iterdir()) == ["id"]
    assert (acme / "id").read_text() == "acme's own id"
    assert (_volume(c, other) / "blob").stat().st_size == 512 * 1024
