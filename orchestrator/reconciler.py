"""Drives nodes toward the desired state (push), one small step per workload per tick.

Every decision is taken from the stored workload records and the nodes' latest
reports, and every command is idempotent by construction (deterministic container
names: a repeated create is ALREADY_EXISTS), so a crash at any point followed by a
restart converges with no duplicate and no lost workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc

from orchestrator import apply as plans
from orchestrator import links, metrics, policy, scheduler
from orchestrator.audit import AuditLog
from orchestrator.delegation import DelegationRefused, Delegator, may_delegate
from orchestrator.images import Catalog
from orchestrator.liveness import Liveness, Tracker
from orchestrator.nodecalls import NodeCaller
from orchestrator.policy import Policies
from orchestrator.secrets import SecretService
from orchestrator.state import ClusterState
from orchestrator.tasks import Completion, TaskBook
from pki.errors import CapstanError
from protos import control_pb2, gateway_pb2, node_pb2, topology_pb2
from protos.wire import images as wire_images
from protos.wire import names
from protos.wire.errors import NodeCallError
from protos.wire.tasks import IMAGE_FETCH, VOLUME_FETCH

log = logging.getLogger("capstan.orchestrator")

MAX_BACKOFF = 30.0
NO_VERIFIED_COPY = "no node holds a verified copy of the image"
# Placement scores at most this many feasible nodes per instance, from a cursor
# that moves on after each decision (Kubernetes' percentageOfNodesToScore, in
# spirit): exact on clusters up to this size, O(sample) per instance beyond.
PLACEMENT_SAMPLE = 64
# Placed records written per store transaction (within etcd's 128 operations).
PLACEMENT_BATCH = 100
# Placement runs at most this long (seconds) before the event loop gets a turn.
PLACEMENT_SLICE = 0.02
# A report that arrives this many heartbeats after our start counts as fresh even if
# the node's clock says it was read before it (a node clock stepped back must not hold
# a workload forever).
STALE_REPORT_HEARTBEATS = 10


RESTART_NAMES = {
    topology_pb2.RESTART_POLICY_UNSPECIFIED: "always",
    topology_pb2.RESTART_POLICY_ALWAYS: "always",
    topology_pb2.RESTART_POLICY_ON_FAILURE: "on-failure",
    topology_pb2.RESTART_POLICY_NEVER: "never",
}


def _copy(w: control_pb2.Workload) -> control_pb2.Workload:
    out = control_pb2.Workload()
    out.CopyFrom(w)
    return out


def volume_name(w: control_pb2.Workload, volume: str) -> str:
    """A node-local volume is per tenant and application (``protos.wire.names``): a moved
    instance finds its data, another tenant's same-named application never does."""
    return names.volume_name(w.tenant, w.app, volume)


Sealer = Callable[[topology_pb2.ServiceSecret], node_pb2.SealedSecret]


def container_spec(
    w: control_pb2.Workload,
    app: topology_pb2.Application,
    service: topology_pb2.Service,
    seal: Sealer | None = None,
) -> node_pb2.ContainerSpec:
    """The one translation of a workload into what a node runs (push and pull alike).

    ``seal`` seals each of the service's secrets to the target node's key; without
    one a service that has secrets cannot be translated (it never runs without them).
    """
    if service.secrets and seal is None:
        raise ValueError(f"service {service.name} has secrets and no node key to seal them to")
    ref, ports, link_specs = links.net_fields(w, app, service)
    # The service's own env wins over a link's S_HOST/S_PORT of the same name.
    env = {e.name: e.value for e in links.link_env(link_specs)}
    env.update(service.env)
    return node_pb2.ContainerSpec(
        name=w.container,
        workload_id=w.id,
        image=service.image,
        command=list(service.command),
        env=[node_pb2.EnvVar(name=k, value=v) for k, v in sorted(env.items())],
        service=ref,
        ports=ports,
        links=link_specs,
        cpu=service.resources.cpu,
        memory=service.resources.memory,
        volumes=[
            node_pb2.VolumeMount(name=volume_name(w, v.name), path=v.path, read_only=v.read_only)
            for v in service.volumes
        ],
        network="host" if service.network == topology_pb2.NETWORK_MODE_HOST else "none",
        generation=w.generation,
        **policy.node_spec_fields(service),  # type: ignore[arg-type]
        secrets=[seal(ref) for ref in service.secrets] if seal is not None else [],
    )


class _Views:
    """The nodes as one tick's placements see them: each decision sees the previous
    ones' allocations. Kept in one list (placement looks at a window of it, never
    copies it per instance) with each node's position."""

    def __init__(self, nodes: list[scheduler.NodeView]) -> None:
        self.nodes = nodes
        self._at = {v.id: i for i, v in enumerate(nodes)}
        self._requests: dict[
            tuple[str, str, str], tuple[topology_pb2.Service, scheduler.PlacementRequest]
        ] = {}

    def request(
        self, app: topology_pb2.Application, service: topology_pb2.Service
    ) -> scheduler.PlacementRequest:
        """One service's request, worked out once for each stored version of it (a
        changed application is a new stored message)."""
        key = (app.tenant, app.name, service.name)
        found = self._requests.get(key)
        if found is None or found[0] is not service:
            found = self._requests[key] = (service, scheduler.request_for(app, service))
        return found[1]

    def assign(self, node: str, request: scheduler.PlacementRequest) -> None:
        i = self._at[node]
        self.nodes[i] = scheduler.assign(self.nodes[i], request)


class Reconciler:
    def __init__(
        self,
        state: ClusterState,
        tracker: Tracker,
        caller: NodeCaller,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 0.5,
        tasks: TaskBook | None = None,
        delegator: Delegator | None = None,
        links: links.LinkPlanner | None = None,
        secrets: SecretService | None = None,
    ) -> None:
        self.state = state
        self.tracker = tracker
        self.caller = caller
        self.audit = audit
        self._clock = clock
        self.interval = interval
        self._wake = asyncio.Event()
        self._place_wake = asyncio.Event()
        self.delegator = delegator  # node-to-node fetches (push nodes)
        self.links = links  # the nodes' link plans
        self.secrets = secrets  # seals secrets for the node of each instance
        # Node commands in flight: at most ``per_node`` on one node (64 at once on one
        # saturated engine outran their 10 s deadline and backed off: deploys 3-4x
        # slower, bench/bench_deploy.py) and ``concurrency`` in all (a large cluster
        # converges as fast as its nodes answer, bench/bench_scale.py).
        self.concurrency = 64
        self.per_node = 6
        self.tasks = tasks
        self.images = Catalog(state.store)
        self.policies = Policies(state.store, clock=clock)  # pool policies, tenant quotas
        # (node, kind, resource) -> request id of the delegated fetch under way
        self.pending: dict[tuple[str, str, str], str] = {}
        # (node, kind, resource, generation) of volume copies already made: per
        # instance (a class-level set would be shared by every orchestrator in a process)
        self._fetched: set[tuple[str, str, str, int]] = set()
        # (workload, generation, source) whose old copy a push node confirmed removed
        self._cleared: set[tuple[str, int, str]] = set()
        self._cursor = 0  # where the next placement starts looking (see PLACEMENT_SAMPLE)
        # Workload saves waiting to be written together (see _save).
        self._saving: list[tuple[control_pb2.Workload, asyncio.Future[bool]]] = []
        self._saver: asyncio.Task[None] | None = None
        self._declaring: set[str] = set()  # deaths recorded, records not yet written
        # workload id -> (node, container, that node's started_at of our last start of
        # it): a report read on the node before that start says nothing about it.
        self._started: dict[str, tuple[str, str, float]] = {}

    def wake(self) -> None:
        self._wake.set()
        self._place_wake.set()
        if self.links is not None:
            self.links.wake()

    def reported(self) -> None:
        """A node's report changed what it runs: converge and re-plan links. Not the
        placer: a report frees or takes no node (deaths, drains and applies wake it),
        and at 1,000 nodes converging, waking it on each changed report had it scan
        every record many times a second for nothing to place."""
        self._wake.set()
        if self.links is not None:
            self.links.wake()

    async def run(self) -> None:
        # Placement has a loop of its own: a pass of node commands lasts as long as
        # its slowest node, and instances applied meanwhile must not wait for it to
        # be placed (10 x N instances at 1,000 nodes: placement waited on thousands
        # of creates). The two never work on the same record: a pass of commands
        # leaves every instance that needs a node to the placer.
        placer = asyncio.create_task(
            self._passes(self.place_pending, self._place_wake, "placement pass"),
            name="placements",
        )
        try:
            await self._passes(self.tick, self._wake, "reconcile tick")
        finally:
            placer.cancel()

    async def _passes(
        self, one: Callable[[], Awaitable[object]], wake: asyncio.Event, what: str
    ) -> None:
        """Run ``one`` pass after another: at once when ``wake`` is set, else every
        ``interval``."""
        while True:
            # Cleared before the pass: a wake during it (an apply, or the placer once it
            # placed instances) starts the next pass at once, so a new instance's first
            # node command never waits for ``interval``.
            wake.clear()
            try:
                await one()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", what)
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a
            # cancellation that races with the event, and the loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await wake.wait()

    # -- one pass -----------------------------------------------------------------

    async def tick(self) -> None:
        async with self.state.lock:
            await self.update_liveness()
        now = self._clock()
        # Settled instances (running where they should, as reported) are skipped from
        # a look at the stored records: only the others are copied and worked on, so
        # a quiet cluster's tick costs a scan, not a copy of every record.
        workloads = sorted(
            (_copy(w) for w in self.state.peek_workloads() if not self._settled(w)),
            key=lambda w: (w.desired != "removed", w.id),
        )
        in_flight = self._services_in_transition(workloads)
        # Instances that need a node are the placer's (place_pending). Node commands
        # run concurrently (bounded), since a node call is mostly waiting on the node.
        rest = [
            w for w in workloads if w.next_attempt_at <= now and not self._needs_placement(w)
        ]
        limit = asyncio.Semaphore(self.concurrency)
        per_node: dict[str, asyncio.Semaphore] = {}

        async def one(w: control_pb2.Workload) -> None:
            # The node's own limit first: waiting for it holds no global slot.
            node_limit = per_node.setdefault(w.node, asyncio.Semaphore(self.per_node))
            async with node_limit, limit:
                await self._guarded(self._step(w, in_flight), w)

        await asyncio.gather(*(one(w) for w in rest))
        await self._remove_strays()
        await self._finish_deletes()
        await self._expire_tasks()

    async def place_pending(self) -> None:
        """Place every instance that needs a node, one at a time: each decision must
        see the previous one's allocation (kept in ``views``, built once per pass).
        The records are then written together (one store transaction per batch)."""
        now = self._clock()
        due = sorted(
            (
                _copy(w)
                for w in self.state.peek_workloads()
                if w.next_attempt_at <= now and self._needs_placement(w)
            ),
            key=lambda w: w.id,
        )
        if not due:
            return
        views = _Views(self.views())
        placed: list[tuple[control_pb2.Workload, str | None]] = []
        # Each full batch is written while the next ones are worked out: the store's
        # disk work overlaps the placements' CPU (the lock keeps commits in order).
        commits: list[asyncio.Task[None]] = []
        started = time.monotonic()
        for w in due:
            await self._guarded(self._place_batched(w, views, placed))
            if len(placed) >= PLACEMENT_BATCH:
                commits.append(asyncio.create_task(self._commit_placements(placed)))
                placed = []
            if time.monotonic() - started > PLACEMENT_SLICE:
                # Thousands of placements are seconds of CPU: let the event loop read
                # the nodes' reports in between, or its own silence would look like
                # theirs (orchestrator.liveness).
                await asyncio.sleep(0)
                started = time.monotonic()
        if placed:
            commits.append(asyncio.create_task(self._commit_placements(placed)))
        outcomes = await asyncio.gather(*commits, return_exceptions=True)
        self._wake.set()  # their node commands: the next pass of the reconciler
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _expire_tasks(self) -> None:
        """A delegated fetch nobody completed in time: forget it and let the workload retry."""
        if self.tasks is None or not self.pending:
            return
        for task in await self.tasks.expire():
            self.pending.pop((task.node, task.kind, task.resource), None)
            await self.audit.record(
                "task.expired", node=task.node, request_id=task.request_id, kind=task.kind
            )
            w = self.state.workload(task.workload)
            if w is not None:
                await self._failed(w, f"{task.kind} of {task.resource} on {task.node} timed out")

    def liveness_changes(self) -> list[tuple[str, str]]:
        """(node, new state) for each node whose stored state the leases contradict;
        reads only (no lock needed to look)."""
        out: list[tuple[str, str]] = []
        for stored in self.state.peek_nodes():
            if stored.state == "revoked":
                continue
            live = self.tracker.liveness(stored.name, joined_at=stored.joined_at).value
            if live == Liveness.SUSPECT and stored.state == "ready":
                continue  # suspicion alone moves nothing; keep the record quiet
            if stored.state == live or (live == Liveness.SUSPECT and stored.state == "dead"):
                continue
            out.append((stored.name, live))
        return out

    def next_verdict_at(self) -> float:
        """The earliest time (injected clock) a node now counted alive would be
        declared dead if it stays silent: when the next look is worth taking."""
        return min(
            (
                self.tracker.dead_at(n.name, joined_at=n.joined_at)
                for n in self.state.peek_nodes()
                if n.state in ("ready", "suspect")
            ),
            default=math.inf,
        )

    async def declare_dead(self, names: list[str]) -> None:
        """Record the verdicts on ``names`` when they are reached, before the state lock
        is free to write the records (update_liveness, with ``declared``): the lock may
        be held by a batch of writes for a while, and a verdict's time is its own."""
        self._declaring.update(names)  # written by the caller's update_liveness only
        try:
            await asyncio.gather(*(self.audit.record("node.dead", node=name) for name in names))
        except BaseException:
            self._declaring.difference_update(names)
            raise

    def declared_written(self, names: list[str]) -> None:
        self._declaring.difference_update(names)

    async def update_liveness(self, declared: frozenset[str] = frozenset()) -> None:
        """Write every change of state the leases call for (under the state lock);
        ``declared``: nodes whose death declare_dead already recorded, written dead
        even if a report came in since (the next look brings them back, audited)."""
        changes: list[tuple[control_pb2.NodeRecord, str]] = []
        # A verdict another caller recorded and is about to write is not written twice.
        found = {n: live for n, live in self.liveness_changes() if n not in self._declaring}
        self._declaring.difference_update(declared)
        for name in declared:
            stored = self.state.peek_node(name)
            if stored is not None and stored.state not in ("dead", "revoked"):
                found[name] = Liveness.DEAD.value
        for name, live in found.items():
            node = self.state.node(name)  # a copy, to change and save
            if node is not None:
                changes.append((node, live))
        # Verdicts written together: when many nodes die at once (a rack, a switch),
        # their audit entries and records share commits instead of queueing one by one.
        await asyncio.gather(
            *(self._set_liveness(node, live, node.name in declared) for node, live in changes)
        )

    async def _set_liveness(
        self, node: control_pb2.NodeRecord, live: str, declared: bool = False
    ) -> None:
        if live == Liveness.DEAD:
            if not declared:
                await self.audit.record("node.dead", node=node.name)
            view = self.tracker.nodes.get(node.name)
            if view is not None and view.last_seen:
                log.warning(
                    "node %s declared dead: silent %.2f s, of which %.2f s not counted "
                    "(the orchestrator's own lag)",
                    node.name,
                    self._clock() - view.last_seen,
                    self.tracker.deaf - view.deaf_at_seen,
                )
            else:
                log.warning("node %s declared dead: never heard from", node.name)
        elif node.state == "dead":
            await self.audit.record("node.back", node=node.name)
        node.state = live
        view = self.tracker.nodes.get(node.name)
        if view:
            node.last_heartbeat = view.last_seen
        await self.state.save_node(node)

    def _services_in_transition(self, workloads: list[control_pb2.Workload]) -> Counter[str]:
        """Per service, how many instances are being replaced right now (rolling update:
        at most one at a time)."""
        busy: Counter[str] = Counter()
        for w in workloads:
            if w.desired == "running" and w.node and w.state in ("starting", "replacing"):
                busy[f"{w.tenant}/{w.app}/{w.service}"] += 1
        return busy

    def _node_usable(self, name: str) -> control_pb2.NodeRecord | None:
        node = self.state.node(name)
        if node is None or node.state in ("dead", "revoked"):
            return None
        return node

    def views(self, *, allocations: bool = True) -> list[scheduler.NodeView]:
        """Every node as the scheduler sees it; ``allocations=False`` leaves out what is
        placed on each (a walk over every instance), for checks against total capacity."""
        alloc_cpu: Counter[str] = Counter()
        alloc_mem: Counter[str] = Counter()
        per_service: dict[str, Counter[str]] = {}
        used_ports: dict[str, set[tuple[str, int]]] = {}  # host and published ports
        port_cache: dict[tuple[str, str, str], frozenset[tuple[str, int]]] = {}
        for w in self.state.peek_workloads() if allocations else ():
            if w.node and w.desired != "removed":
                alloc_cpu[w.node] += w.cpu  # type: ignore[assignment]
                alloc_mem[w.node] += w.memory
                per_service.setdefault(w.node, Counter())[f"{w.tenant}/{w.app}/{w.service}"] += 1
                key = (w.tenant, w.app, w.service)
                if key not in port_cache:
                    spec = self._service_spec(w)
                    port_cache[key] = (
                        scheduler.request_for(spec[0], spec[1]).ports if spec else frozenset()
                    )
                used_ports.setdefault(w.node, set()).update(port_cache[key])
        views = []
        for n in self.state.peek_nodes():
            views.append(
                scheduler.NodeView(
                    id=n.name,
                    labels=dict(n.labels),
                    pool=n.pool or None,
                    cpu=n.cpus,
                    memory=n.memory,
                    allocated_cpu=float(alloc_cpu[n.name]),
                    allocated_memory=int(alloc_mem[n.name]),
                    cordoned=n.cordoned,
                    draining=n.draining,
                    ready=n.state == "ready",
                    instances_by_service=dict(per_service.get(n.name, {})),
                    used_ports=frozenset(used_ports.get(n.name, ())),
                    # The pool's policy now, within what the node was given at join
                    # (it refuses more itself).
                    grants=self.policies.grants_of(n.pool)
                    & (policy.grants(n.policy) | {policy.UNISOLATED}),
                    unisolated=n.isolation == "none",
                )
            )
        return views

    def _service_spec(
        self, w: control_pb2.Workload
    ) -> tuple[topology_pb2.Application, topology_pb2.Service] | None:
        rec = self.state.peek_app(w.tenant, w.app)  # read only: callers never change it
        if rec is None:
            return None
        for s in rec.app.services:
            if s.name == w.service:
                return rec.app, s
        return None

    async def _save(self, w: control_pb2.Workload) -> bool:
        """Save unless an apply or delete changed the record meanwhile (then the next
        tick works from the new version); True once saved.

        Saves of concurrent steps are written together: one store transaction (one
        fsync) per batch, under the state lock once. One at a time, each holding the
        lock across its own write, they queued behind each other and behind every
        apply: at 1,000 nodes the lock convoy, not the nodes, set the pace."""
        w.updated_at = self._clock()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._saving.append((w, future))
        if self._saver is None or self._saver.done():
            # A task of its own: a caller cancelled while waiting must not stall the
            # saves queued behind its own.
            self._saver = asyncio.create_task(self._write_saves(), name="workload-saves")
        return await future

    async def _write_saves(self) -> None:
        while self._saving:
            batch: list[tuple[control_pb2.Workload, asyncio.Future[bool]]] = []
            ids: set[str] = set()
            later = []
            for item in self._saving:
                # One version of a record per transaction; a second waits its turn.
                if item[0].id in ids or len(batch) == PLACEMENT_BATCH:
                    later.append(item)
                elif not item[1].done():  # a cancelled caller's save is dropped
                    ids.add(item[0].id)
                    batch.append(item)
            self._saving = later
            try:
                async with self.state.lock:
                    kept = []
                    for w, future in batch:
                        if self._stored_unchanged(w) is None:
                            if not future.done():
                                future.set_result(False)
                        else:
                            kept.append((w, future))
                    await self.state.commit(workloads=[w for w, _ in kept])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in kept:
                if not future.done():
                    future.set_result(True)

    def _stored_unchanged(self, w: control_pb2.Workload) -> control_pb2.Workload | None:
        """``w``'s stored record (a look), unless an apply or delete changed it since
        ``w`` was read or it is gone: then None, ``w`` is not written and the next pass
        works from the new version. Call under the state lock."""
        current = self.state.peek_workload(w.id)
        if (
            current is None
            or current.generation != w.generation
            or current.desired != w.desired
        ):
            return None
        return current

    async def _failed(self, w: control_pb2.Workload, message: str) -> None:
        current = self.state.workload(w.id)
        if current is None:
            return
        current.attempts += 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** min(current.attempts, 8)) * random.uniform(0.8, 1.2)  # noqa: S311
        current.next_attempt_at = self._clock() + delay
        current.message = message
        log.info("workload %s: %s (retry in %.1fs)", w.id, message, delay)
        await self._save(current)

    # -- one workload ---------------------------------------------------------------

    async def _guarded(
        self, step: Awaitable[bool | None], w: control_pb2.Workload | None = None
    ) -> bool:
        try:
            return bool(await step)
        except NodeCallError as exc:
            if w is not None:
                await self._failed(w, f"{exc.code.name}: {exc.details}")
            return False

    def _settled(self, w: control_pb2.Workload) -> bool:
        """Nothing to do for ``w`` (a stored record, not mutated): it should run, runs,
        on a ready push node that reported its current container running. Exactly the
        case where a full step would change nothing."""
        if w.desired != "running" or w.state != "running" or not w.node:
            return False
        node = self.state.peek_node(w.node)
        if node is None or node.state != "ready" or node.draining or node.mode == "pull":
            return False
        if w.container != plans.container_name(w):
            return False
        current = self.tracker.containers(node.name).get(w.container)
        return current is not None and current.state == "running"

    def _needs_placement(self, w: control_pb2.Workload) -> bool:
        if w.desired == "removed":
            return False
        node = self.state.peek_node(w.node) if w.node else None  # a look: every record
        return node is None or node.state in ("dead", "revoked") or node.draining

    async def _place_batched(
        self,
        w: control_pb2.Workload,
        views: _Views,
        placed: list[tuple[control_pb2.Workload, str | None]],
    ) -> None:
        spec = self._service_spec(w)
        if spec is None:
            return
        moving_from = w.node if w.node else None
        request = views.request(spec[0], spec[1])
        try:
            with metrics.PLACEMENT_SECONDS.time():
                target = scheduler.place(
                    request,
                    views.nodes,
                    sample=PLACEMENT_SAMPLE,
                    start=self._cursor,
                    exclude=moving_from,
                )
        except scheduler.Unschedulable as exc:
            if w.state != "unschedulable" or w.message != str(exc):
                w.state = "unschedulable"
                w.message = str(exc)
                await self._save(w)
            return
        # The next decision looks at the next nodes first: spread over the cluster
        # without scoring every node for every instance.
        self._cursor += PLACEMENT_SAMPLE
        views.assign(target, request)
        self._assign(w, spec[1], target, moving_from)
        placed.append((w, moving_from))

    async def _commit_placements(
        self, placed: list[tuple[control_pb2.Workload, str | None]]
    ) -> None:
        """Write placed records in batches (one store transaction each), auditing each
        batch as soon as it is written while the next one is (the audit log commits
        entries that wait together): a batch at a time, write then audit, left most
        of a large placement waiting on commits one after the other."""
        audits: list[asyncio.Future[list[int]]] = []
        try:
            for first in range(0, len(placed), PLACEMENT_BATCH):
                batch = placed[first : first + PLACEMENT_BATCH]
                now = self._clock()
                async with self.state.lock:
                    # Unless an apply or delete changed the record meanwhile (as in
                    # _save), or it was placed since this pass looked.
                    kept = []
                    for w, moved in batch:
                        current = self._stored_unchanged(w)
                        if current is not None and current.node == (moved or ""):
                            w.updated_at = now
                            kept.append((w, moved))
                    await self.state.commit(workloads=[w for w, _ in kept])
                audits.append(
                    asyncio.gather(
                        *(
                            self.audit.record(
                                "workload.placed",
                                workload=w.id,
                                node=w.node,
                                moved_from=moved or "",
                            )
                            for w, moved in kept
                        )
                    )
                )
        finally:
            # Every written placement is audited, even when a later batch failed.
            await asyncio.gather(*audits)

    async def _step(self, w: control_pb2.Workload, in_flight: Counter[str]) -> None:
        if w.desired == "removed":
            await self._retire(w)
            return
        spec = self._service_spec(w)
        if spec is None:
            return
        app, service = spec
        node = self._node_usable(w.node) if w.node else None
        if node is None or node.draining:
            self._place_wake.set()  # its node went away since the pass began: the placer's
            return
        if node.state != "ready":
            return  # suspect: wait for the verdict
        if node.mode == "pull":
            await self._observe(w, node)
            return
        await self._converge(w, node, app, service, in_flight)

    async def _observe(self, w: control_pb2.Workload, node: control_pb2.NodeRecord) -> None:
        """Pull-mode node: it converges itself; record what it reports."""
        want = plans.container_name(w)
        if w.container != want:
            w.container = want
            w.state = "pending"
            await self._save(w)
            return
        current = self.tracker.containers(node.name).get(want)
        state = current.state if current is not None else "pending"
        restarts_seen = w.restarts
        if state != w.state or restarts_seen != w.restarts:
            w.state = state
            await self._save(w)

    def assignments(self, node: str) -> gateway_pb2.Assignments:
        """What a pull-mode node must run: only its own workloads, nothing of others."""
        out = gateway_pb2.Assignments()
        record = self.state.node(node)
        for w in sorted(self.state.all_workloads(), key=lambda x: x.id):
            if w.node != node or not w.container or record is None:
                continue
            spec = self._service_spec(w)
            if spec is None:
                continue
            try:
                translated = container_spec(w, spec[0], spec[1], self._sealer(spec[0], record))
            except CapstanError as exc:
                log.error("assignment %s for %s: %s", w.id, node, exc)
                continue
            out.assignments.append(
                gateway_pb2.Assignment(
                    workload_id=w.id,
                    spec=translated,
                    desired=w.desired,
                    restart=RESTART_NAMES[spec[1].restart],
                )
            )
        return out

    def _assign(
        self,
        w: control_pb2.Workload,
        service: topology_pb2.Service,
        target: str,
        moving_from: str | None,
    ) -> None:
        """The record of ``w`` placed on ``target`` (not saved)."""
        if moving_from and moving_from not in w.previous_nodes:
            w.previous_nodes.append(moving_from)
        w.node = target
        w.container = plans.container_name(w)
        source = self.state.peek_node(moving_from) if moving_from else None
        # A workload with volumes leaving a live node takes its data along.
        w.state = (
            "migrating"
            if service.volumes and source is not None and source.state == "ready"
            else "pending"
        )
        w.message = ""
        w.attempts = 0

    async def _converge(
        self,
        w: control_pb2.Workload,
        node: control_pb2.NodeRecord,
        app: topology_pb2.Application,
        service: topology_pb2.Service,
        in_flight: Counter[str],
    ) -> None:
        want = plans.container_name(w)
        if w.container != want:
            # New spec: replace one instance of the service at a time.
            key = f"{w.tenant}/{w.app}/{w.service}"
            if in_flight[key] >= 1 and w.state not in ("starting", "replacing"):
                return
            in_flight[key] += 1
            w.container = want
            w.state = "replacing"
            await self._save(w)
        reported = self.tracker.containers(node.name)
        current = reported.get(want)
        fresh = self._fresh(w, node)
        if current is None:
            if (
                not fresh
                and w.state in ("starting", "running", "replacing")
                and w.request_id == want
            ):
                return  # our create may not be in a report yet
            if not await self._data_ready(w, node, service):
                return
            await self._create_and_start(w, node, app, service)
            return
        if current.state == "running":
            if w.state != "running":
                w.state = "running"
                w.message = ""
                w.attempts = 0
                await self._save(w)
            return
        if current.state == "created":
            if fresh or w.request_id != want:
                await self._start(w, node)
            return  # else read before our start: it may be running since
        if current.state in ("exited", "dead"):
            if not fresh:
                return
            policy = service.restart
            failed = not current.has_exit_code or current.exit_code != 0
            restart = policy in (
                topology_pb2.RESTART_POLICY_UNSPECIFIED,
                topology_pb2.RESTART_POLICY_ALWAYS,
            ) or (policy == topology_pb2.RESTART_POLICY_ON_FAILURE and failed)
            if not restart:
                final = "failed" if failed else "completed"
                if w.state != final:
                    w.state = final
                    w.exit_code = current.exit_code
                    await self._save(w)
                return
            w.restarts += 1
            w.exit_code = current.exit_code
            await self.audit.record(
                "workload.restarted", workload=w.id, node=node.name, exit_code=current.exit_code
            )
            await self._start(w, node)

    def _fresh(self, w: control_pb2.Workload, node: control_pb2.NodeRecord) -> bool:
        """Whether the node's last full report was read after our last command for
        ``w``. Arrival order is not enough: a report read on the node before our start
        can arrive after it (a slow node, or an orchestrator busy placing thousands),
        and would lack the container just created, which was then created again
        (bench_scale at 1,000 nodes: six creates per instance). When the start told us
        the node's time, the node's own clock decides (the report's read time against
        the container's start, both the node's)."""
        arrived = self.tracker.report_at(node.name)
        if arrived <= w.updated_at:
            return False
        started = self._started.get(w.id)
        if started is None or started[:2] != (node.name, w.container):
            return True  # no start of this container there seen by this orchestrator
        if arrived > w.updated_at + STALE_REPORT_HEARTBEATS * self.tracker.heartbeat:
            return True
        return self.tracker.report_read_at(node.name) >= started[2]

    async def _create_and_start(
        self,
        w: control_pb2.Workload,
        node: control_pb2.NodeRecord,
        app: topology_pb2.Application,
        service: topology_pb2.Service,
    ) -> None:
        try:
            spec = container_spec(w, app, service, self._sealer(app, node))
        except CapstanError as exc:  # a secret gone, or a node without a seal key
            await self._failed(w, f"secrets: {exc}")
            return
        w.request_id = w.container
        try:
            await self.caller.call(
                node.address, node.id, "container.create", spec, why=f"workload {w.id}"
            )
        except NodeCallError as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                raise
        await self._start(w, node)

    async def secret_rotated(self, tenant: str, name: str) -> int:
        """Seal a rotated secret's new version to each node running an instance that
        uses it (push nodes), whose files are replaced in place; returns how many."""
        done = 0
        for w in self.state.all_workloads():
            if w.tenant != tenant or not w.node or not w.container or w.desired != "running":
                continue
            spec = self._service_spec(w)
            if spec is None or not any(r.name == name for r in spec[1].secrets):
                continue
            node = self.state.node(w.node)
            seal = self._sealer(spec[0], node) if node is not None else None
            if node is None or seal is None or node.mode == "pull" or node.state == "revoked":
                continue
            try:
                update = node_pb2.SecretUpdate(
                    name=w.container, secrets=[seal(r) for r in spec[1].secrets]
                )
                await self.caller.call(
                    node.address,
                    node.id,
                    "secret.update",
                    update,
                    why=f"secret {tenant}/{name} rotated",
                )
                done += 1
            except (NodeCallError, CapstanError) as exc:
                log.warning("secret %s/%s not updated in %s: %s", tenant, name, w.id, exc)
        return done

    def _sealer(self, app: topology_pb2.Application, node: control_pb2.NodeRecord) -> Sealer | None:
        """Seals the app's secrets to ``node``'s key, released only for an instance
        placed there (None when the orchestrator holds no secrets service)."""
        if self.secrets is None:
            return None
        secrets, key = self.secrets, bytes(node.seal_key)
        return lambda ref: secrets.seal(app.tenant, key, ref)

    async def _start(self, w: control_pb2.Workload, node: control_pb2.NodeRecord) -> None:
        try:
            st = await self.caller.call(
                node.address,
                node.id,
                "container.start",
                node_pb2.ContainerRef(name=w.container),
                why=f"workload {w.id}",
            )
        except NodeCallError as exc:
            if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            st = None
        if st is not None and st.started_at > 0:
            self._started[w.id] = (node.name, w.container, st.started_at)
        else:
            self._started.pop(w.id, None)
        w.state = "running" if st is None or st.state == "running" else "starting"
        w.message = ""
        w.attempts = 0
        w.next_attempt_at = 0
        w.request_id = w.container
        await self._save(w)

    async def _retire(self, w: control_pb2.Workload) -> None:
        node = self._node_usable(w.node) if w.node else None
        if node is not None:
            mine = [c for c in self.tracker.containers(node.name).values() if c.workload_id == w.id]
            if node.mode != "pull":
                for c in mine:
                    await self._remove(node, c.name, why=f"retire {w.id}")
            if mine or self.tracker.report_at(node.name) <= w.updated_at:
                return  # wait for a report that shows them gone
        async with self.state.lock:
            await self.state.delete_workload(w.id)
        self._started.pop(w.id, None)
        await self.audit.record("workload.removed", workload=w.id, node=w.node)

    async def _remove(self, node: control_pb2.NodeRecord, name: str, *, why: str) -> None:
        request = node_pb2.RemoveRequest(name=name, force=True)
        try:
            await self.caller.call(node.address, node.id, "container.remove", request, why=why)
        except NodeCallError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    async def _remove_strays(self) -> None:
        """Containers a live node runs that no workload wants there: copies left on a
        node a workload moved away from, and old versions after a replacement."""
        workloads = {w.id: w for w in self.state.peek_workloads()}
        for node in self.state.peek_nodes():
            if node.state != "ready" or node.mode == "pull":
                continue
            for c in list(self.tracker.containers(node.name).values()):
                w = workloads.get(c.workload_id)
                stray = (
                    w is None
                    or w.node != node.name
                    or (
                        c.name != w.container
                        and w.state == "running"
                        and w.container in self.tracker.containers(node.name)
                    )
                )
                if not stray or (w is not None and w.desired == "removed"):
                    continue
                try:
                    await self._remove(node, c.name, why="stray")
                    self.tracker.containers(node.name).pop(c.name, None)
                    await self.audit.record(
                        "container.fenced", node=node.name, container=c.name, workload=c.workload_id
                    )
                except NodeCallError as exc:
                    log.info("could not remove stray %s on %s: %s", c.name, node.name, exc)

    async def _finish_deletes(self) -> None:
        for rec in self.state.peek_apps():
            if not rec.deleting:
                continue
            if any(
                w.tenant == rec.app.tenant and w.app == rec.app.name
                for w in self.state.peek_workloads()
            ):
                continue
            async with self.state.lock:
                await self.state.commit(delete_apps=[(rec.app.tenant, rec.app.name)])
            await self.audit.record("app.deleted", tenant=rec.app.tenant, app=rec.app.name)

    # -- delegated fetches ------------------------------------------------------------

    async def _data_ready(
        self, w: control_pb2.Workload, node: control_pb2.NodeRecord, service: topology_pb2.Service
    ) -> bool:
        """Before a workload starts on a node: its image is there (else fetched from a
        peer that has it) and, if it moved, its volumes came along from the old node."""
        if self.delegator is None:
            return True
        if w.state == "migrating" and service.volumes:
            source = self.state.node(w.previous_nodes[-1]) if w.previous_nodes else None
            if source is None or source.state != "ready":
                w.message = "previous node unreachable: volumes start empty"
                w.state = "pending"
                await self._save(w)
            else:
                # The old copy must be gone before its data is copied (regression:
                # data was copied while the old copy still ran). A push node is told
                # to remove it, by name and by whatever a report shows, and the call's
                # answer is the proof; a report may predate the copy's creation. A pull
                # node removes it itself: wait for a report newer than the move.
                old = {
                    c.name
                    for c in self.tracker.containers(source.name).values()
                    if c.workload_id == w.id
                }
                cleared = (w.id, w.generation, source.name)
                if source.mode != "pull":
                    if old or cleared not in self._cleared:
                        for name in sorted(old | {w.container}):
                            await self._remove(source, name, why=f"migrate {w.id}")
                        self._cleared.add(cleared)
                elif old or self.tracker.report_at(source.name) <= w.updated_at:
                    return False
                for v in service.volumes:
                    name = volume_name(w, v.name)
                    if not await self._fetch(w, node, source, VOLUME_FETCH, name):
                        return False
                w.state = "pending"
                w.message = ""
                await self._save(w)
        has = self.tracker.has_image(node.name, service.image)
        if has is None or has:
            return True
        if wire_images.split(service.image)[1] is None:
            # Unpinned: there is no digest to check a copy by, so it is never copied
            # between nodes; the create fails with NOT_FOUND and backs off.
            return True
        # Sources only among nodes the admin seeded or that were seen to receive a
        # verified copy; never a node that merely reports the image (regression: a
        # compromised node claiming another tenant's image was chosen as the source).
        holders = await self.images.holders(service.image)
        sources = [
            n
            for n in self.state.all_nodes()
            if n.name in holders and n.state == "ready" and may_delegate(node, n)
        ]
        if not sources:
            if w.message != NO_VERIFIED_COPY:
                w.message = NO_VERIFIED_COPY
                await self._save(w)
            return True  # the create fails with NOT_FOUND and backs off
        sources.sort(key=lambda n: (n.pool != node.pool, n.name))
        return await self._fetch(w, node, sources[0], IMAGE_FETCH, service.image)

    async def _fetch(
        self,
        w: control_pb2.Workload,
        node: control_pb2.NodeRecord,
        source: control_pb2.NodeRecord,
        kind: str,
        resource: str,
    ) -> bool:
        """True when the resource is already fetched; else issue (once) and wait."""
        key = (node.name, kind, resource)
        if key in self.pending:
            return False
        if kind == VOLUME_FETCH and (node.name, kind, resource, w.generation) in self._fetched:
            return True
        assert self.delegator is not None  # noqa: S101
        try:
            task = await self.delegator.fetch(
                kind=kind, resource=resource, workload=w.id, target=node, source=source
            )
        except DelegationRefused as exc:
            await self._failed(w, str(exc))
            return False
        self.pending[key] = task.request_id
        if w.state not in ("fetching", "migrating"):
            w.state = "fetching"
            await self._save(w)
        return False

    async def on_completion(self, done: Completion) -> None:
        task = done.task
        self.pending.pop((task.node, task.kind, task.resource), None)
        w = self.state.workload(task.workload)
        if done.ok:
            if task.kind == IMAGE_FETCH:
                # The receiver verified the bytes against the digest its token named.
                await self.images.received(task.node, task.resource)
                self.tracker.add_image(task.node, task.resource)
            elif w is not None:
                self._fetched.add((task.node, task.kind, task.resource, w.generation))
        elif w is not None:
            await self._failed(
                w, f"{task.kind} of {task.resource} from {task.source} failed: {done.message}"
            )
        self.wake()
