"""Building and signing transactions."""

from __future__ import annotations

import secrets

from medledger.crypto import SigningKey
from medledger.tx import sign_transaction
from medledger.wire.v1 import envelope_pb2, tx_pb2

__all__ = ["TxBuilder", "new_tx_id"]

TX_ID_BYTES = 16


def new_tx_id() -> bytes:
    """A fresh random 128-bit transaction id."""
    return secrets.token_bytes(TX_ID_BYTES)


class TxBuilder:
    """Signs transactions of every kind with one key for one chain."""

    def __init__(self, key: SigningKey, chain_id: str) -> None:
        self.key = key
        self.chain_id = chain_id

    def sign(
        self, body: tx_pb2.TransactionBody, *, expiry_height: int, tx_id: bytes | None = None
    ) -> envelope_pb2.SignedTransaction:
        body.chain_id = self.chain_id
        body.tx_id = tx_id if tx_id is not None else new_tx_id()
        body.expiry_height = expiry_height
        return sign_transaction(self.key, self.chain_id, body.SerializeToString(deterministic=True))

    def transfer(
        self,
        *,
        to: bytes,
        amount_micros: int,
        expiry_height: int,
        reference: str = "",
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        body = tx_pb2.TransactionBody(
            transfer=tx_pb2.Transfer(to=to, amount_micros=amount_micros, reference=reference)
        )
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def create_account(
        self, *, expiry_height: int, tx_id: bytes | None = None
    ) -> envelope_pb2.SignedTransaction:
        body = tx_pb2.TransactionBody(create_account=tx_pb2.CreateAccount())
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def register_participant(
        self,
        *,
        kind: tx_pb2.ParticipantKind.ValueType,
        role: tx_pb2.Role.ValueType,
        display_name: str,
        expiry_height: int,
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        body = tx_pb2.TransactionBody(
            register_participant=tx_pb2.RegisterParticipant(
                kind=kind, role=role, display_name=display_name
            )
        )
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)
