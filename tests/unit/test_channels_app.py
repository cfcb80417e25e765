"""Micropayment channels on the ledger: every rule of opening, funding, closing, disputes
and settlement, with real keys and signatures, through `Application.finalize_block`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medledger.app import Application
from medledger.app.channels import NOT_URGENT, URGENT, URGENT_FOR_PAYEE, time_critical
from medledger.app.state import CHANNELS, MemoryState
from medledger.channels.signing import ZERO_DIGEST, initial_state, sign_state
from medledger.client import TxBuilder
from medledger.crypto import SigningKey, sha256
from medledger.errors import Rejected
from medledger.wire.v1 import channels_pb2, envelope_pb2, ledger_pb2, tx_pb2

CHAIN = "channels-test"
PAYER, PAYEE, OTHER = (SigningKey.from_seed(bytes([i]) * 32) for i in (11, 12, 13))
KEYS = (PAYER, PAYEE, OTHER)
CID, CID2 = b"c" * 16, b"d" * 16
DEPOSIT, WINDOW = 100, 5
EXPIRY = 10_000
PREIMAGE, PREIMAGE2 = b"p" * 32, b"q" * 32
OK = tx_pb2.RESULT_CODE_OK
APP = Application(CHAIN, EXPIRY)


def builder(key: SigningKey) -> TxBuilder:
    return TxBuilder(key, CHAIN)


class Ledger:
    """A MemoryState that advances one block per `run`."""

    def __init__(self, **balances: int) -> None:
        names = {"payer": PAYER, "payee": PAYEE, "other": OTHER}
        self.state = MemoryState(
            [
                (
                    "accounts",
                    names[name].public_key,
                    ledger_pb2.Account(
                        owner=names[name].public_key, balance_micros=amount
                    ).SerializeToString(),
                )
                for name, amount in balances.items()
            ]
        )
        self.height = 0
        self.writes: list[tuple[str, bytes, bytes]] = []
        self.messages: list[str] = []

    def run(self, *txs: envelope_pb2.SignedTransaction, wait: int = 1) -> list[int]:
        """Commits `txs` as one block `wait` heights above the last."""
        self.height += wait
        decoded = [(tx.public_key, tx_pb2.TransactionBody.FromString(tx.body)) for tx in txs]
        result = APP.finalize_block(
            self.height, bytes(32), self.state, decoded, time_ms=self.height
        )
        self.state.apply(result.writes)
        self.writes = result.writes
        self.messages = [outcome.message for outcome in result.outcomes]
        return [outcome.code for outcome in result.outcomes]

    def ok(self, tx: envelope_pb2.SignedTransaction, wait: int = 1) -> None:
        assert self.run(tx, wait=wait) == [OK], self.messages

    def refused(self, tx: envelope_pb2.SignedTransaction, wait: int = 1) -> int:
        """The code a refused `tx` got; it must have written nothing."""
        [code] = self.run(tx, wait=wait)
        assert code != OK
        assert self.writes == [], f"a refused transaction wrote state: {self.messages}"
        return code

    def balance(self, key: SigningKey) -> int:
        raw = self.state.get("accounts", key.public_key)
        return 0 if raw is None else ledger_pb2.Account.FromString(raw).balance_micros

    def channel(self, channel_id: bytes = CID) -> channels_pb2.Channel:
        raw = self.state.get(CHANNELS, channel_id)
        assert raw is not None
        return channels_pb2.Channel.FromString(raw)


def open_tx(
    key: SigningKey = PAYER,
    *,
    channel_id: bytes = CID,
    payee: SigningKey = PAYEE,
    deposit: int = DEPOSIT,
    window: int = WINDOW,
) -> envelope_pb2.SignedTransaction:
    return builder(key).open_channel(
        channel_id=channel_id,
        payee=payee.public_key,
        deposit_micros=deposit,
        challenge_blocks=window,
        expiry_height=EXPIRY,
    )


def top_up_tx(
    key: SigningKey = PAYER, *, amount: int, channel_id: bytes = CID
) -> envelope_pb2.SignedTransaction:
    return builder(key).top_up_channel(
        channel_id=channel_id, amount_micros=amount, expiry_height=EXPIRY
    )


def close_tx(
    state: channels_pb2.SignedChannelState, key: SigningKey = PAYER
) -> envelope_pb2.SignedTransaction:
    return builder(key).close_channel(state=state, expiry_height=EXPIRY)


def force_tx(
    state: channels_pb2.SignedChannelState | None = None,
    key: SigningKey = PAYEE,
    *,
    channel_id: bytes = CID,
    preimages: Sequence[bytes] = (),
) -> envelope_pb2.SignedTransaction:
    return builder(key).force_close_channel(
        channel_id=channel_id, state=state, preimages=preimages, expiry_height=EXPIRY
    )


def challenge_tx(
    state: channels_pb2.SignedChannelState,
    key: SigningKey = OTHER,
    *,
    preimages: Sequence[bytes] = (),
) -> envelope_pb2.SignedTransaction:
    return builder(key).challenge_channel(state=state, preimages=preimages, expiry_height=EXPIRY)


def settle_tx(
    key: SigningKey = OTHER, *, channel_id: bytes = CID, preimages: Sequence[bytes] = ()
) -> envelope_pb2.SignedTransaction:
    return builder(key).settle_channel(
        channel_id=channel_id, preimages=preimages, expiry_height=EXPIRY
    )


def lock(amount: int, expiry: int, preimage: bytes = PREIMAGE) -> channels_pb2.HashLock:
    return channels_pb2.HashLock(hash=sha256(preimage), amount_micros=amount, expiry_height=expiry)


def signed(
    *,
    sequence: int,
    payee: int,
    deposit: int = DEPOSIT,
    locks: Sequence[channels_pb2.HashLock] = (),
    final: bool = False,
    channel_id: bytes = CID,
    signers: tuple[SigningKey, SigningKey] = (PAYER, PAYEE),
    chain: str = CHAIN,
    digest: bytes = ZERO_DIGEST,
) -> channels_pb2.SignedChannelState:
    """A state giving `payee` to the payee, `locks` in flight and the rest to the payer,
    signed by `signers` (payer's signature first) for `chain`."""
    locked = sum(lock.amount_micros for lock in locks)
    state = channels_pb2.ChannelState(
        channel_id=channel_id,
        sequence=sequence,
        deposit_micros=deposit,
        payer_micros=deposit - payee - locked,
        payee_micros=payee,
        locks=locks,
        lines_digest=digest,
        final=final,
    )
    raw = state.SerializeToString(deterministic=True)
    return channels_pb2.SignedChannelState(
        state=raw,
        payer_signature=sign_state(signers[0], chain, raw),
        payee_signature=sign_state(signers[1], chain, raw),
    )


def opened(*, payer: int = 1000, payee: int = 50, window: int = WINDOW) -> Ledger:
    """Payer, payee and a third party with accounts, and channel CID open at height 1."""
    ledger = Ledger(payer=payer, payee=payee, other=0)
    ledger.ok(open_tx(window=window))
    return ledger


def paid(ledger: Ledger, channel_id: bytes = CID) -> tuple[int, int]:
    channel = ledger.channel(channel_id)
    assert channel.status == channels_pb2.CHANNEL_STATUS_SETTLED
    return channel.payer_paid_micros, channel.payee_paid_micros


# ------------------------------------------------------------------ open and top up


def test_opening_locks_the_deposit_from_the_payer() -> None:
    ledger = opened()
    assert (ledger.balance(PAYER), ledger.balance(PAYEE)) == (900, 50)
    assert ledger.channel() == channels_pb2.Channel(
        channel_id=CID,
        payer=PAYER.public_key,
        payee=PAYEE.public_key,
        deposit_micros=DEPOSIT,
        challenge_blocks=WINDOW,
        status=channels_pb2.CHANNEL_STATUS_OPEN,
        opened_height=1,
    )


@pytest.mark.parametrize(
    ("balances", "code"),
    [
        ({"payee": 0}, tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT),
        ({"payer": 1000}, tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT),
        ({"payer": 99, "payee": 0}, tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS),
    ],
    ids=["payer has no account", "payee has no account", "payer too poor"],
)
def test_a_refused_open_changes_nothing(balances: dict[str, int], code: int) -> None:
    assert Ledger(**balances).refused(open_tx()) == code


def test_a_channel_id_is_never_used_twice() -> None:
    # Not even after settlement: the old channel's signed states must stay worthless.
    ledger = opened()
    assert ledger.refused(open_tx(deposit=1)) == tx_pb2.RESULT_CODE_CHANNEL_EXISTS
    ledger.ok(close_tx(signed(sequence=1, payee=1, final=True)))
    assert ledger.refused(open_tx(deposit=1)) == tx_pb2.RESULT_CODE_CHANNEL_EXISTS


def test_a_top_up_adds_to_the_deposit() -> None:
    ledger = opened()
    ledger.ok(top_up_tx(amount=40))
    assert ledger.channel().deposit_micros == 140
    assert ledger.balance(PAYER) == 860


@pytest.mark.parametrize(
    ("tx", "code"),
    [
        (top_up_tx(amount=1, channel_id=CID2), tx_pb2.RESULT_CODE_UNKNOWN_CHANNEL),
        (top_up_tx(PAYEE, amount=1), tx_pb2.RESULT_CODE_NOT_CHANNEL_PARTY),
        (top_up_tx(amount=901), tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS),
    ],
    ids=["unknown channel", "payee tops up", "payer too poor"],
)
def test_a_refused_top_up_changes_nothing(tx: envelope_pb2.SignedTransaction, code: int) -> None:
    assert opened().refused(tx) == code


def test_a_closing_channel_takes_no_top_up() -> None:
    ledger = opened()
    ledger.ok(force_tx())
    assert ledger.refused(top_up_tx(amount=1)) == tx_pb2.RESULT_CODE_WRONG_CHANNEL_STATUS


# ------------------------------------------------------------------ cooperative close


def test_a_final_state_closes_at_once() -> None:
    ledger = opened()
    final = signed(sequence=7, payee=30, final=True, digest=b"\x07" * 32)
    ledger.ok(close_tx(final, PAYEE))
    assert paid(ledger) == (70, 30)
    assert (ledger.balance(PAYER), ledger.balance(PAYEE)) == (970, 80)
    channel = ledger.channel()
    # The settled state stays on record for the remittance export to reconcile against.
    assert channel.pending_state.SerializeToString(deterministic=True) == final.state
    assert (channel.settled_height, channel.closed_by) == (2, PAYEE.public_key)


def test_a_final_state_also_closes_a_closing_channel() -> None:
    ledger = opened()
    ledger.ok(force_tx(signed(sequence=3, payee=10)))
    ledger.ok(close_tx(signed(sequence=4, payee=25, final=True)))
    assert paid(ledger) == (75, 25)


def test_a_top_up_no_state_includes_goes_back_to_the_payer() -> None:
    ledger = opened()
    ledger.ok(top_up_tx(amount=50))
    ledger.ok(close_tx(signed(sequence=2, payee=30, final=True)))
    assert paid(ledger) == (120, 30)
    assert (ledger.balance(PAYER), ledger.balance(PAYEE)) == (970, 80)


STATE_FAULTS: dict[str, Callable[[], channels_pb2.SignedChannelState]] = {
    "signed by the payer only": lambda: signed(
        sequence=1, payee=10, final=True, signers=(PAYER, PAYER)
    ),
    "signed by the payee only": lambda: signed(
        sequence=1, payee=10, final=True, signers=(PAYEE, PAYEE)
    ),
    "forged by a third party": lambda: signed(
        sequence=1, payee=10, final=True, signers=(OTHER, OTHER)
    ),
    "signed for another chain": lambda: signed(sequence=1, payee=10, final=True, chain="other"),
    "more than the deposit": lambda: signed(sequence=1, payee=10, deposit=101, final=True),
}


def _tampered() -> channels_pb2.SignedChannelState:
    """Both signatures valid on the original bytes, then the payee's share raised."""
    state = signed(sequence=1, payee=10, final=True)
    decoded = channels_pb2.ChannelState.FromString(state.state)
    decoded.payee_micros, decoded.payer_micros = 90, 10
    state.state = decoded.SerializeToString(deterministic=True)
    return state


STATE_FAULTS["tampered after signing"] = _tampered


@pytest.mark.parametrize("fault", sorted(STATE_FAULTS))
def test_a_close_needs_a_state_both_parties_signed(fault: str) -> None:
    ledger = opened()
    assert ledger.refused(close_tx(STATE_FAULTS[fault]())) == (
        tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    )


@pytest.mark.parametrize(
    ("state", "needle"),
    [
        (signed(sequence=1, payee=10), "final"),
        (signed(sequence=1, payee=10, final=True, locks=[lock(5, 99)]), "lock"),
        (
            channels_pb2.SignedChannelState(
                state=b"\xff\xff", payer_signature=b"s" * 64, payee_signature=b"s" * 64
            ),
            "state",
        ),
    ],
    ids=["not final", "final with a lock", "does not decode"],
)
def test_a_close_refuses_a_state_that_is_not_a_final_one(
    state: channels_pb2.SignedChannelState, needle: str
) -> None:
    ledger = opened()
    assert ledger.refused(close_tx(state)) == tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    assert needle in ledger.messages[0]


@pytest.mark.parametrize(
    ("setup", "tx", "code"),
    [
        ((), close_tx(signed(sequence=1, payee=1, final=True), OTHER), "NOT_CHANNEL_PARTY"),
        (
            (),
            close_tx(signed(sequence=1, payee=1, final=True, channel_id=CID2)),
            "UNKNOWN_CHANNEL",
        ),
        (
            (close_tx(signed(sequence=1, payee=1, final=True)),),
            close_tx(signed(sequence=2, payee=2, final=True)),
            "WRONG_CHANNEL_STATUS",
        ),
    ],
    ids=["third party", "unknown channel", "already settled"],
)
def test_a_refused_close_changes_nothing(
    setup: Sequence[envelope_pb2.SignedTransaction], tx: envelope_pb2.SignedTransaction, code: str
) -> None:
    ledger = opened()
    for earlier in setup:
        ledger.ok(earlier)
    assert ledger.refused(tx) == tx_pb2.ResultCode.Value(f"RESULT_CODE_{code}")


# ------------------------------------------------------------------ unilateral close


def test_a_force_close_without_a_state_puts_forward_state_zero() -> None:
    ledger = opened()
    ledger.ok(top_up_tx(amount=20))
    ledger.ok(force_tx(key=PAYER))
    channel = ledger.channel()
    assert channel.status == channels_pb2.CHANNEL_STATUS_CLOSING
    assert channel.pending_state == initial_state(CID, 120)
    assert (channel.closed_by, channel.challenge_end_height) == (PAYER.public_key, 3 + WINDOW)
    ledger.ok(settle_tx(), wait=WINDOW + 1)
    assert paid(ledger) == (120, 0)
    assert ledger.balance(PAYER) == 1000


@pytest.mark.parametrize(
    ("tx", "code"),
    [
        (force_tx(channel_id=CID2), tx_pb2.RESULT_CODE_UNKNOWN_CHANNEL),
        (force_tx(key=OTHER), tx_pb2.RESULT_CODE_NOT_CHANNEL_PARTY),
        (
            force_tx(signed(sequence=2, payee=5, signers=(PAYEE, PAYEE))),
            tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE,
        ),
        (
            force_tx(signed(sequence=2, payee=5, signers=(PAYER, OTHER))),
            tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE,
        ),
    ],
    ids=["unknown channel", "third party", "payee's signature only", "forged payee signature"],
)
def test_a_refused_force_close_changes_nothing(
    tx: envelope_pb2.SignedTransaction, code: int
) -> None:
    assert opened().refused(tx) == code


def test_a_state_of_another_channel_does_not_close_this_one() -> None:
    ledger = opened()
    ledger.ok(open_tx(channel_id=CID2))
    other_channel = signed(sequence=9, payee=90, channel_id=CID2)
    assert ledger.refused(force_tx(other_channel)) == tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    assert "another channel" in ledger.messages[0]


def test_a_channel_is_force_closed_once() -> None:
    ledger = opened()
    ledger.ok(force_tx())
    assert ledger.refused(force_tx(key=PAYER)) == tx_pb2.RESULT_CODE_WRONG_CHANNEL_STATUS


# ------------------------------------------------------------------ disputes


def test_an_old_state_is_answered_by_a_challenge() -> None:
    ledger = opened()
    ledger.ok(force_tx(signed(sequence=3, payee=10), key=PAYER))  # height 2, window to 7
    ledger.ok(challenge_tx(signed(sequence=5, payee=40)))  # a watchtower, for the payee
    assert ledger.refused(challenge_tx(signed(sequence=4, payee=20), PAYER)) == (
        tx_pb2.RESULT_CODE_STALE_CHANNEL_STATE
    )
    assert ledger.refused(challenge_tx(signed(sequence=5, payee=5), PAYER)) == (
        tx_pb2.RESULT_CODE_STALE_CHANNEL_STATE
    )
    assert ledger.refused(settle_tx(), wait=2) == tx_pb2.RESULT_CODE_CHALLENGE_WINDOW  # at 7
    assert ledger.channel().challenge_end_height == 7  # challenges do not extend it
    assert ledger.refused(challenge_tx(signed(sequence=6, payee=50))) == (
        tx_pb2.RESULT_CODE_CHALLENGE_WINDOW  # at 8
    )
    ledger.ok(settle_tx(PAYER))
    assert paid(ledger) == (60, 40)
    assert (ledger.balance(PAYER), ledger.balance(PAYEE)) == (960, 90)


def test_a_challenge_on_the_last_height_of_the_window_counts() -> None:
    ledger = opened()
    ledger.ok(force_tx())  # height 2, window to 7
    ledger.ok(challenge_tx(signed(sequence=1, payee=1)), wait=WINDOW)
    ledger.ok(settle_tx())
    assert paid(ledger) == (99, 1)


@pytest.mark.parametrize(
    ("tx", "code"),
    [
        (challenge_tx(signed(sequence=5, payee=40)), tx_pb2.RESULT_CODE_WRONG_CHANNEL_STATUS),
        (settle_tx(), tx_pb2.RESULT_CODE_WRONG_CHANNEL_STATUS),
        (settle_tx(channel_id=CID2), tx_pb2.RESULT_CODE_UNKNOWN_CHANNEL),
        (
            challenge_tx(signed(sequence=5, payee=40, channel_id=CID2)),
            tx_pb2.RESULT_CODE_UNKNOWN_CHANNEL,
        ),
    ],
    ids=["challenge while open", "settle while open", "settle unknown", "challenge unknown"],
)
def test_an_open_channel_is_neither_challenged_nor_settled(
    tx: envelope_pb2.SignedTransaction, code: int
) -> None:
    assert opened().refused(tx) == code


@pytest.mark.parametrize("fault", sorted(STATE_FAULTS))
def test_a_challenge_needs_a_state_both_parties_signed(fault: str) -> None:
    ledger = opened()
    ledger.ok(force_tx())
    assert ledger.refused(challenge_tx(STATE_FAULTS[fault]())) == (
        tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    )


def test_a_settled_channel_is_neither_challenged_nor_settled_again() -> None:
    ledger = opened()
    ledger.ok(force_tx())
    ledger.ok(settle_tx(), wait=WINDOW + 1)
    assert ledger.refused(settle_tx()) == tx_pb2.RESULT_CODE_WRONG_CHANNEL_STATUS
    assert ledger.refused(challenge_tx(signed(sequence=1, payee=1))) == (
        tx_pb2.RESULT_CODE_WRONG_CHANNEL_STATUS
    )


# ------------------------------------------------------------------ hash locks


def test_a_lock_revealed_before_it_expires_goes_to_the_payee() -> None:
    ledger = opened()
    state = signed(sequence=2, payee=10, locks=[lock(20, 9), lock(30, 9, PREIMAGE2)])
    # A preimage opening no lock is ignored; the other is revealed at force close.
    ledger.ok(force_tx(state, preimages=[PREIMAGE, b"z" * 32]))
    assert list(ledger.channel().revealed_hashes) == [sha256(PREIMAGE)]
    ledger.ok(settle_tx(), wait=WINDOW + 1)
    assert paid(ledger) == (40 + 30, 10 + 20)


def test_a_lock_revealed_at_its_expiry_height_counts_and_one_after_does_not() -> None:
    ledger = opened()
    state = signed(sequence=2, payee=10, locks=[lock(20, 7), lock(30, 7, PREIMAGE2)])
    ledger.ok(force_tx(state))  # height 2, window to 7
    ledger.ok(challenge_tx(state_with_same_locks(3), preimages=[PREIMAGE]), wait=WINDOW)
    ledger.ok(settle_tx(preimages=[PREIMAGE2]))  # height 8: the lock expired at 7
    assert list(ledger.channel().revealed_hashes) == [sha256(PREIMAGE)]
    assert paid(ledger) == (40 + 30, 10 + 20)


def state_with_same_locks(sequence: int) -> channels_pb2.SignedChannelState:
    return signed(sequence=sequence, payee=10, locks=[lock(20, 7), lock(30, 7, PREIMAGE2)])


def test_a_lock_never_revealed_goes_back_to_the_payer() -> None:
    ledger = opened()
    ledger.ok(force_tx(signed(sequence=2, payee=10, locks=[lock(20, 50)])))
    ledger.ok(settle_tx(), wait=WINDOW + 1)
    assert paid(ledger) == (90, 10)


def test_revealing_at_settlement_pays_a_live_lock_and_hashes_are_kept_sorted() -> None:
    ledger = opened()
    locks = [lock(20, 50, PREIMAGE2), lock(30, 50)]
    ledger.ok(force_tx(signed(sequence=2, payee=10, locks=locks)))
    ledger.ok(settle_tx(preimages=[PREIMAGE2, PREIMAGE, PREIMAGE]), wait=WINDOW + 1)
    assert list(ledger.channel().revealed_hashes) == sorted({sha256(PREIMAGE), sha256(PREIMAGE2)})
    # Each preimage is kept beside its hash, for a hub to claim the same lock upstream.
    assert [sha256(p) for p in ledger.channel().revealed_preimages] == list(
        ledger.channel().revealed_hashes
    )
    assert paid(ledger) == (40, 60)


def test_the_payee_claims_the_locks_of_the_state_the_payer_closed_with() -> None:
    """The payer closes with the latest state but never paid its revealed lock: the payee
    reveals the preimage by challenging with that same state, once per new preimage."""
    ledger = opened()
    state = signed(sequence=2, payee=10, locks=[lock(20, 50), lock(30, 50, PREIMAGE2)])
    ledger.ok(force_tx(state, key=PAYER))
    assert ledger.refused(challenge_tx(state)) == tx_pb2.RESULT_CODE_STALE_CHANNEL_STATE
    ledger.ok(challenge_tx(state, PAYEE, preimages=[PREIMAGE]))
    assert list(ledger.channel().revealed_preimages) == [PREIMAGE]
    # The same preimage again reveals nothing new: refused, so it cannot be replayed.
    assert ledger.refused(challenge_tx(state, preimages=[PREIMAGE])) == (
        tx_pb2.RESULT_CODE_STALE_CHANNEL_STATE
    )
    ledger.ok(settle_tx(), wait=WINDOW)
    assert paid(ledger) == (40 + 30, 10 + 20)


def test_a_lock_that_expired_is_not_claimed_by_repeating_the_pending_state() -> None:
    ledger = opened()
    state = signed(sequence=2, payee=10, locks=[lock(20, 3)])
    ledger.ok(force_tx(state, key=PAYER))  # height 2
    assert ledger.refused(challenge_tx(state, PAYEE, preimages=[PREIMAGE]), wait=2) == (
        tx_pb2.RESULT_CODE_STALE_CHANNEL_STATE  # at height 4: the lock expired at 3
    )
    ledger.ok(settle_tx(), wait=WINDOW)
    assert paid(ledger) == (90, 10)


def _signed_bytes(raw: bytes) -> channels_pb2.SignedChannelState:
    """`raw` as it stands, signed by both parties: what a payer could get a careless
    payee to sign, bypassing the update rules."""
    return channels_pb2.SignedChannelState(
        state=raw,
        payer_signature=sign_state(PAYER, CHAIN, raw),
        payee_signature=sign_state(PAYEE, CHAIN, raw),
    )


def test_a_state_with_two_locks_of_one_hash_is_refused_on_the_ledger() -> None:
    """The update rules keep one lock per hash (one preimage would settle both, or one's
    money would be dropped): a state holding two, though both parties signed it, is
    refused by force close and by challenge, naming the lock, and moves nothing."""
    twice = signed(sequence=2, payee=10, locks=[lock(20, 50), lock(30, 50)])
    ledger = opened()
    before = (ledger.balance(PAYER), ledger.balance(PAYEE), ledger.channel())
    code = ledger.refused(force_tx(twice, key=PAYER, preimages=[PREIMAGE]))
    assert code == tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    assert "force_close_channel.state.state.locks[1].hash" in ledger.messages[0]
    assert (ledger.balance(PAYER), ledger.balance(PAYEE), ledger.channel()) == before

    ledger.ok(force_tx(signed(sequence=1, payee=5), key=PAYER))
    closing = ledger.channel()
    assert ledger.refused(challenge_tx(twice, PAYEE, preimages=[PREIMAGE])) == (
        tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    )
    assert "challenge_channel.state.state.locks[1].hash" in ledger.messages[0]
    assert ledger.channel() == closing
    ledger.ok(settle_tx(), wait=WINDOW)
    assert paid(ledger) == (95, 5)
    assert (ledger.balance(PAYER), ledger.balance(PAYEE)) == (995, 55)


def test_a_state_that_is_not_canonically_encoded_is_refused_on_the_ledger() -> None:
    """A state padded with an unknown field decodes to the same fields, but the rules
    accept only the canonical encoding: otherwise a payee could be made to sign a state
    too large for the challenge that would defend it (issue 18)."""
    good = signed(sequence=2, payee=10)
    padded = _signed_bytes(good.state + b"\xc2\x3e\x03pad")  # unknown field 1000
    fields = channels_pb2.ChannelState.FromString(padded.state)
    fields.DiscardUnknownFields()
    assert fields.SerializeToString() == good.state
    ledger = opened()
    assert ledger.refused(force_tx(padded, key=PAYER)) == tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    assert "canonical" in ledger.messages[0]
    ledger.ok(force_tx(signed(sequence=1, payee=5), key=PAYER))
    assert ledger.refused(challenge_tx(padded)) == tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE
    ledger.ok(challenge_tx(good))
    ledger.ok(settle_tx(), wait=WINDOW)
    assert paid(ledger) == (90, 10)


# ------------------------------------------------------------------ stateless admission


def _body(tx: envelope_pb2.SignedTransaction) -> tx_pb2.TransactionBody:
    return tx_pb2.TransactionBody.FromString(tx.body)


GOOD_STATE = signed(sequence=1, payee=1)


def _case(
    tx: envelope_pb2.SignedTransaction, edit: Callable[[tx_pb2.TransactionBody], None], field: str
) -> tuple[envelope_pb2.SignedTransaction, Callable[[tx_pb2.TransactionBody], None], str]:
    return tx, edit, field


ADMISSION = [
    _case(open_tx(), lambda b: setattr(b.open_channel, "channel_id", b"x"), "channel_id"),
    _case(open_tx(), lambda b: setattr(b.open_channel, "payee", b"x"), "payee"),
    _case(open_tx(), lambda b: setattr(b.open_channel, "payee", PAYER.public_key), "payee"),
    _case(open_tx(), lambda b: setattr(b.open_channel, "deposit_micros", 0), "deposit_micros"),
    _case(open_tx(), lambda b: setattr(b.open_channel, "challenge_blocks", 0), "challenge_blocks"),
    _case(
        open_tx(),
        lambda b: setattr(b.open_channel, "challenge_blocks", 100_001),
        "challenge_blocks",
    ),
    _case(
        top_up_tx(amount=1), lambda b: setattr(b.top_up_channel, "channel_id", b""), "channel_id"
    ),
    _case(
        top_up_tx(amount=1),
        lambda b: setattr(b.top_up_channel, "amount_micros", 0),
        "amount_micros",
    ),
    _case(close_tx(GOOD_STATE), lambda b: b.close_channel.ClearField("state"), "state"),
    _case(
        close_tx(GOOD_STATE),
        lambda b: setattr(b.close_channel.state, "payer_signature", b"s" * 63),
        "state.payer_signature",
    ),
    _case(
        force_tx(), lambda b: setattr(b.force_close_channel, "channel_id", b"x" * 17), "channel_id"
    ),
    _case(
        force_tx(GOOD_STATE),
        lambda b: setattr(b.force_close_channel.state, "payee_signature", b""),
        "state.payee_signature",
    ),
    _case(force_tx(), lambda b: b.force_close_channel.preimages.append(b"p" * 31), "preimages"),
    _case(
        force_tx(), lambda b: b.force_close_channel.preimages.extend([PREIMAGE] * 65), "preimages"
    ),
    _case(challenge_tx(GOOD_STATE), lambda b: b.challenge_channel.ClearField("state"), "state"),
    _case(
        challenge_tx(GOOD_STATE),
        lambda b: b.challenge_channel.preimages.append(b"p" * 33),
        "preimages",
    ),
    _case(settle_tx(), lambda b: setattr(b.settle_channel, "channel_id", b"x"), "channel_id"),
    _case(settle_tx(), lambda b: b.settle_channel.preimages.append(b""), "preimages"),
]


@pytest.mark.parametrize(("tx", "edit", "field"), ADMISSION)
def test_admission_names_the_channel_field_that_is_wrong(
    tx: envelope_pb2.SignedTransaction,
    edit: Callable[[tx_pb2.TransactionBody], None],
    field: str,
) -> None:
    body = _body(tx)
    APP.check_tx(body, next_height=5, signer=tx.public_key)  # valid as built
    edit(body)
    with pytest.raises(Rejected) as raised:
        APP.check_tx(body, next_height=5, signer=tx.public_key)
    kind = body.WhichOneof("kind")
    assert (raised.value.field, raised.value.status) == (f"body.{kind}.{field}", "INVALID_ARGUMENT")


def test_a_malformed_channel_transaction_in_a_block_changes_nothing() -> None:
    ledger = opened()
    body = _body(open_tx(channel_id=CID2))
    body.open_channel.deposit_micros = 0
    result = APP.finalize_block(2, bytes(32), ledger.state, [(PAYER.public_key, body)], time_ms=2)
    assert [o.code for o in result.outcomes] == [tx_pb2.RESULT_CODE_MALFORMED]
    assert result.writes == []


# ------------------------------------------------------------------ properties

MALLORY = SigningKey.from_seed(bytes([14]) * 32)  # never a party, never has an account
FAULTY_DIGEST = b"\x01" * 32  # marks badly signed states: no good state ever equals one
# A state both parties signed, with the parties' public keys (payer, payee).
Good = tuple[bytes, bytes, channels_pb2.ChannelState]


def _draw_state(
    data: st.DataObject, channel_id: bytes, deposit: int, parties: tuple[SigningKey, SigningKey]
) -> tuple[channels_pb2.SignedChannelState, bool]:
    """A state that adds up within `deposit`, and whether both `parties` signed it."""
    payer, payee = parties
    included = data.draw(st.integers(0, deposit), "included")
    payee_share = data.draw(st.integers(0, included), "payee share")
    locked = data.draw(st.integers(0, included - payee_share), "locked")
    locks = [lock(locked, data.draw(st.integers(0, 60)), PREIMAGE)] if locked else []
    # Half the states are well signed, so that disputes get far enough to settle.
    signers, chain = data.draw(
        st.sampled_from(
            [
                *[((payer, payee), CHAIN)] * 5,
                ((payer, payer), CHAIN),
                ((payee, payee), CHAIN),
                ((MALLORY, MALLORY), CHAIN),
                ((payer, MALLORY), CHAIN),
                ((payer, payee), "elsewhere"),
            ]
        ),
        "signed by",
    )
    good = (signers, chain) == ((payer, payee), CHAIN) and payer != payee
    state = signed(
        sequence=data.draw(st.integers(0, 8), "sequence"),
        payee=payee_share,
        deposit=included,
        locks=locks,
        final=not locks and data.draw(st.booleans(), "final"),
        channel_id=channel_id,
        signers=signers,
        chain=chain,
        digest=ZERO_DIGEST if good else FAULTY_DIGEST,
    )
    return state, good


def _channel_or_none(ledger: Ledger, channel_id: bytes) -> channels_pb2.Channel | None:
    raw = ledger.state.get(CHANNELS, channel_id)
    return None if raw is None else channels_pb2.Channel.FromString(raw)


def _money(ledger: Ledger, channel_ids: Sequence[bytes]) -> int:
    """Every account balance plus every deposit not paid out yet."""
    held = sum(ledger.balance(key) for key in KEYS)
    for channel_id in channel_ids:
        channel = _channel_or_none(ledger, channel_id)
        if channel is not None and channel.status != channels_pb2.CHANNEL_STATUS_SETTLED:
            held += channel.deposit_micros
    return held


def _draw_tx(
    data: st.DataObject, ledger: Ledger, channel_id: bytes, good: list[Good]
) -> envelope_pb2.SignedTransaction:
    key = data.draw(st.sampled_from(KEYS), "signer")
    channel = _channel_or_none(ledger, channel_id)
    by_public_key = {k.public_key: k for k in KEYS}
    if channel is None:
        deposit, parties = 50, (PAYER, PAYEE)
    else:
        deposit = channel.deposit_micros
        parties = (by_public_key[channel.payer], by_public_key[channel.payee])
    preimages = data.draw(st.lists(st.sampled_from((PREIMAGE, PREIMAGE2)), max_size=2))
    kind = data.draw(
        st.sampled_from(("open", "top_up", "close", "force", "force_signed", "challenge", "settle"))
    )
    if kind == "open":
        return open_tx(
            key,
            channel_id=channel_id,
            payee=data.draw(st.sampled_from([k for k in KEYS if k != key])),
            deposit=data.draw(st.integers(1, 300)),
            window=data.draw(st.integers(1, 6)),
        )
    if kind == "top_up":
        return top_up_tx(key, amount=data.draw(st.integers(1, 200)), channel_id=channel_id)
    if kind == "force":
        return force_tx(key=key, channel_id=channel_id, preimages=preimages)
    if kind == "settle":
        return settle_tx(key, channel_id=channel_id, preimages=preimages)
    state, both_signed = _draw_state(data, channel_id, deposit, parties)
    if both_signed:
        decoded = channels_pb2.ChannelState.FromString(state.state)
        good.append((parties[0].public_key, parties[1].public_key, decoded))
    if kind == "close":
        return close_tx(state, key)
    if kind == "force_signed":
        return force_tx(state, key, channel_id=channel_id, preimages=preimages)
    return challenge_tx(state, key, preimages=preimages)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_channels_conserve_money_and_pay_out_only_states_both_signed(data: st.DataObject) -> None:
    ledger = opened(payer=500, payee=200)
    channel_ids = (CID, CID2)
    total = _money(ledger, channel_ids)
    good: list[Good] = []
    for _ in range(data.draw(st.integers(1, 30), "steps")):
        channel_id = data.draw(st.sampled_from(channel_ids), "channel")
        tx = _draw_tx(data, ledger, channel_id, good)
        ledger.run(tx, wait=data.draw(st.sampled_from((1, 1, 1, 2, 5)), "wait"))
        assert _money(ledger, channel_ids) == total
    for channel_id in channel_ids:
        channel = _channel_or_none(ledger, channel_id)
        if channel is None:
            continue
        if channel.HasField("pending_state"):
            pending = channel.pending_state
            state_zero = initial_state(channel_id, pending.deposit_micros)
            assert pending == state_zero or (channel.payer, channel.payee, pending) in good
        if channel.status == channels_pb2.CHANNEL_STATUS_SETTLED:
            assert channel.payer_paid_micros + channel.payee_paid_micros == channel.deposit_micros


def test_only_a_transaction_the_state_would_accept_is_time_critical() -> None:
    """The mempool's reserved lane (issue 15, case 10) takes a challenge, a settlement or
    a payee's close only when the committed state would accept it, signatures and all:
    nobody can fill the lane with transactions that fail (found by the review: settles
    inside the window and unsigned challenges filled it)."""
    ledger = opened()

    def urgency(tx: envelope_pb2.SignedTransaction, wait: int = 1) -> int:
        body = tx_pb2.TransactionBody.FromString(tx.body)
        return time_critical(ledger.state, body, tx.public_key, ledger.height + wait, CHAIN)

    assert urgency(challenge_tx(signed(sequence=5, payee=40))) == NOT_URGENT  # still open
    assert urgency(force_tx(key=PAYER)) == NOT_URGENT  # a payer's close waits its turn
    ledger.ok(force_tx(signed(sequence=3, payee=10), key=PAYER))  # height 2, window to 7
    assert urgency(challenge_tx(signed(sequence=5, payee=40))) == URGENT  # a watchtower
    assert urgency(challenge_tx(signed(sequence=5, payee=40), PAYEE)) == URGENT_FOR_PAYEE
    assert urgency(challenge_tx(signed(sequence=2, payee=5))) == NOT_URGENT  # stale
    unsigned = signed(sequence=6, payee=50)
    unsigned.payee_signature = bytes(64)
    assert urgency(challenge_tx(unsigned)) == NOT_URGENT  # a signature fails
    assert urgency(settle_tx()) == NOT_URGENT  # inside the window it would fail
    assert urgency(settle_tx(), wait=WINDOW + 1) == URGENT  # after it, it settles
    assert urgency(challenge_tx(signed(sequence=5, payee=40)), wait=WINDOW + 1) == NOT_URGENT
    transfer = builder(PAYER).transfer(to=PAYEE.public_key, amount_micros=1, expiry_height=EXPIRY)
    assert urgency(transfer) == NOT_URGENT
