"""A party's own channel storage: one LMDB environment, never replicated.

    channels   channel id -> LocalChannel (the latest state both signed, the deposit)
    updates    channel id || sequence (u64 BE) -> StoredUpdate (payments and signatures)
    offers     channel id || payment id -> RefundOffer not yet included in a state
    refunded   channel id || payment id -> sequence (u64 BE) of the state that took it
    invoices   lock hash -> Invoice (a payee's preimages, revealed once paid)
    failed     channel id || lock hash -> LockFailed (locks the payee gave up)
    routes     lock hash -> HubRoute (a hub's routed payments and their outcome)

Writes go through `GroupCommit`: everything queued while one LMDB transaction is being
fsynced is written by the next one, so many updates share one fsync and an
acknowledgement is only sent once its update is on disk.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb

from medledger.wire.v1 import channels_pb2

__all__ = ["ChannelStore", "GroupCommit", "Write", "when_durable"]

MAP_SIZE_BYTES = 8 * 1024 * 1024 * 1024
CHANNEL_ID_BYTES = 16
STOP_DRAIN_S = 30.0
CHANNELS = b"channels"
UPDATES = b"updates"
OFFERS = b"offers"
INVOICES = b"invoices"
FAILED = b"failed"
ROUTES = b"routes"
REFUNDED = b"refunded"
DATABASES = (CHANNELS, UPDATES, OFFERS, INVOICES, FAILED, ROUTES, REFUNDED)

Write = tuple[bytes, bytes, bytes | None]
"""(database, key, value); a value of None deletes the key."""


def update_key(channel_id: bytes, sequence: int) -> bytes:
    return channel_id + struct.pack(">Q", sequence)


class ChannelStore:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        self._env = lmdb.open(
            str(root), map_size=MAP_SIZE_BYTES, max_dbs=len(DATABASES), sync=True, metasync=True
        )
        self._dbs = {name: self._env.open_db(name) for name in DATABASES}

    def close(self) -> None:
        self._env.close()

    def write(self, writes: list[Write]) -> None:
        """Applies `writes` in one durable (fsynced) transaction."""
        with self._env.begin(write=True) as txn:
            for db, key, value in writes:
                if value is None:
                    txn.delete(key, db=self._dbs[db])
                else:
                    txn.put(key, value, db=self._dbs[db])

    def _get(self, db: bytes, key: bytes) -> bytes | None:
        with self._env.begin(db=self._dbs[db]) as txn:
            value = txn.get(key)
            return None if value is None else bytes(value)

    def _scan(self, db: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        with self._env.begin(db=self._dbs[db]) as txn, txn.cursor() as cursor:
            if not cursor.set_range(prefix):
                return
            for key, value in cursor:
                if not bytes(key).startswith(prefix):
                    return
                yield bytes(key), bytes(value)

    # ------------------------------------------------------------------ channels

    def channel(self, channel_id: bytes) -> channels_pb2.LocalChannel | None:
        raw = self._get(CHANNELS, channel_id)
        return None if raw is None else channels_pb2.LocalChannel.FromString(raw)

    def channels(self) -> list[channels_pb2.LocalChannel]:
        return [channels_pb2.LocalChannel.FromString(v) for _, v in self._scan(CHANNELS, b"")]

    @staticmethod
    def channel_write(channel: channels_pb2.LocalChannel) -> Write:
        return CHANNELS, channel.channel_id, channel.SerializeToString(deterministic=True)

    # ------------------------------------------------------------------ updates

    @staticmethod
    def update_write(channel_id: bytes, sequence: int, stored: channels_pb2.StoredUpdate) -> Write:
        return UPDATES, update_key(channel_id, sequence), stored.SerializeToString()

    def updates(self, channel_id: bytes) -> Iterator[channels_pb2.StoredUpdate]:
        """Every acknowledged update of the channel, in sequence order."""
        for _, value in self._scan(UPDATES, channel_id):
            yield channels_pb2.StoredUpdate.FromString(value)

    # ------------------------------------------------------------------ refund offers

    @staticmethod
    def offer_write(offer: channels_pb2.RefundOffer, *, delete: bool = False) -> Write:
        key = offer.channel_id + offer.payment.payment_id
        return OFFERS, key, None if delete else offer.SerializeToString()

    def offers(self, channel_id: bytes) -> list[channels_pb2.RefundOffer]:
        return [channels_pb2.RefundOffer.FromString(v) for _, v in self._scan(OFFERS, channel_id)]

    @staticmethod
    def refunded_write(channel_id: bytes, payment_id: bytes, sequence: int) -> Write:
        """A refund a state took: its offer may never be taken again."""
        return REFUNDED, channel_id + payment_id, struct.pack(">Q", sequence)

    def refunded(self) -> dict[bytes, set[bytes]]:
        """Channel id -> the payment ids of the refunds its states took."""
        taken: dict[bytes, set[bytes]] = {}
        for key, _ in self._scan(REFUNDED, b""):
            taken.setdefault(key[:CHANNEL_ID_BYTES], set()).add(key[CHANNEL_ID_BYTES:])
        return taken

    # ------------------------------------------------------------------ hash locks

    @staticmethod
    def invoice_write(lock_hash: bytes, invoice: channels_pb2.Invoice | None) -> Write:
        """None deletes the invoice (its lock resolved: the preimage is in the update)."""
        return INVOICES, lock_hash, None if invoice is None else invoice.SerializeToString()

    def invoices(self) -> dict[bytes, channels_pb2.Invoice]:
        return {k: channels_pb2.Invoice.FromString(v) for k, v in self._scan(INVOICES, b"")}

    @staticmethod
    def failed_write(failed: channels_pb2.LockFailed, *, delete: bool = False) -> Write:
        key = failed.channel_id + failed.hash
        return FAILED, key, None if delete else failed.SerializeToString()

    def failed(self) -> list[channels_pb2.LockFailed]:
        return [channels_pb2.LockFailed.FromString(v) for _, v in self._scan(FAILED, b"")]

    @staticmethod
    def route_write(route: channels_pb2.HubRoute, *, delete: bool = False) -> Write:
        return ROUTES, route.hash, None if delete else route.SerializeToString()

    def routes(self) -> list[channels_pb2.HubRoute]:
        return [channels_pb2.HubRoute.FromString(v) for _, v in self._scan(ROUTES, b"")]


def when_durable(durable: asyncio.Future[None], then: Callable[[], None]) -> None:
    """Calls `then` once `durable` (a GroupCommit.commit) completed: the writes are on
    disk. A failed or cancelled commit calls nothing."""

    def check(done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is None:
            then()

    durable.add_done_callback(check)


class GroupCommit:
    """Batches writes from many coroutines into few durable LMDB transactions."""

    def __init__(self, store: ChannelStore) -> None:
        self._store = store
        self._queue: list[tuple[list[Write], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # how many fsyncs so far (for benchmarks and tests)
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    def tasks(self) -> list[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

    async def stop(self) -> None:
        """Writes what is queued, then stops: a commit asked for is never dropped."""
        if self._task is None or self._task.done():
            self._task = None  # never started, or failed (the node's supervisor said why)
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_DRAIN_S)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._stopping = False

    def commit(self, writes: list[Write]) -> asyncio.Future[None]:
        """A future that completes once `writes` are on disk."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((writes, done))
        self._wake.set()
        return done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._queue = self._queue, []
            if not group:
                if self._stopping:
                    return
                continue
            writes = [write for item, _ in group for write in item]
            try:
                # In a thread: the fsync must not stall the event loop's streams.
                await asyncio.to_thread(self._store.write, writes)
            except Exception as error:
                for _, done in group:
                    if not done.done():
                        done.set_exception(error)
            else:
                self.transactions += 1
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
            if self._stopping and not self._queue:
                return
