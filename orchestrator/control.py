"""ControlService: what operators ask of the orchestrator.

Who may call each method, and on which tenant, is decided before the method runs by
the orchestrator's authorization interceptor (orchestrator/authz.py); each method
receives the authorized call. Orchestrator errors become statuses in ``_errors`` and
nowhere else.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from orchestrator import apply as plans
from orchestrator import jointokens, policy, quantities, scheduler
from orchestrator._events import event_line, of_app
from orchestrator.audit import AuditLog
from orchestrator.authz import Access, Caller, UserCall, may
from orchestrator.autoscale import keep_autoscaled
from orchestrator.ca import CurrentAuthority
from orchestrator.errors import Conflict, NotFound, NotLeader, OrchestratorError, StoreUnavailable
from orchestrator.minter import Minter
from orchestrator.pkistatus import PkiStatus
from orchestrator.rebalance import Rebalancer
from orchestrator.reconciler import Reconciler
from orchestrator.revocations import Revoker
from orchestrator.secrets import SecretService
from orchestrator.state import ClusterState
from pki.errors import CapstanError
from protos import control_pb2, control_pb2_grpc, topology_pb2
from protos.wire import rules

log = logging.getLogger("capstan.orchestrator")

#: An exec session lasts as long as its token: the default, and at most (the node's
#: verifier refuses tokens living longer than its max_token_ttl, 300 s by default).
EXEC_DEFAULT_TTL = 300.0
EXEC_MAX_TTL = 300.0

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (plans.InvalidApplication, grpc.StatusCode.INVALID_ARGUMENT),
    (policy.PolicyRefused, grpc.StatusCode.INVALID_ARGUMENT),
    (policy.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (scheduler.Unschedulable, grpc.StatusCode.INVALID_ARGUMENT),
    (Conflict, grpc.StatusCode.ABORTED),
    # Leadership lost mid-call, or etcd without quorum: nothing was done; try again
    # (clients move to the leader).
    (NotLeader, grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)


def _errors(fn: F) -> F:
    """Orchestrator errors of a handler become its status (authorization is done
    before, by orchestrator.authz)."""

    @functools.wraps(fn)
    async def run(self: ControlService, request: Any, context: Any, call: UserCall) -> Any:
        try:
            return await fn(self, request, context, call)
        except CapstanError as exc:
            code = next((c for cls, c in _STATUS if isinstance(exc, cls)), grpc.StatusCode.INTERNAL)
            await context.abort(code, str(exc))

    return run  # type: ignore[return-value]


class ControlService(control_pb2_grpc.ControlServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        state: ClusterState,
        reconciler: Reconciler,
        audit: AuditLog,
        minter: Minter,
        ca: CurrentAuthority,
        rebalancer: Rebalancer,
        revoker: Revoker,
        pki_status: PkiStatus,
        delegation_ttl: float,
        clock: Callable[[], float],
        secrets: SecretService,
        orchestrators: Callable[[], Awaitable[control_pb2.OrchestratorsInfo]] | None = None,
    ) -> None:
        self._secrets = secrets
        # The control plane's members, leader and etcd health.
        self._orchestrators = orchestrators
        self._state = state
        self._reconciler = reconciler
        self._audit = audit
        self._minter = minter
        self._ca = ca
        self._rebalancer = rebalancer
        self._revoker = revoker
        self._pki_status = pki_status
        self._ttl = delegation_ttl
        self._clock = clock

    @staticmethod
    def _visible(caller: Caller, tenant: str) -> bool:
        return may(caller, Access.READ, tenant)

    # -- applications -----------------------------------------------------------------

    @_errors
    async def Apply(self, request: control_pb2.ApplyRequest, context: Any, call: UserCall) -> Any:
        app = topology_pb2.Application()
        app.CopyFrom(request.app)
        app.tenant = call.tenant
        plans.validate(app)
        # What the admin's pool policies permit (field named): before anything is pinned.
        self._reconciler.policies.check_app(app)
        # Secrets are referenced, never embedded: each must exist in the app's tenant.
        missing = await self._secrets.missing(app)
        if missing:
            raise plans.InvalidApplication("; ".join(missing))
        # Pinned at apply: each image by the digest in the file or the admin's pin, so
        # what runs is named by content from here on, whatever a node says later.
        for s in app.services:
            s.image = await self._reconciler.images.resolve(s.image)
        # check_fits compares with total capacity: no need to count every instance.
        nodes = self._reconciler.views(allocations=False)
        if nodes:
            for s in app.services:
                try:
                    scheduler.check_fits(scheduler.request_for(app, s), nodes)
                except scheduler.Unschedulable as exc:
                    raise plans.InvalidApplication(
                        f"services.{s.name}.resources: fits no node ({exc})"
                    ) from None
        async with self._state.lock:
            current = self._state.app(app.tenant, app.name)
            # Looks, not copies (plan copies what it changes): ten concurrent applies
            # at 1,000 nodes each copied every record of the others.
            mine = [
                w
                for w in self._state.peek_workloads()
                if w.tenant == app.tenant and w.app == app.name
            ]
            # Autoscaled services keep the autoscaler's count: re-applying the file
            # must not undo it.
            kept = keep_autoscaled(app, current)
            asked = policy.app_usage(app)
            usage = policy.tenant_usage(self._state.peek_apps(), app.tenant, skip=app.name)
            usage.add_usage(asked)
            self._reconciler.policies.check_quota(
                app.tenant,
                usage,
                f"application {app.name} ({asked.describe()})",
            )
            record, changes, writes = plans.plan(app, current, mine, now=self._clock())
            record.autoscaled.clear()
            record.autoscaled.update(kept)
            if not request.dry_run:
                await self._state.commit(apps=[record], workloads=writes)
        if not request.dry_run and (
            writes or current is None or current.generation != record.generation
        ):
            await self._audit.record(
                "app.applied",
                by=call.caller.uri,
                tenant=app.tenant,
                app=app.name,
                generation=record.generation,
                changes={c.service: c.action for c in changes},
            )
            self._reconciler.wake()
        return control_pb2.ApplyResponse(
            tenant=app.tenant, app=app.name, generation=record.generation, changes=changes
        )

    # -- sandbox policies and quotas (orchestrator.policy) -----------------------------

    @_errors
    async def SetPoolPolicy(
        self, request: control_pb2.PoolPolicyRecord, context: Any, call: UserCall
    ) -> Any:
        if request.pool:
            problem = rules.check_dns_label(request.pool)
            if problem:
                raise policy.PolicyRefused(f"pool: {problem}")
        rec = await self._reconciler.policies.set_pool(request.pool, request.policy)
        await self._audit.record(
            "pool.policy",
            by=call.caller.uri,
            pool=policy.pool_name(request.pool),
            host_network=rec.policy.host_network,
            root=rec.policy.root,
            cap_add=list(rec.policy.cap_add),
            unisolated=rec.policy.unisolated,
            low_ports=rec.policy.low_ports,
        )
        self._reconciler.wake()
        return rec

    @_errors
    async def ListPoolPolicies(
        self, request: control_pb2.ListPoolPoliciesRequest, context: Any, call: UserCall
    ) -> Any:
        pools = self._reconciler.policies.pools
        names = sorted(set(pools) | {""})
        if call.caller.role not in ("admin", "viewer"):
            names = [n for n in names if n in ("", call.caller.tenant)]
        out = control_pb2.PoolPolicyList()
        for name in names:
            out.pools.add(pool=name).policy.CopyFrom(self._reconciler.policies.pool(name))
        return out

    @_errors
    async def SetQuota(self, request: control_pb2.Quota, context: Any, call: UserCall) -> Any:
        problem = rules.check_dns_label(request.tenant)
        if problem:
            raise policy.PolicyRefused(f"tenant: {problem}")
        quota = await self._reconciler.policies.set_quota(request)
        await self._audit.record(
            "quota.set",
            by=call.caller.uri,
            tenant=quota.tenant,
            cpu=quota.cpu,
            memory=quota.memory,
            instances=quota.instances,
        )
        return quota

    @_errors
    async def DescribeTenant(
        self, request: control_pb2.TenantRef, context: Any, call: UserCall
    ) -> Any:
        tenant = call.tenant
        usage = policy.tenant_usage(self._state.peek_apps(), tenant)
        out = control_pb2.TenantUsage(
            tenant=tenant,
            cpu=usage.cpu,
            memory=usage.memory,
            instances=usage.instances,
            apps=sum(1 for r in self._state.peek_apps() if r.app.tenant == tenant),
        )
        quota = self._reconciler.policies.quotas.get(tenant)
        if quota is not None:
            out.quota.CopyFrom(quota)
        return out

    @_errors
    async def DeleteApp(self, request: control_pb2.AppRef, context: Any, call: UserCall) -> Any:
        tenant = call.tenant
        async with self._state.lock:
            record = self._state.app(tenant, request.name)
            if record is None:
                raise NotFound(f"application {tenant}/{request.name} not found")
            record.deleting = True
            mine = [  # looks: retire_all copies what it changes
                w
                for w in self._state.peek_workloads()
                if w.tenant == tenant and w.app == request.name
            ]
            await self._state.commit(
                apps=[record], workloads=plans.retire_all(mine, now=self._clock())
            )
        await self._audit.record(
            "app.deleting", by=call.caller.uri, tenant=tenant, app=request.name
        )
        self._reconciler.wake()
        return control_pb2.ApplyResponse(
            tenant=tenant, app=request.name, generation=record.generation
        )

    def _running(self) -> Counter[tuple[str, str]]:
        """Running instances per (tenant, app): one pass over the records."""
        return Counter(
            (w.tenant, w.app)
            for w in self._state.peek_workloads()
            if w.state == "running" and w.desired == "running"
        )

    def _summary(
        self, record: control_pb2.AppRecord, running: Counter[tuple[str, str]] | None = None
    ) -> control_pb2.AppSummary:
        if running is None:
            running = self._running()
        return control_pb2.AppSummary(
            tenant=record.app.tenant,
            name=record.app.name,
            generation=record.generation,
            services=len(record.app.services),
            desired=sum(plans.replicas_of(s) for s in record.app.services)
            if not record.deleting
            else 0,
            running=running[(record.app.tenant, record.app.name)],
            updated_at=record.updated_at,
        )

    @_errors
    async def GetApp(self, request: control_pb2.AppRef, context: Any, call: UserCall) -> Any:
        tenant = call.tenant
        record = self._state.app(tenant, request.name)
        if record is None:
            raise NotFound(f"application {tenant}/{request.name} not found")
        workloads = sorted(
            (  # looks: the reply message copies them
                w
                for w in self._state.peek_workloads()
                if w.tenant == tenant and w.app == request.name
            ),
            key=lambda w: (w.service, w.index),
        )
        # The application's own index: the cost does not grow with the whole log.
        events = [
            event_line(e)
            for e in await self._audit.app_events(tenant, request.name, limit=20)
            if of_app(e, tenant, request.name)
        ]
        return control_pb2.AppDetail(
            record=record, summary=self._summary(record), workloads=workloads, events=events
        )

    @_errors
    async def ListApps(
        self, request: control_pb2.ListAppsRequest, context: Any, call: UserCall
    ) -> Any:
        running = self._running()  # once for every application listed
        apps = [
            self._summary(r, running)
            for r in self._state.peek_apps()
            if self._visible(call.caller, r.app.tenant)
            and (not request.tenant or r.app.tenant == request.tenant)
        ]
        apps.sort(key=lambda a: (a.tenant, a.name))
        return control_pb2.AppList(apps=apps)

    @_errors
    async def ListWorkloads(
        self, request: control_pb2.WorkloadFilter, context: Any, call: UserCall
    ) -> Any:
        # Looks, not copies: each answer is copied once, into the reply itself.
        out = [
            w
            for w in self._state.peek_workloads()
            if self._visible(call.caller, w.tenant)
            and (not request.tenant or w.tenant == request.tenant)
            and (not request.app or w.app == request.app)
            and (not request.node or w.node == request.node)
        ]
        out.sort(key=lambda w: (w.tenant, w.app, w.service, w.index))
        reply = control_pb2.WorkloadList()
        for w in out:
            self._with_usage(w, reply.workloads.add())
        return reply

    def _with_usage(self, w: control_pb2.Workload, out: control_pb2.Workload) -> None:
        """``out``: a copy of ``w`` carrying the node's last reported use (kept in
        memory, never stored)."""
        out.CopyFrom(w)
        view = self._reconciler.tracker.nodes.get(w.node) if w.node else None
        sample = view.usage.get(w.container) if view is not None and w.container else None
        if sample is not None and w.state == "running":
            out.cpu_used = sample.cpu_fraction
            out.memory_used = sample.memory_bytes
        out.endpoints.extend(self._endpoints(w))

    def _endpoints(self, w: control_pb2.Workload) -> list[str]:
        """The node's address at each port the instance publishes, while it runs."""
        node = self._state.peek_node(w.node) if w.node and w.state == "running" else None
        rec = self._state.peek_app(w.tenant, w.app) if node is not None else None
        if node is None or rec is None:
            return []
        host = node.address.rpartition(":")[0]
        service = next((s for s in rec.app.services if s.name == w.service), None)
        ports = service.ports if service is not None else []
        return [f"{host}:{p.publish}" for p in ports if p.publish]

    # -- nodes ------------------------------------------------------------------------

    def _node_records(self) -> list[control_pb2.NodeRecord]:
        alloc_cpu: Counter[str] = Counter()
        alloc_mem: Counter[str] = Counter()
        count: Counter[str] = Counter()
        for w in self._state.peek_workloads():
            if w.node and w.desired != "removed":
                alloc_cpu[w.node] += w.cpu  # type: ignore[assignment]
                alloc_mem[w.node] += w.memory
                count[w.node] += 1
        out = []
        for n in self._state.all_nodes():
            view = self._reconciler.tracker.nodes.get(n.name)
            if view:
                n.last_heartbeat = view.last_seen
            n.allocated_cpu = float(alloc_cpu[n.name])
            n.allocated_memory = int(alloc_mem[n.name])
            n.workloads = count[n.name]
            out.append(n)
        return sorted(out, key=lambda n: n.name)

    @_errors
    async def ListNodes(
        self, request: control_pb2.ListNodesRequest, context: Any, call: UserCall
    ) -> Any:
        own = call.caller.tenant
        if own is not None:
            # Tenants see only their own pool and the shared nodes.
            nodes = [n for n in self._node_records() if n.pool in ("", own)]
        else:
            nodes = self._node_records()
        return control_pb2.NodeList(nodes=nodes)

    async def _set_node(self, name: str, caller: Caller, **flags: bool) -> control_pb2.NodeRecord:
        async with self._state.lock:
            node = self._state.node(name)
            if node is None:
                raise NotFound(f"node {name} not found")
            for k, v in flags.items():
                setattr(node, k, v)
            await self._state.save_node(node)
        await self._audit.record("node.updated", by=caller.uri, node=name, **flags)
        self._reconciler.wake()
        return next(n for n in self._node_records() if n.name == name)

    @_errors
    async def Cordon(self, request: control_pb2.NodeRef, context: Any, call: UserCall) -> Any:
        return await self._set_node(request.name, call.caller, cordoned=True)

    @_errors
    async def Uncordon(self, request: control_pb2.NodeRef, context: Any, call: UserCall) -> Any:
        return await self._set_node(request.name, call.caller, cordoned=False, draining=False)

    @_errors
    async def Drain(self, request: control_pb2.NodeRef, context: Any, call: UserCall) -> Any:
        return await self._set_node(request.name, call.caller, cordoned=True, draining=True)

    # -- logs and join tokens -----------------------------------------------------------

    @_errors
    async def Logs(self, request: control_pb2.AppLogsRequest, context: Any, call: UserCall) -> Any:
        tenant = call.tenant
        service, _, index = request.instance.rpartition(".")
        if not service or not index.isdigit():
            raise plans.InvalidApplication("instance: must be SERVICE.INDEX")
        w = self._state.workload(plans.workload_id(tenant, request.app, service, int(index)))
        if w is None or w.desired == "removed":
            raise NotFound(f"instance {tenant}/{request.app}/{request.instance} not found")
        node = self._state.node(w.node) if w.node else None
        if node is None or not w.container:
            raise NotFound(f"instance {request.instance} is not placed on a node")
        # The token is for the caller's own certificate: the orchestrator never relays
        # the logs, and the token opens exactly one container's logs on one node.
        token = await self._minter.mint(
            sub=call.caller.uri,
            cnf=call.caller.thumbprint,
            aud=node.id,
            op="container.logs",
            res=w.container,
            ttl=self._ttl if not request.follow else max(self._ttl, 30.0),
            why=f"logs of {w.id}",
        )
        return control_pb2.LogsGrant(
            node_address=node.address, node_id=node.id, container=w.container, token=token
        )

    @_errors
    async def Exec(self, request: control_pb2.ExecRequest, context: Any, call: UserCall) -> Any:
        """A grant to run one command in one instance: a single-use token for the
        caller's own certificate, bound to that container on that node and to exactly
        this command line (req). The orchestrator relays nothing, and cannot be
        bypassed: the node runs only what a token it verifies names. Viewers may
        not (WRITE); a tenant only in its own tenant."""
        from pki.tokens import request_digest
        from protos import node_pb2
        from protos.ops import request_fields

        tenant, caller = call.tenant, call.caller
        service, _, index = request.instance.rpartition(".")
        if not service or not index.isdigit():
            raise plans.InvalidApplication("instance: must be SERVICE.INDEX")
        if not request.command or len(request.command) > 256:
            raise plans.InvalidApplication("command: between 1 and 256 arguments")
        if sum(len(a) for a in request.command) > 64 * 1024:
            raise plans.InvalidApplication("command: longer than 64 KiB")
        if not 0 <= request.ttl <= EXEC_MAX_TTL:  # NaN fails both
            raise plans.InvalidApplication(f"ttl: must be between 0 and {EXEC_MAX_TTL:g} s")
        w = self._state.workload(plans.workload_id(tenant, request.app, service, int(index)))
        if w is None or w.desired == "removed":
            raise NotFound(f"instance {tenant}/{request.app}/{request.instance} not found")
        node = self._state.node(w.node) if w.node else None
        if node is None or not w.container or w.state != "running":
            raise NotFound(f"instance {request.instance} is not running on a node")
        start = node_pb2.ExecStart(
            name=w.container,
            command=list(request.command),
            tty=request.tty,
            stdin=request.stdin,
        )
        ttl = request.ttl or EXEC_DEFAULT_TTL
        # Audited before the token exists: an exec nobody recorded cannot happen.
        await self._audit.record(
            "exec.granted",
            by=caller.uri,
            tenant=tenant,
            app=request.app,
            workload=w.id,
            node=node.name,
            container=w.container,
            command=list(request.command),
            tty=request.tty,
            ttl=ttl,
        )
        token = await self._minter.mint(
            sub=caller.uri,
            cnf=caller.thumbprint,
            aud=node.id,
            op="container.exec",
            res=w.container,
            req=request_digest(request_fields(node_pb2.ExecInput(start=start))),
            ttl=ttl,
            why=f"exec in {w.id}",
        )
        return control_pb2.ExecGrant(
            node_address=node.address,
            node_id=node.id,
            container=w.container,
            token=token,
            expires_at=self._clock() + ttl,
        )

    @_errors
    @_errors
    async def CreateJoinToken(
        self, request: control_pb2.JoinTokenRequest, context: Any, call: UserCall
    ) -> Any:
        ttl = request.ttl or 3600.0
        if not 0 < ttl <= 7 * 86400:
            raise plans.InvalidApplication("ttl: must be between 0 and 7 days")
        if not (0 <= request.cpus <= quantities.MAX_CPU):  # NaN fails both
            raise plans.InvalidApplication(f"cpus: must be between 0 and {quantities.MAX_CPU}")
        if request.memory < 0:
            raise plans.InvalidApplication("memory: must not be negative")
        grant = jointokens.JoinGrant(
            name=request.name,
            pool=request.pool,
            labels=dict(request.labels),
            expires_at=self._clock() + ttl,
            cpus=request.cpus,
            memory=request.memory,
            rejoin=bool(request.name) and self._state.node(request.name) is not None,
            policy=(
                request.policy.SerializeToString().hex() if request.HasField("policy") else ""
            ),
        )
        for i, cap in enumerate(request.policy.cap_add):
            problem = rules.check_capability(cap)
            if problem:
                raise policy.PolicyRefused(f"policy.cap_add[{i}]: {problem}")
        token = await jointokens.create(self._state.store, grant, ca_pin=self._ca.ca_pin)
        await self._audit.record(
            "join_token.created",
            by=call.caller.uri,
            name=request.name,
            pool=request.pool,
            expires_at=grant.expires_at,
        )
        return control_pb2.JoinTokenResponse(token=token, expires_at=grant.expires_at)

    @_errors
    async def SeedImage(
        self, request: control_pb2.SeedImageRequest, context: Any, call: UserCall
    ) -> Any:
        node = self._state.node(request.node)
        if node is None:
            raise NotFound(f"node {request.node!r} not found")
        problem = rules.check_image_ref(request.image)
        if problem is None and "@" not in request.image:
            problem = "must be pinned: name[:tag]@sha256:<image id>"
        if problem is not None:
            raise plans.InvalidApplication(f"image: {problem}")
        canonical = await self._reconciler.images.seed(node.name, request.image)
        await self._audit.record(
            "image.seeded", by=call.caller.uri, node=node.name, image=canonical
        )
        self._reconciler.wake()
        return control_pb2.SeedImageResponse(node=node.name, image=canonical)

    # -- certificate lifecycle ------------------------------------------------------------

    @_errors
    async def RevokeNode(
        self, request: control_pb2.RevokeNodeRequest, context: Any, call: UserCall
    ) -> Any:
        record = await self._revoker.revoke_node(
            request.name, by=call.caller.uri, reason=request.reason or "key-compromise"
        )
        # A revoked node is fetched from no more, whatever it held.
        await self._reconciler.images.forget_node(request.name)
        return record

    @_errors
    async def PkiStatus(
        self, request: control_pb2.PkiStatusRequest, context: Any, call: UserCall
    ) -> Any:
        return self._pki_status()

    @_errors
    async def ListOrchestrators(
        self, request: control_pb2.OrchestratorsRequest, context: Any, call: UserCall
    ) -> Any:
        if self._orchestrators is None:
            raise OrchestratorError("this orchestrator does not describe its control plane")
        return await self._orchestrators()

    @_errors
    async def Version(
        self, request: control_pb2.VersionRequest, context: Any, call: UserCall
    ) -> Any:
        import asyncio
        from importlib.metadata import PackageNotFoundError, version

        from protos import node_pb2

        try:
            own = version("capstan")
        except PackageNotFoundError:
            own = "unknown"
        nodes = [
            n
            for n in self._node_records()
            if n.state in ("ready", "suspect")
            and (call.caller.tenant is None or n.pool in ("", call.caller.tenant))
        ]

        async def ask(n: control_pb2.NodeRecord) -> control_pb2.NodeVersion:
            # The node answers for itself (node.info, with a token like any call).
            out = control_pb2.NodeVersion(name=n.name, id=n.id, runtime=n.runtime)
            try:
                info = await self._reconciler.caller.call(
                    n.address,
                    n.id,
                    "node.info",
                    node_pb2.NodeInfoRequest(),
                    timeout=5.0,
                    why="version",
                )
            except Exception as exc:  # one silent node must not fail the answer
                out.error = " ".join(str(exc).split())[:200] or type(exc).__name__
                return out
            out.version = info.capstan_version
            out.runtime = info.runtime or n.runtime
            out.runtime_version = info.runtime_version
            return out

        answers = await asyncio.gather(*(ask(n) for n in nodes))
        return control_pb2.VersionInfo(
            version=own, id=self._minter.issuer, epoch=self._minter.epoch, nodes=answers
        )

    # -- rebalancing ----------------------------------------------------------------------

    @_errors
    async def Rebalance(
        self, request: control_pb2.RebalanceRequest, context: Any, call: UserCall
    ) -> Any:
        moves, summary = await self._rebalancer.rebalance(
            dry_run=request.dry_run, by=call.caller.uri
        )
        if not request.dry_run:
            await self._audit.record(
                "rebalance.requested", by=call.caller.uri, moves=len(moves), summary=summary
            )
        return control_pb2.RebalancePlan(
            moves=[m.to_pb() for m in moves], applied=not request.dry_run, summary=summary
        )

    # -- audit, for security reviewers ---------------------------------------------------

    async def AuditTail(
        self, request: control_pb2.AuditRequest, context: Any, call: UserCall
    ) -> Any:
        entries = await self._audit.entries(
            since=max(0, request.since), limit=max(0, request.limit)
        )
        # Follow from where the request began when no entry was read: -1 would follow
        # from 0 and replay the whole log to a caller that asked for what comes next.
        last = max(0, request.since) - 1
        for item in entries:
            last = item["seq"]
            yield control_pb2.AuditEntry(seq=item["seq"], json=json.dumps(item, sort_keys=True))
        if not request.follow:
            return
        async for item in self._audit.follow(since=last + 1):
            yield control_pb2.AuditEntry(seq=item["seq"], json=json.dumps(item, sort_keys=True))

    @_errors
    async def AuditVerify(
        self, request: control_pb2.AuditVerifyRequest, context: Any, call: UserCall
    ) -> Any:
        ok, message = await self._audit.verify()
        return control_pb2.AuditVerifyResponse(ok=ok, message=message)

    @_errors
    async def WhoCan(self, request: control_pb2.WhoCanRequest, context: Any, call: UserCall) -> Any:
        node = self._state.node(request.node)
        if node is None:
            raise NotFound(f"node {request.node} not found")
        until = request.until or self._clock()
        grants: dict[tuple[str, str, str], control_pb2.Capability] = {}
        for e in await self._audit.entries():
            # Link grants count as capabilities too: tunnel tokens are minted for them
            # every few seconds, unaudited one by one (orchestrator/links.py).
            if e.get("event") not in ("token.minted", "link.granted") or e.get("aud") != node.id:
                continue
            at = float(e.get("at", 0))
            if at < request.since or at > until:
                continue
            key = (str(e.get("sub")), str(e.get("op")), str(e.get("res")))
            cap = grants.get(key)
            if cap is None:
                cap = grants[key] = control_pb2.Capability(
                    identity=key[0], op=key[1], resource=key[2], first=at
                )
            cap.tokens += 1
            cap.last = at
            cap.why = str(e.get("why", ""))
        ordered = sorted(grants.values(), key=lambda c: (c.identity, c.op, c.resource))
        return control_pb2.WhoCanResponse(node_id=node.id, capabilities=ordered)
