"""Autoscaling services from the CPU their instances report.

Every node's heartbeat carries the CPU each running container used (cores, measured
off the heartbeat path); the Tracker keeps the latest. For a service with
``autoscale {min, max, target_cpu}`` and ``resources.cpu`` requested:

    utilization = mean(cpu used by its running instances) / resources.cpu
    wanted      = ceil(replicas * utilization / target_cpu), within [min, max]

Within ``tolerance`` of the target nothing changes. Scaling up happens at once but
only as far as capacity allows (the scheduler's own filters decide what fits).
Scaling down waits until every recommendation during the last ``window`` seconds was
below the current count, then goes to the highest of them: a short dip never
removes instances, and load that oscillates does not make replicas flap.

A decision goes through the same plan as an apply (``orchestrator.apply.plan``), so
instances are created and retired exactly as when an operator edits ``replicas``;
the chosen count is kept in ``AppRecord.autoscaled`` (a restart keeps it, a
re-apply of the same file does not undo it) and every decision is audited as
``autoscale`` with its reason, which ``capstan describe app`` shows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator import apply as plans
from orchestrator import policy, scheduler
from orchestrator._periodic import every
from orchestrator.audit import AuditLog
from orchestrator.reconciler import Reconciler
from protos import control_pb2, topology_pb2

log = logging.getLogger("capstan.orchestrator")

__all__ = ["AutoscaleSettings", "Autoscaler", "Decision", "keep_autoscaled", "recommend"]


@dataclass(frozen=True)
class AutoscaleSettings:
    interval: float = 5.0  # seconds between evaluations
    window: float = 60.0  # scale down only after this long below the target
    tolerance: float = 0.1  # |utilization / target - 1| within this: no change


@dataclass(frozen=True)
class Decision:
    tenant: str
    app: str
    service: str
    replicas_from: int
    replicas_to: int
    why: str


def recommend(
    current: int, usage: list[float], cpu: float, spec: topology_pb2.Autoscale, tolerance: float
) -> tuple[int, float]:
    """The replica count the load asks for (clamped to min..max), and the utilization."""
    utilization = sum(usage) / len(usage) / cpu
    ratio = utilization / spec.target_cpu
    wanted = current if abs(ratio - 1) <= tolerance else math.ceil(current * ratio - 1e-9)
    return max(spec.min, min(spec.max, wanted)), utilization


def keep_autoscaled(
    app: topology_pb2.Application, current: control_pb2.AppRecord | None
) -> dict[str, int]:
    """Before an apply: give autoscaled services the count the autoscaler chose (clamped
    into the file's new min..max) instead of the file's ``replicas``; return what
    ``AppRecord.autoscaled`` must hold afterwards."""
    kept: dict[str, int] = {}
    if current is None:
        return kept
    for s in app.services:
        if not s.HasField("autoscale") or s.name not in current.autoscaled:
            continue
        n = max(s.autoscale.min, min(s.autoscale.max, current.autoscaled[s.name]))
        s.replicas = n
        kept[s.name] = n
    return kept


class Autoscaler:
    def __init__(
        self,
        reconciler: Reconciler,
        audit: AuditLog,
        *,
        settings: AutoscaleSettings = AutoscaleSettings(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconciler = reconciler
        self._audit = audit
        self.settings = settings
        self._clock = clock
        # service key -> [(when, recommendation)] while recommendations stay below the count
        self._low: dict[str, list[tuple[float, int]]] = {}
        # Quota caps found by _decide, audited by evaluate; the last one per service, so
        # a service held at its quota is reported when the cap changes, not every pass.
        self._capped: list[dict[str, object]] = []
        self._capped_seen: dict[str, tuple[int, int]] = {}

    def _usage(self, rec: control_pb2.AppRecord, service: str) -> list[float]:
        tracker = self._reconciler.tracker
        out = []
        for w in self._reconciler.state.all_workloads():
            if (
                w.tenant != rec.app.tenant
                or w.app != rec.app.name
                or w.service != service
                or w.desired != "running"
                or w.state != "running"
            ):
                continue
            view = tracker.nodes.get(w.node)
            sample = view.usage.get(w.container) if view is not None else None
            if sample is not None:
                out.append(sample.cpu_fraction)
        return out

    def _room(self, app: topology_pb2.Application, s: topology_pb2.Service, extra: int) -> int:
        """How many of ``extra`` new instances the scheduler could place now."""
        try:
            return len(
                scheduler.place_many(scheduler.request_for(app, s), self._reconciler.views(), extra)
            )
        except scheduler.Unschedulable as exc:
            return len(exc.placed)

    async def evaluate(self) -> list[Decision]:
        """One pass over every autoscaled service; returns the decisions applied."""
        now = self._clock()
        decisions = []
        for rec in self._reconciler.state.all_apps():
            if rec.deleting:
                continue
            for s in rec.app.services:
                if not s.HasField("autoscale") or s.autoscale.max <= 0 or s.resources.cpu <= 0:
                    continue
                decision = self._decide(rec, s, now)
                if decision is not None and await self._apply(decision):
                    decisions.append(decision)
        for event in self._capped:
            await self._audit.record("autoscale.capped", **event)
            log.info("autoscale capped by quota: %s", event)
        self._capped.clear()
        return decisions

    def _quota_room(self, rec: control_pb2.AppRecord, s: topology_pb2.Service) -> int | None:
        """How many more instances of ``s`` the tenant's quota allows; None: no quota."""
        policies = self._reconciler.policies
        quota = policies.quotas.get(rec.app.tenant)
        if quota is None:
            return None
        used = policy.tenant_usage(self._reconciler.state.peek_apps(), rec.app.tenant)
        room: list[int] = []
        if quota.instances:
            room.append(quota.instances - used.instances)
        if quota.cpu and s.resources.cpu:
            room.append(int((quota.cpu - used.cpu) / s.resources.cpu + 1e-9))
        if quota.memory and s.resources.memory:
            room.append((quota.memory - used.memory) // s.resources.memory)
        return max(0, min(room)) if room else None

    def _decide(
        self, rec: control_pb2.AppRecord, s: topology_pb2.Service, now: float
    ) -> Decision | None:
        key = scheduler.service_key(rec.app.tenant, rec.app.name, s.name)
        current = plans.replicas_of(s)
        usage = self._usage(rec, s.name)
        if not usage:
            self._low.pop(key, None)
            return None  # no measurement: never scale on silence
        wanted, utilization = recommend(
            current, usage, s.resources.cpu, s.autoscale, self.settings.tolerance
        )
        if current < s.autoscale.min or current > s.autoscale.max:
            wanted = max(s.autoscale.min, min(s.autoscale.max, current))
        measured = (
            f"cpu {utilization:.0%} of {s.resources.cpu:g} cores requested over "
            f"{len(usage)} instance(s), target {s.autoscale.target_cpu:.0%}"
        )
        if wanted > current:
            self._low.pop(key, None)
            fits = self._room(rec.app, s, wanted - current)
            allowed = self._quota_room(rec, s)
            capped = allowed is not None and allowed < fits
            if capped:
                assert allowed is not None  # noqa: S101 - capped implies a quota
                if self._capped_seen.get(key) != (current, wanted):
                    self._capped_seen[key] = (current, wanted)
                    self._capped.append({
                        "tenant": rec.app.tenant, "app": rec.app.name, "service": s.name,
                        "replicas": current, "wanted": wanted, "allowed": current + allowed,
                        "why": f"quota of tenant {rec.app.tenant}",
                    })
                fits = allowed
            else:
                self._capped_seen.pop(key, None)
            if fits == 0:
                return None
            why = measured + (f"; capacity for {fits} more" if fits < wanted - current else "")
            if capped:
                why += f"; capped by the quota of tenant {rec.app.tenant}"
            return Decision(rec.app.tenant, rec.app.name, s.name, current, current + fits, why)
        if wanted == current:
            self._low.pop(key, None)
            return None
        low = self._low.setdefault(key, [])
        low.append((now, wanted))
        if now - low[0][0] < self.settings.window:
            return None
        target = max(n for t, n in low if now - t <= self.settings.window)
        window = f"below target for {self.settings.window:g}s"
        return Decision(
            rec.app.tenant, rec.app.name, s.name, current, target, f"{measured}; {window}"
        )

    async def _apply(self, d: Decision) -> bool:
        state = self._reconciler.state
        async with state.lock:
            rec = state.app(d.tenant, d.app)
            if rec is None or rec.deleting:
                return False
            app = topology_pb2.Application()
            app.CopyFrom(rec.app)
            service = next((s for s in app.services if s.name == d.service), None)
            if service is None or plans.replicas_of(service) != d.replicas_from:
                return False  # an apply came in between: decide again next time
            service.replicas = d.replicas_to
            mine = [w for w in state.all_workloads() if w.tenant == d.tenant and w.app == d.app]
            record, _, writes = plans.plan(app, rec, mine, now=self._clock())
            record.autoscaled[d.service] = d.replicas_to
            await state.commit(apps=[record], workloads=writes)
        self._low.pop(scheduler.service_key(d.tenant, d.app, d.service), None)
        await self._audit.record(
            "autoscale",
            tenant=d.tenant,
            app=d.app,
            service=d.service,
            replicas_from=d.replicas_from,
            replicas_to=d.replicas_to,
            why=d.why,
        )
        log.info(
            "autoscale %s/%s/%s: %d -> %d (%s)",
            d.tenant,
            d.app,
            d.service,
            d.replicas_from,
            d.replicas_to,
            d.why,
        )
        self._reconciler.wake()
        return True

    async def run(self) -> None:
        await every(self.settings.interval, self.evaluate, "autoscale pass")
