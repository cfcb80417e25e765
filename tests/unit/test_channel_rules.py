"""The off-ledger channel state machine (`rules.next_state`), the one payer and payee
both run: hand-picked refusals, and properties over random update sequences."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.channels.rules import ChannelRuleError, LockedPayments, UpdateParts, next_state
from medledger.channels.signing import check_channel_state, initial_state, sign_state, state_message
from medledger.crypto import SigningKey, sha256, verify_batch
from medledger.wire.v1 import channels_pb2

CHANNEL = bytes(range(16))
DEPOSIT = 1_000


def payment(amount: int, n: int, *, refund: bool = False) -> channels_pb2.Payment:
    return channels_pb2.Payment(
        payment_id=n.to_bytes(16, "big"), amount_micros=amount, refund=refund
    )


def parts(
    payments: list[channels_pb2.Payment], deposit: int = DEPOSIT, **more: object
) -> UpdateParts:
    batch = channels_pb2.PaymentBatch(payments=payments)
    return UpdateParts(
        batch=batch,
        batch_bytes=batch.SerializeToString(deterministic=True),
        deposit_micros=deposit,
        **more,  # type: ignore[arg-type]
    )


START = initial_state(CHANNEL, 0)


@pytest.mark.parametrize(
    ("payments", "field", "status"),
    [
        ([payment(DEPOSIT + 1, 1)], "batch", "FAILED_PRECONDITION"),  # overspend
        ([payment(0, 1)], "batch.payments[0].amount_micros", "INVALID_ARGUMENT"),
        ([payment(1, 1), payment(1, 1)], "batch.payments[1].payment_id", "INVALID_ARGUMENT"),
        ([payment(5, 1, refund=True)], "batch", "FAILED_PRECONDITION"),  # refund > payee's
    ],
)
def test_bad_batches_are_refused_naming_the_field(
    payments: list[channels_pb2.Payment], field: str, status: str
) -> None:
    with pytest.raises(ChannelRuleError) as refused:
        next_state(START, parts(payments))
    assert (refused.value.field, refused.value.status) == (field, status)


def test_locks_resolve_with_their_preimage_or_are_released() -> None:
    lock = channels_pb2.HashLock(hash=sha256(b"p" * 32), amount_micros=30, expiry_height=99)
    locked = next_state(START, parts([payment(30, 1)], locks=[LockedPayments(lock, 1)]))
    assert (locked.payer_micros, locked.payee_micros, len(locked.locks)) == (970, 0, 1)
    with pytest.raises(ChannelRuleError, match="wrong preimage"):
        next_state(locked, parts([], preimages=[b"q" * 32]))
    resolved = next_state(locked, parts([], preimages=[b"p" * 32]))
    assert (resolved.payer_micros, resolved.payee_micros, list(resolved.locks)) == (970, 30, [])
    released = next_state(locked, parts([], released=[lock.hash]))
    assert (released.payer_micros, released.payee_micros) == (1_000, 0)
    with pytest.raises(ChannelRuleError, match="final"):
        next_state(locked, parts([], final=True))


def test_one_update_adds_several_locks_each_holding_its_own_lines() -> None:
    first = channels_pb2.HashLock(hash=sha256(b"a" * 32), amount_micros=30, expiry_height=99)
    second = channels_pb2.HashLock(hash=sha256(b"b" * 32), amount_micros=7, expiry_height=98)
    lines = [payment(10, 1), payment(20, 2), payment(7, 3), payment(5, 4)]
    groups = [LockedPayments(first, 2), LockedPayments(second, 1)]
    state = next_state(START, parts(lines, locks=groups))
    # The fourth line follows the locks' lines: it is paid outright.
    assert (state.payer_micros, state.payee_micros) == (1_000 - 42, 5)
    assert list(state.locks) == [first, second]
    resolved = next_state(state, parts([], preimages=[b"b" * 32]))
    assert (resolved.payee_micros, list(resolved.locks)) == (12, [first])


@pytest.mark.parametrize(
    ("groups", "lines", "field"),
    [
        # (amount, lines, preimage byte) per lock. A lock's amount is what its own lines
        # pay, not what the update pays.
        ([(30, 3, b"a"), (7, 1, b"b")], 4, "new_locks[0].payments"),
        ([(30, 2, b"a"), (8, 1, b"b")], 3, "new_locks[1].payments"),
        # The same hash twice, and locks claiming more lines than the batch holds.
        ([(30, 2, b"a"), (7, 1, b"a")], 3, "new_locks[1].hash"),
        ([(30, 2, b"a"), (7, 3, b"b")], 4, "new_locks.payments"),
    ],
)
def test_bad_lock_groups_are_refused_naming_the_lock(
    groups: list[tuple[int, int, bytes]], lines: int, field: str
) -> None:
    payments = [payment(10, 1), payment(20, 2), payment(7, 3), payment(5, 4)][:lines]
    locks = [
        LockedPayments(
            channels_pb2.HashLock(hash=sha256(seed * 32), amount_micros=amount, expiry_height=99),
            count,
        )
        for amount, count, seed in groups
    ]
    with pytest.raises(ChannelRuleError) as refused:
        next_state(START, parts(payments, locks=locks))
    assert refused.value.field == field


def test_a_refund_cannot_pay_into_a_lock() -> None:
    paid = next_state(START, parts([payment(50, 1)]))
    lock = channels_pb2.HashLock(hash=sha256(b"a" * 32), amount_micros=5, expiry_height=99)
    refund_first = parts([payment(5, 2, refund=True)], locks=[LockedPayments(lock, 1)])
    with pytest.raises(ChannelRuleError) as refused:
        next_state(paid, refund_first)
    assert refused.value.field == "batch.payments[0].refund"
    # After the lock's lines, a refund is applied at once.
    both = next_state(
        paid,
        parts([payment(5, 3), payment(5, 2, refund=True)], locks=[LockedPayments(lock, 1)]),
    )
    assert (both.payer_micros, both.payee_micros) == (950, 45)


@dataclass
class Step:
    kind: str
    amount: int


steps = st.lists(
    st.builds(
        Step,
        st.sampled_from(["pay", "refund", "lock", "resolve", "release", "top-up"]),
        st.integers(1, 400),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_every_reachable_state_adds_up_and_advances_by_one(plan: list[Step]) -> None:
    """Whatever the payer tries, a state the rules produce keeps payer + payee + locks ==
    deposit (the deposits including top-ups), its sequence is one more than the last, and
    the Rust shape check accepts it; a refused update changes nothing."""
    key_payer, key_payee = SigningKey.from_seed(b"\x01" * 32), SigningKey.from_seed(b"\x02" * 32)
    state, deposit, n = START, DEPOSIT, 0
    pending: dict[bytes, bytes] = {}  # lock hash -> preimage
    for step in plan:
        n += 1
        extra: dict[str, object] = {}
        payments: list[channels_pb2.Payment] = []
        if step.kind == "pay":
            payments = [payment(step.amount, n)]
        elif step.kind == "refund":
            payments = [payment(step.amount, n, refund=True)]
        elif step.kind == "lock":
            preimage = n.to_bytes(32, "big")
            lock = channels_pb2.HashLock(
                hash=sha256(preimage), amount_micros=step.amount, expiry_height=9
            )
            pending[lock.hash] = preimage
            # The lock's line, then one paid outright in the same update.
            payments = [payment(step.amount, n), payment(1, n + 10_000)]
            extra = {"locks": [LockedPayments(lock, 1)]}
        elif step.kind in ("resolve", "release") and pending:
            lock_hash, preimage = pending.popitem()
            extra = (
                {"preimages": [preimage]} if step.kind == "resolve" else {"released": [lock_hash]}
            )
        elif step.kind == "top-up":
            deposit += step.amount
        try:
            following = next_state(state, parts(payments, deposit, **extra))
        except ChannelRuleError:
            if step.kind == "lock":
                del pending[sha256(n.to_bytes(32, "big"))]
            continue
        locked = sum(lock.amount_micros for lock in following.locks)
        assert following.payer_micros + following.payee_micros + locked == deposit
        assert following.sequence == state.sequence + 1
        encoded = following.SerializeToString(deterministic=True)
        check_channel_state(encoded)
        state = following
    if state.sequence:
        encoded = state.SerializeToString(deterministic=True)
        signatures = [sign_state(k, "c", encoded) for k in (key_payer, key_payee)]
        message = state_message("c", encoded)
        keys = [key_payer.public_key, key_payee.public_key]
        assert verify_batch(keys, [message, message], signatures) == [True, True]
        # Neither signature stands in for the other.
        assert verify_batch(keys, [message, message], signatures[::-1]) == [False, False]
