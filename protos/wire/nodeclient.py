"""Calling a node's NodeService with a capability token, synchronously.

Used by a node acting on a delegation and by the CLI (logs); the orchestrator's own
asynchronous calls are ``orchestrator.nodecalls``. Failures raise ``NodeCallError``.
Tests may inject a ready channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from pki.errors import CapstanError
from protos import node_pb2_grpc, ops
from protos.wire.channel import NODE_CHANNEL_OPTIONS, expecting
from protos.wire.errors import NodeCallError

__all__ = ["NodeCallError", "NodeClient", "token_metadata"]


class NodeClient:
    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        expect: str | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        """``expect``: the SPIFFE id the server must prove in the handshake (the node
        the token is for); required with ``credentials``."""
        if channel is None:
            if credentials is None or not expect:
                raise CapstanError("NodeClient needs credentials and the node's identity")
            channel = grpc.secure_channel(
                target, credentials, options=[*NODE_CHANNEL_OPTIONS, *expecting(expect)]
            )
        self.channel = channel
        self.stub = node_pb2_grpc.NodeServiceStub(channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, request: Any, token: str, *, timeout: float = 30.0) -> Any:
        """A unary call of operation ``op`` (e.g. ``container.start``)."""
        method = ops.BY_OP[op].method
        try:
            return getattr(self.stub, method)(
                request, metadata=token_metadata(token), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise NodeCallError.of(method, exc) from None

    def stream(
        self, op: str, request: Any, token: str, *, timeout: float | None = None
    ) -> Iterator[Any]:
        """A server-streaming call (logs, exports): yields response messages."""
        method = ops.BY_OP[op].method
        try:
            yield from getattr(self.stub, method)(
                request, metadata=token_metadata(token), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise NodeCallError.of(method, exc) from None

    def upload(
        self, op: str, requests: Iterable[Any], token: str, *, timeout: float = 300.0
    ) -> Any:
        """A client-streaming call (imports); the first message names the resource."""
        method = ops.BY_OP[op].method
        try:
            return getattr(self.stub, method)(
                iter(requests), metadata=token_metadata(token), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise NodeCallError.of(method, exc) from None


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """How a capability token travels with a NodeService call."""
    return (("authorization", f"Bearer {token}"),)
