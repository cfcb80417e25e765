"""The channel state machine, pure: how one update turns a state into the next.

Payer and payee run the same function. The payer builds the next state with it and signs
it; the payee rebuilds it from the same parts and countersigns only if the result is
byte-for-byte the state the payer signed. Nothing here does I/O or knows a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from medledger._core import sum_channel_payments
from medledger.channels.signing import CHANNEL_ID_BYTES, HASH_BYTES, ZERO_DIGEST
from medledger.crypto import sha256
from medledger.errors import MedledgerError, Rejected
from medledger.wire.v1 import channels_pb2

__all__ = [
    "ChannelRuleError",
    "LockedPayments",
    "UpdateParts",
    "check_channel_id",
    "next_state",
]


class ChannelRuleError(Rejected):
    """An update that breaks a channel rule. `status` is the gRPC status name that reports
    it: INVALID_ARGUMENT for a malformed update, FAILED_PRECONDITION for one that does not
    follow from the current state (overspend, sequence, unknown lock)."""


@dataclass(frozen=True)
class LockedPayments:
    """A lock an update adds, and how many of the batch's lines pay into it (the next
    ones after those of the locks before it)."""

    lock: channels_pb2.HashLock
    payments: int


@dataclass(frozen=True)
class UpdateParts:
    """Everything an update changes besides its signature."""

    batch: channels_pb2.PaymentBatch
    batch_bytes: bytes  # the deterministic encoding of `batch`, hashed into lines_digest
    deposit_micros: int  # the deposits the new state accounts for
    # Routed: the first lines of the batch pay into these locks, not to the payee.
    locks: Sequence[LockedPayments] = field(default_factory=tuple)
    preimages: Sequence[bytes] = field(default_factory=tuple)
    released: Sequence[bytes] = field(default_factory=tuple)
    final: bool = False


def _invalid(field: str, reason: str) -> ChannelRuleError:
    return ChannelRuleError("INVALID_ARGUMENT", field, reason)


def _refused(field: str, reason: str) -> ChannelRuleError:
    return ChannelRuleError("FAILED_PRECONDITION", field, reason)


def _sum_payments(batch_bytes: bytes, groups: list[int]) -> tuple[list[int], int, int]:
    """(paid into each new lock, paid outright, refunded) by the batch; checks each line
    and that ids are distinct (Rust: the lines are the bulk of an update, and every hop
    checks them)."""
    try:
        return sum_channel_payments(batch_bytes, groups)
    except MedledgerError as error:
        reason = getattr(error, "reason", str(error))
        raise _invalid(error.field, str(reason)) from error


def _settle_locks(
    locks: Sequence[channels_pb2.HashLock], preimages: Sequence[bytes], released: Sequence[bytes]
) -> tuple[list[channels_pb2.HashLock], int, int]:
    """The locks left after resolving `preimages` (to the payee) and `released` hashes
    (back to the payer), with the amounts each side gets."""
    by_hash = {lock.hash: lock for lock in locks}
    resolved_micros = released_micros = 0
    for i, preimage in enumerate(preimages):
        lock = by_hash.pop(sha256(preimage), None)
        if lock is None:
            raise _refused(f"preimages[{i}]", "wrong preimage: matches no pending lock")
        resolved_micros += lock.amount_micros
    for i, lock_hash in enumerate(released):
        lock = by_hash.pop(lock_hash, None)
        if lock is None:
            raise _refused(f"released_locks[{i}]", "no pending lock has this hash")
        released_micros += lock.amount_micros
    remaining = [lock for lock in locks if lock.hash in by_hash]
    return remaining, resolved_micros, released_micros


def next_state(
    previous: channels_pb2.ChannelState, parts: UpdateParts
) -> channels_pb2.ChannelState:
    """The state that follows `previous` after `parts`; raises ChannelRuleError naming the
    field when the update is not allowed."""
    if previous.final:
        raise _refused("state.sequence", "the channel's final state is already signed")
    if parts.deposit_micros < previous.deposit_micros:
        raise _refused("state.deposit_micros", "a deposit never shrinks")
    locked, paid, refunded = _sum_payments(
        parts.batch_bytes, [group.payments for group in parts.locks]
    )
    locks, resolved, released = _settle_locks(previous.locks, parts.preimages, parts.released)
    pending = {lock.hash for lock in locks}
    for i, (group, amount) in enumerate(zip(parts.locks, locked, strict=True)):
        lock = group.lock
        if len(lock.hash) != HASH_BYTES:
            raise _invalid(f"new_locks[{i}].hash", f"must be {HASH_BYTES} bytes")
        if lock.hash in pending:
            raise _refused(f"new_locks[{i}].hash", "a lock with this hash is already pending")
        if lock.amount_micros != amount or amount == 0:
            raise _invalid(
                f"new_locks[{i}].payments", "a lock holds exactly what its lines pay, and they pay"
            )
        pending.add(lock.hash)
        locks.append(lock)
    to_payee = paid
    paid += sum(locked)
    payer = (
        previous.payer_micros
        + (parts.deposit_micros - previous.deposit_micros)
        - paid
        + refunded
        + released
    )
    payee = previous.payee_micros + to_payee - refunded + resolved
    if payer < 0:
        raise _refused(
            "batch",
            f"overspend: pays {paid} but the payer has {payer + paid} left in the channel",
        )
    if payee < 0:
        raise _refused("batch", f"refunds {refunded} exceed the payee's {payee + refunded}")
    if parts.final and locks:
        raise _refused("state.final", "a final state must not hold locks")
    # Every head this runs on adds up (state 0, or checked by Rust `check_state`), and
    # an update only moves money between payer, payee and locks or adds deposit.
    held = payer + payee + sum(lock.amount_micros for lock in locks)
    assert held == parts.deposit_micros, (
        f"channel {previous.channel_id.hex()} state {previous.sequence + 1}: payer {payer}"
        f" + payee {payee} + locks {held - payer - payee} != deposit {parts.deposit_micros}"
    )
    return channels_pb2.ChannelState(
        channel_id=previous.channel_id,
        sequence=previous.sequence + 1,
        deposit_micros=parts.deposit_micros,
        payer_micros=payer,
        payee_micros=payee,
        locks=locks,
        lines_digest=sha256((previous.lines_digest or ZERO_DIGEST) + parts.batch_bytes),
        final=parts.final,
    )


def check_channel_id(channel_id: bytes, field: str = "channel_id") -> None:
    if len(channel_id) != CHANNEL_ID_BYTES:
        raise _invalid(field, f"must be {CHANNEL_ID_BYTES} bytes, got {len(channel_id)}")
