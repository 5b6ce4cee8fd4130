"""The orchestrator answers grpc.reflection.v1 clients as well as v1alpha ones."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2 as alpha

from .conftest import Running

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def test_the_orchestrator_answers_reflection_v1(orchestrator: Running) -> None:
    channel = grpc.secure_channel(orchestrator.target, orchestrator.user("rita", "viewer"))
    call = channel.stream_stream(
        V1, request_serializer=lambda m: m.SerializeToString(), response_deserializer=bytes
    )
    [raw] = list(call(iter([alpha.ServerReflectionRequest(list_services="")]), timeout=10))
    names = {s.name for s in alpha.ServerReflectionResponse.FromString(raw)
             .list_services_response.service}
    assert {"capstan.v1.ControlService", "grpc.reflection.v1.ServerReflection"} <= names
    channel.close()
