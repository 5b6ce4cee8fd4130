"""Authorization of every NodeService call, in one interceptor.

Order of checks: the caller's certificate (present, not revoked, a Capstan identity of
this trust domain), then the capability token against exactly this call. Nothing of
the handler runs before both pass. A refusal tells the caller the status and a coarse
reason; the precise reason goes to the log and to the node's audit trail.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from node.audit import NodeAudit
from pki.errors import TokenError, TokenNotPermitted
from pki.peers import Peer, PeerRefused, authenticate
from pki.tokens import Capability, TokenVerifier, request_digest
from protos import ops

log = logging.getLogger("capstan.node")

_BEARER = "bearer "


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
        try:
            token = _bearer(context.invocation_metadata())
        except Refused as exc:
            exc.caller = peer.uri
            raise
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
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if isinstance(exc, TokenNotPermitted)
                else grpc.StatusCode.UNAUTHENTICATED
            )
            refusal = Refused(code, exc.reason, exc.detail)
            refusal.caller = peer.uri
            raise refusal from None
        self.epochs.observe(cap.epoch)
        return cap

    def refuse(self, exc: Refused, method: str, context: grpc.ServicerContext, peer: str) -> None:
        who = exc.caller or peer
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
    unrevoked certificate of this trust domain.
    """

    def __init__(self, authorizer: Authorizer) -> None:
        self._authz = authorizer
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
                wrapped = _refuse_all(self._authz, method, handler)
            else:
                wrapped = _peer_checked(self._authz, method, handler)
        else:
            wrapped = _token_checked(self._authz, operation, method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


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


def _token_checked(authz: Authorizer, operation: ops.Operation, method: str, handler: Any) -> Any:
    inner = _inner(handler)

    def check(request: Any, context: grpc.ServicerContext) -> None:
        try:
            authz.authorize(operation, request, context)
        except Refused as exc:
            authz.refuse(exc, method, context, _peer_label(context))

    if handler.request_streaming:

        def first_then_rest(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
            # The resource is named by the first message; nothing reaches the handler
            # (and no data is written) before that message's token check passes.
            first = next(request_iterator, None)
            if first is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty request stream")
            check(first, context)
            return inner(itertools.chain([first], request_iterator), context)

        return _rebuild(handler, stream_unary=first_then_rest, stream_stream=first_then_rest)

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        check(request, context)
        return inner(request, context)

    return _rebuild(handler, unary_unary=unary, unary_stream=unary)


def _peer_checked(authz: Authorizer, method: str, handler: Any) -> Any:
    inner = _inner(handler)

    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            authz.peer(context)
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
