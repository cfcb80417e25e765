"""Channel sessions without I/O: what a payer and a payee remember about their channels,
and what each does with an update, an acknowledgement or a lock's outcome.

`rules.next_state` says how one update turns a state into the next. This module is
everything around it: which state is the head, which is acknowledged and which are in
flight, the sequence bookkeeping, refund offers, invoices and the locks waiting for a
preimage, the refusals, and what to store and send next.

Nothing here awaits, reads a clock, touches LMDB or speaks gRPC. The facts a decision
needs come in as arguments (the ledger's height and the channel's on-ledger record as
`LedgerFacts`, the time as `now_ms`), and the decision comes out as values (`Accept`,
`Refuse`, `ReadLedger`, `Acked`, `Failed`, store writes as `Write`s). The shells
(`payee.Payee`, `payer.PayerSession`, `hub.Hub`) gather the facts, call in here and
carry the decision out: store, then acknowledge; resolve the futures their callers wait
on; send the next update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from medledger.channels.rules import (
    ChannelRuleError,
    LockedPayments,
    UpdateParts,
    check_channel_id,
    next_state,
)
from medledger.channels.signing import (
    InvalidChannelState,
    decode_state,
    initial_state,
    sign_state,
    verify_channel_states,
    verify_refund,
    verify_signed_state,
)
from medledger.channels.store import ChannelStore, Write
from medledger.crypto import SigningKey, sha256
from medledger.errors import Rejected
from medledger.limits import INVOICES_PER_REQUEST_MAX, OPEN_INVOICES_PER_CHANNEL_MAX
from medledger.signed_requests import check_request
from medledger.wire.v1 import channels_pb2

__all__ = [
    "CLAIM_MARGIN_BLOCKS",
    "HUB_EXPIRY_DELTA_BLOCKS",
    "LOCK_MARGIN_BLOCKS",
    "RESOLVE_FLUSH_S",
    "RESOLVE_RETRY_MAX_S",
    "Accept",
    "Acked",
    "ChannelRefused",
    "Failed",
    "Forward",
    "LedgerFacts",
    "PayeeCore",
    "PayerCore",
    "ReadLedger",
    "Refuse",
    "Reveal",
    "RouteCheck",
    "UpdateDiscarded",
    "check_route",
    "claims_due",
    "expired_routes",
    "forward_locks",
]

LOCK_MARGIN_BLOCKS = 10
"""A new lock must leave at least this many blocks to reveal its preimage on the ledger."""
RESOLVE_FLUSH_S = 0.005
"""How long a lock outcome waits to ride on the next payment before it gets an update of
its own: the payee is owed the amount of a revealed lock until a state includes it."""
RESOLVE_RETRY_MAX_S = 5.0
"""Each refusal doubles that wait, up to this: a payee that keeps refusing (to let a lock
go, say) is asked again at this pace, not hundreds of times a second."""

HUB_EXPIRY_DELTA_BLOCKS = 20
"""e1 - e2: the blocks a hub keeps, after the provider's lock expires, to claim the
payer's lock with the preimage."""
CLAIM_MARGIN_BLOCKS = HUB_EXPIRY_DELTA_BLOCKS
"""A hub closes a channel on the ledger, revealing the preimages it is owed, once a
revealed lock is this close to its expiry and the payer still has not paid it: as soon
as the provider's lock on the same hash has expired, with the whole delta to spare."""

RouteCheck = Callable[[bytes, channels_pb2.HashLock], None]
"""A hub's check that it can forward a lock to a destination (raises ChannelRuleError
naming the field). It reads the hub's own memory only: which links are up, their
capacity, the height."""


class ChannelRefused(ChannelRuleError):
    """The payee refused an update (or it could not be delivered)."""


class UpdateDiscarded(ChannelRefused):
    """The update was built on an earlier one the payee refused, so the payee refuses it
    too: nothing in it was accepted, and its payments may be sent again."""


def _refused(status: str, field: str, reason: str) -> ChannelRuleError:
    return ChannelRuleError(status, field, reason)


# ---------------------------------------------------------------------- payee decisions


@dataclass(frozen=True)
class LedgerFacts:
    """What the ledger says, read by the shell before it asks for a decision.

    `record` is the channel's on-ledger record when `record_read` (None: the ledger has no
    such channel); a decision that needs it while it was not read answers `ReadLedger`."""

    height: int
    now_ms: int
    record: channels_pb2.Channel | None = None
    record_read: bool = False


@dataclass(frozen=True)
class ReadLedger:
    """The decision needs the channel's on-ledger record (a channel not seen yet, or a
    deposit beyond the one known): read it, then ask again with it in `LedgerFacts`."""

    channel_id: bytes


@dataclass(frozen=True)
class Refuse:
    """The update is refused; `status` is the gRPC status name, `field` what failed."""

    status: str
    field: str
    reason: str


@dataclass(frozen=True)
class Reveal:
    """Once the update is durable: tell the payer the preimage of its lock."""

    channel_id: bytes
    lock_hash: bytes
    preimage: bytes


@dataclass(frozen=True)
class Forward:
    """Once the update is durable: a hub forwards these payment lines on the route."""

    route: channels_pb2.HubRoute
    payments: Sequence[channels_pb2.Payment]


@dataclass(frozen=True)
class Accept:
    """The update is accepted and the head moved on. Store `writes`, the router's writes
    for the `settled` lock hashes, then `lock_writes`, in one transaction; acknowledge
    with `ack` and carry out `then` once that is durable. A `resend` (the same update
    again after a lost acknowledgement) writes nothing: its answer waits for the
    channel's last commit."""

    ack: channels_pb2.ChannelAck
    writes: list[Write] = field(default_factory=list)
    settled: list[bytes] = field(default_factory=list)
    lock_writes: list[Write] = field(default_factory=list)
    then: list[Reveal | Forward] = field(default_factory=list)
    resend: bool = False


def _first_difference(expected: channels_pb2.ChannelState, got: channels_pb2.ChannelState) -> str:
    for descriptor in channels_pb2.ChannelState.DESCRIPTOR.fields:
        if getattr(expected, descriptor.name) != getattr(got, descriptor.name):
            return descriptor.name
    return "state"


class PayeeCore:
    """Everything a payee remembers about its channels, and its rules for updates, refund
    offers, invoices and given-up locks. Built from what the store holds; changed only
    by the calls below, whose writes the shell makes durable."""

    def __init__(
        self,
        key: SigningKey,
        chain_id: str,
        *,
        channels: Iterable[channels_pb2.LocalChannel] = (),
        offers: Iterable[channels_pb2.RefundOffer] = (),
        invoices: dict[bytes, channels_pb2.Invoice] | None = None,
        refunded: dict[bytes, set[bytes]] | None = None,
        failed: Iterable[channels_pb2.LockFailed] = (),
        min_challenge_blocks: int = 1,
        check_route: RouteCheck | None = None,
    ) -> None:
        """`check_route`: set when this payee is a hub that forwards routed payments.
        `min_challenge_blocks`: channels with a shorter challenge window are refused (a
        payee needs that long to answer a close with an old state)."""
        self.key = key
        self.chain_id = chain_id
        self.min_challenge_blocks = min_challenge_blocks
        self.check_route = check_route
        self.channels: dict[bytes, channels_pb2.LocalChannel] = {}
        self.heads: dict[bytes, channels_pb2.ChannelState] = {}
        self.offers: dict[bytes, dict[bytes, channels_pb2.RefundOffer]] = {}
        self.closing: set[bytes] = set()  # closed on the ledger: no more updates
        # Hash locks: invoices handed out, preimages this payee may reveal (its paid
        # invoices, or learnt from the next hop), and locks it gave up per channel.
        self.invoices = dict(invoices or {})
        self.secrets = {h: i.preimage for h, i in self.invoices.items() if i.paid}
        self.open_invoices: dict[bytes, int] = {}
        for invoice in self.invoices.values():
            if not invoice.paid:
                self.open_invoices[invoice.channel_id] = (
                    self.open_invoices.get(invoice.channel_id, 0) + 1
                )
        self.refunded = dict(refunded or {})  # refunds taken: their offers are spent
        self.failed: dict[bytes, dict[bytes, channels_pb2.LockFailed]] = {}
        for lock_failed in failed:
            self.failed.setdefault(lock_failed.channel_id, {})[lock_failed.hash] = lock_failed
        for local in channels:
            if local.payee == key.public_key:
                self._remember(local)
        for offer in offers:
            if offer.channel_id in self.offers:
                self.offers[offer.channel_id][offer.payment.payment_id] = offer

    def _remember(self, local: channels_pb2.LocalChannel) -> None:
        channel_id = local.channel_id
        self.channels[channel_id] = local
        if local.latest.state:
            self.heads[channel_id] = channels_pb2.ChannelState.FromString(local.latest.state)
        else:
            self.heads[channel_id] = initial_state(channel_id, 0)
        self.offers.setdefault(channel_id, {})

    # ------------------------------------------------------------------ channels

    def learn(
        self, channel_id: bytes, record: channels_pb2.Channel | None
    ) -> channels_pb2.LocalChannel:
        """The payee's record of a channel it has not seen, from its on-ledger `record`;
        raises ChannelRuleError if the payee takes no updates on it."""
        known = self.channels.get(channel_id)
        if known is not None:
            return known  # learnt meanwhile (another stream read the ledger too)
        if record is None or record.payee != self.key.public_key:
            raise _refused("NOT_FOUND", "channel_id", "no channel to this payee")
        if record.status != channels_pb2.CHANNEL_STATUS_OPEN:
            raise _refused("FAILED_PRECONDITION", "channel_id", "the channel is not open")
        if record.challenge_blocks < self.min_challenge_blocks:
            raise _refused(
                "FAILED_PRECONDITION",
                "channel_id",
                f"its challenge window of {record.challenge_blocks} blocks is shorter than "
                f"the {self.min_challenge_blocks} this payee needs to answer an old state",
            )
        local = channels_pb2.LocalChannel(
            channel_id=channel_id,
            payer=record.payer,
            payee=record.payee,
            deposit_micros=record.deposit_micros,
            challenge_blocks=record.challenge_blocks,
        )
        self._remember(local)
        return local

    def check_party(self, local: channels_pb2.LocalChannel, request: Message, now_ms: int) -> None:
        """Raises ChannelRuleError unless the channel's payer or payee signed `request`
        (a state read or an invoice request) for this chain, recently."""
        for party in (local.payer, local.payee):
            try:
                check_request(request, party, self.chain_id, now_ms, "channel-request")
            except Rejected as error:
                if error.field == "signature":
                    continue  # not this party's: try the other
                raise _refused(error.status, error.field, error.reason) from error
            return
        raise _refused("UNAUTHENTICATED", "signature", "not signed by the channel's payer or payee")

    def pending_locks(self, channel_id: bytes) -> set[bytes]:
        """Hashes of the locks pending in the channel's latest state."""
        head = self.heads.get(channel_id)
        return set() if head is None else {lock.hash for lock in head.locks}

    def preimages(self, hashes: Iterable[bytes]) -> list[bytes]:
        """The preimages this payee may reveal (on the ledger too) for these lock hashes."""
        return [self.secrets[h] for h in hashes if h in self.secrets]

    def pending_offers(self, channel_id: bytes) -> list[channels_pb2.RefundOffer]:
        return list(self.offers.get(channel_id, {}).values())

    def events(self, channel_id: bytes) -> list[channels_pb2.ChannelEvent]:
        """What a stream that starts hearing `channel_id` is told first: the pending refund
        offers, the preimages of pending locks this payee may reveal, the locks it gave
        up."""
        events = [channels_pb2.ChannelEvent(refund=o) for o in self.pending_offers(channel_id)]
        head = self.heads.get(channel_id)
        for lock in head.locks if head is not None else ():
            preimage = self.secrets.get(lock.hash)
            if preimage is not None:
                resolved = channels_pb2.LockResolved(
                    channel_id=channel_id, hash=lock.hash, preimage=preimage
                )
                events.append(channels_pb2.ChannelEvent(resolved=resolved))
        for lock_failed in self.failed.get(channel_id, {}).values():
            events.append(channels_pb2.ChannelEvent(failed=lock_failed))
        return events

    # ------------------------------------------------------------------ updates

    def accept(
        self, update: channels_pb2.ChannelUpdate, facts: LedgerFacts
    ) -> Accept | Refuse | ReadLedger:
        """Checks one update against the channel's head. On `Accept` the head has moved
        on (the update is countersigned); `ReadLedger` asks for the channel's record."""
        try:
            check_channel_id(update.channel_id)
            local = self.channels.get(update.channel_id)
            if local is None:
                if not facts.record_read:
                    return ReadLedger(update.channel_id)
                local = self.learn(update.channel_id, facts.record)
            return self._accept(local, update, facts)
        except (ChannelRuleError, InvalidChannelState) as error:
            status = getattr(error, "status", "INVALID_ARGUMENT")
            reason = getattr(error, "reason", str(error))
            return Refuse(status, error.field, str(reason))

    def _accept(
        self,
        local: channels_pb2.LocalChannel,
        update: channels_pb2.ChannelUpdate,
        facts: LedgerFacts,
    ) -> Accept | ReadLedger:
        channel_id = local.channel_id
        if channel_id in self.closing:
            raise _refused("FAILED_PRECONDITION", "channel_id", "closing on the ledger")
        head = self.heads[channel_id]
        if local.latest.state and update.state == local.latest.state:
            # A resend after a lost acknowledgement: the same answer again. Ed25519
            # signatures are deterministic, so the payer's resend carries the same one.
            if update.payer_signature != local.latest.payer_signature:
                raise _refused("UNAUTHENTICATED", "payer_signature", "not the payer's signature")
            ack = channels_pb2.ChannelAck(
                channel_id=channel_id,
                sequence=head.sequence,
                payee_signature=local.latest.payee_signature,
            )
            return Accept(ack, resend=True)
        state = decode_state(update.state)
        if state.channel_id != channel_id:
            raise _refused("INVALID_ARGUMENT", "state.channel_id", "not this channel")
        if state.sequence != head.sequence + 1:
            raise _refused(
                "FAILED_PRECONDITION",
                "state.sequence",
                f"expected {head.sequence + 1}, got {state.sequence} (reused or out of order)",
            )
        if state.deposit_micros > local.deposit_micros:
            if not facts.record_read:
                return ReadLedger(channel_id)  # a top-up since we last looked?
            record = facts.record
            if record is not None and record.deposit_micros > local.deposit_micros:
                local.deposit_micros = record.deposit_micros
            if state.deposit_micros > local.deposit_micros:
                raise _refused(
                    "FAILED_PRECONDITION",
                    "state.deposit_micros",
                    f"{state.deposit_micros} exceeds the deposit on the ledger, "
                    f"{local.deposit_micros}",
                )
        parts = self._parts(local, update, state, facts.height)
        expected = next_state(head, parts)
        if expected != state:
            field_name = _first_difference(expected, state)
            raise _refused(
                "INVALID_ARGUMENT",
                f"state.{field_name}",
                "does not follow from the channel's state: expected "
                f"{getattr(expected, field_name)}",
            )
        (valid,) = verify_channel_states(
            self.chain_id, [update.state], [local.payer], [update.payer_signature]
        )
        if not valid:
            raise _refused("UNAUTHENTICATED", "payer_signature", "not the payer's signature")
        return self._advance(local, update, state, parts.locks, facts.now_ms)

    def _parts(
        self,
        local: channels_pb2.LocalChannel,
        update: channels_pb2.ChannelUpdate,
        state: channels_pb2.ChannelState,
        height: int,
    ) -> UpdateParts:
        offers = self.offers[local.channel_id]
        for i, payment in enumerate(update.batch.payments):
            if payment.refund and payment.payment_id not in offers:
                raise _refused(
                    "FAILED_PRECONDITION", f"batch.payments[{i}]", "no refund was offered"
                )
        # Only an update that adds locks needs them by hash (a hub link's state may hold
        # hundreds pending).
        in_state = {lock.hash: lock for lock in state.locks} if update.new_locks else {}
        locks = []
        for i, new_lock in enumerate(update.new_locks):
            lock = in_state.get(new_lock.hash)
            if lock is None:
                raise _refused(
                    "INVALID_ARGUMENT", f"new_locks[{i}].hash", "the state has no such lock"
                )
            if lock.expiry_height < height + LOCK_MARGIN_BLOCKS:
                raise _refused(
                    "FAILED_PRECONDITION",
                    "state.locks.expiry_height",
                    f"expired lock: {lock.expiry_height} leaves fewer than "
                    f"{LOCK_MARGIN_BLOCKS} blocks from height {height}",
                )
            self._check_lock_target(local.channel_id, update, i, lock)
            locks.append(LockedPayments(lock, new_lock.payments))
        self._check_releases(local.channel_id, update, height)
        return UpdateParts(
            batch=update.batch,
            batch_bytes=update.batch.SerializeToString(deterministic=True),
            deposit_micros=state.deposit_micros,
            locks=locks,
            preimages=tuple(update.preimages),
            released=tuple(update.released_locks),
            final=state.final,
        )

    def _routed(self, update: channels_pb2.ChannelUpdate) -> bool:
        return bool(update.destination) and update.destination != self.key.public_key

    def _check_lock_target(
        self,
        channel_id: bytes,
        update: channels_pb2.ChannelUpdate,
        index: int,
        lock: channels_pb2.HashLock,
    ) -> None:
        """A lock is either for this payee (one of its open invoices) or, at a hub, for a
        destination the hub can forward to."""
        if self._routed(update):
            if self.check_route is None:
                raise _refused(
                    "FAILED_PRECONDITION", "destination", "this payee does not route payments"
                )
            self.check_route(update.destination, lock)
            return
        field_name = f"new_locks[{index}].hash"
        invoice = self.invoices.get(lock.hash)
        if invoice is None or invoice.channel_id != channel_id:
            raise _refused(
                "FAILED_PRECONDITION", field_name, "no invoice of this channel has this hash"
            )
        if invoice.paid:
            raise _refused("FAILED_PRECONDITION", field_name, "the invoice is paid")

    def _check_releases(
        self, channel_id: bytes, update: channels_pb2.ChannelUpdate, height: int
    ) -> None:
        """A payer may take a lock back only once the payee gave it up or it expired."""
        given_up = self.failed.get(channel_id, {})
        expired = {
            lock.hash for lock in self.heads[channel_id].locks if lock.expiry_height < height
        }
        for i, lock_hash in enumerate(update.released_locks):
            if lock_hash not in given_up and lock_hash not in expired:
                raise _refused(
                    "FAILED_PRECONDITION",
                    f"released_locks[{i}]",
                    "the payee has not given this lock up and it has not expired",
                )

    def _advance(
        self,
        local: channels_pb2.LocalChannel,
        update: channels_pb2.ChannelUpdate,
        state: channels_pb2.ChannelState,
        locks: Sequence[LockedPayments],
        now_ms: int,
    ) -> Accept:
        channel_id = local.channel_id
        signature = sign_state(self.key, self.chain_id, update.state)
        self.heads[channel_id] = state
        local.latest.state = update.state
        local.latest.payer_signature = update.payer_signature
        local.latest.payee_signature = signature
        stored = channels_pb2.StoredUpdate(
            update=update, payee_signature=signature, acked_unix_ms=now_ms
        )
        writes: list[Write] = [
            ChannelStore.channel_write(local),
            ChannelStore.update_write(channel_id, state.sequence, stored),
        ]
        offers = self.offers[channel_id]
        for payment in update.batch.payments:
            if payment.refund:
                writes.append(ChannelStore.offer_write(offers.pop(payment.payment_id), delete=True))
                writes.append(
                    ChannelStore.refunded_write(channel_id, payment.payment_id, state.sequence)
                )
                self.refunded.setdefault(channel_id, set()).add(payment.payment_id)
        # Locks this update resolved (preimages) or released: their invoices, given-up
        # records (and, at a hub, routes) are done with.
        settled = [sha256(p) for p in update.preimages] + list(update.released_locks)
        for lock_hash in settled:
            self.secrets.pop(lock_hash, None)
            if self.invoices.pop(lock_hash, None) is not None:
                writes.append(ChannelStore.invoice_write(lock_hash, None))
            lock_failed = self.failed.get(channel_id, {}).pop(lock_hash, None)
            if lock_failed is not None:
                writes.append(ChannelStore.failed_write(lock_failed, delete=True))
        lock_writes: list[Write] = []
        then: list[Reveal | Forward] = []
        routed = self._routed(update)
        start = 0
        for group in locks:
            lock, lines = group.lock, update.batch.payments[start : start + group.payments]
            start += group.payments
            if routed:
                route = channels_pb2.HubRoute(
                    hash=lock.hash,
                    in_channel_id=channel_id,
                    destination=update.destination,
                    amount_micros=lock.amount_micros,
                    in_expiry_height=lock.expiry_height,
                )
                lock_writes.append(ChannelStore.route_write(route))
                then.append(Forward(route, lines))
                continue
            invoice = self.invoices[lock.hash]
            invoice.paid = True  # at once: a second lock on the same hash is refused
            self.open_invoices[channel_id] -= 1
            lock_writes.append(ChannelStore.invoice_write(lock.hash, invoice))
            then.append(Reveal(channel_id, lock.hash, invoice.preimage))
        ack = channels_pb2.ChannelAck(
            channel_id=channel_id, sequence=state.sequence, payee_signature=signature
        )
        return Accept(ack, writes, settled, lock_writes, then)

    # ------------------------------------------------------------------ refunds

    def check_refund(
        self, local: channels_pb2.LocalChannel, offer: channels_pb2.RefundOffer
    ) -> bool:
        """Whether `offer` (signed by this payee) is new and must be stored; False for the
        same offer again. Raises ChannelRuleError for one not signed by the payee, or one
        already taken."""
        if not offer.payment.refund or not verify_refund(self.chain_id, offer, local.payee):
            raise _refused(
                "UNAUTHENTICATED", "payment.refund_signature", "not signed by the channel's payee"
            )
        if offer.payment.payment_id in self.offers[offer.channel_id]:
            return False
        if offer.payment.payment_id in self.refunded.get(offer.channel_id, ()):
            # Offered once and taken: offering it again (a replay of the signed offer by
            # anyone who saw it) would refund the payer twice.
            raise _refused("ALREADY_EXISTS", "payment.payment_id", "this refund was already taken")
        return True

    def refund_stored(self, offer: channels_pb2.RefundOffer) -> None:
        """The offer is durable: the payer may include it."""
        self.offers[offer.channel_id][offer.payment.payment_id] = offer

    # ------------------------------------------------------------------ hash locks

    def check_invoice_request(self, local: channels_pb2.LocalChannel, count: int) -> None:
        """Raises ChannelRuleError unless `count` more invoices fit the channel."""
        open_now = self.open_invoices.get(local.channel_id, 0)
        if open_now + count > OPEN_INVOICES_PER_CHANNEL_MAX:
            raise _refused(
                "RESOURCE_EXHAUSTED",
                "count",
                f"the channel already holds {open_now} unpaid invoices",
            )

    @staticmethod
    def check_invoice_count(count: int) -> None:
        if not 1 <= count <= INVOICES_PER_REQUEST_MAX:
            raise _refused("INVALID_ARGUMENT", "count", f"must be 1 to {INVOICES_PER_REQUEST_MAX}")

    @staticmethod
    def new_invoices(
        channel_id: bytes, preimages: Sequence[bytes]
    ) -> tuple[dict[bytes, channels_pb2.Invoice], list[Write]]:
        """Invoices on the given (fresh, secret) preimages, and their writes."""
        invoices = {
            sha256(preimage): channels_pb2.Invoice(preimage=preimage, channel_id=channel_id)
            for preimage in preimages
        }
        return invoices, [ChannelStore.invoice_write(h, i) for h, i in invoices.items()]

    def invoices_stored(
        self, channel_id: bytes, invoices: dict[bytes, channels_pb2.Invoice]
    ) -> None:
        """The invoices are durable: locks on them are accepted."""
        self.invoices.update(invoices)
        self.open_invoices[channel_id] = self.open_invoices.get(channel_id, 0) + len(invoices)

    def lock_given_up(self, failed: channels_pb2.LockFailed) -> None:
        """The give-up is durable: the payer may release the lock."""
        self.failed.setdefault(failed.channel_id, {})[failed.hash] = failed


# ---------------------------------------------------------------------- payer decisions


@dataclass(frozen=True)
class Flight:
    """An update sent and not yet acknowledged, with the state it signs."""

    update: channels_pb2.ChannelUpdate
    state: channels_pb2.ChannelState


@dataclass(frozen=True)
class Acked:
    """The payee countersigned update `sequence`. Store `writes`, then report `signed`;
    the locks in `settled` are resolved or released for good."""

    sequence: int
    signed: channels_pb2.SignedChannelState
    writes: list[Write]
    settled: list[bytes]
    covered: list[int] = field(default_factory=list)
    """Earlier updates still in flight that `signed` includes (each later state builds
    on the one before): acknowledged by it, as if their own acks had come."""


@dataclass(frozen=True)
class Failed:
    """Update `sequence` failed with `error`: its caller hears it, and the waiters of the
    locks it added (`new_locks`) too."""

    sequence: int
    error: ChannelRefused
    new_locks: list[bytes]


class PayerCore:
    """One payer's side of one channel: the acknowledged state, the updates in flight
    and the head they lead to, refund offers to take, and the lock outcomes (preimages to
    pay, locks to release) the next update carries."""

    def __init__(self, key: SigningKey, chain_id: str, local: channels_pb2.LocalChannel) -> None:
        self.key = key
        self.chain_id = chain_id
        self.local = local
        self.in_flight: dict[int, Flight] = {}
        # Sequences failed here because an earlier update was refused: the payee refuses
        # them too, and those refusals (which arrive before any answer to a rebuilt
        # update, the stream being ordered) must not fail the rebuilt ones.
        self.discarded: set[int] = set()
        self.head = self.acked_state()
        self.refund_offers: dict[bytes, channels_pb2.RefundOffer] = {}
        self.preimages_due: dict[bytes, bytes] = {}
        self.releases_due: set[bytes] = set()
        self.flush_delay_s = RESOLVE_FLUSH_S
        self.failure: ChannelRefused | None = None  # the stream failed: nothing more is sent

    def acked_state(self) -> channels_pb2.ChannelState:
        if self.local.latest.state:
            return channels_pb2.ChannelState.FromString(self.local.latest.state)
        return initial_state(self.local.channel_id, 0)

    @property
    def spendable_micros(self) -> int:
        """What the payer has left in the channel after every update sent so far,
        counting deposits on the ledger that no state includes yet."""
        unclaimed = max(0, self.local.deposit_micros - self.head.deposit_micros)
        return self.head.payer_micros + unclaimed

    def pending_locks(self) -> list[bytes]:
        """Hashes of the locks still pending after every update sent so far."""
        return [lock.hash for lock in self.head.locks]

    def has_due(self) -> bool:
        """Preimages or releases wait for an update to carry them."""
        return bool(self.preimages_due or self.releases_due)

    def lock_pending(self, channel_id: bytes, lock_hash: bytes) -> bool:
        return channel_id == self.local.channel_id and any(
            lock.hash == lock_hash for lock in self.head.locks
        )

    # ------------------------------------------------------------------ resync

    def adopt(self, signed: channels_pb2.SignedChannelState) -> list[Write]:
        """Adopts the payee's state both signed if it is ahead of ours (the acknowledgement
        of it was lost); the writes that keep it. Raises InvalidChannelState for a state
        not signed by both."""
        if not signed.state:
            return []
        theirs = verify_signed_state(self.chain_id, signed, self.local.payer, self.local.payee)
        if theirs.channel_id != self.local.channel_id or theirs.sequence <= self.head.sequence:
            return []
        self.local.latest.CopyFrom(signed)
        self.head = theirs
        return [ChannelStore.channel_write(self.local)]

    def take_offer(self, offer: channels_pb2.RefundOffer) -> None:
        if offer.channel_id == self.local.channel_id and verify_refund(
            self.chain_id, offer, self.local.payee
        ):
            self.refund_offers[offer.payment.payment_id] = offer

    # ------------------------------------------------------------------ sending

    def build(
        self,
        payments: Sequence[channels_pb2.Payment],
        *,
        deposit_micros: int | None = None,
        final: bool = False,
        include_refunds: bool = True,
        locks: Sequence[LockedPayments] = (),
        destination: bytes = b"",
    ) -> Flight:
        """Builds and signs the next update on the head (refund offers, and preimages and
        releases due, ride along); it is in flight from now on. Raises ChannelRuleError
        (the outcomes it would have carried stay due) if the rules refuse it."""
        batch = channels_pb2.PaymentBatch(payments=payments)
        if include_refunds and self.refund_offers:
            batch.payments.extend(offer.payment for offer in self.refund_offers.values())
            self.refund_offers.clear()
        pending = {held.hash for held in self.head.locks}
        preimages = [p for h, p in self.preimages_due.items() if h in pending]
        released = [h for h in self.releases_due if h in pending]
        self.preimages_due.clear()
        self.releases_due.clear()
        parts = UpdateParts(
            batch=batch,
            batch_bytes=batch.SerializeToString(deterministic=True),
            deposit_micros=deposit_micros
            or max(self.head.deposit_micros, self.local.deposit_micros),
            locks=locks,
            preimages=preimages,
            released=released,
            final=final,
        )
        try:
            state = next_state(self.head, parts)
        except ChannelRuleError:
            self.requeue(preimages, released)
            raise
        encoded = state.SerializeToString(deterministic=True)
        update = channels_pb2.ChannelUpdate(
            channel_id=self.local.channel_id,
            batch=batch,
            state=encoded,
            payer_signature=sign_state(self.key, self.chain_id, encoded),
            new_locks=[
                channels_pb2.NewLock(hash=group.lock.hash, payments=group.payments)
                for group in locks
            ],
            destination=destination,
            preimages=preimages,
            released_locks=released,
        )
        flight = self.in_flight[state.sequence] = Flight(update, state)
        self.head = state
        return flight

    def requeue(self, preimages: Iterable[bytes], released: Iterable[bytes]) -> bool:
        """Outcomes to carry in the next update (one that was not sent or was refused, or
        newly heard); whether any were given."""
        given = False
        for preimage in preimages:
            self.preimages_due[sha256(preimage)] = preimage
            given = True
        for lock_hash in released:
            self.releases_due.add(lock_hash)
            given = True
        return given

    def release(self, lock_hash: bytes) -> bool:
        """Takes a lock back in the next update (it expired unclaimed, or the payee gave
        it up); False if no state sent holds it."""
        return self.lock_pending(self.local.channel_id, lock_hash) and self.requeue((), [lock_hash])

    # ------------------------------------------------------------------ receiving

    def on_ack(self, ack: channels_pb2.ChannelAck, now_ms: int) -> Acked | list[Failed] | None:
        """The payee's acknowledgement: `Acked` when it countersigns an update in flight,
        the failures when the signature is not the payee's, None for an update already
        settled (a resend's answer)."""
        flight = self.in_flight.get(ack.sequence)
        if flight is None:
            return None
        (valid,) = verify_channel_states(
            self.chain_id, [flight.update.state], [self.local.payee], [ack.payee_signature]
        )
        if not valid:
            return self.fail_from(
                ack.sequence,
                ChannelRefused("UNAUTHENTICATED", "payee_signature", "not the payee's signature"),
            )
        del self.in_flight[ack.sequence]
        self.flush_delay_s = RESOLVE_FLUSH_S
        # A countersigned state holds every update before it: those still in flight are
        # paid by it. (An honest payee acknowledges in order; one that acknowledges a
        # later state and then refuses an earlier one must not make them be paid twice.)
        covered = sorted(seq for seq in self.in_flight if seq < ack.sequence)
        settled: list[bytes] = []
        for update in [*(self.in_flight.pop(seq).update for seq in covered), flight.update]:
            settled.extend(sha256(p) for p in update.preimages)
            settled.extend(update.released_locks)
        signed = channels_pb2.SignedChannelState(
            state=flight.update.state,
            payer_signature=flight.update.payer_signature,
            payee_signature=ack.payee_signature,
        )
        if flight.state.sequence > self.acked_state().sequence:
            self.local.latest.CopyFrom(signed)
        stored = channels_pb2.StoredUpdate(
            update=flight.update, payee_signature=ack.payee_signature, acked_unix_ms=now_ms
        )
        writes = [
            ChannelStore.channel_write(self.local),
            ChannelStore.update_write(self.local.channel_id, flight.state.sequence, stored),
        ]
        return Acked(ack.sequence, signed, writes, settled, covered)

    def on_refusal(self, refusal: channels_pb2.ChannelRefusal, status: str) -> list[Failed]:
        """The payee refused update `refusal.sequence` (`status`: the gRPC status name of
        its code): it and every later one fail."""
        if refusal.sequence in self.discarded:
            self.discarded.discard(refusal.sequence)
            return []
        if refusal.sequence <= self.acked_state().sequence:
            return []  # the payee countersigned a later state that holds it: paid
        self.flush_delay_s = min(self.flush_delay_s * 2, RESOLVE_RETRY_MAX_S)
        return self.fail_from(
            refusal.sequence, ChannelRefused(status, refusal.field, refusal.message)
        )

    def fail_from(self, sequence: int, error: ChannelRefused) -> list[Failed]:
        """Fails the refused update and every later one (each built on it: those fail with
        UpdateDiscarded unless the whole stream failed), keeps what they carried due, and
        rewinds the head to the last acknowledged state."""
        failures = []
        for seq in sorted(s for s in self.in_flight if s >= sequence):
            flight = self.in_flight.pop(seq)
            failure = error
            if seq != sequence:
                self.discarded.add(seq)
                if self.failure is None:
                    failure = UpdateDiscarded(
                        "ABORTED", "state.sequence", f"built on update {sequence}, refused"
                    )
            failures.append(Failed(seq, failure, [lock.hash for lock in flight.update.new_locks]))
            self.requeue(flight.update.preimages, flight.update.released_locks)
        self.head = max(
            [self.acked_state(), *(f.state for f in self.in_flight.values())],
            key=lambda s: s.sequence,
        )
        return failures

    def fail_all(self, error: ChannelRefused) -> list[Failed]:
        """The stream failed: every update in flight fails with `error`."""
        self.failure = error
        return self.fail_from(0, error)

    def resolved_lock(self, resolved: channels_pb2.LockResolved) -> bool:
        """Whether the announcement opens a lock still pending (not a repeat, and the right
        preimage)."""
        return self.lock_pending(resolved.channel_id, resolved.hash) and (
            sha256(resolved.preimage) == resolved.hash
        )

    def failed_lock(self, failed: channels_pb2.LockFailed) -> bool:
        """The payee gave a pending lock up: the next update takes it back. False for a
        lock not pending (a repeated announcement)."""
        if not self.lock_pending(failed.channel_id, failed.hash):
            return False
        self.releases_due.add(failed.hash)
        return True


# ---------------------------------------------------------------------- hub routes


def check_route(
    lock: channels_pb2.HashLock, *, height: int, link: bool, connected: bool, spendable_micros: int
) -> None:
    """Raises ChannelRuleError unless a hub can forward `lock`: it has a channel to the
    destination (`link`), the channel is `connected`, the lock leaves the hub its margin
    after the provider's earlier expiry, and the channel can carry the amount."""
    if not link:
        raise _refused("FAILED_PRECONDITION", "destination", "the hub has no channel to it")
    if not connected:
        raise _refused("UNAVAILABLE", "destination", "the hub cannot reach it now")
    earliest = height + LOCK_MARGIN_BLOCKS + HUB_EXPIRY_DELTA_BLOCKS
    if lock.expiry_height < earliest:
        raise _refused(
            "FAILED_PRECONDITION",
            "state.locks.expiry_height",
            f"a routed lock must expire at {earliest} or later",
        )
    if spendable_micros < lock.amount_micros:
        raise _refused(
            "RESOURCE_EXHAUSTED", "destination", "the hub's channel to it lacks capacity"
        )


def forward_locks(
    forwards: Sequence[tuple[channels_pb2.HubRoute, int]],
) -> list[LockedPayments]:
    """The hub's locks for routes forwarded in one update, given each route and how many
    payment lines it carries: the same hash and amount, expiring HUB_EXPIRY_DELTA_BLOCKS
    before the incoming lock."""
    return [
        LockedPayments(
            channels_pb2.HashLock(
                hash=route.hash,
                amount_micros=route.amount_micros,
                expiry_height=route.in_expiry_height - HUB_EXPIRY_DELTA_BLOCKS,
            ),
            lines,
        )
        for route, lines in forwards
    ]


def expired_routes(
    routes: Iterable[channels_pb2.HubRoute], height: int
) -> list[channels_pb2.HubRoute]:
    """Routes still open whose outgoing lock expired by `height`: the provider can no
    longer claim them (provided the ledger, read since `height`, shows no claim)."""
    return [
        route
        for route in routes
        if route.in_expiry_height - HUB_EXPIRY_DELTA_BLOCKS < height
        and not route.preimage
        and not route.failure
    ]


def claims_due(routes: Iterable[channels_pb2.HubRoute], height: int) -> dict[bytes, list[bytes]]:
    """Incoming channel id -> the preimages its payer owes the hub on locks within
    CLAIM_MARGIN_BLOCKS of their expiry at `height`: to reveal on the ledger."""
    owed: dict[bytes, list[bytes]] = {}
    for route in routes:
        if route.preimage and height >= route.in_expiry_height - CLAIM_MARGIN_BLOCKS:
            owed.setdefault(route.in_channel_id, []).append(route.preimage)
    return owed
