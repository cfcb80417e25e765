"""What every gRPC channel and every reader of a status code share: the message size
limit both ends agree on, and status codes by the number messages carry."""

from __future__ import annotations

import grpc

from medledger.limits import PEER_MESSAGE_BYTES_MAX

__all__ = ["MESSAGE_BYTES_MAX", "STATUS_BY_CODE", "channel_options"]

MESSAGE_BYTES_MAX = PEER_MESSAGE_BYTES_MAX
"""The largest message a channel sends or receives: what a node's peer port accepts."""

STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}
"""gRPC status codes by number, as messages carry them (ChannelRefusal.code, Receipt)."""


def channel_options() -> list[tuple[str, int]]:
    """Options for a channel that carries blocks: messages up to `MESSAGE_BYTES_MAX`."""
    return [
        ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
    ]
