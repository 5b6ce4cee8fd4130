"""Reflection answers clients that speak grpc.reflection.v1 (grpcurl, Postman...), not
only v1alpha, on the node agent and on the orchestrator."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2 as alpha

from .conftest import Node

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def ask_v1(channel: grpc.Channel, request: alpha.ServerReflectionRequest) -> list[bytes]:
    """A v1 call, raw: the v1 and v1alpha messages share every field number, so these
    bytes are exactly what a v1 client sends; the answers are parsed as it would."""
    call = channel.stream_stream(
        V1, request_serializer=lambda m: m.SerializeToString(), response_deserializer=bytes
    )
    return list(call(iter([request]), timeout=10))


def test_the_node_answers_reflection_v1(process_node: Node) -> None:
    channel = grpc.secure_channel(process_node.target, process_node.cluster.credentials("orch"))
    [raw] = ask_v1(channel, alpha.ServerReflectionRequest(list_services=""))
    names = {s.name for s in alpha.ServerReflectionResponse.FromString(raw)
             .list_services_response.service}
    assert {"capstan.v1.NodeService", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    [raw] = ask_v1(channel, alpha.ServerReflectionRequest(
        file_containing_symbol="capstan.v1.NodeService"))
    files = alpha.ServerReflectionResponse.FromString(raw).file_descriptor_response
    assert files.file_descriptor_proto  # the descriptors a v1 client builds its stubs from
    channel.close()
