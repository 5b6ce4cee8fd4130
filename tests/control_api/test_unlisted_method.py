"""The orchestrator's authorization table is complete, and a method added to one of
its services without an entry is refused before its handler runs (fail closed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from orchestrator.authz import CONTROL, GATEWAY, TABLE
from protos import control_pb2, gateway_pb2, secrets_pb2

from .conftest import Running

DENIED = grpc.StatusCode.PERMISSION_DENIED


def test_every_method_of_every_service_has_a_rule_and_every_rule_a_method() -> None:
    methods = {
        f"/{service.full_name}/{m.name}"
        for service in (
            control_pb2.DESCRIPTOR.services_by_name["ControlService"],
            gateway_pb2.DESCRIPTOR.services_by_name["NodeGateway"],
            secrets_pb2.DESCRIPTOR.services_by_name["SecretService"],
        )
        for m in service.methods
    }
    assert set(TABLE) == methods


def _add_unlisted(running: Running, service: str, ran: list[str]) -> None:
    """Register ``Extra`` (unary) and ``ExtraStream`` (server streaming) on the live
    server, as a new RPC would be, without touching the table."""

    def extra(request: bytes, context: Any) -> bytes:
        ran.append("Extra")
        return b"ran"

    def extra_stream(request: bytes, context: Any) -> Iterator[bytes]:
        ran.append("ExtraStream")
        yield b"ran"

    handler = grpc.method_handlers_generic_handler(
        service,
        {
            "Extra": grpc.unary_unary_rpc_method_handler(extra),
            "ExtraStream": grpc.unary_stream_rpc_method_handler(extra_stream),
        },
    )
    running.orch.server.add_generic_rpc_handlers((handler,))


@pytest.mark.parametrize("service", [CONTROL, GATEWAY])
def test_a_method_missing_from_the_table_is_refused(orchestrator: Running, service: str) -> None:
    ran: list[str] = []
    _add_unlisted(orchestrator, service, ran)
    # The most powerful caller there is: an admin user.
    channel = grpc.secure_channel(orchestrator.target, orchestrator.user("root", "admin"))
    with pytest.raises(grpc.RpcError) as unary:
        channel.unary_unary(f"/{service}/Extra")(b"", timeout=10)
    assert unary.value.code() == DENIED and unary.value.details() == "unknown method"
    with pytest.raises(grpc.RpcError) as streaming:
        list(channel.unary_stream(f"/{service}/ExtraStream")(b"", timeout=10))
    assert streaming.value.code() == DENIED
    assert ran == []
    events = orchestrator.run(orchestrator.orch.audit.entries())
    refused = [e["method"] for e in events if e["event"].endswith(".refused")]  # type: ignore[index]
    assert refused == [f"/{service}/Extra", f"/{service}/ExtraStream"]
