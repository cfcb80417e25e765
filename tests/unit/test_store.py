"""The LMDB chain store: one atomic, durable write per block; nothing half-written."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

import lmdb
import pytest

from medledger.chain import ChainStore, StoreError
from medledger.genesis import Allocation, Genesis, GenesisValidator
from medledger.wire.v1 import ledger_pb2

MAP_SIZE = 64 * 1024 * 1024
OWNER = b"\x01" * 32
GENESIS = Genesis(
    chain_id="store-test",
    genesis_time_ms=1,
    validators=(GenesisValidator("v0", bytes.fromhex("d7" * 32), 1),),
    allocations=(Allocation(OWNER, 500),),
)


def commit(store: ChainStore, height: int, tx_ids: list[bytes], balance: int = 400) -> None:
    account = ledger_pb2.Account(owner=OWNER, balance_micros=balance).SerializeToString()
    store.commit_block(
        height=height,
        block=b"block-%d" % height,
        commit=b"commit-%d" % height,
        block_hash=bytes([height]) * 32,
        app_hash=bytes([100 + height]) * 32,
        tx_index=[(tx_id, bytes([i]) * 32, b"record") for i, tx_id in enumerate(tx_ids)],
        writes=[("accounts", OWNER, account)],
    )


@pytest.fixture
def store(tmp_path: Path) -> ChainStore:
    store = ChainStore(tmp_path / "data", MAP_SIZE)
    store.init_genesis(GENESIS)
    return store


def test_genesis_state_and_head(store: ChainStore) -> None:
    assert store.head.height == 0
    assert store.head.app_hash == GENESIS.hash()
    account = store.account(OWNER)
    assert account is not None
    assert account.balance_micros == 500


def test_a_committed_block_survives_reopening(store: ChainStore, tmp_path: Path) -> None:
    commit(store, 1, [b"a" * 16, b"b" * 16])
    store.close()
    reopened = ChainStore(tmp_path / "data", MAP_SIZE)
    assert reopened.head.height == 1
    assert reopened.head.committed_txs == 2
    assert reopened.block(1) == b"block-1"
    assert reopened.commit(1) == b"commit-1"
    assert reopened.tx_id_for_hash(bytes([1]) * 32) == b"b" * 16
    account = reopened.account(OWNER)
    assert account is not None
    assert account.balance_micros == 400


def test_a_block_out_of_order_is_refused(store: ChainStore) -> None:
    with pytest.raises(StoreError, match="does not follow"):
        commit(store, 2, [])
    assert store.head.height == 0


def test_a_block_reusing_a_tx_id_is_refused_and_writes_nothing(store: ChainStore) -> None:
    commit(store, 1, [b"a" * 16])
    with pytest.raises(StoreError, match="reuses"):
        commit(store, 2, [b"c" * 16, b"a" * 16], balance=1)
    assert store.head.height == 1
    assert store.block(2) is None
    assert store.tx_record(b"c" * 16) is None
    account = store.account(OWNER)
    assert account is not None
    assert account.balance_micros == 400


def test_another_genesis_is_refused(store: ChainStore) -> None:
    other = Genesis("other-chain", 1, GENESIS.validators)
    with pytest.raises(StoreError, match="another genesis"):
        store.init_genesis(other)


def test_the_data_directory_is_private(store: ChainStore, tmp_path: Path) -> None:
    mode = stat.S_IMODE(os.stat(tmp_path / "data").st_mode)
    assert mode == 0o700


def big_commit(store: ChainStore, height: int, size: int) -> None:
    store.commit_block(
        height=height,
        block=os.urandom(size),  # incompressible: it takes its size in pages
        commit=b"commit",
        block_hash=bytes([height % 256]) * 32,
        app_hash=bytes([height % 256]) * 32,
        tx_index=[],
        writes=[],
    )


def test_the_map_grows_as_blocks_fill_it_and_stays_grown_after_reopening(
    tmp_path: Path,
) -> None:
    """Issue 15: a fixed map stops the node when it fills; this one starts at 1 MiB and
    doubles between blocks up to its maximum. 6 MiB of blocks fit where 1 MiB did not."""
    store = ChainStore(tmp_path / "data", 1024 * 1024, 64 * 1024 * 1024)
    store.init_genesis(GENESIS)
    for height in range(1, 25):
        big_commit(store, height, 256 * 1024)
    assert store.head.height == 24
    assert store.map_size >= 8 * 1024 * 1024
    store.close()
    reopened = ChainStore(tmp_path / "data", 1024 * 1024, 64 * 1024 * 1024)
    assert reopened.head.height == 24
    assert reopened.block(24) is not None
    reopened.close()


def test_the_map_stops_at_its_maximum_and_a_block_past_it_writes_nothing(
    tmp_path: Path,
) -> None:
    store = ChainStore(tmp_path / "data", 1024 * 1024, 4 * 1024 * 1024)
    store.init_genesis(GENESIS)
    height = 1
    while True:
        try:
            big_commit(store, height, 256 * 1024)
        except lmdb.MapFullError:
            break
        height += 1
        assert height < 40, "4 MiB cannot hold 40 blocks of 256 KiB"
    assert store.map_size == 4 * 1024 * 1024
    assert store.head.height == height - 1  # the block that did not fit left no trace
    assert store.block(height) is None
    used, capacity = store.usage()
    assert capacity == 4 * 1024 * 1024
    assert used > capacity * 0.9


def test_capacity_is_what_the_disk_can_still_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk cannot be made here without privileges: the disk's free space is the
    one thing stood in for (shutil.disk_usage), everything else is the real store."""
    store = ChainStore(tmp_path / "data", 1024 * 1024, 1024**4)
    store.init_genesis(GENESIS)
    used, capacity = store.usage()
    assert capacity == min(1024**4, used + shutil.disk_usage(tmp_path).free)
    real = shutil.disk_usage

    def nearly_full(path: object) -> object:
        return real(path)._replace(free=4096)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    used, capacity = store.usage()
    assert capacity == used + 4096
    store.close()


def test_reads_beside_a_growing_map_neither_fail_nor_see_a_torn_view(tmp_path: Path) -> None:
    """LMDB remaps only with no transaction open in the process: readers in other threads
    (the event loop, gRPC reads) wait for a resize, and a resize for them. Found by the
    review: reading the map's usage during a remap raised."""
    store = ChainStore(tmp_path / "data", 1024 * 1024, 64 * 1024 * 1024)
    store.init_genesis(GENESIS)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                used, capacity = store.usage()
                assert 0 < used <= capacity
                height = store.head.height
                if height:
                    assert store.block(height) is not None
            except BaseException as error:  # reported below
                errors.append(error)
                return

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for height in range(1, 25):
            big_commit(store, height, 256 * 1024)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not errors, errors[:3]
    assert store.map_size >= 8 * 1024 * 1024
    store.close()


def test_the_newest_entries_under_a_prefix_come_back_in_key_order(store: ChainStore) -> None:
    """`scan_last` (newest access events, reviews): only keys under the prefix, even with
    a greater prefix after it and another one at the end of the table."""
    keys = [b"a" * 32 + bytes([h]) for h in range(5)]
    writes = [("access_events", key, b"v%d" % i) for i, key in enumerate(keys)]
    writes += [("access_events", b"b" * 32 + b"\x00", b"other")]
    store.commit_block(
        height=1,
        block=b"block",
        commit=b"commit",
        block_hash=b"\x01" * 32,
        app_hash=b"\x02" * 32,
        tx_index=[],
        writes=writes,
    )
    with store.snapshot() as snapshot:
        assert snapshot.scan_last("access_events", b"a" * 32, 2) == [
            (keys[3], b"v3"),
            (keys[4], b"v4"),
        ]
        assert snapshot.scan_last("access_events", b"b" * 32, 5) == [
            (b"b" * 32 + b"\x00", b"other")
        ]
        assert snapshot.scan_last("access_events", b"c" * 32, 5) == []
        assert snapshot.scan_last("access_events", b"\x00" * 32, 5) == []
