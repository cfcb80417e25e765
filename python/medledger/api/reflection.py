"""Server reflection, for generic tools (grpcurl, Postman, grpc_requests): served both as
`grpc.reflection.v1` and as the older `grpc.reflection.v1alpha` that grpcio-reflection
implements. v1 is v1alpha under a new package name, message for message and field for
field, so one servicer answers both: v1 calls are routed to it with the v1alpha messages,
whose bytes on the wire are the same."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

__all__ = ["V1_SERVICE_NAME", "enable_reflection"]

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME


def enable_reflection(services: Sequence[str], server: grpc.aio.Server) -> None:
    """Reflection of `services` (and of reflection itself) on `server`, v1 and v1alpha."""
    names = [*services, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
