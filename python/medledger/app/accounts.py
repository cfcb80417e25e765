"""Accounts and transfers: balances in micro-units, never negative, never overflowing."""

from __future__ import annotations

from medledger.app.outcome import TxOutcome
from medledger.app.state import BlockState
from medledger.wire.v1 import ledger_pb2, tx_pb2

__all__ = ["create_account", "transfer"]

BALANCE_MAX = 2**64 - 1
OK = TxOutcome(tx_pb2.RESULT_CODE_OK, "")


def create_account(
    state: BlockState, height: int, signer: bytes, _msg: tx_pb2.CreateAccount
) -> TxOutcome:
    if state.account(signer) is not None:
        return TxOutcome(tx_pb2.RESULT_CODE_ACCOUNT_EXISTS, "signer already owns an account")
    state.put_account(ledger_pb2.Account(owner=signer, balance_micros=0, created_height=height))
    return OK


def transfer(state: BlockState, _height: int, signer: bytes, msg: tx_pb2.Transfer) -> TxOutcome:
    source = state.account(signer)
    if source is None:
        return TxOutcome(tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT, "signer has no account")
    destination = state.account(msg.to)
    if destination is None:
        return TxOutcome(tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT, "transfer.to: no such account")
    if source.balance_micros < msg.amount_micros:
        return TxOutcome(
            tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS,
            f"balance {source.balance_micros} < amount_micros {msg.amount_micros}",
        )
    if msg.to == signer:
        return OK  # a transfer to oneself changes nothing
    if destination.balance_micros + msg.amount_micros > BALANCE_MAX:
        return TxOutcome(tx_pb2.RESULT_CODE_INVALID_TRANSFER, "receiving balance would overflow")
    # Both checks passed: apply both sides, never one without the other.
    source.balance_micros -= msg.amount_micros
    destination.balance_micros += msg.amount_micros
    state.put_account(source)
    state.put_account(destination)
    return OK
