"""Rebalancing: moving running instances from crowded nodes to empty ones.

The scheduler balances at placement time; afterwards a node that joins (or comes
back) starts empty and the others keep what they had. The planner here compares the
number of instances per schedulable node and, while the busiest holds more than
``threshold`` instances above the idlest, moves one instance from the former to the
latter, chosen so that its service spreads better. Every move passes the
scheduler's filters on the target (pool, labels, ports, capacity, cordon, drain).

A move stops one instance and starts it elsewhere (the reconciler removes the old
copy as a stray, and a workload with volumes takes its data along through the
delegated volume fetch, like a drain). So moves are few at a time and each respects
its service's disruption budget: never fewer than ``replicas - max_unavailable``
instances running (``max_unavailable`` defaults to 1).

Automatic rebalancing follows a node joining or coming back, bounded by
``per_round`` moves per round and ``per_minute`` moves in any minute; an operator
asks for one with ``capstan rebalance`` (``--dry-run`` shows the plan only).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from orchestrator import apply as plans
from orchestrator import scheduler
from orchestrator._periodic import every
from orchestrator.audit import AuditLog
from orchestrator.reconciler import Reconciler
from protos import control_pb2, topology_pb2

log = logging.getLogger("capstan.orchestrator")

__all__ = ["Move", "RebalanceSettings", "Rebalancer", "max_unavailable", "plan_moves"]


@dataclass(frozen=True)
class Move:
    workload: str
    from_node: str
    to_node: str
    reason: str

    def to_pb(self) -> control_pb2.RebalanceMove:
        return control_pb2.RebalanceMove(
            workload=self.workload,
            from_node=self.from_node,
            to_node=self.to_node,
            reason=self.reason,
        )


@dataclass(frozen=True)
class RebalanceSettings:
    threshold: int = 1  # instances: busiest - idlest above this is uneven
    per_round: int = 2  # moves planned at once
    per_minute: int = 6  # moves in any 60 s, automatic ones
    period: float = 2.0  # seconds between automatic rounds
    settle: float = 120.0  # how long a join keeps automatic rounds going


def max_unavailable(service: topology_pb2.Service) -> int:
    return service.max_unavailable if service.HasField("max_unavailable") else 1


def _key(w: control_pb2.Workload) -> str:
    return scheduler.service_key(w.tenant, w.app, w.service)


def _without(node: scheduler.NodeView, request: scheduler.PlacementRequest) -> scheduler.NodeView:
    counts = dict(node.instances_by_service)
    counts[request.service] = max(0, counts.get(request.service, 0) - 1)
    return dataclasses.replace(
        node,
        allocated_cpu=max(0.0, node.allocated_cpu - request.cpu),
        allocated_memory=max(0, node.allocated_memory - request.memory),
        instances_by_service=counts,
    )


def plan_moves(
    apps: Iterable[control_pb2.AppRecord],
    workloads: Iterable[control_pb2.Workload],
    views: Iterable[scheduler.NodeView],
    *,
    threshold: int = 1,
    limit: int = 2,
) -> tuple[list[Move], str]:
    """At most ``limit`` moves that even out instances per node; and a one-line summary."""
    specs: dict[str, tuple[topology_pb2.Application, topology_pb2.Service]] = {}
    for rec in apps:
        if rec.deleting:
            continue
        for s in rec.app.services:
            specs[scheduler.service_key(rec.app.tenant, rec.app.name, s.name)] = (rec.app, s)
    nodes = {v.id: v for v in views}
    usable = {name for name, v in nodes.items() if v.ready and not v.cordoned and not v.draining}
    placed = [w for w in workloads if w.desired == "running" and w.node]
    count: Counter[str] = Counter({n: 0 for n in usable})
    running: Counter[str] = Counter()
    for w in placed:
        if w.node in usable:
            count[w.node] += 1
        if w.state == "running":
            running[_key(w)] += 1
    summary = ", ".join(f"{n}={count[n]}" for n in sorted(count)) or "no schedulable node"
    if len(usable) < 2:
        return [], f"instances per node: {summary}; nothing to even out"
    # Budget left per service: how many more instances may be down at once.
    budget: dict[str, int] = {}
    for key, (_, s) in specs.items():
        budget[key] = running[key] - (plans.replicas_of(s) - max_unavailable(s))
    # Candidates per node, looked up by node (not by scanning every instance for
    # every pair of nodes: at 1,000 nodes with no budget left that scan was minutes of
    # the event loop, and the orchestrator lost its leadership).
    by_node: dict[str, list[control_pb2.Workload]] = {}
    for w in sorted(placed, key=lambda x: x.id):
        if w.state == "running" and _key(w) in specs:
            by_node.setdefault(w.node, []).append(w)
    moves: list[Move] = []
    moved: set[str] = set()
    while len(moves) < limit:
        move = _one_move(by_node, specs, nodes, count, budget, moved, threshold)
        if move is None:
            break
        moves.append(move)
    if not moves:
        spread = max(count.values()) - min(count.values())
        why = "within the threshold" if spread <= threshold else "no move fits the budgets"
        return [], f"instances per node: {summary}; {why}"
    return moves, f"instances per node: {summary}"


def _one_move(
    by_node: dict[str, list[control_pb2.Workload]],
    specs: dict[str, tuple[topology_pb2.Application, topology_pb2.Service]],
    nodes: dict[str, scheduler.NodeView],
    count: Counter[str],
    budget: dict[str, int],
    moved: set[str],
    threshold: int,
) -> Move | None:
    if not any(left > 0 for left in budget.values()):
        return None  # every service is at its disruption budget: nothing may move
    by_load = sorted(count, key=lambda n: (-count[n], n))
    idlest = sorted(count, key=lambda n: (count[n], n))
    # Whether a service fits a node: the same for every instance of the service, and
    # no view changes until this returns (a move ends the search).
    fits: dict[tuple[str, str], scheduler.PlacementRequest | None] = {}

    def fitting(key: str, dst: str) -> scheduler.PlacementRequest | None:
        if (key, dst) not in fits:
            app, service = specs[key]
            request = scheduler.request_for(app, service)
            try:
                scheduler.place(request, [nodes[dst]])
            except scheduler.Unschedulable:
                fits[(key, dst)] = None
            else:
                fits[(key, dst)] = request
        return fits[(key, dst)]

    for src in by_load:
        if count[src] - count[idlest[0]] <= threshold:
            break  # no busier node left
        # The first movable instance of each service on src (ids in order).
        first: dict[str, control_pb2.Workload] = {}
        for w in by_node.get(src, ()):
            key = _key(w)
            if key not in first and w.id not in moved and budget.get(key, 0) > 0:
                first[key] = w
        if not first:
            continue
        for dst in idlest:
            if count[src] - count[dst] <= threshold:
                break
            candidates = []
            for key, w in first.items():
                request = fitting(key, dst)
                if request is None:
                    continue
                # Prefer the instance whose service is most crowded on src vs dst.
                gain = nodes[src].instances_by_service.get(key, 0) - nodes[
                    dst
                ].instances_by_service.get(key, 0)
                candidates.append((-gain, w.id, w, request))
            if not candidates:
                continue
            _, _, w, request = min(candidates, key=lambda c: (c[0], c[1]))
            nodes[dst] = scheduler.assign(nodes[dst], request)
            nodes[src] = _without(nodes[src], request)
            count[src] -= 1
            count[dst] += 1
            budget[_key(w)] -= 1
            moved.add(w.id)
            return Move(
                w.id, src, dst, f"{src} runs {count[src] + 1} instances, {dst} {count[dst] - 1}"
            )
    return None


class Rebalancer:
    def __init__(
        self,
        reconciler: Reconciler,
        audit: AuditLog,
        *,
        settings: RebalanceSettings = RebalanceSettings(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconciler = reconciler
        self._audit = audit
        self.settings = settings
        self._clock = clock
        self._recent: deque[float] = deque()  # when automatic moves were made
        self._seen = {n.name: n.state for n in reconciler.state.all_nodes()}
        self._active_until = 0.0

    def plan(self, limit: int | None = None) -> tuple[list[Move], str]:
        state = self._reconciler.state
        return plan_moves(
            state.all_apps(),
            state.all_workloads(),
            self._reconciler.views(),
            threshold=self.settings.threshold,
            limit=self.settings.per_round if limit is None else limit,
        )

    async def rebalance(
        self, *, dry_run: bool, by: str, limit: int | None = None
    ) -> tuple[list[Move], str]:
        moves, summary = self.plan(limit)
        if dry_run or not moves:
            return moves, summary
        done = [m for m in moves if await self._move(m, by)]
        if done:
            self._reconciler.wake()
        return done, summary

    async def _move(self, move: Move, by: str) -> bool:
        r = self._reconciler
        async with r.state.lock:
            w = r.state.workload(move.workload)
            target = r.state.node(move.to_node)
            source = r.state.node(move.from_node)
            if (
                w is None
                or w.node != move.from_node
                or w.desired != "running"
                or target is None
                or target.state != "ready"
            ):
                return False  # the world changed since the plan: the next round replans
            spec = r._service_spec(w)
            if spec is None:
                return False
            if move.from_node not in w.previous_nodes:
                w.previous_nodes.append(move.from_node)
            w.node = move.to_node
            w.container = plans.container_name(w)
            # The same states as a drain: volumes follow through the delegated fetch.
            w.state = (
                "migrating"
                if spec[1].volumes and source is not None and source.state == "ready"
                else "pending"
            )
            w.message = ""
            w.attempts = 0
            w.next_attempt_at = 0
            w.updated_at = self._clock()
            await r.state.save_workload(w)
        await self._audit.record(
            "workload.rebalanced",
            workload=move.workload,
            node=move.to_node,
            moved_from=move.from_node,
            why=move.reason,
            by=by,
        )
        log.info("rebalance: %s %s -> %s", move.workload, move.from_node, move.to_node)
        return True

    def _arrivals(self) -> list[str]:
        """Nodes that became ready since the last look (joined, or back from dead)."""
        now = {n.name: n.state for n in self._reconciler.state.all_nodes()}
        arrived = [n for n, s in now.items() if s == "ready" and self._seen.get(n) != "ready"]
        self._seen = now
        return sorted(arrived)

    async def step(self) -> list[Move]:
        """One automatic round: after an arrival, a few moves within the minute's budget."""
        now = self._clock()
        arrived = self._arrivals()
        if arrived:
            self._active_until = now + self.settings.settle
            await self._audit.record("rebalance.triggered", nodes=arrived)
        if now > self._active_until:
            return []
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        allowed = min(self.settings.per_round, self.settings.per_minute - len(self._recent))
        if allowed <= 0:
            return []
        moves, _ = await self.rebalance(dry_run=False, by="rebalancer", limit=allowed)
        self._recent.extend(now for _ in moves)
        if not moves and not self._busy():
            self._active_until = 0.0  # balanced (or nothing can move): stop until the next join
        return moves

    def _busy(self) -> bool:
        """Instances still on their way: the plan may find moves once they run."""
        return any(
            w.desired == "running"
            and w.state not in ("running", "unschedulable", "failed", "completed")
            for w in self._reconciler.state.all_workloads()
        )

    async def run(self) -> None:
        await every(self.settings.period, self.step, "rebalance round")
