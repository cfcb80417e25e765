"""Signed requests to a service that only the parties of something may call (a vault's
custodian and senders, a channel's payer and payee): the sender signs the request encoded
with its signature field empty, under the service's domain (tagged, chain-bound), with the
request's type name in front so a signature for one method is worthless for another. The
request carries its time (`time_ms`), which must be near the service's clock: that bounds
how long a captured request could be replayed."""

from __future__ import annotations

import time
from typing import TypeVar

from google.protobuf.message import Message

from medledger.crypto import Domain, SigningKey, signing_message, verify
from medledger.errors import Rejected

__all__ = ["CLOCK_SKEW_MAX_MS", "check_request", "sign_request"]

CLOCK_SKEW_MAX_MS = 5 * 60 * 1000
"""A request's time must be within this of the service's clock (bounds replays)."""

R = TypeVar("R", bound=Message)


def _signed_bytes(domain: Domain, chain_id: str, request: Message) -> bytes:
    unsigned = type(request)()
    unsigned.CopyFrom(request)
    unsigned.ClearField("signature")
    name = request.DESCRIPTOR.full_name.encode()
    payload = name + b"\x00" + unsigned.SerializeToString(deterministic=True)
    return signing_message(domain, chain_id, payload)


def sign_request(request: R, key: SigningKey, chain_id: str, domain: Domain) -> R:
    """Stamps the time and signs `request` in place; returns it."""
    if not request.time_ms:  # type: ignore[attr-defined]
        request.time_ms = int(time.time() * 1000)  # type: ignore[attr-defined]
    signed = _signed_bytes(domain, chain_id, request)
    request.signature = key.sign(signed)  # type: ignore[attr-defined]
    return request


def check_request(
    request: Message, signer: bytes, chain_id: str, now_ms: int, domain: Domain
) -> None:
    """Raises `Rejected` unless `signer` signed `request` for this chain, recently."""
    if len(signer) != 32:
        raise Rejected("INVALID_ARGUMENT", "signer", f"must be 32 bytes, got {len(signer)}")
    signature: bytes = request.signature  # type: ignore[attr-defined]
    if not verify(signer, _signed_bytes(domain, chain_id, request), signature):
        raise Rejected("UNAUTHENTICATED", "signature", "does not verify for the sender's key")
    sent_ms: int = request.time_ms  # type: ignore[attr-defined]
    if abs(now_ms - sent_ms) > CLOCK_SKEW_MAX_MS:
        raise Rejected(
            "INVALID_ARGUMENT",
            "time_ms",
            f"more than {CLOCK_SKEW_MAX_MS} ms from the service's clock",
        )
