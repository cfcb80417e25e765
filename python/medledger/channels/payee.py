"""The receiving side of channels: check each update, make it durable, countersign.

An update is accepted when the payee, replaying the same rules from its own last state
(`rules.next_state`), arrives at exactly the state the payer signed, and the payer's
signature verifies (Rust). The countersignature goes back only after the update is in the
payee's LMDB: group commit lets many updates share one fsync, so acknowledging is durable
without being slow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.protobuf.message import DecodeError

from medledger.channels.rules import ChannelRuleError, UpdateParts, check_channel_id, next_state
from medledger.channels.signing import (
    InvalidChannelState,
    decode_state,
    initial_state,
    sign_state,
    verify_channel_states,
    verify_refund,
)
from medledger.channels.store import ChannelStore, GroupCommit, Write
from medledger.crypto import SigningKey
from medledger.wire.v1 import channels_pb2

__all__ = ["LOCK_MARGIN_BLOCKS", "ChannelLedger", "Payee", "Verdict"]

Deliver = Callable[[channels_pb2.ChannelEvent], None]

LOCK_MARGIN_BLOCKS = 10
"""A new lock must leave at least this many blocks to reveal its preimage on the ledger."""


class ChannelLedger(Protocol):
    """What the channel runtimes need from the ledger."""

    async def channel(self, channel_id: bytes) -> channels_pb2.Channel | None: ...

    def height(self) -> int: ...


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
    ) -> None:
        self.key = key
        self.chain_id = chain_id
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

    def channels(self) -> list[channels_pb2.LocalChannel]:
        return list(self._channels.values())

    def mark_closing(self, channel_id: bytes) -> None:
        """The channel is closing on the ledger: accept no further update of it."""
        self._closing.add(channel_id)

    def latest(self, channel_id: bytes) -> channels_pb2.LocalChannel | None:
        return self._channels.get(channel_id)

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
            # A resend after a lost acknowledgement: the same answer again.
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
        return self._advance(local, update, state)

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
        lock = None
        if update.lock_hash:
            lock = next((lk for lk in state.locks if lk.hash == update.lock_hash), None)
            if lock is None:
                raise ChannelRuleError(
                    "INVALID_ARGUMENT", "lock_hash", "the state has no such lock"
                )
            if lock.expiry_height < self.ledger.height() + LOCK_MARGIN_BLOCKS:
                raise ChannelRuleError(
                    "FAILED_PRECONDITION",
                    "state.locks.expiry_height",
                    f"expired lock: {lock.expiry_height} leaves fewer than "
                    f"{LOCK_MARGIN_BLOCKS} blocks from height {self.ledger.height()}",
                )
        return UpdateParts(
            batch=update.batch,
            batch_bytes=update.batch.SerializeToString(deterministic=True),
            deposit_micros=state.deposit_micros,
            lock=lock,
            preimages=tuple(update.preimages),
            released=tuple(update.released_locks),
            final=state.final,
        )

    def _advance(
        self,
        local: channels_pb2.LocalChannel,
        update: channels_pb2.ChannelUpdate,
        state: channels_pb2.ChannelState,
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
        ack = channels_pb2.ChannelAck(
            channel_id=channel_id, sequence=state.sequence, payee_signature=signature
        )
        durable = self._last_commit[channel_id] = self.commit.commit(writes)
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
        await self.commit.commit([self.store.offer_write(offer)])
        offers[offer.payment.payment_id] = offer
        for deliver in self._listeners.get(offer.channel_id, set()):
            deliver(channels_pb2.ChannelEvent(refund=offer))

    def listen(self, channel_id: bytes, deliver: Deliver) -> Callable[[], None]:
        """Calls `deliver` with each refund offer of `channel_id`, the pending ones first;
        returns the function that stops it."""
        listeners = self._listeners.setdefault(channel_id, set())
        listeners.add(deliver)
        for offer in self.pending_offers(channel_id):
            deliver(channels_pb2.ChannelEvent(refund=offer))
        return lambda: listeners.discard(deliver)
