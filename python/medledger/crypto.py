"""Hashing and Ed25519 signatures.

Verification is strict (RFC 8032 §5.1.7: canonical encodings, no small-order keys or R,
the cofactored equation), and `verify_batch` gives exactly the verdicts `verify` would,
using the batch equation on all cores. Every signature medledger checks covers a
domain-separated message (see `signing_message`), so a signature made for one purpose or
chain is worthless for another.
"""

from __future__ import annotations

from typing import Literal

from medledger._core import (
    SigningKey,
    sha256,
    signing_message,
    verify,
    verify_batch,
    vote_signing_message,
)

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "Domain",
    "SigningKey",
    "sha256",
    "signing_message",
    "tx_signing_message",
    "verify",
    "verify_batch",
    "vote_signing_message",
]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32

Domain = Literal[
    "tx",
    "vote",
    "proposal",
    "channel-state",
    "channel-refund",
    "vault-request",
    "channel-request",
    "read-request",
    "governance",
    "enrolment",
]


def tx_signing_message(chain_id: str, body: bytes) -> bytes:
    """The bytes a client signs for a transaction `body` on `chain_id`."""
    return signing_message("tx", chain_id, body)
