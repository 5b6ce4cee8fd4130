"""Authorization of every orchestrator call (ControlService and NodeGateway), in one
interceptor with one table.

For each method the table says who may call it (a joined node, or users by role:
admin, viewer, tenant) and how the tenant or node it acts on is derived from the
request. A method missing from the table is refused (fail closed). The check runs at
call start, before the handler runs and before it waits for any message; the handler
receives the authenticated caller as an argument and cannot run without one.

Identity and role come only from the verified peer certificate (``pki.peers``, the
same implementation the node uses); nothing in a request can change them. A refusal
tells the caller its status and a short reason; the precise reason goes to the log
and the audit trail.

Every response stream (a node's Report and Watch, a reviewer's AuditTail follow)
counts against its peer's limit of concurrent streams and is held by the peer's
certificate (protos.wire.grants): it ends within END_WITHIN seconds of that
certificate being revoked or expiring.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc
import grpc.aio

from orchestrator import metrics
from orchestrator.refusals import source_host
from pki.identity import Kind
from pki.peers import Peer, PeerRefused, authenticate
from protos import control_pb2
from protos.wire.grants import Bell, Grant, guarded

log = logging.getLogger("capstan.orchestrator")

__all__ = [
    "CONTROL",
    "DEFAULT_TENANT",
    "GATEWAY",
    "PUBLIC_SERVICES",
    "TABLE",
    "Access",
    "AuthorizationInterceptor",
    "Caller",
    "NodeCall",
    "Rule",
    "UserCall",
    "may",
]

CONTROL = "capstan.v1.ControlService"
GATEWAY = "capstan.v1.NodeGateway"
SECRETS = "capstan.v1.SecretService"
#: Services outside the table that anyone reaching the port may call (no certificate
#: needed: the join port has none). Anything else unknown is refused.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

#: The tenant of a user who names none and is confined to none.
DEFAULT_TENANT = "default"
#: Response streams one peer (one SPIFFE identity) may hold at once.
STREAMS_PER_PEER = 8

Caller = Peer


class Access(StrEnum):
    READ = "read"  # admin, viewer, tenant (own tenant only)
    WRITE = "write"  # admin, tenant (own tenant only)
    ADMIN = "admin"  # admin only
    REVIEW = "review"  # admin, viewer: what spans every tenant (audit log, PKI status)
    NODE = "node"  # a joined, unrevoked node, for itself only
    JOIN = "join"  # anyone: the one-time join token in the request is the credential


def may(caller: Peer, access: Access, tenant: str | None = None) -> bool:
    """Whether a user ``caller`` has ``access`` (to ``tenant``, when one is named)."""
    if caller.kind is not Kind.USER or not caller.role:
        return False
    if caller.role == "admin":
        return access in (Access.READ, Access.WRITE, Access.ADMIN, Access.REVIEW)
    if caller.role == "viewer":
        return access in (Access.READ, Access.REVIEW)
    own = caller.tenant
    if own is None or access not in (Access.READ, Access.WRITE):
        return False
    return tenant is None or tenant == own


@dataclass(frozen=True)
class Rule:
    """Who may call one method, and what it acts on."""

    access: Access
    #: request -> the tenant it names ("" = the caller's own, else DEFAULT_TENANT);
    #: the caller must have ``access`` to that tenant.
    tenant: Callable[[Any], str] | None = None
    #: request -> the node it names ("" = the caller itself); must be the caller.
    node: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class UserCall:
    """An authorized ControlService call: who calls, and the tenant it acts on where
    the method's rule derives one (else "": the handler shows only what ``may`` allows)."""

    caller: Peer
    tenant: str = ""


@dataclass(frozen=True)
class NodeCall:
    """An authorized NodeGateway call: the node's certificate and its record."""

    caller: Peer
    node: control_pb2.NodeRecord


def _tenant(request: Any) -> str:
    return str(request.tenant)


def _app_tenant(request: Any) -> str:
    return str(request.app.tenant)


def _node(request: Any) -> str:
    return str(request.node)


TABLE: Mapping[str, Rule] = {
    **{
        f"/{CONTROL}/{method}": rule
        for method, rule in {
            "Apply": Rule(Access.WRITE, tenant=_app_tenant),
            "DeleteApp": Rule(Access.WRITE, tenant=_tenant),
            "GetApp": Rule(Access.READ, tenant=_tenant),
            "ListApps": Rule(Access.READ),
            "ListWorkloads": Rule(Access.READ),
            "ListNodes": Rule(Access.READ),
            "Cordon": Rule(Access.ADMIN),
            "Uncordon": Rule(Access.ADMIN),
            "Drain": Rule(Access.ADMIN),
            "Logs": Rule(Access.READ, tenant=_tenant),
            "Exec": Rule(Access.WRITE, tenant=_tenant),
            "CreateJoinToken": Rule(Access.ADMIN),
            "AuditTail": Rule(Access.REVIEW),
            "AuditVerify": Rule(Access.REVIEW),
            "WhoCan": Rule(Access.REVIEW),
            "Rebalance": Rule(Access.ADMIN),
            "RevokeNode": Rule(Access.ADMIN),
            "PkiStatus": Rule(Access.REVIEW),
            "Version": Rule(Access.READ),
            "ListOrchestrators": Rule(Access.READ),
            "SeedImage": Rule(Access.ADMIN),
            "SetPoolPolicy": Rule(Access.ADMIN),
            "ListPoolPolicies": Rule(Access.READ),
            "SetQuota": Rule(Access.ADMIN),
            "DescribeTenant": Rule(Access.READ, tenant=_tenant),
        }.items()
    },
    **{
        f"/{SECRETS}/{method}": rule
        for method, rule in {
            "CreateSecret": Rule(Access.WRITE, tenant=_tenant),
            "RotateSecret": Rule(Access.WRITE, tenant=_tenant),
            "DeleteSecret": Rule(Access.WRITE, tenant=_tenant),
            "DescribeSecret": Rule(Access.READ, tenant=_tenant),
            "ListSecrets": Rule(Access.READ),
        }.items()
    },
    **{
        f"/{GATEWAY}/{method}": rule
        for method, rule in {
            "Join": Rule(Access.JOIN),
            "Report": Rule(Access.NODE),
            "Complete": Rule(Access.NODE),
            "Watch": Rule(Access.NODE, node=_node),
            "Renew": Rule(Access.NODE),
        }.items()
    },
}


class _Refused(Exception):
    """Internal signal: refuse with ``code``; ``message`` for the caller, ``fields``
    for the audit event."""

    def __init__(
        self, code: grpc.StatusCode, message: str, event: str, why: str = "", **fields: object
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event = event
        self.why = why or message  # a coarse reason: the refusals metric's label
        self.fields = fields


class Gate:
    """Decides one call against its rule; raises ``_Refused``."""

    def __init__(
        self,
        *,
        trust_domain: str,
        revoked: Callable[[], Collection[int]],
        nodes: Callable[[str], control_pb2.NodeRecord | None],
        record: Callable[..., Awaitable[object]],
        bell: Bell | None = None,
        table: Mapping[str, Rule] = TABLE,
        clock: Callable[[], float] = time.time,
        streams_per_peer: int = STREAMS_PER_PEER,
    ) -> None:
        self._trust_domain = trust_domain
        self._revoked = revoked
        self._nodes = nodes
        self._record = record  # the audit log's: each refusal is recorded
        # Rung on every revocation (by the revocation source): held streams end at once.
        self.bell = bell
        self.table = table
        self.clock = clock
        self.streams_per_peer = streams_per_peer
        self._streams: dict[str, int] = {}
        self.public_streams: dict[str, int] = {}  # per source address, no certificate

    def revoked(self) -> Collection[int]:
        return self._revoked()

    def open_stream(self, caller: Peer, method: str) -> Callable[[], None]:
        """Count one stream of ``caller``; return its release. Raises ``_Refused``."""
        n = self._streams.get(caller.uri, 0)
        if n >= self.streams_per_peer:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many streams",
                "stream.refused",
                peer=caller.uri,
                method=method,
                reason=f"already {n} streams open",
            )
        self._streams[caller.uri] = n + 1
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            left = self._streams.get(caller.uri, 1) - 1
            if left > 0:
                self._streams[caller.uri] = left
            else:
                self._streams.pop(caller.uri, None)

        return release

    def open_streams(self, uri: str) -> int:
        return self._streams.get(uri, 0)

    def _peer(self, context: grpc.aio.ServicerContext, event: str, name: str) -> Peer:
        try:
            return authenticate(
                context.auth_context().get("x509_pem_cert") or [],
                trust_domain=self._trust_domain,
                revoked=self._revoked,
            )
        except PeerRefused as exc:
            fields: dict[str, object] = {"peer": context.peer(), "reason": exc.detail}
            if event == "control.refused":
                fields["method"] = name
            raise _Refused(
                grpc.StatusCode.UNAUTHENTICATED, exc.reason, event, exc.reason, **fields
            ) from None

    def user_call(
        self, name: str, rule: Rule, request: Any, context: grpc.aio.ServicerContext
    ) -> UserCall:
        event = "control.refused"
        caller = self._peer(context, event, name)

        def denied(message: str, why: str) -> _Refused:
            return _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                message,
                event,
                why,
                method=name,
                peer=context.peer(),
                reason=message,
            )

        if not may(caller, rule.access):
            raise denied(f"{caller.uri} (role {caller.role}) may not {name}", "role")
        if rule.tenant is None:
            return UserCall(caller)
        tenant = rule.tenant(request) or caller.tenant or DEFAULT_TENANT
        if not may(caller, rule.access, tenant):
            raise denied(f"{caller.uri} may not touch tenant {tenant}", "tenant")
        return UserCall(caller, tenant)

    def node_call(
        self, name: str, rule: Rule, request: Any, context: grpc.aio.ServicerContext
    ) -> NodeCall:
        event = f"{name.lower()}.refused"
        caller = self._peer(context, event, name)
        node = self._nodes(caller.name) if caller.kind is Kind.NODE else None
        if node is None or node.id != caller.uri or node.state == "revoked":
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "not a joined node",
                event,
                peer=caller.uri,
                reason="not a joined node",
            )
        named = rule.node(request) if rule.node is not None else ""
        if named and named != node.name:
            log.warning("node %s asked to %s for %s", node.name, name, named[:128])
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a node may {name.lower()} only its own assignments",
                event,
                "not its own",
                node=node.name,
                asked_for=named[:128],
            )
        return NodeCall(caller, node)

    async def authenticate(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Abort the call unless its peer certificate is a Capstan identity of this trust
        domain, not revoked: what a follower checks before it names the leader (a revoked
        caller learns nothing, not even where the leader is). Join carries no
        certificate and passes. Logged and counted, not audited: a follower writes
        nothing to the store."""
        rule = self.table.get(method)
        if rule is not None and rule.access is Access.JOIN:
            return
        try:
            self._peer(context, "follower.refused", method.rpartition("/")[2])
        except _Refused as exc:
            await self.refuse(exc, method, context, audit=False)

    async def refuse(
        self,
        exc: _Refused,
        method: str,
        context: grpc.aio.ServicerContext,
        *,
        audit: bool = True,
    ) -> None:
        """Count, log and (``audit``) record the refusal, then end the call with it."""
        metrics.REFUSALS.labels(method=method.rpartition("/")[2], reason=exc.why).inc()
        log.warning("refused %s: %s (%s)", method, exc.message, exc.fields.get("reason", ""))
        if audit:
            await self._record(exc.event, **exc.fields)
        await context.abort(exc.code, exc.message)


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler of the two services so its rule is checked first.

    Handlers of table methods take a third argument, the ``UserCall`` or ``NodeCall``
    this interceptor built; without the interceptor they cannot be called at all.
    """

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        # One handler object per method: wrap each once, not on every call.
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        rule = self._gate.table.get(method)
        service = method.lstrip("/").partition("/")[0]
        if rule is None:
            if service not in PUBLIC_SERVICES:
                wrapped = _refuse_all(self._gate, method, handler)
            elif handler.response_streaming:
                wrapped = _public_stream(self._gate, method, handler)
            else:
                wrapped = handler
        elif rule.access is Access.JOIN:
            wrapped = handler
        else:
            wrapped = _checked(self._gate, method, rule, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _authorize(
    gate: Gate, method: str, rule: Rule, request: Any, context: grpc.aio.ServicerContext
) -> UserCall | NodeCall:
    name = method.rpartition("/")[2]
    if rule.access is Access.NODE:
        return gate.node_call(name, rule, request, context)
    return gate.user_call(name, rule, request, context)


def _checked(gate: Gate, method: str, rule: Rule, handler: Any) -> Any:
    inner = _inner(handler)
    if handler.request_streaming and (rule.tenant or rule.node):
        # A request stream has no request at call start to derive them from.
        raise TypeError(f"{method}: a streaming request cannot name a tenant or node")

    name = method.rpartition("/")[2]
    counted = metrics.CALLS.labels(method=name)  # once per method, not per call

    async def who(request: Any, context: grpc.aio.ServicerContext) -> UserCall | NodeCall:
        try:
            call = _authorize(
                gate, method, rule, None if handler.request_streaming else request, context
            )
            counted.inc()
            return call
        except _Refused as exc:
            await gate.refuse(exc, method, context)
            raise AssertionError("abort returned") from None  # pragma: no cover

    if handler.response_streaming:

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = await who(request, context)
            peer = call.caller
            try:
                release = gate.open_stream(peer, method)
            except _Refused as exc:
                await gate.refuse(exc, method, context)
                raise AssertionError("abort returned") from None  # pragma: no cover
            try:
                async for item in guarded(
                    inner(request, context, call),
                    context=context,
                    grant=Grant(peer.not_after, peer.serial),
                    clock=gate.clock,
                    revoked=gate.revoked,
                    bell=gate.bell,
                ):
                    yield item
            finally:
                release()

        return _rebuild(handler, streaming)

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = await who(request, context)
        return await inner(request, context, call)

    return _rebuild(handler, unary)


def _public_stream(gate: Gate, method: str, handler: Any) -> Any:
    """Health Watch and reflection need no certificate (the join port has none): their
    streams are counted per source address instead of per identity."""
    inner = _inner(handler)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        source = source_host(context.peer())
        if gate.public_streams.get(source, 0) >= gate.streams_per_peer:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams")
        gate.public_streams[source] = gate.public_streams.get(source, 0) + 1
        try:
            result = inner(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:  # grpc's aio health servicer writes through the context itself
                await result
        finally:
            left = gate.public_streams.get(source, 1) - 1
            if left > 0:
                gate.public_streams[source] = left
            else:
                gate.public_streams.pop(source, None)

    return _rebuild(handler, streaming)


def _refuse_all(gate: Gate, method: str, handler: Any) -> Any:
    event = "control.refused" if method.startswith(f"/{CONTROL}/") else "gateway.refused"

    async def refuse(context: grpc.aio.ServicerContext) -> None:
        await gate.refuse(
            _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "unknown method",
                event,
                method=method,
                peer=context.peer(),
                reason=f"{method} has no authorization rule",
            ),
            method,
            context,
        )

    if handler.response_streaming:

        async def streaming(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await refuse(context)
            yield  # pragma: no cover - abort raised

        return _rebuild(handler, streaming)

    async def unary(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse(context)

    return _rebuild(handler, unary)


def _inner(handler: Any) -> Any:
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


def _rebuild(handler: Any, fn: Any) -> Any:
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(
        fn,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
