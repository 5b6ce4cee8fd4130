"""Authorization of every NodeService call, in one interceptor.

Order of checks: the caller's certificate (present, not revoked, a Capstan identity of
this trust domain), then the capability token against exactly this call. Nothing of
the handler runs before both pass. A refusal tells the caller the status and a coarse
reason; the precise reason goes to the log and to the node's audit trail.

Everything is decided at call start, before any thread waits for a message: a client
stream's token is checked (signature, lifetime, audience, caller, operation, unused)
before its first message is read; that message, which names the resource, must then
arrive within ``FIRST_MESSAGE_WITHIN`` seconds. Each peer may hold at most
``streams_per_peer`` streams at once, and every stream is held by its grant
(protos.wire.grants): it ends when its token expires (logs follow) or its peer's
certificate is revoked or expires.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from node import metrics
from node.audit import NodeAudit
from pki.errors import TokenError, TokenNotPermitted
from pki.peers import Peer, PeerRefused, authenticate
from pki.tokens import Capability, TokenVerifier, request_digest
from protos import ops
from protos.wire.grants import Grant, Reaper

log = logging.getLogger("capstan.node")

_BEARER = "bearer "

#: Seconds a client stream may take to send the message that names its resource.
FIRST_MESSAGE_WITHIN = 5.0
#: Streams one peer (one SPIFFE identity) may hold at once.
STREAMS_PER_PEER = 8
#: Operations whose stream lasts as long as the caller wants (``logs -f``): they end
#: with their token. Transfers (exports, imports) end with their data, or when the
#: peer's certificate is revoked.
HELD_BY_TOKEN = frozenset({"container.logs", "container.exec"})


class Refused(Exception):
    """Internal signal: refuse the call with ``code`` and a coarse ``reason``."""

    def __init__(self, code: grpc.StatusCode, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.reason = reason
        self.detail = detail
        self.caller = ""  # the certificate's identity, once known


class EpochFloor:
    """Highest orchestrator epoch seen in an accepted token; older epochs are refused."""

    def __init__(self) -> None:
        self.value = 0

    def observe(self, epoch: int) -> None:
        self.value = max(self.value, epoch)


class Authorizer:
    """Checks one call: peer certificate, then token. Raises ``Refused``."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        trust_domain: str,
        revoked: Callable[[], frozenset[int]],
        audit: NodeAudit,
        clock: Callable[[], float],
        epochs: EpochFloor | None = None,
    ) -> None:
        self._verifier = verifier
        self._trust_domain = trust_domain
        self._revoked = revoked
        self._audit = audit
        self._clock = clock
        self.epochs = epochs or EpochFloor()

    def now(self) -> float:
        return self._clock()

    def peer(self, context: grpc.ServicerContext) -> Peer:
        try:
            return authenticate(
                context.auth_context().get("x509_pem_cert") or [],
                trust_domain=self._trust_domain,
                revoked=self._revoked,
            )
        except PeerRefused as exc:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, exc.reason, exc.detail) from None

    def authorize(
        self, operation: ops.Operation, request: Any, context: grpc.ServicerContext
    ) -> Capability:
        peer = self.peer(context)
        return self.verify(operation, request, context, peer)

    def verify(
        self,
        operation: ops.Operation,
        request: Any,
        context: grpc.ServicerContext,
        peer: Peer,
    ) -> Capability:
        """The token against this call, ``request`` naming its resource; consumes it."""
        token = self._token(context, peer)
        try:
            res = operation.resource(request)
            req = request_digest(ops.request_fields(request)) if operation.binds_request else None
            cap = self._verifier.verify(
                token,
                peer_id=peer.uri,
                peer_thumbprint=peer.thumbprint,
                op=operation.op,
                res=res,
                req=req,
                min_epoch=self.epochs.value,
                now=self._clock(),
            )
        except TokenError as exc:
            metrics.verification_counter(exc.reason).inc()
            raise _refusal(exc, peer) from None
        metrics.verification_counter("ok").inc()
        metrics.call_counter(operation.method).inc()
        self.epochs.observe(cap.epoch)
        return cap

    def precheck(self, operation: ops.Operation, context: grpc.ServicerContext) -> Peer:
        """Everything but the resource, at the start of a client stream (nothing read yet)."""
        peer = self.peer(context)
        token = self._token(context, peer)
        try:
            self._verifier.precheck(
                token,
                peer_id=peer.uri,
                peer_thumbprint=peer.thumbprint,
                op=operation.op,
                min_epoch=self.epochs.value,
                now=self._clock(),
            )
        except TokenError as exc:
            raise _refusal(exc, peer) from None
        return peer

    def _token(self, context: grpc.ServicerContext, peer: Peer) -> str:
        try:
            return _bearer(context.invocation_metadata())
        except Refused as exc:
            exc.caller = peer.uri
            raise

    def refuse(
        self, exc: Refused, method: str, context: grpc.ServicerContext, peer: str
    ) -> NoReturn:
        who = exc.caller or peer
        metrics.REFUSALS.labels(method=method.rpartition("/")[2], reason=exc.reason).inc()
        log.warning("refused %s from %s: %s (%s)", method, who, exc.reason, exc.detail)
        self._audit.record(
            "refused",
            at=self._clock(),
            method=method,
            caller=exc.caller,
            peer=peer,
            code=exc.code.name,
            reason=exc.reason,
            detail=exc.detail,
        )
        context.abort(exc.code, exc.reason)
        raise AssertionError("context.abort returned")  # it always raises


def _refusal(exc: TokenError, peer: Peer) -> Refused:
    code = (
        grpc.StatusCode.PERMISSION_DENIED
        if isinstance(exc, TokenNotPermitted)
        else grpc.StatusCode.UNAUTHENTICATED
    )
    refusal = Refused(code, exc.reason, exc.detail)
    refusal.caller = peer.uri
    return refusal


class PeerLimits:
    """Streams in flight per peer identity: one certificate cannot hold every thread."""

    def __init__(self, streams_per_peer: int = STREAMS_PER_PEER) -> None:
        self.streams_per_peer = streams_per_peer
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, peer: Peer) -> Callable[[], None]:
        """Count one stream of ``peer``; return its release (call once). Raises Refused."""
        with self._lock:
            n = self._open.get(peer.uri, 0)
            if n >= self.streams_per_peer:
                refusal = Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many streams",
                    f"{peer.uri} already holds {n} streams",
                )
                refusal.caller = peer.uri
                raise refusal
            self._open[peer.uri] = n + 1
        done = threading.Event()

        def release() -> None:
            if done.is_set():
                return
            done.set()
            with self._lock:
                left = self._open.get(peer.uri, 1) - 1
                if left > 0:
                    self._open[peer.uri] = left
                else:
                    self._open.pop(peer.uri, None)

        return release

    def open(self, identity: str) -> int:
        with self._lock:
            return self._open.get(identity, 0)


def _bearer(metadata: Any) -> str:
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if len(values) != 1:
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "invalid",
            "missing token" if not values else "several authorization headers",
        )
    value = values[0]
    if not isinstance(value, str) or not value.lower().startswith(_BEARER):
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED, "invalid", "authorization is not a Bearer token"
        )
    return value[len(_BEARER) :].strip()


def _peer_label(context: grpc.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:
        return "?"


class AuthorizationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps every NodeService handler so the token check runs before the handler body.

    Methods of NodeService missing from the operation table are refused outright
    (fail closed). Health and reflection need no token but still a valid,
    unrevoked certificate of this trust domain; their streams count against the
    peer's limit and end with its certificate.
    """

    def __init__(
        self, authorizer: Authorizer, *, reaper: Reaper, limits: PeerLimits | None = None
    ) -> None:
        self._gate = _Gate(authorizer, reaper, limits or PeerLimits())
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        # The server hands out one handler object per method: wrap each once, not
        # on every call (this sits on the hot path of every RPC).
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        operation = ops.BY_METHOD.get(method)
        if operation is None:
            if method.startswith(f"/{ops.SERVICE}/"):
                wrapped = _refuse_all(self._gate.authz, method, handler)
            else:
                wrapped = _peer_checked(self._gate, method, handler)
        else:
            wrapped = _token_checked(self._gate, operation, method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


@dataclass(frozen=True)
class _Gate:
    authz: Authorizer
    reaper: Reaper
    limits: PeerLimits

    def open_stream(self, context: grpc.ServicerContext, peer: Peer, expires_at: float) -> None:
        """Count the stream against ``peer``'s limit and hold it by its grant until it ends."""
        release = self.limits.acquire(peer)
        _when_done(context, release)
        lease = self.reaper.hold(context, Grant(expires_at, peer.serial))
        _when_done(context, lease.release)

    def hold(self, context: grpc.ServicerContext, peer: Peer, expires_at: float) -> None:
        """Also hold an open stream by a shorter grant (its token's end)."""
        lease = self.reaper.hold(context, Grant(expires_at, peer.serial))
        _when_done(context, lease.release)

    def first_message(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        """The first message of a client stream, or the call ends (the reaper aborts it)."""
        wait = self.reaper.hold(
            context,
            Grant(
                self.authz.now() + FIRST_MESSAGE_WITHIN,
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                expired="no first message in time",
            ),
        )
        try:
            first = next(request_iterator, None)
        except grpc.RpcError:
            first = None
        finally:
            wait.release()
        if wait.ended.is_set():
            context.abort(wait.code or grpc.StatusCode.DEADLINE_EXCEEDED, wait.reason)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty request stream")
        return first


def _when_done(context: grpc.ServicerContext, fn: Callable[[], None]) -> None:
    if not context.add_callback(fn):
        fn()  # the call is already over


def _rebuild(handler: Any, **fns: Any) -> Any:
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
        fn = fns["stream_stream"]
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
        fn = fns["stream_unary"]
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
        fn = fns["unary_stream"]
    else:
        make = grpc.unary_unary_rpc_method_handler
        fn = fns["unary_unary"]
    return make(
        fn,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _inner(handler: Any) -> Any:
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


def _token_checked(gate: _Gate, operation: ops.Operation, method: str, handler: Any) -> Any:
    inner = _inner(handler)
    authz = gate.authz
    held_by_token = operation.op in HELD_BY_TOKEN

    if handler.request_streaming:

        def client_stream(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
            # Token checked before anything is read; the first message then names the
            # resource and consumes the token. No data is written before both pass.
            try:
                peer = authz.precheck(operation, context)
                gate.open_stream(context, peer, peer.not_after)
            except Refused as exc:
                authz.refuse(exc, method, context, _peer_label(context))
            first = gate.first_message(request_iterator, context)
            try:
                cap = authz.verify(operation, first, context, peer)
                if held_by_token:
                    # An exec session lasts as long as its token, not its certificate.
                    gate.hold(context, peer, min(cap.exp, peer.not_after))
            except Refused as exc:
                authz.refuse(exc, method, context, _peer_label(context))
            return inner(itertools.chain([first], request_iterator), context)

        return _rebuild(handler, stream_unary=client_stream, stream_stream=client_stream)

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            authz.authorize(operation, request, context)
        except Refused as exc:
            authz.refuse(exc, method, context, _peer_label(context))
        return inner(request, context)

    def server_stream(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            peer = authz.peer(context)
            cap = authz.verify(operation, request, context, peer)
            end = min(cap.exp, peer.not_after) if held_by_token else peer.not_after
            gate.open_stream(context, peer, end)
        except Refused as exc:
            authz.refuse(exc, method, context, _peer_label(context))
        return inner(request, context)

    return _rebuild(handler, unary_unary=unary, unary_stream=server_stream)


def _peer_checked(gate: _Gate, method: str, handler: Any) -> Any:
    inner = _inner(handler)
    authz = gate.authz
    streaming = handler.request_streaming or handler.response_streaming

    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            peer = authz.peer(context)
            if streaming:
                # Health Watch and reflection hold a thread each: counted per peer,
                # and never longer than the peer's certificate is good.
                gate.open_stream(context, peer, peer.not_after)
        except Refused as exc:
            authz.refuse(exc, method, context, _peer_label(context))
        return inner(request, context)

    return _rebuild(
        handler,
        unary_unary=wrapped,
        unary_stream=wrapped,
        stream_unary=wrapped,
        stream_stream=wrapped,
    )


def _refuse_all(authz: Authorizer, method: str, handler: Any) -> Any:
    def refused(_request: Any, context: grpc.ServicerContext) -> Any:
        authz.refuse(
            Refused(
                grpc.StatusCode.PERMISSION_DENIED, "unknown operation", f"{method} has no operation"
            ),
            method,
            context,
            _peer_label(context),
        )

    return _rebuild(
        handler,
        unary_unary=refused,
        unary_stream=refused,
        stream_unary=refused,
        stream_stream=refused,
    )
