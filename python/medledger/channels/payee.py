"""The receiving side of channels: check each update, make it durable, countersign.

An update is accepted when the payee, replaying the same rules from its own last state
(`rules.next_state`), arrives at exactly the state the payer signed, and the payer's
signature verifies (Rust). The countersignature goes back only after the update is in the
payee's LMDB: group commit lets many updates share one fsync, so acknowledging is durable
without being slow.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import grpc
from google.protobuf.message import DecodeError, Message

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
)
from medledger.channels.store import ChannelStore, GroupCommit, Write, when_durable
from medledger.crypto import SigningKey, sha256
from medledger.errors import Rejected
from medledger.limits import INVOICES_PER_REQUEST_MAX, OPEN_INVOICES_PER_CHANNEL_MAX
from medledger.signed_requests import check_request
from medledger.wire.v1 import channels_pb2

__all__ = ["LOCK_MARGIN_BLOCKS", "ChannelLedger", "Payee", "Router", "Verdict"]

Deliver = Callable[[channels_pb2.ChannelEvent], None]

LOCK_MARGIN_BLOCKS = 10
"""A new lock must leave at least this many blocks to reveal its preimage on the ledger."""
PREIMAGE_BYTES = 32


class ChannelLedger(Protocol):
    """What the channel runtimes need from the ledger."""

    async def channel(self, channel_id: bytes) -> channels_pb2.Channel | None: ...

    def height(self) -> int: ...


class Router(Protocol):
    """A hub's forwarding side, as the payee of its incoming channels sees it."""

    def check_route(self, destination: bytes, lock: channels_pb2.HashLock) -> None:
        """Raises ChannelRuleError (naming the field) if the lock cannot be forwarded."""

    def route_accepted(
        self, route: channels_pb2.HubRoute, payments: Sequence[channels_pb2.Payment]
    ) -> None:
        """The incoming lock of `route` is durable here: forward its `payments` on it."""

    def route_settled(self, lock_hash: bytes) -> list[Write]:
        """The incoming lock resolved or was released: the writes that forget the route."""

    async def invoices(self, channel_id: bytes, count: int, destination: bytes) -> list[bytes]:
        """Lock hashes from `destination`, for payments routed from `channel_id`."""


@dataclass
class Verdict:
    """The answer to one update: an event to send once `durable` completes."""

    event: channels_pb2.ChannelEvent
    durable: asyncio.Future[None] | None = None


def _refusal(update: channels_pb2.ChannelUpdate, status: str, field: str, reason: str) -> Verdict:
    code = grpc.StatusCode[status].value[0]
    try:
        sequence = channels_pb2.ChannelState.FromString(update.state).sequence
    except DecodeError:
        sequence = 0  # an undecodable state has no sequence to report
    refusal = channels_pb2.ChannelRefusal(
        channel_id=update.channel_id, sequence=sequence, code=code, field=field, message=reason
    )
    return Verdict(channels_pb2.ChannelEvent(refusal=refusal))


def _first_difference(expected: channels_pb2.ChannelState, got: channels_pb2.ChannelState) -> str:
    for descriptor in channels_pb2.ChannelState.DESCRIPTOR.fields:
        if getattr(expected, descriptor.name) != getattr(got, descriptor.name):
            return descriptor.name
    return "state"


class Payee:
    def __init__(
        self,
        key: SigningKey,
        chain_id: str,
        store: ChannelStore,
        ledger: ChannelLedger,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        router: Router | None = None,
        min_challenge_blocks: int = 1,
    ) -> None:
        """`router`: set when this payee is a hub that forwards routed payments.
        `min_challenge_blocks`: channels with a shorter challenge window are refused (a
        payee needs that long to answer a close with an old state)."""
        self.key = key
        self.chain_id = chain_id
        self.min_challenge_blocks = min_challenge_blocks
        self.store = store
        self.ledger = ledger
        self.commit = GroupCommit(store)
        self._clock_ms = clock_ms
        self._channels: dict[bytes, channels_pb2.LocalChannel] = {}
        self._heads: dict[bytes, channels_pb2.ChannelState] = {}
        self._offers: dict[bytes, dict[bytes, channels_pb2.RefundOffer]] = {}
        self._listeners: dict[bytes, set[Deliver]] = {}
        self._closing: set[bytes] = set()  # closed on the ledger: no more updates
        # Each channel's last commit: a resend answered before it is on disk waits for it.
        self._last_commit: dict[bytes, asyncio.Future[None]] = {}
        self.router = router
        # Hash locks: invoices handed out, preimages this payee may reveal (its paid
        # invoices, or learnt from the next hop), and locks it gave up per channel.
        self._invoices = store.invoices()
        self._secrets = {h: i.preimage for h, i in self._invoices.items() if i.paid}
        self._open_invoices: dict[bytes, int] = {}
        for invoice in self._invoices.values():
            if not invoice.paid:
                self._open_invoices[invoice.channel_id] = (
                    self._open_invoices.get(invoice.channel_id, 0) + 1
                )
        self._refunded = store.refunded()  # refunds taken: their offers are spent
        self._failed: dict[bytes, dict[bytes, channels_pb2.LockFailed]] = {}
        for failed in store.failed():
            self._failed.setdefault(failed.channel_id, {})[failed.hash] = failed
        for local in store.channels():
            if local.payee == key.public_key:
                self._remember(local)

    def start(self) -> None:
        self.commit.start()

    async def stop(self) -> None:
        await self.commit.stop()

    def _remember(self, local: channels_pb2.LocalChannel) -> None:
        channel_id = local.channel_id
        self._channels[channel_id] = local
        if local.latest.state:
            self._heads[channel_id] = channels_pb2.ChannelState.FromString(local.latest.state)
        else:
            self._heads[channel_id] = initial_state(channel_id, 0)
        self._offers[channel_id] = {
            offer.payment.payment_id: offer for offer in self.store.offers(channel_id)
        }

    # ------------------------------------------------------------------ lookups

    async def _local(self, channel_id: bytes) -> channels_pb2.LocalChannel:
        """This payee's record of the channel, learnt from the ledger the first time."""
        local = self._channels.get(channel_id)
        if local is not None:
            return local
        on_chain = await self.ledger.channel(channel_id)
        if on_chain is None or on_chain.payee != self.key.public_key:
            raise ChannelRuleError("NOT_FOUND", "channel_id", "no channel to this payee")
        if on_chain.status != channels_pb2.CHANNEL_STATUS_OPEN:
            raise ChannelRuleError("FAILED_PRECONDITION", "channel_id", "the channel is not open")
        if on_chain.challenge_blocks < self.min_challenge_blocks:
            raise ChannelRuleError(
                "FAILED_PRECONDITION",
                "channel_id",
                f"its challenge window of {on_chain.challenge_blocks} blocks is shorter than "
                f"the {self.min_challenge_blocks} this payee needs to answer an old state",
            )
        local = channels_pb2.LocalChannel(
            channel_id=channel_id,
            payer=on_chain.payer,
            payee=on_chain.payee,
            deposit_micros=on_chain.deposit_micros,
            challenge_blocks=on_chain.challenge_blocks,
        )
        if channel_id not in self._channels:  # another stream may have raced us here
            self._channels[channel_id] = local
            self._heads[channel_id] = initial_state(channel_id, 0)
            self._offers[channel_id] = {}
        return self._channels[channel_id]

    async def _check_deposit(self, local: channels_pb2.LocalChannel, deposit: int) -> None:
        if deposit <= local.deposit_micros:
            return
        on_chain = await self.ledger.channel(local.channel_id)  # a top-up since we last looked
        if on_chain is not None and on_chain.deposit_micros > local.deposit_micros:
            local.deposit_micros = on_chain.deposit_micros
        if deposit > local.deposit_micros:
            raise ChannelRuleError(
                "FAILED_PRECONDITION",
                "state.deposit_micros",
                f"{deposit} exceeds the deposit on the ledger, {local.deposit_micros}",
            )

    def check_party(self, local: channels_pb2.LocalChannel, request: Message) -> None:
        """Raises ChannelRuleError unless the channel's payer or payee signed `request`
        (a state read or an invoice request) for this chain, recently."""
        for party in (local.payer, local.payee):
            try:
                check_request(request, party, self.chain_id, self._clock_ms(), "channel-request")
            except Rejected as error:
                if error.field == "signature":
                    continue  # not this party's: try the other
                raise ChannelRuleError(error.status, error.field, error.reason) from error
            return
        raise ChannelRuleError(
            "UNAUTHENTICATED", "signature", "not signed by the channel's payer or payee"
        )

    def channels(self) -> list[channels_pb2.LocalChannel]:
        return list(self._channels.values())

    def mark_closing(self, channel_id: bytes) -> None:
        """The channel is closing on the ledger: accept no further update of it."""
        self._closing.add(channel_id)

    def latest(self, channel_id: bytes) -> channels_pb2.LocalChannel | None:
        return self._channels.get(channel_id)

    def preimages(self, hashes: Iterable[bytes]) -> list[bytes]:
        """The preimages this payee may reveal (on the ledger too) for these lock hashes."""
        return [self._secrets[h] for h in hashes if h in self._secrets]

    def pending_locks(self, channel_id: bytes) -> set[bytes]:
        """Hashes of the locks pending in the channel's latest state."""
        head = self._heads.get(channel_id)
        return set() if head is None else {lock.hash for lock in head.locks}

    def pending_offers(self, channel_id: bytes) -> list[channels_pb2.RefundOffer]:
        return list(self._offers.get(channel_id, {}).values())

    # ------------------------------------------------------------------ updates

    async def accept(self, update: channels_pb2.ChannelUpdate) -> Verdict:
        """Checks one update against the channel's head; on success the head moves on and
        the returned verdict's ack may be sent once `durable` completes."""
        try:
            check_channel_id(update.channel_id)
            local = await self._local(update.channel_id)
            return await self._accept(local, update)
        except (ChannelRuleError, InvalidChannelState) as error:
            status = getattr(error, "status", "INVALID_ARGUMENT")
            reason = getattr(error, "reason", str(error))
            return _refusal(update, status, error.field, reason)

    async def _accept(
        self, local: channels_pb2.LocalChannel, update: channels_pb2.ChannelUpdate
    ) -> Verdict:
        channel_id = local.channel_id
        if channel_id in self._closing:
            raise ChannelRuleError("FAILED_PRECONDITION", "channel_id", "closing on the ledger")
        if local.latest.state and update.state == local.latest.state:
            # A resend after a lost acknowledgement: the same answer again. Ed25519
            # signatures are deterministic, so the payer's resend carries the same one.
            if update.payer_signature != local.latest.payer_signature:
                raise ChannelRuleError(
                    "UNAUTHENTICATED", "payer_signature", "not the payer's signature"
                )
            ack = channels_pb2.ChannelAck(
                channel_id=channel_id,
                sequence=self._heads[channel_id].sequence,
                payee_signature=local.latest.payee_signature,
            )
            return Verdict(channels_pb2.ChannelEvent(ack=ack), self._last_commit.get(channel_id))
        state = decode_state(update.state)
        head = self._heads[channel_id]
        if state.channel_id != channel_id:
            raise ChannelRuleError("INVALID_ARGUMENT", "state.channel_id", "not this channel")
        if state.sequence != head.sequence + 1:
            raise ChannelRuleError(
                "FAILED_PRECONDITION",
                "state.sequence",
                f"expected {head.sequence + 1}, got {state.sequence} (reused or out of order)",
            )
        await self._check_deposit(local, state.deposit_micros)
        head = self._heads[channel_id]  # unchanged unless the await let another update in
        if state.sequence != head.sequence + 1:
            raise ChannelRuleError("ABORTED", "state.sequence", "another update got there first")
        parts = self._parts(local, update, state)
        expected = next_state(head, parts)
        if expected != state:
            field = _first_difference(expected, state)
            raise ChannelRuleError(
                "INVALID_ARGUMENT",
                f"state.{field}",
                f"does not follow from the channel's state: expected {getattr(expected, field)}",
            )
        (valid,) = verify_channel_states(
            self.chain_id, [update.state], [local.payer], [update.payer_signature]
        )
        if not valid:
            raise ChannelRuleError(
                "UNAUTHENTICATED", "payer_signature", "not the payer's signature"
            )
        return self._advance(local, update, state, parts.locks)

    def _parts(
        self,
        local: channels_pb2.LocalChannel,
        update: channels_pb2.ChannelUpdate,
        state: channels_pb2.ChannelState,
    ) -> UpdateParts:
        offers = self._offers[local.channel_id]
        for i, payment in enumerate(update.batch.payments):
            if payment.refund and payment.payment_id not in offers:
                raise ChannelRuleError(
                    "FAILED_PRECONDITION", f"batch.payments[{i}]", "no refund was offered"
                )
        # Only an update that adds locks needs them by hash (a hub link's state may hold
        # hundreds pending).
        in_state = {lock.hash: lock for lock in state.locks} if update.new_locks else {}
        locks = []
        height = self.ledger.height()
        for i, new_lock in enumerate(update.new_locks):
            lock = in_state.get(new_lock.hash)
            if lock is None:
                raise ChannelRuleError(
                    "INVALID_ARGUMENT", f"new_locks[{i}].hash", "the state has no such lock"
                )
            if lock.expiry_height < height + LOCK_MARGIN_BLOCKS:
                raise ChannelRuleError(
                    "FAILED_PRECONDITION",
                    "state.locks.expiry_height",
                    f"expired lock: {lock.expiry_height} leaves fewer than "
                    f"{LOCK_MARGIN_BLOCKS} blocks from height {height}",
                )
            self._check_lock_target(local.channel_id, update, i, lock)
            locks.append(LockedPayments(lock, new_lock.payments))
        self._check_releases(local.channel_id, update)
        return UpdateParts(
            batch=update.batch,
            batch_bytes=update.batch.SerializeToString(deterministic=True),
            deposit_micros=state.deposit_micros,
            locks=locks,
            preimages=tuple(update.preimages),
            released=tuple(update.released_locks),
            final=state.final,
        )

    def _check_lock_target(
        self,
        channel_id: bytes,
        update: channels_pb2.ChannelUpdate,
        index: int,
        lock: channels_pb2.HashLock,
    ) -> None:
        """A lock is either for this payee (one of its open invoices) or, at a hub, for a
        destination the hub can forward to."""
        if update.destination and update.destination != self.key.public_key:
            if self.router is None:
                raise ChannelRuleError(
                    "FAILED_PRECONDITION", "destination", "this payee does not route payments"
                )
            self.router.check_route(update.destination, lock)
            return
        field = f"new_locks[{index}].hash"
        invoice = self._invoices.get(lock.hash)
        if invoice is None or invoice.channel_id != channel_id:
            raise ChannelRuleError(
                "FAILED_PRECONDITION", field, "no invoice of this channel has this hash"
            )
        if invoice.paid:
            raise ChannelRuleError("FAILED_PRECONDITION", field, "the invoice is paid")

    def _check_releases(self, channel_id: bytes, update: channels_pb2.ChannelUpdate) -> None:
        """A payer may take a lock back only once the payee gave it up or it expired."""
        given_up = self._failed.get(channel_id, {})
        expired = {
            lock.hash
            for lock in self._heads[channel_id].locks
            if lock.expiry_height < self.ledger.height()
        }
        for i, lock_hash in enumerate(update.released_locks):
            if lock_hash not in given_up and lock_hash not in expired:
                raise ChannelRuleError(
                    "FAILED_PRECONDITION",
                    f"released_locks[{i}]",
                    "the payee has not given this lock up and it has not expired",
                )

    def _lock_writes(
        self,
        channel_id: bytes,
        update: channels_pb2.ChannelUpdate,
        locks: Sequence[LockedPayments],
    ) -> tuple[list[Write], list[Callable[[], None]]]:
        """What accepting the update's new locks and its resolutions write, and what to do
        once that is durable (reveal an invoice's preimage, or forward the route)."""
        writes: list[Write] = []
        for lock_hash in [sha256(p) for p in update.preimages] + list(update.released_locks):
            self._secrets.pop(lock_hash, None)
            if self._invoices.pop(lock_hash, None) is not None:
                writes.append(self.store.invoice_write(lock_hash, None))
            failed = self._failed.get(channel_id, {}).pop(lock_hash, None)
            if failed is not None:
                writes.append(self.store.failed_write(failed, delete=True))
            if self.router is not None:
                writes.extend(self.router.route_settled(lock_hash))
        then: list[Callable[[], None]] = []
        routed = bool(update.destination) and update.destination != self.key.public_key
        start = 0
        for group in locks:
            lock, lines = group.lock, update.batch.payments[start : start + group.payments]
            start += group.payments
            if routed:
                assert self.router is not None  # checked by _check_lock_target
                route = channels_pb2.HubRoute(
                    hash=lock.hash,
                    in_channel_id=channel_id,
                    destination=update.destination,
                    amount_micros=lock.amount_micros,
                    in_expiry_height=lock.expiry_height,
                )
                writes.append(self.store.route_write(route))
                then.append(partial(self.router.route_accepted, route, lines))
                continue
            invoice = self._invoices[lock.hash]
            invoice.paid = True  # at once: a second lock on the same hash is refused
            self._open_invoices[channel_id] -= 1
            writes.append(self.store.invoice_write(lock.hash, invoice))
            then.append(partial(self.reveal, channel_id, lock.hash, invoice.preimage))
        return writes, then

    def _advance(
        self,
        local: channels_pb2.LocalChannel,
        update: channels_pb2.ChannelUpdate,
        state: channels_pb2.ChannelState,
        locks: Sequence[LockedPayments],
    ) -> Verdict:
        channel_id = local.channel_id
        signature = sign_state(self.key, self.chain_id, update.state)
        self._heads[channel_id] = state
        local.latest.state = update.state
        local.latest.payer_signature = update.payer_signature
        local.latest.payee_signature = signature
        writes: list[Write] = [
            self.store.channel_write(local),
            self.store.update_write(
                channel_id,
                state.sequence,
                channels_pb2.StoredUpdate(
                    update=update, payee_signature=signature, acked_unix_ms=self._clock_ms()
                ),
            ),
        ]
        offers = self._offers[channel_id]
        for payment in update.batch.payments:
            if payment.refund:
                writes.append(self.store.offer_write(offers.pop(payment.payment_id), delete=True))
                writes.append(
                    self.store.refunded_write(channel_id, payment.payment_id, state.sequence)
                )
                self._refunded.setdefault(channel_id, set()).add(payment.payment_id)
        lock_writes, then = self._lock_writes(channel_id, update, locks)
        writes.extend(lock_writes)
        ack = channels_pb2.ChannelAck(
            channel_id=channel_id, sequence=state.sequence, payee_signature=signature
        )
        durable = self._last_commit[channel_id] = self.commit.commit(writes)
        for step in then:
            when_durable(durable, step)
        return Verdict(channels_pb2.ChannelEvent(ack=ack), durable)

    # ------------------------------------------------------------------ refunds

    async def offer_refund(self, offer: channels_pb2.RefundOffer) -> None:
        """Keeps a refund this payee signed and tells the payer's open streams of it."""
        check_channel_id(offer.channel_id)
        local = await self._local(offer.channel_id)
        if not offer.payment.refund or not verify_refund(self.chain_id, offer, local.payee):
            raise ChannelRuleError(
                "UNAUTHENTICATED", "payment.refund_signature", "not signed by the channel's payee"
            )
        offers = self._offers[offer.channel_id]
        if offer.payment.payment_id in offers:
            return  # the same offer again
        if offer.payment.payment_id in self._refunded.get(offer.channel_id, ()):
            # Offered once and taken: offering it again (a replay of the signed offer by
            # anyone who saw it) would refund the payer twice.
            raise ChannelRuleError(
                "ALREADY_EXISTS", "payment.payment_id", "this refund was already taken"
            )
        await self.commit.commit([self.store.offer_write(offer)])
        offers[offer.payment.payment_id] = offer
        self._announce(offer.channel_id, channels_pb2.ChannelEvent(refund=offer))

    def listen(self, channel_id: bytes, deliver: Deliver) -> Callable[[], None]:
        """Calls `deliver` with each refund offer and lock outcome of `channel_id`, the
        pending ones first; returns the function that stops it."""
        listeners = self._listeners.setdefault(channel_id, set())
        listeners.add(deliver)
        for offer in self.pending_offers(channel_id):
            deliver(channels_pb2.ChannelEvent(refund=offer))
        head = self._heads.get(channel_id)
        for lock in head.locks if head is not None else ():
            preimage = self._secrets.get(lock.hash)
            if preimage is not None:
                resolved = channels_pb2.LockResolved(
                    channel_id=channel_id, hash=lock.hash, preimage=preimage
                )
                deliver(channels_pb2.ChannelEvent(resolved=resolved))
        for failed in self._failed.get(channel_id, {}).values():
            deliver(channels_pb2.ChannelEvent(failed=failed))
        return lambda: listeners.discard(deliver)

    def _announce(self, channel_id: bytes, event: channels_pb2.ChannelEvent) -> None:
        for deliver in list(self._listeners.get(channel_id, ())):
            deliver(event)

    # ------------------------------------------------------------------ hash locks

    def reveal(self, channel_id: bytes, lock_hash: bytes, preimage: bytes) -> None:
        """Tells the payer the preimage of its lock (kept durably by the caller), so it
        resolves the lock in the payee's favour in its next update."""
        self._secrets[lock_hash] = preimage
        resolved = channels_pb2.LockResolved(
            channel_id=channel_id, hash=lock_hash, preimage=preimage
        )
        self._announce(channel_id, channels_pb2.ChannelEvent(resolved=resolved))

    async def fail_lock(
        self, channel_id: bytes, lock_hash: bytes, reason: str, *, also: Sequence[Write] = ()
    ) -> None:
        """Gives a lock up (a routed payment that could not be delivered): the payer may
        release it in its next update. `also` is written in the same transaction."""
        failed = channels_pb2.LockFailed(channel_id=channel_id, hash=lock_hash, reason=reason)
        durable = self.commit.commit([self.store.failed_write(failed), *also])

        def announce() -> None:  # once on disk, even if the caller is cancelled meanwhile
            self._failed.setdefault(channel_id, {})[lock_hash] = failed
            self._announce(channel_id, channels_pb2.ChannelEvent(failed=failed))

        when_durable(durable, announce)
        await asyncio.shield(durable)

    async def invoices(self, request: channels_pb2.InvoiceRequest) -> list[bytes]:
        """Lock hashes whose preimages this payee (or, through a hub, the destination)
        reveals once a lock with the hash is durable in its channel."""
        check_channel_id(request.channel_id)
        if not 1 <= request.count <= INVOICES_PER_REQUEST_MAX:
            raise ChannelRuleError(
                "INVALID_ARGUMENT", "count", f"must be 1 to {INVOICES_PER_REQUEST_MAX}"
            )
        local = await self._local(request.channel_id)
        self.check_party(local, request)
        if request.destination and request.destination != self.key.public_key:
            if self.router is None:
                raise ChannelRuleError(
                    "FAILED_PRECONDITION", "destination", "this payee does not route payments"
                )
            return await self.router.invoices(local.channel_id, request.count, request.destination)
        open_now = self._open_invoices.get(local.channel_id, 0)
        if open_now + request.count > OPEN_INVOICES_PER_CHANNEL_MAX:
            raise ChannelRuleError(
                "RESOURCE_EXHAUSTED",
                "count",
                f"the channel already holds {open_now} unpaid invoices",
            )
        invoices = {}
        for _ in range(request.count):
            preimage = secrets.token_bytes(PREIMAGE_BYTES)
            invoices[sha256(preimage)] = channels_pb2.Invoice(
                preimage=preimage, channel_id=local.channel_id
            )
        await self.commit.commit(
            [self.store.invoice_write(h, invoice) for h, invoice in invoices.items()]
        )
        self._invoices.update(invoices)
        self._open_invoices[local.channel_id] = open_now + request.count
        return list(invoices)
