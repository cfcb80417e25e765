"""Accounts and transfers: balances in micro-units, never negative, never overflowing."""

from __future__ import annotations

from medledger.app.outcome import TxOutcome
from medledger.app.state import ACCOUNTS, BlockState
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
    # `state.get` and `state.put` directly, not the account helpers: the most common
    # transaction, on every node, in every block.
    source = state.get(ACCOUNTS, signer, ledger_pb2.Account)
    if source is None:
        return TxOutcome(tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT, "signer has no account")
    to = msg.to
    destination = state.get(ACCOUNTS, to, ledger_pb2.Account)
    if destination is None:
        return TxOutcome(tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT, "transfer.to: no such account")
    amount = msg.amount_micros
    if source.balance_micros < amount:
        return TxOutcome(
            tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS,
            f"balance {source.balance_micros} < amount_micros {amount}",
        )
    if to == signer:
        return OK  # a transfer to oneself changes nothing
    if destination.balance_micros + amount > BALANCE_MAX:
        return TxOutcome(tx_pb2.RESULT_CODE_INVALID_TRANSFER, "receiving balance would overflow")
    # Both checks passed: apply both sides, never one without the other.
    source.balance_micros -= amount
    destination.balance_micros += amount
    state.put(ACCOUNTS, signer, source)
    state.put(ACCOUNTS, to, destination)
    return OK
