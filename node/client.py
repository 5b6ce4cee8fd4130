"""Calling a node's NodeService with a capability token.

Used by the orchestrator (push), by a node acting on a delegation, and by the CLI
(logs). grpc.RpcError is mapped to ``NodeCallError`` here and nowhere else. Tests
may inject a ready channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from node.server import MAX_MESSAGE
from pki.errors import CapstanError
from protos import node_pb2_grpc, ops


class NodeCallError(CapstanError):
    """A call to a node failed; ``code`` is the gRPC status, ``details`` the node's reason."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


def client_credentials(cert_chain: bytes, key: bytes, ca: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert_chain
    )


CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


class NodeClient:
    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        if channel is None:
            if credentials is None:
                raise CapstanError("NodeClient needs credentials or a channel")
            channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
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
            return getattr(self.stub, method)(request, metadata=_meta(token), timeout=timeout)
        except grpc.RpcError as exc:
            raise _mapped(method, exc) from None

    def stream(
        self, op: str, request: Any, token: str, *, timeout: float | None = None
    ) -> Iterator[Any]:
        """A server-streaming call (logs, exports): yields response messages."""
        method = ops.BY_OP[op].method
        try:
            yield from getattr(self.stub, method)(request, metadata=_meta(token), timeout=timeout)
        except grpc.RpcError as exc:
            raise _mapped(method, exc) from None

    def upload(
        self, op: str, requests: Iterable[Any], token: str, *, timeout: float = 300.0
    ) -> Any:
        """A client-streaming call (imports); the first message names the resource."""
        method = ops.BY_OP[op].method
        try:
            return getattr(self.stub, method)(
                iter(requests), metadata=_meta(token), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise _mapped(method, exc) from None


def _meta(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _mapped(method: str, exc: grpc.RpcError) -> NodeCallError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return NodeCallError(method, code, details or "")
