"""Signing a read of health metadata (domain "read-request"): the node then serves what
the reader's key is entitled to."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from medledger import signed_requests
from medledger.crypto import SigningKey

__all__ = ["R", "sign_read"]

R = TypeVar("R", bound=Message)


def sign_read(request: R, reader: SigningKey, chain_id: str) -> R:
    """Names `reader` as the requester, stamps the time and signs `request` in place."""
    request.requester = reader.public_key  # type: ignore[attr-defined]
    request.time_ms = 0  # type: ignore[attr-defined]
    return signed_requests.sign_request(request, reader, chain_id, "read-request")
