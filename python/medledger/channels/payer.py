"""The paying side of a channel: the I/O around the payer's session core.

`session.PayerCore` (pure) builds and signs each update, keeps the updates in flight and
the acknowledged state, and decides what an acknowledgement, a refusal or a lock outcome
means. `PayerSession` is its shell: it keeps many updates in flight on one
ChannelService stream (pipelining), each covering a batch of payments under one
signature. An update counts as paid when its acknowledgement arrives: the payee's
countersignature, which the payee sends only once the update is durable on its side. The
payer then stores the state both signed in its own LMDB (group commit) before reporting
the payments acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import grpc

from medledger.channels.rules import ChannelRuleError, LockedPayments
from medledger.channels.session import (
    Acked,
    ChannelRefused,
    Failed,
    PayerCore,
    UpdateDiscarded,
)
from medledger.channels.signing import sign_channel_request
from medledger.channels.store import ChannelStore, GroupCommit, when_durable
from medledger.crypto import SigningKey
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


def new_payment_id() -> bytes:
    return secrets.token_bytes(16)


@dataclass
class _Waiting:
    """A caller waiting for an update in flight to be acknowledged and stored."""

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
        self.core = PayerCore(key, chain_id, channel)
        self.address = address
        self.tls = tls
        self._owns_commit = commit is None
        self.commit = commit if commit is not None else GroupCommit(store)
        self._window = asyncio.Semaphore(in_flight_max)
        self._waiting: dict[int, _Waiting] = {}
        # The outcome each sender of a lock waits for.
        self._resolutions: dict[bytes, asyncio.Future[bytes]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._closing = False
        self._on_resolved = on_resolved
        self._on_failed = on_failed
        self._outbound: asyncio.Queue[channels_pb2.ChannelUpdate | None] = asyncio.Queue()
        self._grpc: grpc.aio.Channel | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._ack_timeout_s = ack_timeout_s
        self._call: grpc.aio.StreamStreamCall | None = None  # type: ignore[type-arg]
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def local(self) -> channels_pb2.LocalChannel:
        return self.core.local

    @property
    def acked_state(self) -> channels_pb2.ChannelState:
        return self.core.acked_state()

    @property
    def refund_offers(self) -> dict[bytes, channels_pb2.RefundOffer]:
        return self.core.refund_offers

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
        if self.core.head.locks:
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
        return self.core.pending_locks()

    @property
    def spendable_micros(self) -> int:
        """What the payer has left in the channel after every update sent so far,
        counting deposits on the ledger that no state includes yet."""
        return self.core.spendable_micros

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
        if self.core.has_due() and self.core.failure is None:
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
            self.core.take_offer(offer)
        writes = self.core.adopt(response.state)
        if writes:
            await self.commit.commit(writes)

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
        if self.core.failure is not None:
            raise self.core.failure
        if lock is not None:
            locks = [*locks, LockedPayments(lock, len(payments) - sum(g.payments for g in locks))]
        await self._window.acquire()
        try:
            flight = self.core.build(
                payments,
                deposit_micros=deposit_micros,
                final=final,
                include_refunds=include_refunds,
                locks=locks,
                destination=destination,
            )
        except ChannelRuleError:
            self._window.release()
            self._schedule_flush_if_due()
            raise
        loop = asyncio.get_running_loop()
        for group in locks:
            self._resolutions[group.lock.hash] = loop.create_future()
        acked: asyncio.Future[channels_pb2.SignedChannelState] = loop.create_future()
        self._waiting[flight.state.sequence] = _Waiting(acked)
        self._outbound.put_nowait(flight.update)
        return acked

    def resolution(self, lock_hash: bytes) -> asyncio.Future[bytes]:
        """Completes with the preimage of a lock this session sent (the payment arrived),
        or fails with ChannelRefused when the payee gave the lock up. Available until an
        acknowledged state settles the lock."""
        return self._resolutions[lock_hash]

    def release(self, lock_hash: bytes) -> None:
        """Takes a lock back in the next update: one that expired unclaimed (the payee
        accepts that) or that the payee gave up."""
        if self.core.release(lock_hash):
            self._schedule_flush()

    def _requeue(self, preimages: Sequence[bytes], released: Sequence[bytes]) -> None:
        """Outcomes to carry in the next update: it goes soon."""
        if self.core.requeue(preimages, released):
            self._schedule_flush()

    def _schedule_flush_if_due(self) -> None:
        if self.core.has_due():
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush is None and not self._closing:
            self._flush = asyncio.get_running_loop().call_later(
                self.core.flush_delay_s, self._flush_due
            )

    def _flush_due(self) -> None:
        self._flush = None
        if self._closing or self.core.failure is not None:
            return
        if self.core.has_due():
            task = asyncio.get_running_loop().create_task(self.send([]))
            task.add_done_callback(_ignore_refusal)

    # ------------------------------------------------------------------ receiving

    async def _watch_acks(self) -> None:
        """Ends a stream whose payee stopped answering: without it a payee that hangs
        (but keeps the connection open) would hold every update in flight for ever."""
        while self.core.failure is None:
            await asyncio.sleep(self._ack_timeout_s / 4)
            oldest = min((w.sent_at for w in self._waiting.values()), default=None)
            if oldest is not None and time.monotonic() - oldest > self._ack_timeout_s:
                reason = f"no acknowledgement within {self._ack_timeout_s:g} s"
                self._fail(self.core.fail_all(ChannelRefused("UNAVAILABLE", "stream", reason)))
                if self._call is not None:
                    self._call.cancel()  # the receiver ends, and so does wait_closed()

    async def _receive(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "ack":
                    self._on_ack(event.ack)
                elif kind == "refusal":
                    code = STATUS_BY_CODE.get(event.refusal.code, grpc.StatusCode.UNKNOWN)
                    self._fail(self.core.on_refusal(event.refusal, code.name))
                elif kind == "refund":
                    self.core.take_offer(event.refund)
                elif kind == "resolved":
                    self._on_resolved_lock(event.resolved)
                elif kind == "failed":
                    self._on_failed_lock(event.failed)
        except grpc.aio.AioRpcError as error:
            reason = error.details() or str(error)
            self._fail(self.core.fail_all(ChannelRefused("UNAVAILABLE", "stream", reason)))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task was cancelled, not just the call (by the watchdog)
        if self.core.in_flight:
            closed = ChannelRefused("UNAVAILABLE", "stream", "closed before acknowledging")
            self._fail(self.core.fail_all(closed))

    def _on_ack(self, ack: channels_pb2.ChannelAck) -> None:
        decision = self.core.on_ack(ack, int(time.time() * 1000))
        if decision is None:
            return  # an acknowledgement of an update already settled (a resend)
        if not isinstance(decision, Acked):
            self._fail(decision)  # not the payee's signature
            return
        waiters = [self._waiting.pop(seq) for seq in [*decision.covered, decision.sequence]]
        for lock_hash in decision.settled:  # these locks are settled now
            self._resolutions.pop(lock_hash, None)
        durable = self.commit.commit(decision.writes)
        signed = decision.signed
        for waiting in waiters:  # an earlier update the state holds is acknowledged by it
            self._window.release()
            durable.add_done_callback(partial(_settle, waiting.acked, signed=signed))

    def _fail(self, failures: list[Failed]) -> None:
        """Tells the callers of failed updates, and the waiters of the locks they added;
        what they carried goes in the next update."""
        for failed in failures:
            waiting = self._waiting.pop(failed.sequence)
            if not waiting.acked.done():
                waiting.acked.set_exception(failed.error)
            for lock_hash in failed.new_locks:
                waiter = self._resolutions.pop(lock_hash, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(failed.error)
            self._window.release()
        self._schedule_flush_if_due()

    def _on_resolved_lock(self, resolved: channels_pb2.LockResolved) -> None:
        if not self.core.resolved_lock(resolved):
            return  # resolved already (a repeated announcement), or not the preimage
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
        if not self.core.failed_lock(failed):
            return
        waiter = self._resolutions.get(failed.hash)
        if waiter is not None and not waiter.done():
            waiter.set_exception(ChannelRefused("ABORTED", "new_locks.hash", failed.reason))
        if self._on_failed is not None:
            self._on_failed(failed.hash, failed.reason)
        self._schedule_flush()


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
