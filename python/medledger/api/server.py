"""The node's gRPC server: LedgerService plus the standard health and reflection
services, with message size limits and a clean shutdown."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from medledger.api.ledger import LedgerServicer
from medledger.node.ledger_node import LedgerNode
from medledger.wire.v1 import ledger_pb2, ledger_pb2_grpc

__all__ = ["LEDGER_SERVICE", "serve"]

LEDGER_SERVICE = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name


async def serve(node: LedgerNode, listen: str) -> tuple[grpc.aio.Server, int]:
    """Starts serving `node` on `listen` (host:port; port 0 picks one). Returns the
    server and the bound port."""
    limit = node.config.message_bytes_max
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    ledger_pb2_grpc.add_LedgerServiceServicer_to_server(LedgerServicer(node), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (LEDGER_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    for service in ("", LEDGER_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port
