"""The orchestrator authorizes a streaming call when it starts, before its handler
waits for the first message: a caller that sends nothing is refused all the same."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from protos import gateway_pb2, gateway_pb2_grpc

from .conftest import Running


def test_report_from_a_user_is_refused_before_any_status_is_sent(orchestrator: Running) -> None:
    channel = grpc.secure_channel(orchestrator.target, orchestrator.user("root", "admin"))
    release = threading.Event()

    def nothing() -> Iterator[gateway_pb2.NodeStatus]:
        release.wait(30)
        yield from ()

    call = gateway_pb2_grpc.NodeGatewayStub(channel).Report(nothing(), timeout=10)
    try:
        with pytest.raises(grpc.RpcError) as err:
            next(iter(call))
    finally:
        release.set()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "not a joined node"
    events = orchestrator.run(orchestrator.orch.audit.entries())
    assert any(e["event"] == "report.refused" for e in events)  # type: ignore[index]
