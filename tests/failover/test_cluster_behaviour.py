"""On a real cluster (in-process orchestrator, agents joined over mTLS on 127.0.0.4x,
process runtime): stale generations refused by the node, a joining node triggers a
bounded rebalance, a CPU-burning service scales up and back down."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from node.errors import NotFound
from orchestrator.autoscale import AutoscaleSettings
from orchestrator.rebalance import RebalanceSettings
from protos import control_pb2, node_pb2, topology_pb2
from protos.wire.errors import NodeCallError
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.failover._agents import IMAGE, audit, on_loop, sleeper_app, workloads
from tests.security.conftest import Cluster, join_node
from tests.waiting import wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    orch = start_orchestrator(tmp_path / "orch")
    c = Cluster(orch, tmp_path)
    try:
        join_node(c, "node-1", "127.0.0.41")
        join_node(c, "node-2", "127.0.0.42")
        wait_for(lambda: _ready(c) == ["node-1", "node-2"], 20, "two ready nodes")
        yield c
    finally:
        stop_orchestrator(orch)  # first: it would keep removing and creating meanwhile
        for node in c.nodes.values():
            for ct in node.agent.runtime.list():
                with contextlib.suppress(NotFound):
                    node.agent.runtime.remove(ct.name, force=True)
            node.stop(0)


def _ready(c: Cluster) -> list[str]:
    return sorted(
        n.name for n in on_loop(c.orch, c.orch.orch.state.all_nodes) if n.state == "ready"
    )


def _call(c: Cluster, node: str, op: str, request: object) -> object:
    rec = on_loop(c.orch, lambda: c.orch.orch.state.node(node))
    assert rec is not None
    caller = c.orch.orch.reconciler.caller
    return c.orch.run(caller.call(rec.address, rec.id, op, request, why="test"))


def _names(c: Cluster, node: str) -> set[str]:
    return {ct.name for ct in c.nodes[node].agent.runtime.list()}


def test_node_refuses_a_command_older_than_the_generation_it_holds(cluster: Cluster) -> None:
    c = cluster

    def spec(name: str, generation: int) -> node_pb2.ContainerSpec:
        return node_pb2.ContainerSpec(
            name=name,
            workload_id="t.a.s.0",
            image=IMAGE,
            command=["sleep", "60"],
            generation=generation,
        )

    _call(c, "node-1", "container.create", spec("t.a.s.0.new", 2))
    with pytest.raises(NodeCallError) as refused:
        _call(c, "node-1", "container.create", spec("t.a.s.0.old", 1))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "stale command: generation 1 of workload t.a.s.0" in refused.value.details
    assert _names(c, "node-1") == {"t.a.s.0.new"}  # nothing was created
    # Once the newer copy is gone (removed, fenced), the workload may start over.
    _call(c, "node-1", "container.remove", node_pb2.RemoveRequest(name="t.a.s.0.new", force=True))
    _call(c, "node-1", "container.create", spec("t.a.s.0.old", 1))
    assert _names(c, "node-1") == {"t.a.s.0.old"}


def test_a_joining_node_gets_a_bounded_rebalance(cluster: Cluster) -> None:
    c = cluster
    app = sleeper_app("shop", 6, max_unavailable=2)
    c.admin().Apply(control_pb2.ApplyRequest(app=app))

    def running() -> list[control_pb2.Workload]:
        return [w for w in workloads(c.orch) if w.state == "running"]

    wait_for(lambda: len(running()) == 6, 30, "six running instances")
    assert sorted(w.node for w in running()) == ["node-1"] * 3 + ["node-2"] * 3
    # At most one automatic move per minute: the bound shows.
    rebalancer = c.orch.orch.rebalancer
    assert rebalancer is not None
    rebalancer.settings = RebalanceSettings(per_round=1, per_minute=1, period=0.1)

    join_node(c, "node-3", "127.0.0.43")
    wait_for(
        lambda: [w.node for w in running()].count("node-3") == 1 and len(running()) == 6,
        30,
        "one instance moved to node-3 and running",
    )
    moved = [e for e in audit(c.orch) if e["event"] == "workload.rebalanced"]
    assert len(moved) == 1 and moved[0]["node"] == "node-3" and moved[0]["by"] == "rebalancer"
    assert any(e["event"] == "rebalance.triggered" for e in audit(c.orch))
    # The old copy is gone from its node (no duplicate).
    old = moved[0]["moved_from"]
    wait_for(
        lambda: not [n for n in _names(c, str(old)) if n.startswith(str(moved[0]["workload"]))],
        15,
        "the old copy removed",
    )

    # The operator sees the rest of the plan, then applies it.
    plan = c.admin().Rebalance(control_pb2.RebalanceRequest(dry_run=True))
    assert not plan.applied and [m.to_node for m in plan.moves] == ["node-3"]
    assert len([e for e in audit(c.orch) if e["event"] == "workload.rebalanced"]) == 1
    plan = c.admin().Rebalance(control_pb2.RebalanceRequest())
    assert plan.applied and len(plan.moves) == 1
    wait_for(
        lambda: (
            sorted(w.node for w in running()) == ["node-1"] * 2 + ["node-2"] * 2 + ["node-3"] * 2
        ),
        30,
        "two instances per node",
    )
    plan = c.admin().Rebalance(control_pb2.RebalanceRequest(dry_run=True))
    assert not plan.moves and plan.summary.endswith("within the threshold")
    viewer = c.orch.control("viewer", "viewer")
    with pytest.raises(grpc.RpcError) as denied:
        viewer.Rebalance(control_pb2.RebalanceRequest(dry_run=True))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_cpu_burning_service_scales_up_then_down(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    scaler = c.orch.orch.autoscaler
    assert scaler is not None
    scaler.settings = AutoscaleSettings(interval=0.2, window=2.0, tolerance=0.1)
    # The stop file is put in the volume each instance mounts (a sandboxed instance
    # sees nothing of the host's files but its volumes).
    app = topology_pb2.Application(
        name="burn",
        tenant="default",
        services=[
            topology_pb2.Service(
                name="cpu",
                image=IMAGE,
                # A shell busy loop (no forks) until the stop file appears, then idle.
                command=["sh", "-c", "while [ ! -e /ctl/stop ]; do :; done; exec sleep 3600"],
                volumes=[topology_pb2.ServiceVolume(name="ctl", path="/ctl")],
                replicas=1,
                resources=topology_pb2.Resources(cpu=0.5),
                autoscale=topology_pb2.Autoscale(min=1, max=3, target_cpu=0.5),
            )
        ],
    )
    admin = c.admin()
    admin.Apply(control_pb2.ApplyRequest(app=app))

    def replicas() -> int:
        return int(admin.GetApp(control_pb2.AppRef(name="burn")).record.app.services[0].replicas)

    def running() -> int:
        return sum(1 for w in workloads(c.orch) if w.state == "running" and w.desired == "running")

    wait_for(lambda: replicas() == 3 and running() == 3, 40, "scaled up to 3 and running")
    # Re-applying the same file does not undo the autoscaler's count.
    admin.Apply(control_pb2.ApplyRequest(app=app))
    assert replicas() == 3
    assert dict(admin.GetApp(control_pb2.AppRef(name="burn")).record.autoscaled) == {"cpu": 3}

    for node in c.nodes.values():  # wherever an instance runs, its volume is there
        for volume in (node.joined.state_dir / "volumes").glob("*burn*ctl*"):
            (volume / "stop").touch()
    wait_for(lambda: replicas() == 1 and running() == 1, 40, "scaled back down to 1")
    # Each event line starts with its UTC time: compare what follows it.
    events = [e.split(" ", 1)[1] for e in admin.GetApp(control_pb2.AppRef(name="burn")).events]
    ups = [e for e in events if e.startswith("autoscale cpu") and "-> 3" in e]
    # Down in one step or two: a usage sample taken across the stop may ask for 2 first.
    downs = [e for e in events if e.startswith("autoscale cpu 3 -> ") and "below target" in e]
    assert ups and downs, events
    assert "target 50%" in ups[0] and downs[0].endswith("below target for 2s")
