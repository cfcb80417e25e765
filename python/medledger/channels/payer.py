"""The paying side of a channel: build, sign and stream updates; keep what is acknowledged.

`PayerSession` keeps many updates in flight on one ChannelService stream (pipelining);
each covers a batch of payments under one signature. An update counts as paid when its
acknowledgement arrives: the payee's countersignature, which the payee sends only once the
update is durable on its side. The payer then stores the state both signed in its own
LMDB (group commit) before reporting the payments acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import grpc

from medledger.channels.rules import ChannelRuleError, LockedPayments, UpdateParts, next_state
from medledger.channels.signing import (
    initial_state,
    sign_channel_request,
    sign_state,
    verify_channel_states,
    verify_refund,
    verify_signed_state,
)
from medledger.channels.store import ChannelStore, GroupCommit, when_durable
from medledger.crypto import SigningKey, sha256
from medledger.transport.credentials import FROM_ENVIRONMENT, Transport, aio_channel
from medledger.transport.grpc_common import STATUS_BY_CODE, channel_options
from medledger.wire.v1 import channels_pb2, channels_pb2_grpc

__all__ = [
    "ACK_TIMEOUT_S",
    "UPDATES_IN_FLIGHT_MAX",
    "ChannelRefused",
    "PayerSession",
    "UpdateDiscarded",
    "new_payment_id",
]

UPDATES_IN_FLIGHT_MAX = 64
CONNECT_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 30.0
"""How long an update may wait for its acknowledgement before the session gives the
stream up as dead (a payee that stopped answering but keeps the connection open)."""
RESOLVE_FLUSH_S = 0.005
"""How long a lock outcome waits to ride on the next payment before it gets an update of
its own: the payee is owed the amount of a revealed lock until a state includes it."""
RESOLVE_RETRY_MAX_S = 5.0
"""Each refusal doubles that wait, up to this: a payee that keeps refusing (to let a lock
go, say) is asked again at this pace, not hundreds of times a second."""


def new_payment_id() -> bytes:
    return secrets.token_bytes(16)


class ChannelRefused(ChannelRuleError):
    """The payee refused an update (or it could not be delivered)."""


class UpdateDiscarded(ChannelRefused):
    """The update was built on an earlier one the payee refused, so the payee refuses it
    too: nothing in it was accepted, and its payments may be sent again."""


@dataclass
class _InFlight:
    update: channels_pb2.ChannelUpdate
    state: channels_pb2.ChannelState
    acked: asyncio.Future[channels_pb2.SignedChannelState]
    sent_at: float = field(default_factory=time.monotonic)


class PayerSession:
    """One payer's stream to one payee for one channel. Use as an async context manager."""

    def __init__(
        self,
        key: SigningKey,
        chain_id: str,
        store: ChannelStore,
        channel: channels_pb2.LocalChannel,
        address: str,
        *,
        in_flight_max: int = UPDATES_IN_FLIGHT_MAX,
        commit: GroupCommit | None = None,
        on_resolved: Callable[[bytes, bytes], asyncio.Future[None] | Literal[False] | None]
        | None = None,
        on_failed: Callable[[bytes, str], None] | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        tls: Transport = FROM_ENVIRONMENT,
    ) -> None:
        """`commit`: a group commit shared by many sessions over one store (one payer
        with many channels); by default the session runs its own. `on_resolved(hash,
        preimage)` and `on_failed(hash, reason)` hear the outcome of each lock (a hub
        passes them back along the route); when `on_resolved` returns a future, the
        preimage is paid out only once it completes (the hub has it on disk); when it
        returns False the lock is not paid but taken back (the hub gave the route up
        before the preimage came). An update not acknowledged within `ack_timeout_s`
        ends the stream: every update in flight fails with UNAVAILABLE."""
        self.key = key
        self.chain_id = chain_id
        self.store = store
        self.local = channel
        self.address = address
        self.tls = tls
        self._owns_commit = commit is None
        self.commit = commit if commit is not None else GroupCommit(store)
        self._window = asyncio.Semaphore(in_flight_max)
        self._in_flight: dict[int, _InFlight] = {}
        # Sequences failed here because an earlier update was refused: the payee refuses
        # them too, and those refusals (which arrive before any answer to a rebuilt
        # update, the stream being ordered) must not fail the rebuilt ones.
        self._discarded: set[int] = set()
        self._head = self._acked_state()
        self.refund_offers: dict[bytes, channels_pb2.RefundOffer] = {}
        # Hash locks: the outcome each sender waits for, and the preimages and releases
        # the next update carries.
        self._resolutions: dict[bytes, asyncio.Future[bytes]] = {}
        self._preimages_due: dict[bytes, bytes] = {}
        self._releases_due: set[bytes] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._flush_delay_s = RESOLVE_FLUSH_S
        self._closing = False
        self._on_resolved = on_resolved
        self._on_failed = on_failed
        self._outbound: asyncio.Queue[channels_pb2.ChannelUpdate | None] = asyncio.Queue()
        self._grpc: grpc.aio.Channel | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._ack_timeout_s = ack_timeout_s
        self._call: grpc.aio.StreamStreamCall | None = None  # type: ignore[type-arg]
        self._watchdog: asyncio.Task[None] | None = None

    def _acked_state(self) -> channels_pb2.ChannelState:
        if self.local.latest.state:
            return channels_pb2.ChannelState.FromString(self.local.latest.state)
        return initial_state(self.local.channel_id, 0)

    @property
    def acked_state(self) -> channels_pb2.ChannelState:
        return self._acked_state()

    # ------------------------------------------------------------------ connection

    async def __aenter__(self) -> PayerSession:
        if self._owns_commit:
            self.commit.start()
        self._grpc = connection = aio_channel(self.address, self.tls, channel_options())
        stub = channels_pb2_grpc.ChannelServiceStub(connection)
        await asyncio.wait_for(connection.channel_ready(), CONNECT_TIMEOUT_S)
        await self._resync(stub)
        self._call = call = stub.Stream(self._requests())
        self._receiver = asyncio.create_task(self._receive(call))
        self._watchdog = asyncio.create_task(self._watch_acks())
        if self._head.locks:
            # The payee repeats the outcomes of pending locks to a stream once it carries
            # an update of the channel: an empty one, so they are heard without delay.
            self._outstanding(await self.send([]))
        return self

    async def wait_closed(self) -> None:
        """Returns when the stream has ended (the payee went away or the session closed)."""
        if self._receiver is not None:
            await asyncio.shield(self._receiver)

    def pending_locks(self) -> list[bytes]:
        """Hashes of the locks still pending after every update sent so far."""
        return [lock.hash for lock in self._head.locks]

    @property
    def spendable_micros(self) -> int:
        """What the payer has left in the channel after every update sent so far,
        counting deposits on the ledger that no state includes yet."""
        unclaimed = max(0, self.local.deposit_micros - self._head.deposit_micros)
        return self._head.payer_micros + unclaimed

    async def invoices(self, count: int, destination: bytes = b"") -> list[bytes]:
        """Lock hashes from the payee (or, through a hub, from `destination`)."""
        if self._grpc is None:
            raise ChannelRefused("FAILED_PRECONDITION", "session", "not connected")
        stub = channels_pb2_grpc.ChannelServiceStub(self._grpc)
        request = sign_channel_request(
            channels_pb2.InvoiceRequest(
                channel_id=self.local.channel_id, count=count, destination=destination
            ),
            self.key,
            self.chain_id,
        )
        try:
            response: channels_pb2.InvoiceResponse = await stub.Invoices(
                request, timeout=CONNECT_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise ChannelRefused(error.code().name, "invoices", error.details() or "") from error
        return list(response.hashes)

    @staticmethod
    def _outstanding(acked: asyncio.Future[channels_pb2.SignedChannelState]) -> None:
        """An update nobody awaits: its failure is the session's, not a caller's."""
        acked.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def __aexit__(self, *_: object) -> None:
        if self._flush is not None:
            self._flush.cancel()
        if (self._preimages_due or self._releases_due) and self._failure is None:
            # Pay what revealed locks owe (and take back what failed ones hold) before
            # leaving, rather than leave the payee to claim it on the ledger.
            # If it fails they stay pending in the latest state; a later session pays.
            with contextlib.suppress(ChannelRuleError, TimeoutError):
                await asyncio.wait_for(await self.send([]), ACK_TIMEOUT_S)
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self._outbound.put(None)
        if self._receiver is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._receiver), ACK_TIMEOUT_S)
            except TimeoutError:
                self._receiver.cancel()
        if self._grpc is not None:
            await self._grpc.close()
        if self._owns_commit:
            await self.commit.stop()

    async def _resync(self, stub: channels_pb2_grpc.ChannelServiceAsyncStub) -> None:
        """Adopts the payee's latest state if it is ahead of ours: the acknowledgement of
        it was lost (we crashed or the connection broke) but both signatures prove it."""
        try:
            response: channels_pb2.GetChannelStateResponse = await stub.GetChannelState(
                sign_channel_request(
                    channels_pb2.GetChannelStateRequest(channel_id=self.local.channel_id),
                    self.key,
                    self.chain_id,
                ),
                timeout=CONNECT_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return  # the payee has seen no update of this channel yet
            raise
        for offer in response.pending_refunds:
            self._take_offer(offer)
        if not response.state.state:
            return
        theirs = verify_signed_state(
            self.chain_id, response.state, self.local.payer, self.local.payee
        )
        if theirs.channel_id == self.local.channel_id and theirs.sequence > self._head.sequence:
            self.local.latest.CopyFrom(response.state)
            await self.commit.commit([self.store.channel_write(self.local)])
            self._head = theirs

    async def _requests(self) -> AsyncIterator[channels_pb2.ChannelUpdate]:
        while (update := await self._outbound.get()) is not None:
            yield update

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        payments: Sequence[channels_pb2.Payment],
        *,
        deposit_micros: int | None = None,
        final: bool = False,
        include_refunds: bool = True,
        lock: channels_pb2.HashLock | None = None,
        locks: Sequence[LockedPayments] = (),
        destination: bytes = b"",
    ) -> asyncio.Future[channels_pb2.SignedChannelState]:
        """Signs and sends the next update; the returned future completes with the state
        both signed once the payee acknowledged it and it is stored here.

        With `lock` the payments are conditional on it (its amount is their sum); with
        `locks` the first payments are split among several (a hub forwarding many routed
        payments in one update). `resolution(hash)` completes with a lock's preimage once
        the payee, or through a hub the `destination`, has its payments. Preimages and
        releases due from earlier locks ride along."""
        if self._failure is not None:
            raise self._failure
        if lock is not None:
            locks = [*locks, LockedPayments(lock, len(payments) - sum(g.payments for g in locks))]
        await self._window.acquire()
        batch = channels_pb2.PaymentBatch(payments=payments)
        if include_refunds and self.refund_offers:
            batch.payments.extend(offer.payment for offer in self.refund_offers.values())
            self.refund_offers.clear()
        pending = {held.hash for held in self._head.locks}
        preimages = [p for h, p in self._preimages_due.items() if h in pending]
        released = [h for h in self._releases_due if h in pending]
        self._preimages_due.clear()
        self._releases_due.clear()
        parts = UpdateParts(
            batch=batch,
            batch_bytes=batch.SerializeToString(deterministic=True),
            deposit_micros=deposit_micros
            or max(self._head.deposit_micros, self.local.deposit_micros),
            locks=locks,
            preimages=preimages,
            released=released,
            final=final,
        )
        try:
            state = next_state(self._head, parts)
        except ChannelRuleError:
            self._window.release()
            self._requeue(preimages, released)
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
        loop = asyncio.get_running_loop()
        for group in locks:
            self._resolutions[group.lock.hash] = loop.create_future()
        acked: asyncio.Future[channels_pb2.SignedChannelState] = loop.create_future()
        self._in_flight[state.sequence] = _InFlight(update, state, acked)
        self._head = state
        self._outbound.put_nowait(update)
        return acked

    def resolution(self, lock_hash: bytes) -> asyncio.Future[bytes]:
        """Completes with the preimage of a lock this session sent (the payment arrived),
        or fails with ChannelRefused when the payee gave the lock up. Available until an
        acknowledged state settles the lock."""
        return self._resolutions[lock_hash]

    def release(self, lock_hash: bytes) -> None:
        """Takes a lock back in the next update: one that expired unclaimed (the payee
        accepts that) or that the payee gave up."""
        if self._pending_lock(self.local.channel_id, lock_hash):
            self._requeue((), [lock_hash])

    def _requeue(self, preimages: Sequence[bytes], released: Sequence[bytes]) -> None:
        """Outcomes an update carried that was not sent or was refused: the next one
        carries them."""
        for preimage in preimages:
            self._preimages_due[sha256(preimage)] = preimage
        self._releases_due.update(released)
        if preimages or released:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush is None and not self._closing:
            self._flush = asyncio.get_running_loop().call_later(
                self._flush_delay_s, self._flush_due
            )

    def _flush_due(self) -> None:
        self._flush = None
        if self._closing or self._failure is not None:
            return
        if self._preimages_due or self._releases_due:
            task = asyncio.get_running_loop().create_task(self.send([]))
            task.add_done_callback(_ignore_refusal)

    # ------------------------------------------------------------------ receiving

    async def _watch_acks(self) -> None:
        """Ends a stream whose payee stopped answering: without it a payee that hangs
        (but keeps the connection open) would hold every update in flight for ever."""
        while self._failure is None:
            await asyncio.sleep(self._ack_timeout_s / 4)
            oldest = min((f.sent_at for f in self._in_flight.values()), default=None)
            if oldest is not None and time.monotonic() - oldest > self._ack_timeout_s:
                reason = f"no acknowledgement within {self._ack_timeout_s:g} s"
                self._fail_all(ChannelRefused("UNAVAILABLE", "stream", reason))
                if self._call is not None:
                    self._call.cancel()  # the receiver ends, and so does wait_closed()

    async def _receive(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "ack":
                    await self._on_ack(event.ack)
                elif kind == "refusal":
                    self._on_refusal(event.refusal)
                elif kind == "refund":
                    self._take_offer(event.refund)
                elif kind == "resolved":
                    self._on_resolved_lock(event.resolved)
                elif kind == "failed":
                    self._on_failed_lock(event.failed)
        except grpc.aio.AioRpcError as error:
            self._fail_all(ChannelRefused("UNAVAILABLE", "stream", error.details() or str(error)))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task was cancelled, not just the call (by the watchdog)
        if self._in_flight:
            self._fail_all(ChannelRefused("UNAVAILABLE", "stream", "closed before acknowledging"))

    async def _on_ack(self, ack: channels_pb2.ChannelAck) -> None:
        flight = self._in_flight.get(ack.sequence)
        if flight is None:
            return  # an acknowledgement of an update already settled (a resend)
        (valid,) = verify_channel_states(
            self.chain_id, [flight.update.state], [self.local.payee], [ack.payee_signature]
        )
        if not valid:
            self._fail_from(
                ack.sequence,
                ChannelRefused("UNAUTHENTICATED", "payee_signature", "not the payee's signature"),
            )
            return
        del self._in_flight[ack.sequence]
        self._flush_delay_s = RESOLVE_FLUSH_S
        for preimage in flight.update.preimages:  # these locks are settled now
            self._resolutions.pop(sha256(preimage), None)
        for lock_hash in flight.update.released_locks:
            self._resolutions.pop(lock_hash, None)
        signed = channels_pb2.SignedChannelState(
            state=flight.update.state,
            payer_signature=flight.update.payer_signature,
            payee_signature=ack.payee_signature,
        )
        if flight.state.sequence > self._acked_state().sequence:
            self.local.latest.CopyFrom(signed)
        stored = channels_pb2.StoredUpdate(
            update=flight.update,
            payee_signature=ack.payee_signature,
            acked_unix_ms=int(time.time() * 1000),
        )
        durable = self.commit.commit(
            [
                self.store.channel_write(self.local),
                self.store.update_write(self.local.channel_id, flight.state.sequence, stored),
            ]
        )
        self._window.release()
        durable.add_done_callback(lambda done: _settle(flight.acked, done, signed))

    def _on_refusal(self, refusal: channels_pb2.ChannelRefusal) -> None:
        if refusal.sequence in self._discarded:
            self._discarded.discard(refusal.sequence)
            return
        code = STATUS_BY_CODE.get(refusal.code, grpc.StatusCode.UNKNOWN)
        self._flush_delay_s = min(self._flush_delay_s * 2, RESOLVE_RETRY_MAX_S)
        self._fail_from(refusal.sequence, ChannelRefused(code.name, refusal.field, refusal.message))

    def _fail_from(self, sequence: int, error: ChannelRefused) -> None:
        """Fails the refused update and every later one (each built on it: those fail with
        UpdateDiscarded unless the whole stream failed), and rewinds the head to the last
        acknowledged state."""
        for seq in sorted(s for s in self._in_flight if s >= sequence):
            flight = self._in_flight.pop(seq)
            failure = error
            if seq != sequence:
                self._discarded.add(seq)
                if self._failure is None:
                    failure = UpdateDiscarded(
                        "ABORTED", "state.sequence", f"built on update {sequence}, refused"
                    )
            if not flight.acked.done():
                flight.acked.set_exception(failure)
            for new_lock in flight.update.new_locks:
                waiter = self._resolutions.pop(new_lock.hash, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(failure)
            self._requeue(flight.update.preimages, flight.update.released_locks)
            self._window.release()
        self._head = max(
            [self._acked_state(), *(f.state for f in self._in_flight.values())],
            key=lambda s: s.sequence,
        )

    def _fail_all(self, error: ChannelRefused) -> None:
        self._failure = error
        self._fail_from(0, error)

    def _pending_lock(self, channel_id: bytes, lock_hash: bytes) -> bool:
        return channel_id == self.local.channel_id and any(
            lock.hash == lock_hash for lock in self._head.locks
        )

    def _on_resolved_lock(self, resolved: channels_pb2.LockResolved) -> None:
        if not self._pending_lock(resolved.channel_id, resolved.hash):
            return  # resolved already (an announcement repeated on reconnect)
        if sha256(resolved.preimage) != resolved.hash:
            return  # not the preimage: the lock stays pending until it expires
        kept = self._on_resolved(resolved.hash, resolved.preimage) if self._on_resolved else None
        if kept is False:  # the route was given up before the preimage came: not paid
            self._requeue((), [resolved.hash])
            return
        waiter = self._resolutions.get(resolved.hash)
        if waiter is not None and not waiter.done():
            waiter.set_result(resolved.preimage)
        if kept is None:
            self._requeue([resolved.preimage], ())
        else:
            preimage = resolved.preimage
            when_durable(kept, lambda: self._requeue([preimage], ()))

    def _on_failed_lock(self, failed: channels_pb2.LockFailed) -> None:
        if not self._pending_lock(failed.channel_id, failed.hash):
            return
        self._releases_due.add(failed.hash)
        waiter = self._resolutions.get(failed.hash)
        if waiter is not None and not waiter.done():
            waiter.set_exception(ChannelRefused("ABORTED", "new_locks.hash", failed.reason))
        if self._on_failed is not None:
            self._on_failed(failed.hash, failed.reason)
        self._schedule_flush()

    def _take_offer(self, offer: channels_pb2.RefundOffer) -> None:
        if offer.channel_id == self.local.channel_id and verify_refund(
            self.chain_id, offer, self.local.payee
        ):
            self.refund_offers[offer.payment.payment_id] = offer


def _ignore_refusal(task: asyncio.Task[asyncio.Future[channels_pb2.SignedChannelState]]) -> None:
    """A flush's update: its refusal requeues what it carried (or the stream is gone)."""
    if task.cancelled() or task.exception() is not None:
        return
    PayerSession._outstanding(task.result())


def _settle(
    acked: asyncio.Future[channels_pb2.SignedChannelState],
    durable: asyncio.Future[None],
    signed: channels_pb2.SignedChannelState,
) -> None:
    if acked.done():
        return
    if durable.exception() is not None:
        acked.set_exception(durable.exception())  # type: ignore[arg-type]
    else:
        acked.set_result(signed)
