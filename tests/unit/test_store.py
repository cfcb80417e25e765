"""The LMDB chain store: one atomic, durable write per block; nothing half-written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
