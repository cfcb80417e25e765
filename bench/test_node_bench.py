"""The node's per-block work, beside what a Python developer would otherwise use:

- admitting a streamed batch of 1,000 signed transfers (decode, Rust batch verification,
  application checks, idempotency lookups, mempool), beside Rust batch verification alone
  of the same signatures: the ceiling admission can approach;
- committing a block of 8,000 transfers durably in one LMDB write transaction, beside
  the same rows written to SQLite in one transaction with synchronous=FULL.

The end-to-end figure (committed transfers per second over gRPC) comes from
`medledger bench node`, which `make bench` runs after these.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from medledger.chain import ChainStore
from medledger.client import TxBuilder
from medledger.config import Home
from medledger.crypto import SigningKey, tx_signing_message, verify_batch
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.ledger_node import LedgerNode
from medledger.run.homes import init_home
from medledger.wire.v1 import envelope_pb2

CHAIN_ID = "medledger-bench"
ADMIT_BATCH = 1_000
BLOCK_TXS = 8_000


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home(tmp_path_factory.mktemp("bench-node") / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    return home


@pytest.fixture(scope="module")
def transfers(home: Home) -> list[envelope_pb2.SignedTransaction]:
    payer = load_key(home.keys_dir / "client.json")
    builder = TxBuilder(payer, CHAIN_ID)
    return [
        builder.transfer(to=payer.public_key, amount_micros=1, expiry_height=1_000)
        for _ in range(ADMIT_BATCH * 20)
    ]


@pytest.mark.benchmark(group="admit 1000 signed transfers")
def test_peer_verify_batch_alone(
    benchmark: BenchmarkFixture, transfers: list[envelope_pb2.SignedTransaction]
) -> None:
    batch = transfers[:ADMIT_BATCH]
    keys = [tx.public_key for tx in batch]
    signatures = [tx.signature for tx in batch]

    def verify_only() -> list[bool]:
        messages = [tx_signing_message(CHAIN_ID, tx.body) for tx in batch]
        return verify_batch(keys, messages, signatures)

    assert all(benchmark(verify_only))


@pytest.mark.benchmark(group="admit 1000 signed transfers")
def test_medledger_admission(
    benchmark: BenchmarkFixture, home: Home, transfers: list[envelope_pb2.SignedTransaction]
) -> None:
    batches: Iterator[list[envelope_pb2.SignedTransaction]] = iter(
        transfers[i : i + ADMIT_BATCH] for i in range(0, len(transfers), ADMIT_BATCH)
    )

    async def scenario() -> None:
        node = LedgerNode(
            home, home.load_config(), Genesis.load(home.genesis), load_key(home.validator_key)
        )
        try:
            # Fresh transactions every round, so each round admits rather than dedupes.
            answers = benchmark.pedantic(
                lambda: node.submit(next(batches)), rounds=15, iterations=1
            )
            assert all(answer.pending is not None for answer in answers)
        finally:
            await node.stop()

    asyncio.run(scenario())


def block_rows() -> tuple[bytes, list[tuple[bytes, bytes, bytes]], list[tuple[str, bytes, bytes]]]:
    key = SigningKey.from_seed(b"\x05" * 32).public_key
    records = [
        (i.to_bytes(16, "big"), i.to_bytes(32, "big"), b"\x08" * 80) for i in range(BLOCK_TXS)
    ]
    writes = [("accounts", key, b"\x01" * 48)]
    return b"\x00" * (BLOCK_TXS * 170), records, writes


@pytest.mark.benchmark(group="commit an 8000-tx block durably")
def test_peer_sqlite_commit(benchmark: BenchmarkFixture, tmp_path: Path) -> None:
    block, records, writes = block_rows()
    db = sqlite3.connect(tmp_path / "chain.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY, block BLOB, commit_ BLOB)")
    db.execute("CREATE TABLE txs (tx_id BLOB PRIMARY KEY, tx_hash BLOB UNIQUE, record BLOB)")
    db.execute("CREATE TABLE state (tbl TEXT, key BLOB, value BLOB, PRIMARY KEY (tbl, key))")
    height = iter(range(1, 10_000))

    def commit() -> None:
        h = next(height)
        offset = h.to_bytes(4, "big")
        db.execute("BEGIN")
        db.execute("INSERT INTO blocks VALUES (?, ?, ?)", (h, block, b"c" * 100))
        db.executemany(
            "INSERT INTO txs VALUES (?, ?, ?)",
            [(offset + tx_id, offset + tx_hash, r) for tx_id, tx_hash, r in records],
        )
        db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", writes)
        db.execute("COMMIT")

    benchmark.pedantic(commit, rounds=10, iterations=1)
    db.close()


@pytest.mark.benchmark(group="commit an 8000-tx block durably")
def test_medledger_lmdb_commit(benchmark: BenchmarkFixture, tmp_path: Path, home: Home) -> None:
    block, records, writes = block_rows()
    store = ChainStore(tmp_path / "data", 1 << 30)
    store.init_genesis(Genesis.load(home.genesis))

    def commit() -> None:
        h = store.head.height + 1
        offset = h.to_bytes(4, "big")
        store.commit_block(
            height=h,
            block=block,
            commit=b"c" * 100,
            block_hash=h.to_bytes(32, "big"),
            app_hash=b"\x02" * 32,
            tx_index=[
                (offset + tx_id[4:], offset + tx_hash[4:], r) for tx_id, tx_hash, r in records
            ],
            writes=writes,
        )

    benchmark.pedantic(commit, rounds=10, iterations=1)
    store.close()
