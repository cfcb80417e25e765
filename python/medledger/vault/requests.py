"""Signed requests to a vault, under the "vault-request" domain (see
`medledger.signed_requests`)."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from medledger import signed_requests
from medledger.crypto import SigningKey
from medledger.signed_requests import CLOCK_SKEW_MAX_MS

__all__ = ["CLOCK_SKEW_MAX_MS", "check_request", "sign_request"]

R = TypeVar("R", bound=Message)


def sign_request(request: R, key: SigningKey, chain_id: str) -> R:
    """Stamps the time and signs `request` in place; returns it."""
    return signed_requests.sign_request(request, key, chain_id, "vault-request")


def check_request(request: Message, signer: bytes, chain_id: str, now_ms: int) -> None:
    """Raises `Rejected` unless `signer` signed `request` for this chain, recently."""
    signed_requests.check_request(request, signer, chain_id, now_ms, "vault-request")
