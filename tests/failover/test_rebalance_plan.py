"""The rebalance planner: uneven nodes even out, within each service's disruption budget
and the scheduler's filters, a few moves at a time."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import apply as plans
from orchestrator import scheduler
from orchestrator.rebalance import plan_moves
from orchestrator.scheduler import NodeView
from protos import control_pb2, topology_pb2

IMAGE = "local/busybox:1"


def _app(replicas: int, *, max_unavailable: int = 1, zone: str = "") -> control_pb2.AppRecord:
    service = topology_pb2.Service(
        name="web",
        image=IMAGE,
        replicas=replicas,
        max_unavailable=max_unavailable,
        resources=topology_pb2.Resources(cpu=0.1),
    )
    if zone:
        service.placement.constraints["zone"] = zone
    app = topology_pb2.Application(name="shop", tenant="default", services=[service])
    record, _, _ = plans.plan(app, None, [], now=0.0)
    return record


def _workloads(nodes: list[str], state: str = "running") -> list[control_pb2.Workload]:
    return [
        control_pb2.Workload(
            id=f"default.shop.web.{i}",
            tenant="default",
            app="shop",
            service="web",
            index=i,
            node=n,
            desired="running",
            state=state,
            cpu=0.1,
        )
        for i, n in enumerate(nodes)
    ]


def _views(counts: dict[str, int], **flags: dict[str, object]) -> list[NodeView]:
    return [
        NodeView(
            id=name,
            cpu=4.0,
            memory=8 << 30,
            allocated_cpu=0.1 * n,
            instances_by_service={"default/shop/web": n},
            labels={"zone": "a" if name == "a" else "b"},
            **flags.get(name, {}),  # type: ignore[arg-type]
        )
        for name, n in counts.items()
    ]


def test_moves_one_instance_at_a_time_within_the_default_budget() -> None:
    moves, summary = plan_moves(
        [_app(4)], _workloads(["a"] * 4), _views({"a": 4, "b": 0, "c": 0}), limit=5
    )
    assert [(m.from_node, m.to_node) for m in moves] == [("a", "b")]
    assert summary == "instances per node: a=4, b=0, c=0"


def test_a_larger_budget_allows_more_moves_and_spreads_them() -> None:
    moves, _ = plan_moves(
        [_app(4, max_unavailable=2)],
        _workloads(["a"] * 4),
        _views({"a": 4, "b": 0, "c": 0}),
        limit=5,
    )
    assert sorted(m.to_node for m in moves) == ["b", "c"]
    assert len({m.workload for m in moves}) == 2


def test_limit_bounds_the_round() -> None:
    moves, _ = plan_moves(
        [_app(6, max_unavailable=6)], _workloads(["a"] * 6), _views({"a": 6, "b": 0}), limit=2
    )
    assert len(moves) == 2


def test_an_instance_already_down_uses_up_the_budget() -> None:
    workloads = _workloads(["a"] * 4)
    workloads[3].state = "pending"
    moves, summary = plan_moves([_app(4)], workloads, _views({"a": 4, "b": 0}), limit=5)
    assert moves == []
    assert summary.endswith("no move fits the budgets")


def test_constraints_and_cordons_are_respected() -> None:
    moves, _ = plan_moves(
        [_app(4, max_unavailable=4, zone="a")],
        _workloads(["a"] * 4),
        _views({"a": 4, "b": 0}),
        limit=5,
    )
    assert moves == []  # only node a has zone=a
    moves, _ = plan_moves(
        [_app(4, max_unavailable=4)],
        _workloads(["a"] * 4),
        _views({"a": 4, "b": 0, "c": 0}, b={"cordoned": True}),
        limit=5,
    )
    assert {m.to_node for m in moves} == {"c"}


def test_within_the_threshold_nothing_moves() -> None:
    moves, summary = plan_moves(
        [_app(3, max_unavailable=3)], _workloads(["a", "a", "b"]), _views({"a": 2, "b": 1})
    )
    assert moves == []
    assert summary == "instances per node: a=2, b=1; within the threshold"


def test_a_large_uneven_cluster_is_planned_with_one_fit_check_per_service_and_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the planner scanned every instance for every (busy, idle) pair of
    nodes and checked each against the idle node. Orchestrator at 1,000 hollow nodes,
    214 of them back after a stall, no instance movable: minutes of the event loop
    in one plan, and the leadership lost. Counted in fit checks, not timed."""
    checks: list[str] = []
    place = scheduler.place

    def counted(request: Any, views: Any, **kw: Any) -> Any:
        checks.append(views[0].id)
        return place(request, views, **kw)

    monkeypatch.setattr(scheduler, "place", counted)
    busy = [f"n{i:03}" for i in range(80)]
    idle = [f"e{i:03}" for i in range(20)]
    counts = {**{n: 10 for n in busy}, **{n: 0 for n in idle}}
    workloads = _workloads([n for n in busy for _ in range(10)])
    # zone=a: no idle node may take it (none is named "a").
    moves, summary = plan_moves(
        [_app(800, max_unavailable=800, zone="a")], workloads, _views(counts), limit=2
    )
    assert moves == []
    assert summary.endswith("no move fits the budgets")
    assert sorted(checks) == idle  # once per idle node, for the one service

    # And with nothing left to disrupt, not one check.
    checks.clear()
    workloads[0].state = "pending"
    moves, _ = plan_moves([_app(800)], workloads, _views(counts), limit=2)
    assert moves == [] and checks == []
