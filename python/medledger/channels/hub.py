"""A processor hub: the payee of many payers' channels and the payer of channels to many
providers, routing payer → hub → provider on one hash lock.

A routed payment, step by step:

1. The payer asks the hub for invoices for a provider (`Invoices` with `destination`).
   The hub asks the provider on its own channel and passes the lock hashes back; only
   the provider knows their preimages.
2. The payer's update makes its payments conditional on a lock (hash, amount, expiry
   e1) and names the provider as `destination`. The hub accepts it like any payee and
   records the route in the same LMDB transaction (the payment lines are forwarded from
   memory: a route not forwarded before a crash fails on restart).
3. Once that is durable, the hub forwards the same payment lines on its channel to the
   provider, locked on the same hash with the earlier expiry e2 = e1 - HUB_EXPIRY_DELTA.
   Routes that became durable together (one group commit) go to the provider in one
   update, each on its own lock: one signature, one acknowledgement and one fsync on each
   side for all of them. If the provider refuses such an update, each of its routes is
   tried again alone, so only the route at fault fails.
4. The provider acknowledges the lock once it is durable and reveals the preimage. The
   hub stores the preimage in the route (fsync) before anything else; then its next
   update to the provider pays the provider, and it reveals the preimage to the payer,
   whose next update pays the hub. If the provider refuses the lock, the hub gives the
   incoming lock up (LockFailed) and the payer takes its amount back. A provider that
   gives up a lock it holds could still claim it on the ledger until it has accepted
   the hub's release of it: the incoming lock is given up only then.
5. A provider may claim the lock on the ledger instead (it closed the channel revealing
   the preimage). The ledger keeps revealed preimages; the hub reads those of its
   channels with routes waiting, and before it fails any route for expiry, and claims
   the incoming lock with what it finds.

Both hops complete or neither. The provider reveals only a preimage whose lock it holds
durably; the hub pays out only a preimage it holds durably, and gives an incoming lock
up only once the provider refused the outgoing one, or the outgoing one expired. A
preimage that comes after the hub gave the route up (the provider was unreachable until
its lock expired) is not paid: the hub takes its expired lock back instead, and keeps the
failed route until neither hop holds the lock. After a
crash the hub reloads its routes: a route whose lock the provider holds waits for the
provider's announcement (repeated on every reconnect); one whose lock never reached the
provider fails. A payer that withholds the update paying a revealed lock is closed on
the ledger with the preimage before its lock expires (CLAIM_MARGIN_BLOCKS), and settled
after the challenge window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import grpc

from medledger.channels.payee import ChannelLedger, Payee
from medledger.channels.payer import PayerSession, UpdateDiscarded
from medledger.channels.rules import ChannelRuleError
from medledger.channels.session import (
    CLAIM_MARGIN_BLOCKS,
    HUB_EXPIRY_DELTA_BLOCKS,
    check_route,
    claims_due,
    expired_routes,
    forward_locks,
)
from medledger.channels.store import ChannelStore, Write, when_durable
from medledger.crypto import SigningKey, sha256
from medledger.errors import Rejected
from medledger.metrics import HUB_ROUTES
from medledger.transport.credentials import FROM_ENVIRONMENT, Transport
from medledger.tx import TxBuilder
from medledger.wire.v1 import channels_pb2, envelope_pb2, tx_pb2

__all__ = ["CLAIM_MARGIN_BLOCKS", "HUB_EXPIRY_DELTA_BLOCKS", "Hub"]

log = logging.getLogger(__name__)

TX_EXPIRY_BLOCKS = 20
FORWARD_PAYMENTS_MAX = 4_096
"""Most payment lines one forwarded update carries (the channel rules' batch limit)."""
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
HOUSEKEEPING_S = 1.0


class HubLedger(ChannelLedger, Protocol):
    """The ledger as the hub uses it: read channels and submit its claims."""

    async def submit(self, tx: envelope_pb2.SignedTransaction) -> tx_pb2.Receipt: ...


@dataclass
class _Link:
    """The hub's channel to one provider, kept connected."""

    local: channels_pb2.LocalChannel
    session: PayerSession | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Set once the first connection attempt ended, connected or not.
    tried: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    # Routes accepted since the last forwarded update, with their payment lines.
    queued: list[_Forward] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class _Forward:
    route: channels_pb2.HubRoute
    payments: Sequence[channels_pb2.Payment]


class Hub:
    def __init__(
        self,
        key: SigningKey,
        chain_id: str,
        store: ChannelStore,
        ledger: HubLedger,
        *,
        tls: Transport = FROM_ENVIRONMENT,
    ) -> None:
        """`tls`: the CA bundle the providers' nodes are verified against (None: clear
        text)."""
        self.key = key
        self.tls = tls
        self.chain_id = chain_id
        self.store = store
        self.ledger = ledger
        self.payee = Payee(key, chain_id, store, ledger, router=self)
        self.commit = self.payee.commit  # one group commit for both sides of the hub
        self._links = {
            local.payee: _Link(local) for local in store.channels() if local.payer == key.public_key
        }
        self._routes = {route.hash: route for route in store.routes()}
        for route in self._routes.values():
            if route.preimage:  # learnt before a restart: the payer still owes the hub
                self.payee.reveal(route.in_channel_id, route.hash, route.preimage)
        self.builder = TxBuilder(key, chain_id)
        self._claimed: set[bytes] = set()  # incoming channels the hub closed on the ledger
        self._given_up: dict[bytes, str] = {}  # lock hash -> why the provider gave it up
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.payee.start()
        for link in self._links.values():
            link.task = asyncio.get_running_loop().create_task(self._keep_connected(link))
        self._housekeeping_task = asyncio.get_running_loop().create_task(self._housekeeping())

    def destinations(self) -> list[bytes]:
        """The providers this hub has a channel to."""
        return list(self._links)

    async def first_connections(self, timeout_s: float) -> int:
        """Waits until every provider link has tried once to connect (at most
        `timeout_s`), so that a hub announced ready can route at once; returns how many
        links are connected. A provider still unreachable is tried again with back-off."""
        waits = [asyncio.create_task(link.tried.wait()) for link in self._links.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for wait in pending:
                wait.cancel()
        return sum(link.session is not None for link in self._links.values())

    def _adopt_new_links(self) -> None:
        """Channels to providers opened (with the hub's key, in its store) while it runs."""
        for local in self.store.channels():
            if local.payer == self.key.public_key and local.payee not in self._links:
                link = self._links[local.payee] = _Link(local)
                link.task = asyncio.get_running_loop().create_task(self._keep_connected(link))

    async def stop(self) -> None:
        tasks = [link.task for link in self._links.values() if link.task is not None]
        if self._housekeeping_task is not None:
            tasks.append(self._housekeeping_task)
        tasks.extend(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.payee.stop()

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_connected(self, link: _Link) -> None:
        """One stream to the provider at a time, reconnecting with back-off."""
        delay = RECONNECT_MIN_S
        while True:
            session = PayerSession(
                self.key,
                self.chain_id,
                self.store,
                link.local,
                link.local.address,
                commit=self.commit,
                on_resolved=self._on_resolved,
                on_failed=self._on_failed,
                tls=self.tls,
            )
            try:
                async with session:
                    await self._recover(link, session)
                    link.session = session
                    link.tried.set()
                    delay = RECONNECT_MIN_S
                    log.info("hub: connected to %s", link.local.address)
                    await session.wait_closed()
            except (grpc.aio.AioRpcError, TimeoutError, OSError, ChannelRuleError) as error:
                log.warning("hub: link to %s: %s", link.local.address, error)
            except Exception:  # a bug must not end the link for good: log it, go on
                log.exception("hub: link to %s failed", link.local.address)
            finally:
                link.session = None
                link.tried.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _recover(self, link: _Link, session: PayerSession) -> None:
        """Decides the routes left open by a broken stream or a restart: the provider's
        state (which the session just adopted) shows whether the lock reached it."""
        held = {lock.hash for lock in session.acked_state.locks}
        for route in list(self._routes.values()):
            if route.destination != link.local.payee or route.preimage:
                continue
            if route.failure:
                if route.hash in held:  # given up upstream while the link was down
                    session.release(route.hash)
            elif route.hash not in held:
                await self._fail(route, "the payment did not reach the destination")

    # ------------------------------------------------------------------ Router

    def _session_to(self, destination: bytes) -> PayerSession:
        """The connected session of the hub's channel to `destination`, or the refusal."""
        link = self._links.get(destination)
        if link is None:
            raise ChannelRuleError(
                "FAILED_PRECONDITION", "destination", "the hub has no channel to it"
            )
        if link.session is None:
            raise ChannelRuleError("UNAVAILABLE", "destination", "the hub cannot reach it now")
        return link.session

    def check_route(self, destination: bytes, lock: channels_pb2.HashLock) -> None:
        link = self._links.get(destination)
        session = link.session if link is not None else None
        check_route(
            lock,
            height=self.ledger.height(),
            link=link is not None,
            connected=session is not None,
            spendable_micros=session.spendable_micros if session is not None else 0,
        )

    def route_accepted(
        self, route: channels_pb2.HubRoute, payments: Sequence[channels_pb2.Payment]
    ) -> None:
        self._routes[route.hash] = route
        HUB_ROUTES.labels(outcome="accepted").inc()
        self._queue(self._links[route.destination], [_Forward(route, payments)])

    def route_settled(self, lock_hash: bytes) -> list[Write]:
        route = self._routes.get(lock_hash)
        if route is None or route.failure:
            # A failed route is kept until the provider's lock is taken back as well: a
            # preimage it reveals late must find the route failed, and go unpaid.
            return []
        del self._routes[lock_hash]
        return [self.store.route_write(route, delete=True)]

    async def invoices(self, channel_id: bytes, count: int, destination: bytes) -> list[bytes]:
        return await self._session_to(destination).invoices(count)

    # ------------------------------------------------------------------ routing

    def _queue(self, link: _Link, forwards: list[_Forward]) -> None:
        """Routes wait for the loop's next turn: the others accepted in the same group
        commit (whose callbacks all run in this turn) join them in one update."""
        if not link.queued:
            asyncio.get_running_loop().call_soon(self._flush, link)
        link.queued.extend(forwards)

    def _flush(self, link: _Link) -> None:
        while link.queued:
            forwards = [link.queued.pop(0)]
            lines = len(forwards[0].payments)
            while link.queued and lines + len(link.queued[0].payments) <= FORWARD_PAYMENTS_MAX:
                lines += len(link.queued[0].payments)
                forwards.append(link.queued.pop(0))
            self._spawn(self._forward(link, forwards))

    async def _forward(self, link: _Link, forwards: list[_Forward]) -> None:
        session = link.session
        if session is None:
            for forward in forwards:
                await self._fail(forward.route, "the hub cannot reach the destination")
            return
        groups = forward_locks([(f.route, len(f.payments)) for f in forwards])
        try:
            acked = await session.send(
                [line for forward in forwards for line in forward.payments], locks=groups
            )
            await acked
        except UpdateDiscarded:
            self._queue(link, forwards)  # an earlier update was refused, not these routes
        except ChannelRuleError as error:
            if error.status == "UNAVAILABLE":
                return  # the provider may hold the locks: decided when the link is back
            if len(forwards) > 1:  # find the route at fault: each goes again on its own
                for forward in forwards:
                    self._spawn(self._forward(link, [forward]))
                return
            reason = f"the destination refused: {error.field}: {error.reason}"
            await self._fail(forwards[0].route, reason)

    def _on_resolved(
        self, lock_hash: bytes, preimage: bytes
    ) -> asyncio.Future[None] | Literal[False] | None:
        """The provider revealed the preimage. It is stored before the hub's session may
        pay the provider with it, and before the payer hears of it."""
        route = self._routes.get(lock_hash)
        if route is not None and route.failure:
            # The hub gave the incoming lock up (it expired, say, while the provider was
            # unreachable): paying the provider now would pay a route nobody pays for.
            # The outgoing lock has expired too, so the provider accepts its release.
            log.warning("hub: %s revealed after the route failed; not paid", lock_hash.hex())
            return False
        if route is None or route.preimage:
            return None
        route.preimage = preimage
        HUB_ROUTES.labels(outcome="settled").inc()
        durable = self.commit.commit([self.store.route_write(route)])
        when_durable(durable, lambda: self.payee.reveal(route.in_channel_id, lock_hash, preimage))
        return durable

    def _on_failed(self, lock_hash: bytes, reason: str) -> None:
        """The provider gave the lock up; the session takes it back in its next update.
        Until the provider acknowledged that, it could still claim the lock on the
        ledger, so the route fails upstream only then (`_fail_given_up`)."""
        route = self._routes.get(lock_hash)
        if route is not None and not route.preimage:
            self._given_up[lock_hash] = reason

    async def _fail_given_up(self) -> None:
        for lock_hash, reason in list(self._given_up.items()):
            route = self._routes.get(lock_hash)
            if route is None or route.preimage or route.failure:
                del self._given_up[lock_hash]
                continue
            link = self._links.get(route.destination)
            if link is None or link.session is None:
                continue
            if lock_hash not in {lock.hash for lock in link.session.acked_state.locks}:
                del self._given_up[lock_hash]
                await self._fail(route, f"the destination gave the lock up: {reason}")

    async def _fail(self, route: channels_pb2.HubRoute, reason: str) -> None:
        if route.failure or route.preimage:
            return
        route.failure = reason
        HUB_ROUTES.labels(outcome="failed").inc()
        await self.payee.fail_lock(
            route.in_channel_id, route.hash, reason, also=[self.store.route_write(route)]
        )

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self._adopt_new_links()
            height = self.ledger.height()  # read first: the ledger read next includes it
            try:
                await self._learn_from_ledger()
            except Rejected as error:  # unknown whether a provider claimed: expire nothing
                log.warning("hub: reading the ledger: %s", error)
            else:
                await self._expire_routes(height)
            await self._fail_given_up()
            await self._forget_failed_routes()
            try:
                await self._claim_on_ledger()
            except Rejected as error:  # the ledger is unreachable or refused: next time
                log.warning("hub: claiming on the ledger: %s", error)

    async def _learn_from_ledger(self) -> None:
        """A provider may claim the hub's lock on the ledger instead of telling the hub (it
        closed the channel revealing the preimage, or revealed it in a challenge): the
        preimage is public there, so the hub takes it to claim the payer's lock."""
        for link in list(self._links.values()):
            waiting = [
                route
                for route in self._routes.values()
                if route.destination == link.local.payee
                and not route.preimage
                and not route.failure
            ]
            if not waiting:
                continue
            channel = await self.ledger.channel(link.local.channel_id)
            if channel is None or not channel.revealed_preimages:
                continue
            revealed = {sha256(p): p for p in channel.revealed_preimages}
            for route in waiting:
                preimage = revealed.get(route.hash)
                if preimage is None:
                    continue
                log.warning("hub: %s was claimed on the ledger", route.hash.hex())
                kept = self._on_resolved(route.hash, preimage)
                if kept:
                    await kept

    async def _expire_routes(self, height: int) -> None:
        """A route the provider never resolved fails once its outgoing lock expired by
        `height` (and the ledger, read since, shows no claim of it): the provider can no
        longer claim it, so the payer may take the incoming lock back."""
        for route in expired_routes(list(self._routes.values()), height):
            if route.preimage or route.failure:
                continue  # decided meanwhile
            await self._fail(route, "the lock expired before the destination claimed it")
            link = self._links.get(route.destination)
            if link is not None and link.session is not None:
                link.session.release(route.hash)  # and the hub takes its own lock back

    async def _forget_failed_routes(self) -> None:
        """Drops a failed route once neither hop holds its lock any more: the payer took
        the incoming one back, and the provider's is not pending after any update the
        hub sent (while the link is down that is unknown, so the route stays)."""
        forgotten = []
        for route in self._routes.values():
            if not route.failure or route.hash in self.payee.pending_locks(route.in_channel_id):
                continue
            link = self._links.get(route.destination)
            if link is not None and (
                link.session is None or route.hash in link.session.pending_locks()
            ):
                continue
            forgotten.append(route)
        for route in forgotten:
            del self._routes[route.hash]
        if forgotten:
            await self.commit.commit([self.store.route_write(r, delete=True) for r in forgotten])

    async def _claim_on_ledger(self) -> None:
        """Closes, with the latest state both signed and the preimages, each incoming
        channel whose payer has not paid a revealed lock that is about to expire; settles
        it once the challenge window has passed."""
        height = self.ledger.height()
        owed = claims_due(self._routes.values(), height)
        for channel_id, preimages in owed.items():
            local = self.payee.latest(channel_id)
            if channel_id in self._claimed or local is None:
                continue
            self._claimed.add(channel_id)
            self.payee.mark_closing(channel_id)
            log.warning(
                "hub: payer of %s withholds %d payments; closing", channel_id.hex(), len(preimages)
            )
            await self._submit(
                self.builder.force_close_channel(
                    channel_id=channel_id,
                    state=local.latest,
                    preimages=preimages,
                    expiry_height=height + TX_EXPIRY_BLOCKS,
                )
            )
        for channel_id in list(self._claimed):
            channel = await self.ledger.channel(channel_id)
            if channel is None or channel.status != channels_pb2.CHANNEL_STATUS_CLOSING:
                continue
            if height > channel.challenge_end_height:
                tx = self.builder.settle_channel(
                    channel_id=channel_id, expiry_height=height + TX_EXPIRY_BLOCKS
                )
                await self._submit(tx)
                self._claimed.discard(channel_id)

    async def _submit(self, tx: envelope_pb2.SignedTransaction) -> None:
        receipt = await self.ledger.submit(tx)
        if receipt.code != tx_pb2.RESULT_CODE_OK:
            log.warning("hub: ledger refused: %s", receipt.message)
