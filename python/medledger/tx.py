"""Signing transactions: the envelope every client submits."""

from __future__ import annotations

from medledger.crypto import SigningKey, tx_signing_message
from medledger.wire.v1 import envelope_pb2

__all__ = ["sign_transaction"]


def sign_transaction(key: SigningKey, chain_id: str, body: bytes) -> envelope_pb2.SignedTransaction:
    """Signs an encoded transaction body for `chain_id` (domain-separated)."""
    return envelope_pb2.SignedTransaction(
        body=body,
        public_key=key.public_key,
        signature=key.sign(tx_signing_message(chain_id, body)),
    )
