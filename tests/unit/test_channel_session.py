"""The channel session cores without I/O (`channels/session.py`): the payee's refusals
as a table, what an accepted update writes and does next, when the payee asks for the
ledger, and the payer's bookkeeping of updates in flight, acknowledgements, refusals and
lock outcomes. No node, no LMDB, no asyncio: facts in, decisions out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from medledger.channels.payee import Payee
from medledger.channels.rules import ChannelRuleError, LockedPayments, UpdateParts, next_state
from medledger.channels.session import (
    CLAIM_MARGIN_BLOCKS,
    HUB_EXPIRY_DELTA_BLOCKS,
    LOCK_MARGIN_BLOCKS,
    RESOLVE_FLUSH_S,
    Accept,
    Acked,
    ChannelRefused,
    Forward,
    LedgerFacts,
    PayeeCore,
    PayerCore,
    ReadLedger,
    Refuse,
    Reveal,
    UpdateDiscarded,
    check_route,
    claims_due,
    expired_routes,
    forward_locks,
)
from medledger.channels.signing import initial_state, sign_refund, sign_state
from medledger.channels.store import INVOICES, ROUTES, ChannelStore
from medledger.client.channels import payment
from medledger.crypto import SigningKey, sha256
from medledger.wire.v1 import channels_pb2

CHAIN_ID = "medledger-session-test"
CHANNEL_ID = bytes(range(16))
DEPOSIT = 1_000_000
HEIGHT = 50
NOW_MS = 1_700_000_000_000
FAR = HEIGHT + 1_000


def record(payer_key: bytes, payee_key: bytes, **changes: object) -> channels_pb2.Channel:
    channel = channels_pb2.Channel(
        channel_id=CHANNEL_ID,
        payer=payer_key,
        payee=payee_key,
        deposit_micros=DEPOSIT,
        challenge_blocks=10,
        status=channels_pb2.CHANNEL_STATUS_OPEN,
    )
    for name, value in changes.items():
        setattr(channel, name, value)
    return channel


def facts(channel: channels_pb2.Channel | None = None, *, read: bool = False) -> LedgerFacts:
    return LedgerFacts(height=HEIGHT, now_ms=NOW_MS, record=channel, record_read=read)


def signed_update(
    key: SigningKey,
    previous: channels_pb2.ChannelState,
    payments: list[channels_pb2.Payment],
    *,
    lock: channels_pb2.HashLock | None = None,
    preimages: tuple[bytes, ...] = (),
    released: tuple[bytes, ...] = (),
    deposit: int = DEPOSIT,
    final: bool = False,
    destination: bytes = b"",
) -> tuple[channels_pb2.ChannelUpdate, channels_pb2.ChannelState]:
    """The update a well-behaved payer sends after `previous` (signed by `key`)."""
    batch = channels_pb2.PaymentBatch(payments=payments)
    state = next_state(
        previous,
        UpdateParts(
            batch=batch,
            batch_bytes=batch.SerializeToString(deterministic=True),
            deposit_micros=deposit,
            locks=[LockedPayments(lock, len(payments))] if lock is not None else [],
            preimages=preimages,
            released=released,
            final=final,
        ),
    )
    return signed(key, state, batch, lock, len(payments), preimages, released, destination), state


def signed(
    key: SigningKey,
    state: channels_pb2.ChannelState,
    batch: channels_pb2.PaymentBatch | None = None,
    lock: channels_pb2.HashLock | None = None,
    lines: int = 0,
    preimages: tuple[bytes, ...] = (),
    released: tuple[bytes, ...] = (),
    destination: bytes = b"",
) -> channels_pb2.ChannelUpdate:
    """An update carrying `state` as it is (whether or not it follows from anything)."""
    encoded = state.SerializeToString(deterministic=True)
    return channels_pb2.ChannelUpdate(
        channel_id=state.channel_id,
        batch=batch,
        state=encoded,
        payer_signature=sign_state(key, CHAIN_ID, encoded),
        new_locks=[channels_pb2.NewLock(hash=lock.hash, payments=lines)]
        if lock is not None
        else [],
        preimages=preimages,
        released_locks=released,
        destination=destination,
    )


@dataclass
class Scene:
    """A payee core that accepted state 1 (100 paid) of a channel it learnt from the
    ledger, and holds one open invoice."""

    payer: SigningKey = field(default_factory=SigningKey.generate)
    payee: SigningKey = field(default_factory=SigningKey.generate)
    check_route: Callable[[bytes, channels_pb2.HashLock], None] | None = None

    def __post_init__(self) -> None:
        self.core = PayeeCore(
            self.payee, CHAIN_ID, min_challenge_blocks=5, check_route=self.check_route
        )
        self.record = record(self.payer.public_key, self.payee.public_key)
        self.start = initial_state(CHANNEL_ID, 0)
        self.good, self.state1 = signed_update(self.payer, self.start, [payment(100)])
        assert isinstance(self.accept(self.good), Accept)
        self.preimage = b"p" * 32
        self.invoice = sha256(self.preimage)
        invoices, _ = self.core.new_invoices(CHANNEL_ID, [self.preimage])
        self.core.invoices_stored(CHANNEL_ID, invoices)

    def accept(self, update: channels_pb2.ChannelUpdate) -> Accept | Refuse:
        """Accepts as the shell does: the ledger read only when the core asks."""
        decision = self.core.accept(update, facts())
        if isinstance(decision, ReadLedger):
            known = self.record if decision.channel_id == CHANNEL_ID else None
            decision = self.core.accept(update, facts(known, read=True))
        assert not isinstance(decision, ReadLedger)
        return decision

    def lock(self, lock_hash: bytes | None = None, expiry: int = FAR) -> channels_pb2.HashLock:
        return channels_pb2.HashLock(
            hash=lock_hash or self.invoice, amount_micros=5, expiry_height=expiry
        )

    def locked(self) -> channels_pb2.ChannelState:
        """Moves on to state 2: 5 locked on the invoice."""
        update, state2 = signed_update(self.payer, self.state1, [payment(5)], lock=self.lock())
        assert isinstance(self.accept(update), Accept)
        return state2

    def paid(self) -> channels_pb2.ChannelState:
        """Moves on to state 3: the invoice's lock resolved with its preimage."""
        update, state3 = signed_update(self.payer, self.locked(), [], preimages=(self.preimage,))
        assert isinstance(self.accept(update), Accept)
        return state3


def forged(s: Scene) -> channels_pb2.ChannelUpdate:
    return signed_update(SigningKey.generate(), s.state1, [payment(5)])[0]


def reused_sequence(s: Scene) -> channels_pb2.ChannelUpdate:
    return signed_update(s.payer, s.start, [payment(5)])[0]


def out_of_order(s: Scene) -> channels_pb2.ChannelUpdate:
    _, state2 = signed_update(s.payer, s.state1, [payment(5)])
    return signed_update(s.payer, state2, [payment(5)])[0]


def unexplained(s: Scene) -> channels_pb2.ChannelUpdate:
    greedy = channels_pb2.ChannelState()
    greedy.CopyFrom(s.state1)
    greedy.sequence = 2
    greedy.payer_micros -= 50  # takes 50 with no payment line for it
    greedy.payee_micros += 50
    return signed(s.payer, greedy)


def beyond_deposit(s: Scene) -> channels_pb2.ChannelUpdate:
    return signed_update(s.payer, s.state1, [payment(5)], deposit=DEPOSIT * 2)[0]


def stranger(s: Scene) -> channels_pb2.ChannelUpdate:
    update = channels_pb2.ChannelUpdate()
    update.CopyFrom(s.good)
    update.channel_id = bytes(16)
    return update


def short_channel_id(s: Scene) -> channels_pb2.ChannelUpdate:
    update = channels_pb2.ChannelUpdate()
    update.CopyFrom(s.good)
    update.channel_id = b"\x01" * 15
    return update


def other_channels_state(s: Scene) -> channels_pb2.ChannelUpdate:
    other = initial_state(bytes(15) + b"\x09", 0)
    _, state = signed_update(s.payer, other, [payment(5)])
    state.sequence = 2
    update = signed(s.payer, state)
    update.channel_id = CHANNEL_ID
    return update


def undecodable(s: Scene) -> channels_pb2.ChannelUpdate:
    return channels_pb2.ChannelUpdate(channel_id=CHANNEL_ID, state=b"\xff\xff\xff")


def resend_other_signature(s: Scene) -> channels_pb2.ChannelUpdate:
    update = channels_pb2.ChannelUpdate()
    update.CopyFrom(s.good)
    update.payer_signature = sign_state(SigningKey.generate(), CHAIN_ID, update.state)
    return update


def closing(s: Scene) -> channels_pb2.ChannelUpdate:
    s.core.closing.add(CHANNEL_ID)
    return signed_update(s.payer, s.state1, [payment(5)])[0]


def expiring_lock(s: Scene) -> channels_pb2.ChannelUpdate:
    soon = s.lock(expiry=HEIGHT + LOCK_MARGIN_BLOCKS - 1)
    return signed_update(s.payer, s.state1, [payment(5)], lock=soon)[0]


def uninvoiced_lock(s: Scene) -> channels_pb2.ChannelUpdate:
    stray = s.lock(sha256(b"r" * 32))
    return signed_update(s.payer, s.state1, [payment(5)], lock=stray)[0]


def lock_not_in_state(s: Scene) -> channels_pb2.ChannelUpdate:
    update = signed_update(s.payer, s.state1, [payment(5)], lock=s.lock())[0]
    update.new_locks[0].hash = sha256(b"elsewhere")
    return update


def routed_without_router(s: Scene) -> channels_pb2.ChannelUpdate:
    return signed_update(s.payer, s.state1, [payment(5)], lock=s.lock(), destination=b"\x07" * 32)[
        0
    ]


def take_back_unreleased(s: Scene) -> channels_pb2.ChannelUpdate:
    return signed_update(s.payer, s.locked(), [], released=(s.invoice,))[0]


def wrong_preimage(s: Scene) -> channels_pb2.ChannelUpdate:
    state2 = s.locked()
    claimed = channels_pb2.ChannelState()
    claimed.CopyFrom(state2)
    claimed.sequence = 3
    del claimed.locks[:]
    claimed.payee_micros += 5
    claimed.lines_digest = sha256(state2.lines_digest)
    update = signed(s.payer, claimed)
    update.preimages.append(b"w" * 32)
    return update


def invoice_paid_twice(s: Scene) -> channels_pb2.ChannelUpdate:
    again = s.lock(expiry=FAR - 1)
    again.amount_micros = 1
    return signed_update(s.payer, s.paid(), [payment(1)], lock=again)[0]


def refund_not_offered(s: Scene) -> channels_pb2.ChannelUpdate:
    refund = payment(5)
    refund.refund = True
    return signed_update(s.payer, s.state1, [refund])[0]


def after_final(s: Scene) -> channels_pb2.ChannelUpdate:
    final, state2 = signed_update(s.payer, s.state1, [], final=True)
    assert isinstance(s.accept(final), Accept)
    more = channels_pb2.ChannelState()
    more.CopyFrom(state2)
    more.sequence = 3
    more.final = False
    return signed(s.payer, more)


REFUSALS = {
    "a state not signed by the payer": (forged, "UNAUTHENTICATED", "payer_signature"),
    "a sequence used already": (reused_sequence, "FAILED_PRECONDITION", "state.sequence"),
    "a sequence skipped": (out_of_order, "FAILED_PRECONDITION", "state.sequence"),
    "balances no line explains": (unexplained, "INVALID_ARGUMENT", "state.payer_micros"),
    "a deposit beyond the ledger's": (
        beyond_deposit,
        "FAILED_PRECONDITION",
        "state.deposit_micros",
    ),
    "a channel the ledger does not have": (stranger, "NOT_FOUND", "channel_id"),
    "a channel id of the wrong length": (short_channel_id, "INVALID_ARGUMENT", "channel_id"),
    "another channel's state": (other_channels_state, "INVALID_ARGUMENT", "state.channel_id"),
    "a state that does not decode": (undecodable, "INVALID_ARGUMENT", "state.state"),
    "a resend signed by someone else": (
        resend_other_signature,
        "UNAUTHENTICATED",
        "payer_signature",
    ),
    "a channel closing on the ledger": (closing, "FAILED_PRECONDITION", "channel_id"),
    "a lock about to expire": (expiring_lock, "FAILED_PRECONDITION", "state.locks.expiry_height"),
    "a lock on no invoice": (uninvoiced_lock, "FAILED_PRECONDITION", "new_locks[0].hash"),
    "a new lock the state lacks": (lock_not_in_state, "INVALID_ARGUMENT", "new_locks[0].hash"),
    "a route to a payee that does not route": (
        routed_without_router,
        "FAILED_PRECONDITION",
        "destination",
    ),
    "taking back a lock not given up": (
        take_back_unreleased,
        "FAILED_PRECONDITION",
        "released_locks[0]",
    ),
    "a preimage that opens no lock": (wrong_preimage, "FAILED_PRECONDITION", "preimages[0]"),
    "an invoice paid twice": (invoice_paid_twice, "FAILED_PRECONDITION", "new_locks[0].hash"),
    "a refund never offered": (refund_not_offered, "FAILED_PRECONDITION", "batch.payments[0]"),
    "an update after the final state": (after_final, "FAILED_PRECONDITION", "state.sequence"),
}


@pytest.mark.parametrize(("build", "status", "field_name"), REFUSALS.values(), ids=REFUSALS)
def test_a_bad_update_is_refused_naming_the_field_and_changes_nothing(
    build: Callable[[Scene], channels_pb2.ChannelUpdate], status: str, field_name: str
) -> None:
    scene = Scene()
    update = build(scene)
    head = scene.core.heads[CHANNEL_ID]
    latest = channels_pb2.SignedChannelState()
    latest.CopyFrom(scene.core.channels[CHANNEL_ID].latest)
    decision = scene.accept(update)
    assert isinstance(decision, Refuse), decision
    assert (decision.status, decision.field) == (status, field_name), decision.reason
    assert decision.reason
    assert scene.core.heads[CHANNEL_ID] is head
    assert scene.core.channels[CHANNEL_ID].latest == latest


WINDOWS = {
    "not open": ({"status": channels_pb2.CHANNEL_STATUS_CLOSING}, "FAILED_PRECONDITION"),
    "a window too short": ({"challenge_blocks": 4}, "FAILED_PRECONDITION"),
    "another payee's": ({"payee": b"\x05" * 32}, "NOT_FOUND"),
}


@pytest.mark.parametrize(("changes", "status"), WINDOWS.values(), ids=WINDOWS)
def test_a_channel_learnt_from_the_ledger_must_be_one_the_payee_can_defend(
    changes: dict[str, object], status: str
) -> None:
    payer, payee = SigningKey.generate(), SigningKey.generate()
    core = PayeeCore(payee, CHAIN_ID, min_challenge_blocks=5)
    update, _ = signed_update(payer, initial_state(CHANNEL_ID, 0), [payment(1)])
    assert core.accept(update, facts()) == ReadLedger(CHANNEL_ID)
    on_ledger = record(payer.public_key, payee.public_key, **changes)
    decision = core.accept(update, facts(on_ledger, read=True))
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.field) == (status, "channel_id")
    assert CHANNEL_ID not in core.channels


def test_the_router_refusing_a_route_refuses_the_update() -> None:
    def no_capacity(destination: bytes, lock: channels_pb2.HashLock) -> None:
        raise ChannelRuleError("RESOURCE_EXHAUSTED", "destination", "no capacity")

    scene = Scene(check_route=no_capacity)
    decision = scene.accept(routed_without_router(scene))
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.field) == ("RESOURCE_EXHAUSTED", "destination")


def test_an_accepted_update_is_countersigned_with_its_writes_and_what_follows() -> None:
    scene = Scene()
    update, state2 = signed_update(scene.payer, scene.state1, [payment(5)], lock=scene.lock())
    decision = scene.accept(update)
    assert isinstance(decision, Accept)
    assert not decision.resend
    assert (decision.ack.channel_id, decision.ack.sequence) == (CHANNEL_ID, 2)
    assert decision.ack.payee_signature == sign_state(scene.payee, CHAIN_ID, update.state)
    stored = channels_pb2.StoredUpdate.FromString(decision.writes[1][2] or b"")
    assert (stored.acked_unix_ms, stored.update) == (NOW_MS, update)
    assert [db for db, _, _ in decision.lock_writes] == [INVOICES]
    assert decision.then == [Reveal(CHANNEL_ID, scene.invoice, scene.preimage)]
    assert scene.core.heads[CHANNEL_ID] == state2
    assert scene.core.invoices[scene.invoice].paid
    # The same update again: the same answer, nothing more to write.
    again = scene.accept(update)
    assert isinstance(again, Accept)
    assert again.resend
    assert (again.ack, again.writes) == (decision.ack, [])
    # Paid with the preimage: the invoice is done with and the lock settled.
    scene.core.secrets[scene.invoice] = scene.preimage  # revealed (the shell, once durable)
    paying, _ = signed_update(scene.payer, state2, [], preimages=(scene.preimage,))
    paid = scene.accept(paying)
    assert isinstance(paid, Accept)
    assert paid.settled == [scene.invoice]
    assert (INVOICES, scene.invoice, None) in paid.writes
    assert scene.core.preimages([scene.invoice]) == []


def test_a_routed_lock_is_forwarded_once_durable() -> None:
    routes: list[bytes] = []
    scene = Scene(check_route=lambda destination, lock: routes.append(destination))
    destination = b"\x07" * 32
    lock = scene.lock(sha256(b"routed"), expiry=FAR)
    update, _ = signed_update(
        scene.payer, scene.state1, [payment(3), payment(2)], lock=lock, destination=destination
    )
    decision = scene.accept(update)
    assert isinstance(decision, Accept)
    assert routes == [destination]
    assert [db for db, _, _ in decision.lock_writes] == [ROUTES]
    (forward,) = decision.then
    assert isinstance(forward, Forward)
    assert (forward.route.hash, forward.route.in_expiry_height) == (lock.hash, FAR)
    assert list(forward.payments) == list(update.batch.payments)


def test_the_ledger_is_read_before_deciding_on_a_larger_deposit() -> None:
    scene = Scene()
    update, state2 = signed_update(scene.payer, scene.state1, [payment(5)], deposit=DEPOSIT * 2)
    assert scene.core.accept(update, facts()) == ReadLedger(CHANNEL_ID)
    topped_up = record(scene.payer.public_key, scene.payee.public_key, deposit_micros=DEPOSIT * 2)
    decision = scene.core.accept(update, facts(topped_up, read=True))
    assert isinstance(decision, Accept)
    assert scene.core.channels[CHANNEL_ID].deposit_micros == DEPOSIT * 2
    assert scene.core.heads[CHANNEL_ID] == state2


def test_a_lock_given_up_or_expired_may_be_taken_back() -> None:
    scene = Scene()
    state2 = scene.locked()
    scene.core.lock_given_up(channels_pb2.LockFailed(channel_id=CHANNEL_ID, hash=scene.invoice))
    update, _ = signed_update(scene.payer, state2, [], released=(scene.invoice,))
    decision = scene.accept(update)
    assert isinstance(decision, Accept)
    assert decision.settled == [scene.invoice]
    expired = Scene()
    state2 = expired.locked()
    update, _ = signed_update(expired.payer, state2, [], released=(expired.invoice,))
    late = LedgerFacts(height=FAR + 1, now_ms=NOW_MS)
    assert isinstance(expired.core.accept(update, late), Accept)


def test_refund_offers_are_checked_and_spent_once() -> None:
    scene = Scene()
    local = scene.core.channels[CHANNEL_ID]
    refund = payment(7)
    offer = channels_pb2.RefundOffer(channel_id=CHANNEL_ID, payment=refund)
    sign_refund(scene.payee, CHAIN_ID, offer)
    forged_offer = channels_pb2.RefundOffer()
    forged_offer.CopyFrom(offer)
    sign_refund(scene.payer, CHAIN_ID, forged_offer)
    with pytest.raises(ChannelRuleError, match="refund_signature"):
        scene.core.check_refund(local, forged_offer)
    assert scene.core.check_refund(local, offer)
    scene.core.refund_stored(offer)
    assert not scene.core.check_refund(local, offer)  # the same offer again
    update, _ = signed_update(scene.payer, scene.state1, [offer.payment])
    assert isinstance(scene.accept(update), Accept)
    with pytest.raises(ChannelRuleError) as taken:
        scene.core.check_refund(local, offer)
    assert (taken.value.status, taken.value.field) == ("ALREADY_EXISTS", "payment.payment_id")


def test_pending_events_are_told_to_a_new_listener() -> None:
    scene = Scene()
    scene.locked()
    scene.core.secrets[scene.invoice] = scene.preimage
    (event,) = scene.core.events(CHANNEL_ID)
    assert (event.resolved.hash, event.resolved.preimage) == (scene.invoice, scene.preimage)


# ---------------------------------------------------------------------- the payer


@dataclass
class Payer:
    key: SigningKey = field(default_factory=SigningKey.generate)
    payee: SigningKey = field(default_factory=SigningKey.generate)

    def __post_init__(self) -> None:
        local = channels_pb2.LocalChannel(
            channel_id=CHANNEL_ID,
            payer=self.key.public_key,
            payee=self.payee.public_key,
            deposit_micros=DEPOSIT,
        )
        self.core = PayerCore(self.key, CHAIN_ID, local)

    def ack(self, sequence: int, signer: SigningKey | None = None) -> channels_pb2.ChannelAck:
        flight = self.core.in_flight[sequence]
        key = signer or self.payee
        return channels_pb2.ChannelAck(
            channel_id=CHANNEL_ID,
            sequence=sequence,
            payee_signature=sign_state(key, CHAIN_ID, flight.update.state),
        )

    def refusal(self, sequence: int) -> channels_pb2.ChannelRefusal:
        return channels_pb2.ChannelRefusal(
            channel_id=CHANNEL_ID, sequence=sequence, field="batch", message="no"
        )


def test_the_payer_pipelines_updates_and_keeps_what_is_acknowledged() -> None:
    payer = Payer()
    first = payer.core.build([payment(10)])
    second = payer.core.build([payment(20)])
    assert (first.state.sequence, second.state.sequence) == (1, 2)
    assert payer.core.spendable_micros == DEPOSIT - 30
    acked = payer.core.on_ack(payer.ack(1), NOW_MS)
    assert isinstance(acked, Acked)
    assert acked.signed.state == first.update.state
    assert payer.core.acked_state() == first.state
    assert payer.core.head == second.state  # still ahead of what is acknowledged
    assert payer.core.on_ack(payer.ack(2), NOW_MS) is not None
    assert payer.core.on_ack(channels_pb2.ChannelAck(sequence=2), NOW_MS) is None  # a repeat


def test_a_refusal_fails_the_update_and_those_built_on_it() -> None:
    payer = Payer()
    payer.core.build([payment(10)])
    payer.core.build([payment(20)])
    payer.core.build([payment(30)])
    failures = payer.core.on_refusal(payer.refusal(2), "FAILED_PRECONDITION")
    assert [(f.sequence, type(f.error)) for f in failures] == [
        (2, ChannelRefused),
        (3, UpdateDiscarded),
    ]
    assert payer.core.head.sequence == 1  # rewound to the last update still in flight
    assert payer.core.flush_delay_s == RESOLVE_FLUSH_S * 2
    # The payee's own refusal of update 3 (built on 2) arrives next: already failed.
    assert payer.core.on_refusal(payer.refusal(3), "ABORTED") == []
    rebuilt = payer.core.build([payment(20)])
    assert rebuilt.state.sequence == 2


def test_a_payee_acknowledging_a_later_state_cannot_make_an_earlier_update_paid_twice() -> None:
    """A lying payee countersigns update 2 (which holds update 1's payments) and then
    refuses update 1: update 1 is acknowledged by state 2 and its payments are not due
    again; the refusal changes nothing."""
    payer = Payer()
    payer.core.build([payment(10)])
    second = payer.core.build([payment(20)])
    acked = payer.core.on_ack(payer.ack(2), NOW_MS)
    assert isinstance(acked, Acked)
    assert acked.covered == [1]
    assert acked.signed.state == second.update.state
    assert payer.core.in_flight == {}
    assert payer.core.on_refusal(payer.refusal(1), "FAILED_PRECONDITION") == []
    assert payer.core.fail_all(ChannelRefused("UNAVAILABLE", "stream", "gone")) == []
    assert not payer.core.has_due()  # nothing to pay again
    third = payer.core.build([])
    assert third.state.sequence == 3
    state = channels_pb2.ChannelState.FromString(third.update.state)
    assert state.payee_micros == 30  # each paid once


def test_an_acknowledgement_not_signed_by_the_payee_fails_the_update() -> None:
    payer = Payer()
    payer.core.build([payment(10)])
    failures = payer.core.on_ack(payer.ack(1, SigningKey.generate()), NOW_MS)
    assert isinstance(failures, list)
    assert [(f.error.status, f.error.field) for f in failures] == [
        ("UNAUTHENTICATED", "payee_signature")
    ]
    assert payer.core.head.sequence == 0


def test_lock_outcomes_ride_on_the_next_update_and_return_when_it_fails() -> None:
    payer = Payer()
    preimage = b"q" * 32
    lock = channels_pb2.HashLock(hash=sha256(preimage), amount_micros=5, expiry_height=FAR)
    flight = payer.core.build([payment(5)], locks=[LockedPayments(lock, 1)])
    assert payer.core.pending_locks() == [lock.hash]
    wrong = channels_pb2.LockResolved(channel_id=CHANNEL_ID, hash=lock.hash, preimage=b"x" * 32)
    assert not payer.core.resolved_lock(wrong)
    right = channels_pb2.LockResolved(channel_id=CHANNEL_ID, hash=lock.hash, preimage=preimage)
    assert payer.core.resolved_lock(right)
    assert payer.core.requeue([preimage], ())
    assert isinstance(payer.core.on_ack(payer.ack(flight.state.sequence), NOW_MS), Acked)
    paying = payer.core.build([])
    assert list(paying.update.preimages) == [preimage]
    assert not payer.core.has_due()
    (failed,) = payer.core.on_refusal(payer.refusal(paying.state.sequence), "UNAVAILABLE")
    assert failed.new_locks == []
    assert payer.core.preimages_due == {lock.hash: preimage}  # carried by the next one
    paid = payer.core.build([])
    acked = payer.core.on_ack(payer.ack(paid.state.sequence), NOW_MS)
    assert isinstance(acked, Acked)
    assert acked.settled == [lock.hash]
    assert payer.core.pending_locks() == []


def test_a_lock_the_payee_gave_up_is_released_next() -> None:
    payer = Payer()
    lock = channels_pb2.HashLock(hash=sha256(b"g"), amount_micros=5, expiry_height=FAR)
    payer.core.build([payment(5)], locks=[LockedPayments(lock, 1)])
    given_up = channels_pb2.LockFailed(channel_id=CHANNEL_ID, hash=lock.hash, reason="gone")
    assert payer.core.failed_lock(given_up)
    releasing = payer.core.build([])
    assert list(releasing.update.released_locks) == [lock.hash]
    assert payer.core.spendable_micros == DEPOSIT
    assert not payer.core.failed_lock(given_up)  # no longer pending: a repeat


def test_a_failed_stream_fails_every_update_with_its_error() -> None:
    payer = Payer()
    payer.core.build([payment(1)])
    payer.core.build([payment(2)])
    error = ChannelRefused("UNAVAILABLE", "stream", "gone")
    failures = payer.core.fail_all(error)
    assert [f.error for f in failures] == [error, error]
    assert payer.core.failure is error


def test_the_payer_adopts_a_newer_state_both_signed() -> None:
    payer = Payer()
    _, state = signed_update(payer.key, initial_state(CHANNEL_ID, 0), [payment(9)])
    encoded = state.SerializeToString(deterministic=True)
    both = channels_pb2.SignedChannelState(
        state=encoded,
        payer_signature=sign_state(payer.key, CHAIN_ID, encoded),
        payee_signature=sign_state(payer.payee, CHAIN_ID, encoded),
    )
    assert len(payer.core.adopt(both)) == 1
    assert payer.core.head == state
    assert payer.core.adopt(both) == []  # not ahead any more
    with pytest.raises(ChannelRuleError, match="overspend"):
        payer.core.build([payment(DEPOSIT)])
    assert payer.core.head == state


# ---------------------------------------------------------------------- hub routes

ROUTE_REFUSALS = {
    "no channel to the destination": ({"link": False}, "FAILED_PRECONDITION", "destination"),
    "the destination unreachable": ({"connected": False}, "UNAVAILABLE", "destination"),
    "too little time for both hops": (
        {"expiry": HEIGHT + LOCK_MARGIN_BLOCKS + HUB_EXPIRY_DELTA_BLOCKS - 1},
        "FAILED_PRECONDITION",
        "state.locks.expiry_height",
    ),
    "too little capacity": ({"spendable_micros": 4}, "RESOURCE_EXHAUSTED", "destination"),
}


@pytest.mark.parametrize(
    ("changes", "status", "field_name"), ROUTE_REFUSALS.values(), ids=ROUTE_REFUSALS
)
def test_a_hub_refuses_a_route_it_cannot_forward(
    changes: dict[str, object], status: str, field_name: str
) -> None:
    given: dict[str, object] = {"link": True, "connected": True, "spendable_micros": 5}
    given.update(changes)
    expiry = given.pop("expiry", HEIGHT + LOCK_MARGIN_BLOCKS + HUB_EXPIRY_DELTA_BLOCKS)
    assert isinstance(expiry, int)
    lock = channels_pb2.HashLock(hash=b"h" * 32, amount_micros=5, expiry_height=expiry)
    with pytest.raises(ChannelRuleError) as refused:
        check_route(lock, height=HEIGHT, **given)  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.field) == (status, field_name)


def test_a_route_it_can_forward_passes_and_is_forwarded_earlier() -> None:
    expiry = HEIGHT + LOCK_MARGIN_BLOCKS + HUB_EXPIRY_DELTA_BLOCKS
    lock = channels_pb2.HashLock(hash=b"h" * 32, amount_micros=5, expiry_height=expiry)
    check_route(lock, height=HEIGHT, link=True, connected=True, spendable_micros=5)
    route = channels_pb2.HubRoute(hash=lock.hash, amount_micros=5, in_expiry_height=expiry)
    (forwarded,) = forward_locks([(route, 3)])
    assert (forwarded.lock.expiry_height, forwarded.payments) == (
        expiry - HUB_EXPIRY_DELTA_BLOCKS,
        3,
    )


def test_routes_expire_and_claims_fall_due_by_height() -> None:
    open_route = channels_pb2.HubRoute(
        hash=b"a" * 32, in_channel_id=CHANNEL_ID, in_expiry_height=100
    )
    revealed = channels_pb2.HubRoute(
        hash=b"b" * 32, in_channel_id=CHANNEL_ID, in_expiry_height=100, preimage=b"p" * 32
    )
    failed = channels_pb2.HubRoute(hash=b"c" * 32, in_expiry_height=100, failure="gone")
    routes = [open_route, revealed, failed]
    outgoing_expiry = 100 - HUB_EXPIRY_DELTA_BLOCKS
    assert expired_routes(routes, outgoing_expiry) == []
    assert expired_routes(routes, outgoing_expiry + 1) == [open_route]
    assert claims_due(routes, 100 - CLAIM_MARGIN_BLOCKS - 1) == {}
    assert claims_due(routes, 100 - CLAIM_MARGIN_BLOCKS) == {CHANNEL_ID: [b"p" * 32]}


class UnreachableLedger:
    """A hub's view of the ledger while its node is down."""

    async def channel(self, channel_id: bytes) -> None:
        raise ChannelRuleError("UNAVAILABLE", "channel_id", "the ledger: connection refused")

    def height(self) -> int:
        return 50


def test_an_unreachable_ledger_refuses_the_update_as_unavailable(tmp_path: Path) -> None:
    """The payee reads the ledger before it decides on a channel it does not know yet; if
    that read fails, the payer hears UNAVAILABLE at once (and may retry), and nothing is
    stored: the stream is not left waiting for a verdict."""
    payer, payee_key = SigningKey.generate(), SigningKey.generate()
    store = ChannelStore(tmp_path / "channels")
    payee = Payee(payee_key, CHAIN_ID, store, UnreachableLedger())
    update, _ = signed_update(payer, initial_state(CHANNEL_ID, 0), [payment(100)])
    verdict = asyncio.run(payee.accept(update))
    refusal = verdict.event.refusal
    assert verdict.event.WhichOneof("event") == "refusal"
    assert refusal.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert refusal.field == "channel_id"
    assert verdict.durable is None
    assert payee.latest(CHANNEL_ID) is None
    store.close()
