"""The node's gRPC server: LedgerService plus the standard health and reflection
services, with message size limits and a clean shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from medledger.api.call_metrics import CallMetrics
from medledger.api.channels import ChannelServicer
from medledger.api.ledger import LedgerServicer
from medledger.api.peer import PeerServicer
from medledger.api.records import RecordServicer, VaultServicer
from medledger.api.reflection import enable_reflection
from medledger.channels.payee import Payee
from medledger.limits import HUB_CALLS_PER_ADDRESS_MAX, HUB_RPCS_MAX, PEER_RPCS_MAX
from medledger.node.consensus_driver import ConsensusDriver
from medledger.node.ledger_node import LedgerNode
from medledger.transport.address_share import AddressShare
from medledger.transport.credentials import PeerTrust, ServerTls
from medledger.transport.tls_version import RequireTls13
from medledger.vault.service import Vault
from medledger.wire.v1 import channels_pb2, ledger_pb2, peer_pb2, peer_pb2_grpc, records_pb2

__all__ = ["LEDGER_SERVICE", "serve"]

LEDGER_SERVICE = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name
PEER_SERVICE = peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name
RECORD_SERVICE = records_pb2.DESCRIPTOR.services_by_name["RecordService"].full_name
VAULT_SERVICE = records_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name
HEALTH_SERVICES = ("", LEDGER_SERVICE)
"""The names a node's health service answers for: the whole server, and LedgerService."""
IDLE_CONNECTION_MS = 5 * 60 * 1000
"""A connection with no call for this long is closed (clients reconnect on their next
call), so idle connections cannot pile up."""
CHANNEL_SERVICE = channels_pb2.DESCRIPTOR.services_by_name["ChannelService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]


async def decode(raw: bytes, request_type: type[Message], context: Context) -> Any:
    """Decodes a request ourselves, so a malformed one is INVALID_ARGUMENT naming the
    message type (grpcio would answer UNKNOWN)."""
    try:
        return request_type.FromString(raw)
    except DecodeError:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request: not a valid {request_type.DESCRIPTOR.full_name}",
        )


def unary(method: Callable[[Any, Context], Awaitable[Message]], request_type: type[Message]) -> Any:
    async def behaviour(raw: bytes, context: Context) -> Message:
        return await method(await decode(raw, request_type, context), context)

    return behaviour


def server_stream(
    method: Callable[[Any, Context], AsyncIterator[Message]], request_type: type[Message]
) -> Any:
    async def behaviour(raw: bytes, context: Context) -> AsyncIterator[Message]:
        async for response in method(await decode(raw, request_type, context), context):
            yield response

    return behaviour


def bidi_stream(
    method: Callable[[AsyncIterator[Any], Context], AsyncIterator[Message]],
    request_type: type[Message],
) -> Any:
    async def behaviour(raws: AsyncIterator[bytes], context: Context) -> AsyncIterator[Message]:
        async def requests() -> AsyncIterator[Any]:
            async for raw in raws:
                yield await decode(raw, request_type, context)

        async for response in method(requests(), context):
            yield response

    return behaviour


UnaryMethods = dict[str, tuple[Any, type[Message], type[Message]]]
"""name -> (behaviour, request type, response type)"""


def unary_method_handlers(methods: UnaryMethods) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """Unary method handlers with requests decoded by `decode`."""
    return {
        name: grpc.unary_unary_rpc_method_handler(
            unary(method, request_type), response_serializer=response_type.SerializeToString
        )
        for name, (method, request_type, response_type) in methods.items()
    }


def unary_handlers(service: str, methods: UnaryMethods) -> grpc.GenericRpcHandler:
    """A service of unary methods only."""
    return grpc.method_handlers_generic_handler(service, unary_method_handlers(methods))


def records_handler(servicer: RecordServicer) -> grpc.GenericRpcHandler:
    pb = records_pb2
    return unary_handlers(
        RECORD_SERVICE,
        {
            "GetRecord": (servicer.GetRecord, pb.GetRecordRequest, pb.GetRecordResponse),
            "ListConsents": (
                servicer.ListConsents,
                pb.ListConsentsRequest,
                pb.ListConsentsResponse,
            ),
            "ListAccessEvents": (
                servicer.ListAccessEvents,
                pb.ListAccessEventsRequest,
                pb.ListAccessEventsResponse,
            ),
        },
    )


def vault_handler(servicer: VaultServicer) -> grpc.GenericRpcHandler:
    pb = records_pb2
    return unary_handlers(
        VAULT_SERVICE,
        {
            "Put": (servicer.Put, pb.PutRecordRequest, pb.PutRecordResponse),
            "Fetch": (servicer.Fetch, pb.FetchRequest, pb.FetchResponse),
            "Erase": (servicer.Erase, pb.EraseRequest, pb.EraseResponse),
            "ListReviews": (servicer.ListReviews, pb.ListReviewsRequest, pb.ListReviewsResponse),
        },
    )


def channel_handler(servicer: ChannelServicer) -> grpc.GenericRpcHandler:
    pb = channels_pb2
    handlers = unary_method_handlers(
        {
            "GetChannelState": (
                servicer.GetChannelState,
                pb.GetChannelStateRequest,
                pb.GetChannelStateResponse,
            ),
            "OfferRefund": (servicer.OfferRefund, pb.RefundOffer, pb.OfferRefundResponse),
            "Invoices": (servicer.Invoices, pb.InvoiceRequest, pb.InvoiceResponse),
        }
    )
    handlers["Stream"] = grpc.stream_stream_rpc_method_handler(
        bidi_stream(servicer.Stream, pb.ChannelUpdate),
        response_serializer=pb.ChannelEvent.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(CHANNEL_SERVICE, handlers)


def ledger_handler(servicer: LedgerServicer) -> grpc.GenericRpcHandler:
    """LedgerService's methods, with requests decoded by `decode`."""
    pb = ledger_pb2
    handlers = unary_method_handlers(
        {
            "Submit": (servicer.Submit, pb.SubmitRequest, pb.SubmitResponse),
            "GetTransaction": (
                servicer.GetTransaction,
                pb.GetTransactionRequest,
                pb.GetTransactionResponse,
            ),
            "GetBlock": (servicer.GetBlock, pb.GetBlockRequest, pb.GetBlockResponse),
            "GetAccount": (servicer.GetAccount, pb.GetAccountRequest, pb.GetAccountResponse),
            "GetStatus": (servicer.GetStatus, pb.GetStatusRequest, pb.GetStatusResponse),
            "GetChannel": (servicer.GetChannel, pb.GetChannelRequest, pb.GetChannelResponse),
            "GetMember": (servicer.GetMember, pb.GetMemberRequest, pb.GetMemberResponse),
        }
    )
    handlers["SubmitStream"] = grpc.stream_stream_rpc_method_handler(
        bidi_stream(servicer.SubmitStream, pb.SubmitBatch),
        response_serializer=pb.SubmitBatchResult.SerializeToString,
    )
    handlers["StreamBlocks"] = grpc.unary_stream_rpc_method_handler(
        server_stream(servicer.StreamBlocks, pb.StreamBlocksRequest),
        response_serializer=pb.GetBlockResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(LEDGER_SERVICE, handlers)


async def serve(
    node: LedgerNode,
    listen: str,
    *,
    vault: Vault | None = None,
    payee: Payee | None = None,
    tls: ServerTls | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Starts serving `node`'s client API on `listen` (host:port; port 0 picks one),
    over server TLS (`tls`; None: clear text). Returns the server, the bound port and the
    health service (SERVING for "" and LedgerService)."""
    share = AddressShare(node.config.client_calls_per_address_max, "client_calls_per_address_max")
    server = _server(
        node.config.message_bytes_max,
        rpcs_max=node.config.client_rpcs_max,
        tls=tls is not None,
        share=share,
    )
    server.add_generic_rpc_handlers(
        (ledger_handler(LedgerServicer(node)), records_handler(RecordServicer(node)))
    )
    services = [LEDGER_SERVICE, RECORD_SERVICE, health.SERVICE_NAME]
    if vault is not None:
        server.add_generic_rpc_handlers((vault_handler(VaultServicer(vault)),))
        services.append(VAULT_SERVICE)
    if payee is not None:
        server.add_generic_rpc_handlers((channel_handler(ChannelServicer(payee)),))
        services.append(CHANNEL_SERVICE)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(services, server)
    port = await _start(server, listen, None if tls is None else tls.server_credentials())
    for service in HEALTH_SERVICES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer


async def serve_peers(
    driver: ConsensusDriver, listen: str, trust: PeerTrust | None
) -> tuple[grpc.aio.Server, int]:
    """PeerService alone on `listen`, over mutual TLS against the member organisations'
    CAs (`trust`; None: clear text, and any caller is taken for a member)."""
    server = _server(driver.config.message_bytes_max, rpcs_max=PEER_RPCS_MAX, tls=trust is not None)
    peer_pb2_grpc.add_PeerServiceServicer_to_server(
        PeerServicer(driver, authenticated=trust is not None), server
    )
    port = await _start(server, listen, None if trust is None else trust.server_credentials())
    return server, port


async def serve_channels(
    payee: Payee, listen: str, message_bytes_max: int, tls: ServerTls | None = None
) -> tuple[grpc.aio.Server, int]:
    """ChannelService alone, for a hub (a payee that is not a node)."""
    share = AddressShare(HUB_CALLS_PER_ADDRESS_MAX, "HUB_CALLS_PER_ADDRESS_MAX")
    server = _server(message_bytes_max, rpcs_max=HUB_RPCS_MAX, tls=tls is not None, share=share)
    server.add_generic_rpc_handlers((channel_handler(ChannelServicer(payee)),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection([CHANNEL_SERVICE, health.SERVICE_NAME], server)
    port = await _start(server, listen, None if tls is None else tls.server_credentials())
    for service in ("", CHANNEL_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def served_methods(*, peers: bool) -> dict[str, list[str]]:
    """The gRPC methods a node serves, by service: the client API, health, and with
    `peers` PeerService."""
    files = [ledger_pb2, records_pb2, channels_pb2, *([peer_pb2] if peers else [])]
    methods = {
        service.full_name: [method.name for method in service.methods]
        for file in files
        for service in file.DESCRIPTOR.services_by_name.values()
    }
    methods[health.SERVICE_NAME] = ["Check", "Watch"]
    return methods


def _options(message_bytes_max: int) -> list[tuple[str, int]]:
    # No per-connection stream limit (HTTP/2 MAX_CONCURRENT_STREAMS): a client that opens
    # a burst of calls on a new connection, before it has the server's settings, would
    # have the excess refused as UNAVAILABLE; the server-wide call limit bounds them.
    return [
        ("grpc.max_receive_message_length", message_bytes_max),
        ("grpc.max_send_message_length", message_bytes_max),
        ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
        ("grpc.max_metadata_size", 16 * 1024),
        # Accept the peers' keepalive pings (see medledger.node.peers), no more often
        # than every 4 s: a client that pings faster twice is disconnected (GOAWAY).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 4_000),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _server(
    message_bytes_max: int, *, rpcs_max: int, tls: bool, share: AddressShare | None = None
) -> grpc.aio.Server:
    """A server that runs at most `rpcs_max` calls at once (the next is refused at once,
    RESOURCE_EXHAUSTED), at most `share`'s from one client address, and, over TLS,
    refuses calls over anything older than TLS 1.3 (checked first)."""
    # Metrics outermost: every call is counted, a refused one too.
    interceptors: list[grpc.aio.ServerInterceptor] = [CallMetrics()]
    if tls:
        interceptors.append(RequireTls13())
    if share is not None:
        interceptors.append(share)
    return grpc.aio.server(
        options=_options(message_bytes_max),
        maximum_concurrent_rpcs=rpcs_max,
        interceptors=interceptors,
    )


async def _start(
    server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None
) -> int:
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return port
