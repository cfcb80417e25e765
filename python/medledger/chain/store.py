"""One LMDB environment per node, one write transaction per block.

Named databases (keys big-endian so ranges scan in order):

    meta          b"head" -> Head, b"genesis_hash", b"chain_id"
    blocks        height (u64 BE) -> encoded Block
    commits       height (u64 BE) -> encoded CommitCertificate
    app_hashes    height (u64 BE) -> app hash after that block
    txs           tx_id (16 bytes) -> encoded TxRecord
    tx_hashes     tx hash (32 bytes) -> tx_id
    accounts, participants, records, record_versions, consents, access_events,
    break_glass   application state (keys in medledger.app.state)

`commit_block` writes a block, its certificate, its index entries, its state writes and
the new head in one transaction; LMDB's commit fsyncs before returning, so a block is
either entirely durable or absent after a crash.

The map starts at `map_size_bytes` and doubles, between blocks, once it is
GROW_AT_FRACTION full, up to `map_size_max_bytes` and never past what the disk can hold
(`capacity`). The node refuses new transactions well before the capacity is reached.
"""

from __future__ import annotations

import logging
import shutil
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from medledger.app.state import ACCOUNTS, genesis_writes
from medledger.app.state import TABLES as STATE_TABLES
from medledger.genesis import Genesis
from medledger.wire.v1 import ledger_pb2, state_pb2

__all__ = ["ChainStore", "Head", "Snapshot", "StoreError"]

TABLES = (
    "meta",
    "blocks",
    "commits",
    "app_hashes",
    "txs",
    "tx_hashes",
    *STATE_TABLES,
)
HEAD_KEY = b"head"
GENESIS_HASH_KEY = b"genesis_hash"
CHAIN_ID_KEY = b"chain_id"
HASH_BYTES = 32

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The store is not what this node expects (another chain, a corrupt head)."""


def height_key(height: int) -> bytes:
    return struct.pack(">Q", height)


@dataclass(frozen=True)
class Head:
    """The latest committed block."""

    height: int
    block_hash: bytes
    app_hash: bytes
    committed_txs: int

    def encode(self) -> bytes:
        return (
            struct.pack(">Q", self.height)
            + self.block_hash
            + self.app_hash
            + struct.pack(">Q", self.committed_txs)
        )

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        if len(raw) != 8 + 2 * HASH_BYTES + 8:
            raise StoreError(f"corrupt head record of {len(raw)} bytes")
        (height,) = struct.unpack(">Q", raw[:8])
        (committed,) = struct.unpack(">Q", raw[8 + 2 * HASH_BYTES :])
        return cls(
            height, raw[8 : 8 + HASH_BYTES], raw[8 + HASH_BYTES : 8 + 2 * HASH_BYTES], committed
        )


class Snapshot:
    """A consistent read view (one LMDB read transaction)."""

    def __init__(self, txn: Any, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def release(self) -> None:
        self._txn = None

    def get(self, table: str, key: bytes) -> bytes | None:
        value = self._txn.get(key, db=self._dbs[table])
        return None if value is None else bytes(value)

    def scan(self, table: str, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) pairs whose key starts with `prefix`, in key order."""
        out: list[tuple[bytes, bytes]] = []
        with self._txn.cursor(db=self._dbs[table]) as cursor:
            if not cursor.set_range(prefix):
                return out
            for key, value in cursor:
                if not key.startswith(prefix) or len(out) >= limit:
                    break
                out.append((bytes(key), bytes(value)))
        return out

    def scan_last(self, table: str, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """The last `limit` (key, value) pairs whose key starts with `prefix`, in key
        order: the newest, where keys end in a height."""
        out: list[tuple[bytes, bytes]] = []
        with self._txn.cursor(db=self._dbs[table]) as cursor:
            # Past the prefix's last key: the prefix followed by 0xff bytes up to a key
            # longer than any under it (keys here are at most 128 bytes).
            past = cursor.set_range(prefix + b"\xff" * 128)
            found = cursor.prev() if past else cursor.last()
            while found and len(out) < limit:
                key = bytes(cursor.key())
                if not key.startswith(prefix):
                    break
                out.append((key, bytes(cursor.value())))
                found = cursor.prev()
        out.reverse()
        return out


GROW_AT_FRACTION = 0.75
RESIZE_WAIT_S = 1.0


class ChainStore:
    """The node's chain and state in one LMDB environment."""

    def __init__(
        self, path: Path, map_size_bytes: int, map_size_max_bytes: int | None = None
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        self._path = path
        self._map_size_max = max(map_size_bytes, map_size_max_bytes or map_size_bytes)
        # LMDB may remap only while no transaction is open in this process: readers
        # register here, and a resize waits for them (and holds new ones back).
        self._gate = threading.Condition()
        self._readers = 0
        self._resizing = False
        self._env = lmdb.open(
            str(path),
            map_size=map_size_bytes,
            max_dbs=len(TABLES),
            sync=True,
            metasync=True,
        )
        self._dbs = {name: self._env.open_db(name.encode()) for name in TABLES}
        self._head: Head | None = None
        with self._env.begin() as txn:
            raw = txn.get(HEAD_KEY, db=self._dbs["meta"])
            if raw is not None:
                self._head = Head.decode(bytes(raw))

    def close(self) -> None:
        self._env.close()

    def usage(self) -> tuple[int, int]:
        """(bytes in use, capacity): how full the storage is. The capacity is what the
        map may grow to: the configured maximum, or less when the disk has less room."""
        used, _ = self._map_usage()
        return used, self.capacity(used)

    def capacity(self, used: int) -> int:
        return min(self._map_size_max, used + shutil.disk_usage(self._path).free)

    def _map_usage(self) -> tuple[int, int]:
        with self._reading():  # LMDB's info and stat are not safe during a remap either
            info = self._env.info()
            return (info["last_pgno"] + 1) * self._env.stat()["psize"], info["map_size"]

    @property
    def map_size(self) -> int:
        return self._map_usage()[1]

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Registers a reader of the environment for as long as the block runs."""
        with self._gate:
            while self._resizing:
                self._gate.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._gate:
                self._readers -= 1
                if self._readers == 0:
                    self._gate.notify_all()

    def grow_if_needed(self) -> None:
        """Doubles the map (up to the capacity) once it is GROW_AT_FRACTION full. Called
        before each block's write: LMDB remaps only while this process has no
        transaction open, so the resize waits for readers (at most RESIZE_WAIT_S, then
        the next block tries again)."""
        used, size = self._map_usage()
        if used <= size * GROW_AT_FRACTION:
            return
        new_size = min(size * 2, self.capacity(used))
        if new_size <= size:
            return
        with self._gate:
            self._resizing = True
            try:
                if not self._gate.wait_for(lambda: self._readers == 0, RESIZE_WAIT_S):
                    log.info("growing the LMDB map waits for a long reader; next block")
                    return
                self._env.set_mapsize(new_size)
            finally:
                self._resizing = False
                self._gate.notify_all()
        log.info("grew the LMDB map from %d to %d bytes", size, new_size)

    @property
    def initialised(self) -> bool:
        return self._head is not None

    @property
    def head(self) -> Head:
        if self._head is None:
            raise StoreError("the store holds no genesis; run `medledger init` first")
        return self._head

    def init_genesis(self, genesis: Genesis) -> None:
        """Writes the genesis state once; afterwards checks the store is for `genesis`."""
        genesis_hash = genesis.hash()
        if self._head is not None:
            with self._env.begin() as txn:
                stored = txn.get(GENESIS_HASH_KEY, db=self._dbs["meta"])
            if stored is None or bytes(stored) != genesis_hash:
                raise StoreError("this data directory belongs to another genesis")
            return
        head = Head(height=0, block_hash=bytes(HASH_BYTES), app_hash=genesis_hash, committed_txs=0)
        with self._env.begin(write=True) as txn:
            for table, key, value in genesis_writes(genesis):
                txn.put(key, value, db=self._dbs[table])
            meta = self._dbs["meta"]
            txn.put(GENESIS_HASH_KEY, genesis_hash, db=meta)
            txn.put(CHAIN_ID_KEY, genesis.chain_id.encode(), db=meta)
            txn.put(HEAD_KEY, head.encode(), db=meta)
        self._head = head

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        with self._reading(), self._env.begin() as txn:
            view = Snapshot(txn, self._dbs)
            try:
                yield view
            finally:
                # py-lmdb frees a read transaction's reader slot only when the transaction
                # object dies; a snapshot variable outliving its block (in a coroutine
                # that then awaits) must not hold it, or concurrent requests exhaust
                # max_readers.
                view.release()

    def get(self, table: str, key: bytes) -> bytes | None:
        with self.snapshot() as snapshot:
            return snapshot.get(table, key)

    def block(self, height: int) -> bytes | None:
        return self.get("blocks", height_key(height))

    def commit(self, height: int) -> bytes | None:
        return self.get("commits", height_key(height))

    def app_hash_after(self, height: int) -> bytes | None:
        return self.get("app_hashes", height_key(height))

    def tx_record(self, tx_id: bytes) -> state_pb2.TxRecord | None:
        raw = self.get("txs", tx_id)
        return None if raw is None else state_pb2.TxRecord.FromString(raw)

    def tx_id_for_hash(self, tx_hash: bytes) -> bytes | None:
        return self.get("tx_hashes", tx_hash)

    def account(self, owner: bytes) -> ledger_pb2.Account | None:
        raw = self.get(ACCOUNTS, owner)
        return None if raw is None else ledger_pb2.Account.FromString(raw)

    def commit_block(
        self,
        *,
        height: int,
        block: bytes,
        commit: bytes,
        block_hash: bytes,
        app_hash: bytes,
        tx_index: Sequence[tuple[bytes, bytes, bytes]],
        writes: Sequence[tuple[str, bytes, bytes]],
    ) -> Head:
        """Makes a block durable: everything in one write transaction, fsynced on commit.

        `tx_index` holds (tx_id, tx_hash, encoded TxRecord) per transaction.
        """
        self.grow_if_needed()
        previous = self.head
        if height != previous.height + 1:
            raise StoreError(f"block {height} does not follow the head {previous.height}")
        if len(block_hash) != HASH_BYTES or len(app_hash) != HASH_BYTES:
            raise StoreError("block and app hashes must be 32 bytes")
        head = Head(height, block_hash, app_hash, previous.committed_txs + len(tx_index))
        key = height_key(height)
        with self._env.begin(write=True) as txn:
            dbs = self._dbs
            if not txn.put(key, block, db=dbs["blocks"], overwrite=False):
                raise StoreError(f"block {height} is already stored")
            txn.put(key, commit, db=dbs["commits"])
            txn.put(key, app_hash, db=dbs["app_hashes"])
            # In key order: each insert then lands at or after the cursor's last page.
            with txn.cursor(db=dbs["txs"]) as cursor:
                _, added = cursor.putmulti(
                    sorted((tx_id, record) for tx_id, _, record in tx_index), overwrite=False
                )
            if added != len(tx_index):
                raise StoreError(f"block {height} reuses a committed transaction id")
            with txn.cursor(db=dbs["tx_hashes"]) as cursor:
                cursor.putmulti(sorted((tx_hash, tx_id) for tx_id, tx_hash, _ in tx_index))
            for table, state_key, value in writes:
                txn.put(state_key, value, db=dbs[table])
            txn.put(HEAD_KEY, head.encode(), db=dbs["meta"])
        # Read back what the next block will build on.
        raw = self.get("meta", HEAD_KEY)
        assert raw is not None, "the head was just written"
        assert Head.decode(raw) == head, "the head read back differs from the head written"
        self._head = head
        return head
