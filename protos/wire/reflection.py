"""Server reflection, as both versions of the protocol (grpc.reflection.v1 and v1alpha).

grpcio-reflection ships only v1alpha; clients built on current gRPC (grpcurl, Postman,
grpcui) ask v1 first. The two versions are the same messages with the same field
numbers under another package name, so the v1 service is the v1alpha servicer behind
a second method path: a v1 request's bytes are a valid v1alpha request, and the
answer's bytes a valid v1 answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as alpha

__all__ = ["V1_SERVICE", "enable_reflection"]

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_METHOD = "ServerReflectionInfo"


def enable_reflection(service_names: Sequence[str], server: Any) -> None:
    """Serve reflection on ``server`` (sync or aio) for ``service_names`` plus both
    reflection services themselves."""
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE)
    if isinstance(server, grpc.aio.Server):
        servicer: Any = reflection.aio.ReflectionServicer(names)
    else:
        servicer = reflection.ReflectionServicer(names)
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=alpha.ServerReflectionRequest.FromString,
        response_serializer=alpha.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {_METHOD: handler}),)
    )
