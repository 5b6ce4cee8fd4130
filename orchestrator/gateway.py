"""NodeGateway: what nodes send the orchestrator.

Join is authenticated by a one-time join token (the node has no certificate yet).
Everything else is authenticated by the node's certificate, and the node's identity
is taken from that certificate alone (orchestrator/authz.py, before a handler runs;
each handler receives the calling node's record); a node may speak only of workloads
assigned to it. Anything else is refused with PERMISSION_DENIED and recorded in the
audit log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from orchestrator import jointokens, metrics
from orchestrator.audit import AuditLog
from orchestrator.authz import NodeCall
from orchestrator.ca import CurrentAuthority
from orchestrator.errors import NotLeader
from orchestrator.liveness import Tracker
from orchestrator.nodecerts import NodeCertificates
from orchestrator.refusals import RefusalTally, source_host
from orchestrator.state import ClusterState
from orchestrator.streams import NodeStreams
from orchestrator.tasks import Completion, TaskBook, TaskRefused
from orchestrator.trustpush import TrustPush
from pki.errors import CapstanError
from pki.identity import canonical_host, validate_name
from protos import control_pb2, gateway_pb2, gateway_pb2_grpc, node_pb2

log = logging.getLogger("capstan.orchestrator")

MAX_REPORTED_CONTAINERS = 10_000


class Gateway(gateway_pb2_grpc.NodeGatewayServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        state: ClusterState,
        tracker: Tracker,
        audit: AuditLog,
        ca: CurrentAuthority,
        certs: NodeCertificates,
        streams: NodeStreams,
        trust: TrustPush,
        issuer: str,
        gateway_address: str,
        heartbeat: float,
        clock: Callable[[], float],
        tasks: TaskBook,
        on_completion: Callable[[Completion], Awaitable[None]],
        assignments: Callable[[str], gateway_pb2.Assignments],
        on_report: Callable[[], None] = lambda: None,
        reserved_sans: tuple[str, ...] = (),
        epoch: Callable[[], int] = lambda: 0,
        peer_addresses: Callable[[], list[str]] = lambda: [],
        pool_policy: Callable[[str], node_pb2.SandboxPolicy] = lambda _: node_pb2.SandboxPolicy(),
    ) -> None:
        self._pool_policy = pool_policy
        # Compared in one spelling (pki.identity.canonical_host): `VM` is `vm`.
        # localhost is everyone's own name: no node certificate may carry it.
        self.join_refusals = RefusalTally(audit, event="join.refused", clock=clock)
        self._reserved_sans = frozenset(canonical_host(a) for a in (*reserved_sans, "localhost"))
        self._tasks = tasks
        self._on_completion = on_completion
        self._assignments = assignments
        self._state = state
        self._tracker = tracker
        self._audit = audit
        self._ca = ca
        self._certs = certs
        self._streams = streams
        self._trust = trust
        self._issuer = issuer
        self.gateway_address = gateway_address
        self._heartbeat = heartbeat
        self._clock = clock
        self._on_report = on_report
        # The leadership epoch to stamp on pull-mode assignments; raises NotLeader
        # once this orchestrator no longer leads.
        self.epoch = epoch
        # Every orchestrator's NodeGateway address (HA), told to joining nodes.
        self.peer_addresses = peer_addresses

    # -- join ---------------------------------------------------------------------

    async def Join(
        self, request: gateway_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        peer = context.peer()
        source = source_host(peer)
        refusals = self.join_refusals
        # Unauthenticated: a source whose joins keep being refused is refused at once,
        # before parsing or any store read (orchestrator/refusals.py).
        if not refusals.admit(source):
            await refusals.refused(source, "rate limited")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many refused joins from this address; retry later",
            )
        # The request is checked before the token is consumed: a typo in the
        # addresses must not burn a one-time token.
        try:
            if request.name:
                validate_name(request.name, "node name")
            # Every name in its one spelling before any comparison, and the same
            # spelling is what the certificate will carry.
            ips = list(
                dict.fromkeys(str(ipaddress.ip_address(canonical_host(i))) for i in request.ips)
            )
            dns = list(dict.fromkeys(canonical_host(d) for d in request.dns))
            host, _, port = request.address.rpartition(":")
            if not port.isdigit() or not host or canonical_host(host) not in set(ips) | set(dns):
                raise CapstanError(
                    f"address {request.address!r} must be HOST:PORT with HOST among the node's SANs"
                )
            # A node certificate naming the orchestrator's names or addresses, or
            # localhost, is refused even though clients check identities: such a name
            # would still fool any outside tool that checks host names only.
            taken = self._reserved_sans & (set(ips) | set(dns))
            if taken:
                raise CapstanError(f"SANs {sorted(taken)} are reserved (the orchestrator's)")
            if request.seal_key and len(request.seal_key) != 32:
                raise CapstanError("seal_key: an X25519 public key is 32 bytes")
        except (CapstanError, ValueError) as exc:
            await refusals.refused(source, f"invalid request: {exc}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            grant = await jointokens.consume(
                self._state.store, request.join_token, ca_pin=self._ca.ca_pin, now=self._clock()
            )
        except jointokens.JoinRefused as exc:
            # Audited in aggregate per source and window, never one entry per attempt.
            await refusals.refused(source, str(exc))
            log.debug("join refused from %s: %s", peer, exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "join refused")
        name = grant.name or request.name
        if not name:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "name: required (the token binds none)"
            )
        async with self._state.lock:
            existing = self._state.node(name)
            if existing is not None and not grant.rejoin:
                await self._audit.record(
                    "join.refused", peer=peer, node=name, reason="name already joined"
                )
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "join refused")
            try:
                signed = await self._certs.sign(request.csr_pem, name, dns=dns, ips=ips)
            except CapstanError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem: {exc}")
            previous = existing.cert_serial if existing is not None else ""
            record = existing or control_pb2.NodeRecord()
            record.name = name
            record.id = signed.issued.identity.uri
            record.address = request.address
            # Node facts come from the admin's join token, never from the node: a node
            # choosing its own labels or capacity could attract workloads (regression).
            record.cpus, record.memory = capped_capacity(request, grant)
            if grant.labels or existing is None:
                record.labels.clear()
                record.labels.update(grant.labels)
            record.pool = grant.pool
            record.runtime = request.runtime
            record.policy.CopyFrom(
                node_pb2.SandboxPolicy.FromString(bytes.fromhex(grant.policy))
                if grant.policy
                else self._pool_policy(grant.pool)
            )
            # The node's own word: a lying node only loosens what it runs itself.
            record.isolation = request.isolation
            record.mode = request.mode or "push"
            record.seal_key = request.seal_key
            record.state = "suspect"
            record.joined_at = self._clock()
            record.cert_expiry = signed.issued.not_after
            record.cert_serial = f"{signed.issued.serial:X}"
            record.issuer_ca = signed.issuer
            del record.dns[:]
            record.dns.extend(dns)
            del record.ips[:]
            record.ips.extend(ips)
            await self._state.save_node(record)
        if previous:
            # A rejoin replaces the certificate: the old one goes after the grace.
            self._certs.supersede(int(previous, 16))
        await self._audit.record(
            "node.joined",
            node=name,
            id=record.id,
            address=request.address,
            pool=grant.pool,
            peer=peer,
        )
        await self._audit.record("cert.issued", kind="node", name=name, serial=record.cert_serial)
        return gateway_pb2.JoinResponse(
            node_id=record.id,
            name=name,
            certificate_chain=signed.issued.chain_pem,
            trust_bundle=signed.trust_bundle,
            jwks=self._trust.jwks(),
            issuers=[self._issuer],
            deny_list=self._trust.deny_list(),
            heartbeat_interval=self._heartbeat,
            gateway_address=self.gateway_address,
            gateway_addresses=self.peer_addresses(),
            policy=record.policy,
        )

    # -- report ---------------------------------------------------------------------

    async def Report(
        self,
        request_iterator: AsyncIterator[gateway_pb2.NodeStatus],
        context: grpc.aio.ServicerContext,
        call: NodeCall,
    ) -> AsyncIterator[gateway_pb2.GatewayMessage]:
        name = call.node.name
        self._tracker.identify(name, call.caller.thumbprint)
        outbox = self._streams.open(name, self._trust.update())

        async def read() -> None:
            try:
                async for status in request_iterator:
                    self._streams.acknowledge(name, status.trust_digest)
                    fence, refused, changed = self._attribute(name, status)
                    if refused:
                        await self._audit.record(
                            "report.refused",
                            node=name,
                            workloads=sorted(refused),
                            reason="not assigned to this node",
                        )
                        log.warning(
                            "node %s reported workloads of others: %s", name, sorted(refused)
                        )
                        outbox.put_nowait(
                            PermissionError(
                                f"workloads not assigned to this node: {sorted(refused)}"
                            )
                        )
                        return
                    if fence:
                        outbox.put_nowait(
                            gateway_pb2.GatewayMessage(sent_at=self._clock(), fence=sorted(fence))
                        )
                    if changed:
                        # Only a report that changes something is worth a reconcile
                        # pass: at 1 Hz from every node, waking on each would keep the
                        # reconciler running back to back.
                        self._on_report()
                outbox.put_nowait(None)
            except Exception as exc:
                outbox.put_nowait(exc)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await outbox.get()
                if item is None:
                    return
                if isinstance(item, PermissionError):
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(item))
                if isinstance(item, BaseException):
                    return
                yield item
        finally:
            reader.cancel()
            self._streams.close(name, outbox)

    def _attribute(
        self, name: str, status: gateway_pb2.NodeStatus
    ) -> tuple[set[str], set[str], bool]:
        """Accept only containers of workloads assigned to this node. Copies of workloads
        that moved away are fenced; claims on any other node's workload are refused.
        The third value: whether the accepted report changed what the node runs."""
        if len(status.containers) > MAX_REPORTED_CONTAINERS:
            return set(), {"(too many containers)"}, False
        fence: set[str] = set()
        refused: set[str] = set()
        accepted: list[node_pb2.ContainerStatus] = []
        for c in status.containers:
            # Looks, not copies: this runs for every container of every heartbeat.
            w = self._state.peek_workload(c.workload_id)
            if w is None:
                fence.add(c.name)
            elif w.node != name:
                if name in w.previous_nodes:
                    fence.add(c.name)
                else:
                    refused.add(c.workload_id)
            else:
                accepted.append(c)
        if refused:
            return fence, refused, False
        changed = self._tracker.seen(name, status, accepted)
        metrics.heartbeat_counter(name).inc()
        return fence, refused, changed

    async def Renew(
        self, request: gateway_pb2.RenewRequest, context: grpc.aio.ServicerContext, call: NodeCall
    ) -> Any:
        renewed = await self._certs.renew(call.node, call.caller, request, context)
        self._streams.renewal_done(call.node.name)  # what a renew_now asked for
        return renewed

    # -- tasks and pull mode ------------------------------------------------------------

    async def Complete(
        self, request: gateway_pb2.TaskResult, context: grpc.aio.ServicerContext, call: NodeCall
    ) -> Any:
        node = call.node
        try:
            done = await self._tasks.complete(
                node.name, request.request_id, ok=request.ok, message=request.message
            )
        except TaskRefused as exc:
            await self._audit.record(
                "complete.refused",
                node=node.name,
                request_id=request.request_id[:64],
                reason=str(exc),
            )
            log.warning("completion refused from %s: %s", node.name, exc)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "no such outstanding task for this node"
            )
        await self._audit.record(
            "task.completed",
            node=node.name,
            request_id=done.task.request_id,
            kind=done.task.kind,
            res=done.task.resource,
            ok=done.ok,
            message=done.message,
        )
        await self._on_completion(done)
        return gateway_pb2.TaskAck()

    async def Watch(
        self, request: gateway_pb2.WatchRequest, context: grpc.aio.ServicerContext, call: NodeCall
    ) -> AsyncIterator[gateway_pb2.Assignments]:
        node = call.node
        last = b""
        while True:
            try:
                epoch = self.epoch()
            except NotLeader:
                return  # deposed: the node reconnects and is sent to the leader
            current = self._assignments(node.name)
            current.epoch = epoch
            current.revision = self._state.revision
            data = current.SerializeToString(deterministic=True)
            if data != last:
                last = data
                yield current
            await asyncio.sleep(self._heartbeat / 2)


def capped_capacity(
    request: gateway_pb2.JoinRequest, grant: jointokens.JoinGrant
) -> tuple[float, int]:
    """What a joining node may offer: its claim, never more than the admin recorded.

    A claim that is not a finite, non-negative number counts as nothing."""
    cpus = request.cpus if math.isfinite(request.cpus) and request.cpus > 0 else 0.0
    memory = max(0, request.memory)
    if grant.cpus > 0:
        cpus = min(cpus, grant.cpus)
    if grant.memory > 0:
        memory = min(memory, grant.memory)
    return cpus, memory
