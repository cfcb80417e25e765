"""The receiving side of channels: the I/O around the payee's session core.

The rules are in `session.PayeeCore` (pure): an update is accepted when the payee,
replaying the same rules from its own last state (`rules.next_state`), arrives at exactly
the state the payer signed, and the payer's signature verifies (Rust). This shell gathers
the facts a decision needs (the ledger's height and, when the core asks, the channel's
record, read before the decision, never in the middle of it), and carries the decision
out: the countersignature goes back only after the update is in the payee's LMDB; group
commit lets many updates share one fsync, so acknowledging is durable without being slow.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import grpc
from google.protobuf.message import DecodeError, Message

from medledger.channels.rules import ChannelRuleError, check_channel_id
from medledger.channels.session import (
    LOCK_MARGIN_BLOCKS,
    Accept,
    Forward,
    LedgerFacts,
    PayeeCore,
    ReadLedger,
    Refuse,
    Reveal,
)
from medledger.channels.store import ChannelStore, GroupCommit, Write, when_durable
from medledger.crypto import SigningKey
from medledger.metrics import CHANNEL_LOCKS, CHANNEL_PAYMENTS, CHANNEL_UPDATES
from medledger.wire.v1 import channels_pb2

__all__ = ["LOCK_MARGIN_BLOCKS", "ChannelLedger", "Payee", "Router", "Verdict"]

Deliver = Callable[[channels_pb2.ChannelEvent], None]

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


def _refusal(update: channels_pb2.ChannelUpdate, refuse: Refuse) -> Verdict:
    code = grpc.StatusCode[refuse.status].value[0]
    try:
        sequence = channels_pb2.ChannelState.FromString(update.state).sequence
    except DecodeError:
        sequence = 0  # an undecodable state has no sequence to report
    refusal = channels_pb2.ChannelRefusal(
        channel_id=update.channel_id,
        sequence=sequence,
        code=code,
        field=refuse.field,
        message=refuse.reason,
    )
    return Verdict(channels_pb2.ChannelEvent(refusal=refusal))


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
        self.router = router
        self.core = PayeeCore(
            key,
            chain_id,
            channels=store.channels(),
            offers=store.offers(b""),
            invoices=store.invoices(),
            refunded=store.refunded(),
            failed=store.failed(),
            min_challenge_blocks=min_challenge_blocks,
            check_route=router.check_route if router is not None else None,
        )
        self._listeners: dict[bytes, set[Deliver]] = {}
        # Each channel's last commit: a resend answered before it is on disk waits for it.
        self._last_commit: dict[bytes, asyncio.Future[None]] = {}

    def start(self) -> None:
        self.commit.start()

    async def stop(self) -> None:
        await self.commit.stop()

    # ------------------------------------------------------------------ lookups

    async def _local(self, channel_id: bytes) -> channels_pb2.LocalChannel:
        """This payee's record of the channel, learnt from the ledger the first time."""
        local = self.core.channels.get(channel_id)
        if local is not None:
            return local
        return self.core.learn(channel_id, await self.ledger.channel(channel_id))

    def check_party(self, local: channels_pb2.LocalChannel, request: Message) -> None:
        """Raises ChannelRuleError unless the channel's payer or payee signed `request`
        (a state read or an invoice request) for this chain, recently."""
        self.core.check_party(local, request, self._clock_ms())

    def channels(self) -> list[channels_pb2.LocalChannel]:
        return list(self.core.channels.values())

    def mark_closing(self, channel_id: bytes) -> None:
        """The channel is closing on the ledger: accept no further update of it."""
        self.core.closing.add(channel_id)

    def latest(self, channel_id: bytes) -> channels_pb2.LocalChannel | None:
        return self.core.channels.get(channel_id)

    def preimages(self, hashes: Iterable[bytes]) -> list[bytes]:
        """The preimages this payee may reveal (on the ledger too) for these lock hashes."""
        return self.core.preimages(hashes)

    def pending_locks(self, channel_id: bytes) -> set[bytes]:
        """Hashes of the locks pending in the channel's latest state."""
        return self.core.pending_locks(channel_id)

    def pending_offers(self, channel_id: bytes) -> list[channels_pb2.RefundOffer]:
        return self.core.pending_offers(channel_id)

    # ------------------------------------------------------------------ updates

    async def accept(self, update: channels_pb2.ChannelUpdate) -> Verdict:
        """Checks one update against the channel's head; on success the head moves on and
        the returned verdict's ack may be sent once `durable` completes."""
        facts = LedgerFacts(height=self.ledger.height(), now_ms=self._clock_ms())
        decision = self.core.accept(update, facts)
        if isinstance(decision, ReadLedger):
            # Read first, then decide: the core decides again on the head as it is now,
            # with nothing awaited between its checks and the head moving on.
            try:
                record = await self.ledger.channel(decision.channel_id)
            except ChannelRuleError as error:  # the ledger is unreachable: refuse, say why
                decision = Refuse(error.status, error.field, error.reason)
            else:
                facts = replace(facts, record=record, record_read=True, height=self.ledger.height())
                decision = self.core.accept(update, facts)
        if isinstance(decision, Refuse):
            CHANNEL_UPDATES.labels(outcome="refused").inc()
            return _refusal(update, decision)
        assert isinstance(decision, Accept), "the core asks for the ledger once"
        event = channels_pb2.ChannelEvent(ack=decision.ack)
        if decision.resend:
            return Verdict(event, self._last_commit.get(update.channel_id))
        CHANNEL_UPDATES.labels(outcome="accepted").inc()
        CHANNEL_PAYMENTS.inc(len(update.batch.payments))
        CHANNEL_LOCKS.inc(len(update.new_locks))
        return Verdict(event, self._store(update.channel_id, decision))

    def _store(self, channel_id: bytes, accepted: Accept) -> asyncio.Future[None]:
        """Queues the accepted update's writes (one transaction) and, once durable, its
        reveals and forwards."""
        writes = list(accepted.writes)
        if self.router is not None:
            for lock_hash in accepted.settled:
                writes.extend(self.router.route_settled(lock_hash))
        writes.extend(accepted.lock_writes)
        durable = self._last_commit[channel_id] = self.commit.commit(writes)
        for effect in accepted.then:
            if isinstance(effect, Reveal):
                step = partial(self.reveal, effect.channel_id, effect.lock_hash, effect.preimage)
            else:
                assert isinstance(effect, Forward)
                assert self.router is not None  # only a router's core accepts routed locks
                step = partial(self.router.route_accepted, effect.route, effect.payments)
            when_durable(durable, step)
        return durable

    # ------------------------------------------------------------------ refunds

    async def offer_refund(self, offer: channels_pb2.RefundOffer) -> None:
        """Keeps a refund this payee signed and tells the payer's open streams of it."""
        check_channel_id(offer.channel_id)
        local = await self._local(offer.channel_id)
        if not self.core.check_refund(local, offer):
            return  # the same offer again
        await self.commit.commit([self.store.offer_write(offer)])
        self.core.refund_stored(offer)
        self._announce(offer.channel_id, channels_pb2.ChannelEvent(refund=offer))

    def listen(self, channel_id: bytes, deliver: Deliver) -> Callable[[], None]:
        """Calls `deliver` with each refund offer and lock outcome of `channel_id`, the
        pending ones first; returns the function that stops it."""
        listeners = self._listeners.setdefault(channel_id, set())
        listeners.add(deliver)
        for event in self.core.events(channel_id):
            deliver(event)
        return lambda: listeners.discard(deliver)

    def _announce(self, channel_id: bytes, event: channels_pb2.ChannelEvent) -> None:
        for deliver in list(self._listeners.get(channel_id, ())):
            deliver(event)

    # ------------------------------------------------------------------ hash locks

    def reveal(self, channel_id: bytes, lock_hash: bytes, preimage: bytes) -> None:
        """Tells the payer the preimage of its lock (kept durably by the caller), so it
        resolves the lock in the payee's favour in its next update."""
        self.core.secrets[lock_hash] = preimage
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
            self.core.lock_given_up(failed)
            self._announce(channel_id, channels_pb2.ChannelEvent(failed=failed))

        when_durable(durable, announce)
        await asyncio.shield(durable)

    async def invoices(self, request: channels_pb2.InvoiceRequest) -> list[bytes]:
        """Lock hashes whose preimages this payee (or, through a hub, the destination)
        reveals once a lock with the hash is durable in its channel."""
        check_channel_id(request.channel_id)
        self.core.check_invoice_count(request.count)
        local = await self._local(request.channel_id)
        self.check_party(local, request)
        if request.destination and request.destination != self.key.public_key:
            if self.router is None:
                raise ChannelRuleError(
                    "FAILED_PRECONDITION", "destination", "this payee does not route payments"
                )
            return await self.router.invoices(local.channel_id, request.count, request.destination)
        self.core.check_invoice_request(local, request.count)
        preimages = [secrets.token_bytes(PREIMAGE_BYTES) for _ in range(request.count)]
        invoices, writes = self.core.new_invoices(local.channel_id, preimages)
        await self.commit.commit(writes)
        self.core.invoices_stored(local.channel_id, invoices)
        return list(invoices)
