"""What a follower answers: every ControlService and NodeGateway call is sent to the
leader, before any handler runs (a follower's memory may be stale and it may write
nothing). Health and reflection are served by every orchestrator.

The refusal is UNAVAILABLE (the caller should try elsewhere, and nothing was done)
with the leader's address in the trailing metadata ``capstan-leader`` when it is
known, so clients and nodes go straight to it; their one retry is safe because the
follower did nothing. Only a caller whose certificate authenticates (this trust
domain, not revoked) is told where the leader is; anyone else is refused
UNAUTHENTICATED, as the leader would refuse them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from protos import control_pb2, gateway_pb2, secrets_pb2
from protos.wire.leader import LEADER_METADATA, NOT_LEADER

_GATED = (
    "/" + control_pb2.DESCRIPTOR.services_by_name["ControlService"].full_name + "/",
    "/" + gateway_pb2.DESCRIPTOR.services_by_name["NodeGateway"].full_name + "/",
    "/" + secrets_pb2.DESCRIPTOR.services_by_name["SecretService"].full_name + "/",
)
# Read from the store by whichever orchestrator is asked: works while electing.
_EVERY_MEMBER = (_GATED[0] + "ListOrchestrators",)


class LeaderGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses gated calls unless ``leading()``; ``leader(method)`` names where to go
    (the leader's join address for Join, its mTLS address for the rest), and only to a
    caller ``authenticate(method, context)`` lets through (it aborts the call otherwise:
    a revoked certificate is not told where the leader is)."""

    def __init__(
        self,
        leading: Callable[[], bool],
        leader: Callable[[str], Awaitable[str]],
        authenticate: Callable[[str, grpc.aio.ServicerContext], Awaitable[None]],
    ) -> None:
        self._leading = leading
        self._leader = leader
        self._authenticate = authenticate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if (
            handler is None
            or not method.startswith(_GATED)
            or method in _EVERY_MEMBER
            or self._leading()
        ):
            return handler
        return _refusal(handler, method, await self._leader(method), self._authenticate)


def _refusal(
    handler: grpc.RpcMethodHandler,
    method: str,
    leader: str,
    authenticate: Callable[[str, grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    message = f"{NOT_LEADER}; the leader is {leader}" if leader else f"{NOT_LEADER}; no leader yet"

    async def refuse(context: grpc.aio.ServicerContext) -> None:
        await authenticate(method, context)
        if leader:
            context.set_trailing_metadata(((LEADER_METADATA, leader),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse(context)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await refuse(context)
        yield  # pragma: no cover - abort raised

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(
        streaming if handler.response_streaming else unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
