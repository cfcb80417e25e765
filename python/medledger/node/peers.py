"""Outbound links to the other validators: one long-lived gRPC stream per peer, a bounded
queue in front of it, and reconnection with back-off when the peer is away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from medledger.transport.credentials import ClientTls, aio_channel
from medledger.transport.grpc_common import channel_options
from medledger.wire.v1 import peer_pb2

__all__ = ["PeerLink"]

log = logging.getLogger(__name__)
PUSH_METHOD = "/medledger.wire.v1.PeerService/Push"
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
# A peer that vanished without closing the connection (power cut, partition) is noticed
# within keepalive time + timeout, and the link reconnects: no wait is unbounded.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class PeerLink:
    """Messages to one peer. When the queue is full the oldest message is dropped: the
    consensus runtime re-sends its latest messages periodically, so nothing is lost for
    good, and a slow peer never makes this node wait."""

    def __init__(
        self,
        name: str,
        address: str,
        queue_max: int,
        tls: Callable[[], ClientTls | None] = lambda: None,
    ) -> None:
        self.name = name  # for logs: the start of the peer's key
        # Asked at each connection: the member CAs change with governance, and this
        # node's certificate may have been renewed.
        self.tls = tls
        self.address = address
        # Encoded PeerMessages: a broadcast is serialised once for all its peers.
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_max)
        self.connected = False  # a message was taken for sending since the last failure
        self._channel: grpc.aio.Channel | None = None

    @property
    def reachable(self) -> bool:
        """Whether the connection to the peer is up now (TCP, TLS and HTTP/2 settled):
        what readiness counts, not that a message was handed to gRPC."""
        channel = self._channel
        return (
            channel is not None
            and channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY
        )

    def offer(self, message: bytes) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(message)

    async def _outgoing(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.queue.get()
            self.connected = True
            yield message

    async def run(self) -> None:
        backoff_s = BACKOFF_MIN_S
        while True:
            try:
                options = channel_options() + KEEPALIVE_OPTIONS
                async with aio_channel(self.address, self.tls(), options) as channel:
                    self._channel = channel
                    push: grpc.aio.StreamUnaryMultiCallable[bytes, peer_pb2.PushAck]
                    push = channel.stream_unary(
                        PUSH_METHOD,
                        request_serializer=None,  # already encoded
                        response_deserializer=peer_pb2.PushAck.FromString,
                    )
                    await push(self._outgoing())
            except grpc.RpcError as error:
                if self.connected:
                    log.info(
                        "peer %s at %s: %s; reconnecting", self.name, self.address, error.code()
                    )
                    backoff_s = BACKOFF_MIN_S
            self.connected = False
            self._channel = None
            await asyncio.sleep(backoff_s)
            backoff_s = min(BACKOFF_MAX_S, backoff_s * 2)
