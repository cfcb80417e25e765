"""Participants: the organisations and people whose keys act on the network."""

from __future__ import annotations

from medledger.app.outcome import TxOutcome
from medledger.app.state import BlockState
from medledger.wire.v1 import state_pb2, tx_pb2

__all__ = ["register_participant"]


def register_participant(
    state: BlockState, height: int, signer: bytes, msg: tx_pb2.RegisterParticipant
) -> TxOutcome:
    if state.participant(signer) is not None:
        return TxOutcome(tx_pb2.RESULT_CODE_ALREADY_REGISTERED, "signer is already registered")
    state.put_participant(
        state_pb2.Participant(
            public_key=signer,
            kind=msg.kind,
            role=msg.role,
            display_name=msg.display_name,
            registered_height=height,
        )
    )
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")
