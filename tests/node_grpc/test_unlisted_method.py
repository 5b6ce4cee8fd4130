"""A method added to NodeService without an entry in the operation table is refused
before its handler runs, even with a valid token for another operation (fail closed)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from protos import ops

from .conftest import Node, meta


def test_a_method_missing_from_the_operation_table_is_refused(process_node: Node) -> None:
    ran: list[bytes] = []

    def extra(request: bytes, context: Any) -> bytes:
        ran.append(request)
        return b"ran"

    process_node.agent.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                ops.SERVICE, {"Extra": grpc.unary_unary_rpc_method_handler(extra)}
            ),
        )
    )
    channel = grpc.secure_channel(process_node.target, process_node.cluster.credentials("orch"))
    token = process_node.token("node.info", ops.NODE_RESOURCE)
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/{ops.SERVICE}/Extra")(b"x", metadata=meta(token), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "unknown operation"
    assert ran == []
    events = process_node.agent.audit.entries()
    assert events[-1]["event"] == "refused" and events[-1]["method"] == f"/{ops.SERVICE}/Extra"
