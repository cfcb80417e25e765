"""The application: deterministic execution, no half-applied transfer, and admission
checks that name the field."""

from __future__ import annotations

import dataclasses

import pytest

from medledger.app import Application
from medledger.app.state import MemoryState
from medledger.client import TxBuilder
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.genesis import Genesis, GenesisValidator
from medledger.wire.v1 import channels_pb2, ledger_pb2, tx_pb2

CHAIN = "app-test"
ALICE, BOB, CAROL = (SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3))


def state_with(**balances: int) -> MemoryState:
    keys = {"alice": ALICE, "bob": BOB, "carol": CAROL}
    return MemoryState(
        [
            (
                "accounts",
                keys[name].public_key,
                ledger_pb2.Account(
                    owner=keys[name].public_key, balance_micros=b
                ).SerializeToString(),
            )
            for name, b in balances.items()
        ]
    )


def body(tx_builder: TxBuilder, **transfer: int | bytes) -> tuple[bytes, tx_pb2.TransactionBody]:
    tx = tx_builder.transfer(expiry_height=100, **transfer)  # type: ignore[arg-type]
    return tx.public_key, tx_pb2.TransactionBody.FromString(tx.body)


def balance(state: MemoryState, key: SigningKey) -> int:
    raw = state.get("accounts", key.public_key)
    assert raw is not None
    return ledger_pb2.Account.FromString(raw).balance_micros


def run(state: MemoryState, *txs: tuple[bytes, tx_pb2.TransactionBody]) -> list[int]:
    result = Application(CHAIN, 1000).finalize_block(1, bytes(32), state, list(txs), time_ms=1)
    state.apply(result.writes)
    return [outcome.code for outcome in result.outcomes]


def test_a_transfer_moves_funds_between_accounts() -> None:
    state = state_with(alice=100, bob=5)
    assert run(state, body(TxBuilder(ALICE, CHAIN), to=BOB.public_key, amount_micros=30)) == [
        tx_pb2.RESULT_CODE_OK
    ]
    assert (balance(state, ALICE), balance(state, BOB)) == (70, 35)


def test_an_overdraft_is_recorded_as_failed_and_changes_nothing() -> None:
    state = state_with(alice=10, bob=0)
    codes = run(state, body(TxBuilder(ALICE, CHAIN), to=BOB.public_key, amount_micros=11))
    assert codes == [tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS]
    assert (balance(state, ALICE), balance(state, BOB)) == (10, 0)


def test_a_transfer_to_an_unknown_account_changes_nothing() -> None:
    state = state_with(alice=10)
    codes = run(state, body(TxBuilder(ALICE, CHAIN), to=CAROL.public_key, amount_micros=1))
    assert codes == [tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT]
    assert balance(state, ALICE) == 10


def test_a_receiving_balance_never_overflows_u64() -> None:
    state = state_with(alice=10, bob=2**64 - 5)
    codes = run(state, body(TxBuilder(ALICE, CHAIN), to=BOB.public_key, amount_micros=10))
    assert codes == [tx_pb2.RESULT_CODE_INVALID_TRANSFER]
    assert (balance(state, ALICE), balance(state, BOB)) == (10, 2**64 - 5)


def test_transactions_apply_in_order_within_a_block() -> None:
    state = state_with(alice=10, bob=0)
    alice, bob = TxBuilder(ALICE, CHAIN), TxBuilder(BOB, CHAIN)
    codes = run(
        state,
        body(bob, to=ALICE.public_key, amount_micros=5),  # bob has nothing yet
        body(alice, to=BOB.public_key, amount_micros=10),
        body(bob, to=ALICE.public_key, amount_micros=5),
    )
    assert codes == [
        tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS,
        tx_pb2.RESULT_CODE_OK,
        tx_pb2.RESULT_CODE_OK,
    ]
    assert (balance(state, ALICE), balance(state, BOB)) == (5, 5)


def test_the_same_block_gives_the_same_app_hash_and_another_does_not() -> None:
    txs = [body(TxBuilder(ALICE, CHAIN), to=BOB.public_key, amount_micros=n) for n in (1, 2, 3)]
    app = Application(CHAIN, 1000)
    first = app.finalize_block(1, bytes(32), state_with(alice=100, bob=0), txs, time_ms=1)
    second = app.finalize_block(1, bytes(32), state_with(alice=100, bob=0), txs, time_ms=1)
    reordered = app.finalize_block(1, bytes(32), state_with(alice=100, bob=0), txs[::-1], time_ms=1)
    assert first.app_hash == second.app_hash
    assert (
        first.app_hash
        != app.finalize_block(1, bytes(32), state_with(alice=99, bob=0), txs, time_ms=1).app_hash
    )
    assert reordered.writes == first.writes  # same end state…
    assert reordered.app_hash == first.app_hash  # …so the same app hash


def test_accounts_and_participants_cannot_be_created_twice() -> None:
    state = state_with()
    carol = TxBuilder(CAROL, CHAIN)
    open_account = carol.create_account(expiry_height=100)
    register = carol.register_participant(
        kind=tx_pb2.PARTICIPANT_KIND_PERSON,
        role=tx_pb2.ROLE_PATIENT,
        display_name="patient-7f3a",
        expiry_height=100,
    )
    decoded = [
        (tx.public_key, tx_pb2.TransactionBody.FromString(tx.body))
        for tx in (open_account, register, open_account, register)
    ]
    assert run(state, *decoded) == [
        tx_pb2.RESULT_CODE_OK,
        tx_pb2.RESULT_CODE_OK,
        tx_pb2.RESULT_CODE_ACCOUNT_EXISTS,
        tx_pb2.RESULT_CODE_ALREADY_REGISTERED,
    ]


def test_a_transaction_past_its_expiry_has_no_effect() -> None:
    state = state_with(alice=10, bob=0)
    signer, late = body(TxBuilder(ALICE, CHAIN), to=BOB.public_key, amount_micros=1)
    result = Application(CHAIN, 1000).finalize_block(
        101, bytes(32), state, [(signer, late)], time_ms=1
    )
    assert [o.code for o in result.outcomes] == [tx_pb2.RESULT_CODE_EXPIRED]
    assert result.writes == []


@pytest.mark.parametrize(
    ("edit", "field", "status"),
    [
        (lambda b: setattr(b, "chain_id", "other"), "body.chain_id", "INVALID_ARGUMENT"),
        (lambda b: setattr(b, "tx_id", b"short"), "body.tx_id", "INVALID_ARGUMENT"),
        (lambda b: setattr(b, "expiry_height", 4), "body.expiry_height", "FAILED_PRECONDITION"),
        (lambda b: setattr(b, "expiry_height", 5000), "body.expiry_height", "INVALID_ARGUMENT"),
        (lambda b: b.ClearField("transfer"), "body.kind", "INVALID_ARGUMENT"),
        (lambda b: setattr(b.transfer, "to", b"x"), "body.transfer.to", "INVALID_ARGUMENT"),
        (
            lambda b: setattr(b.transfer, "amount_micros", 0),
            "body.transfer.amount_micros",
            "INVALID_ARGUMENT",
        ),
        (
            lambda b: setattr(b.transfer, "reference", "r" * 129),
            "body.transfer.reference",
            "INVALID_ARGUMENT",
        ),
    ],
)
def test_admission_names_the_field_that_is_wrong(edit, field: str, status: str) -> None:  # type: ignore[no-untyped-def]
    _, decoded = body(TxBuilder(ALICE, CHAIN), to=BOB.public_key, amount_micros=1)
    edit(decoded)
    with pytest.raises(Rejected) as raised:
        Application(CHAIN, 1000).check_tx(decoded, next_height=5, signer=ALICE.public_key)
    assert (raised.value.field, raised.value.status) == (field, status)


def test_a_channel_window_below_the_genesis_minimum_is_refused_at_admission_and_in_blocks() -> None:
    """Issue 15, case 10: a payee needs enough blocks to answer an old state."""
    app = Application(CHAIN, 1000, min_challenge_blocks=10)
    payer = SigningKey.generate()
    body = tx_pb2.TransactionBody(
        chain_id=CHAIN,
        tx_id=b"\x01" * 16,
        expiry_height=50,
        open_channel=channels_pb2.OpenChannel(
            channel_id=b"\x02" * 16,
            payee=SigningKey.generate().public_key,
            deposit_micros=100,
            challenge_blocks=9,
        ),
    )
    with pytest.raises(Rejected) as refused:
        app.check_tx(body, 1, payer.public_key)
    assert refused.value.field == "body.open_channel.challenge_blocks"
    result = app.finalize_block(
        1, bytes(32), MemoryState([]), [(payer.public_key, body)], time_ms=1
    )
    assert result.outcomes[0].code == tx_pb2.RESULT_CODE_MALFORMED
    body.open_channel.challenge_blocks = 10
    app.check_tx(body, 1, payer.public_key)  # the minimum itself is fine


def test_a_genesis_keeps_its_hash_when_it_names_no_minimum_window() -> None:
    """Genesis files written before min_challenge_blocks existed hash as before (their
    hash is the app hash at height 0 of chains already running)."""
    base = Genesis(CHAIN, 1, (GenesisValidator("v", SigningKey.generate().public_key, 1),))
    assert "min_challenge_blocks" not in base.to_json()
    strict = dataclasses.replace(base, min_challenge_blocks=10)
    assert Genesis.from_json(strict.to_json()).min_challenge_blocks == 10
    assert Genesis.from_json(base.to_json()).hash() == base.hash() != strict.hash()
