"""Four validator processes on 127.0.0.1 under load: the chain survives one SIGKILL,
stops without forking when two are killed, and resumes when they return; a restarted
validator catches up and votes again; nothing acknowledged is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from medledger.client import LedgerClient, TxBuilder
from medledger.config import Home
from medledger.keys import load_key
from medledger.run.homes import free_base_port, init_network, network_homes
from medledger.run.launcher import NodeProcess, start_node
from medledger.wire.v1 import envelope_pb2, tx_pb2
from tests.integration.conftest import stop_all, trust

CHAIN_ID = "cluster-1"
VALIDATORS = 4
BATCH = 50


def height(address: str) -> int:
    with LedgerClient(address, timeout_s=10) as client:
        return client.status().height


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """Streams transfers to one validator until stopped; keeps every acknowledged receipt."""

    def __init__(self, address: str, home: Home) -> None:
        payer = load_key(home.keys_dir / "client.json")
        self.builder = TxBuilder(payer, CHAIN_ID)
        self.to = payer.public_key
        self.address = address
        self.acked: list[tx_pb2.Receipt] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _batches(self) -> Iterator[list[envelope_pb2.SignedTransaction]]:
        while not self.stop.is_set():
            yield [
                self.builder.transfer(to=self.to, amount_micros=1, expiry_height=5_000)
                for _ in range(BATCH)
            ]
            time.sleep(0.05)

    def _run(self) -> None:
        with LedgerClient(self.address, timeout_s=120) as client:
            for receipts in client.submit_batches(self._batches()):
                self.acked.extend(receipts)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()


def commit_signers(address: str, at: int) -> set[int]:
    with LedgerClient(address, timeout_s=10) as client:
        return {s.validator_index for s in client.get_block(at).commit.signatures}


def test_the_network_survives_crashes_without_forking_or_losing_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "net"
    init_network(root, CHAIN_ID, VALIDATORS, free_base_port(2 * VALIDATORS), 10**15)
    trust(monkeypatch, root / "consortium-ca.pem")
    homes = network_homes(root, VALIDATORS)
    nodes: list[NodeProcess] = []
    try:
        for home in homes:  # one by one, so that those started are stopped if one fails
            nodes.append(start_node(home.root, home.load_config().listen))
        address = [n.address for n in nodes]
        with Load(address[1], homes[1]) as load:
            wait_until(lambda: len(load.acked) >= 4 * BATCH, 60, "first commits")

            # One of four down: the other three keep committing.
            nodes[3].kill()
            before = height(address[1])
            wait_until(lambda: height(address[1]) >= before + 3, 60, "blocks without node 3")

            # Back up: it catches up and its precommits appear in certificates again.
            nodes[3] = start_node(homes[3].root, homes[3].load_config().listen)
            wait_until(lambda: height(address[3]) >= height(address[1]) - 1, 60, "node 3 catch-up")
            wait_until(
                lambda: 3 in commit_signers(address[1], height(address[1])), 60, "node 3 voting"
            )

            # Two of four down: no quorum, so no new block, and certainly no fork.
            nodes[2].kill()
            nodes[3].kill()
            time.sleep(1.0)  # let blocks already in flight land
            stalled = height(address[0])
            time.sleep(3.0)
            assert height(address[0]) == stalled
            assert height(address[1]) == stalled

            nodes[2] = start_node(homes[2].root, homes[2].load_config().listen)
            nodes[3] = start_node(homes[3].root, homes[3].load_config().listen)
            wait_until(lambda: height(address[1]) >= stalled + 3, 90, "the chain to resume")
            acked_before_end = len(load.acked)
        assert len(load.acked) > acked_before_end - 1 >= 4 * BATCH

        final = min(height(a) for a in address)
        wait_until(lambda: min(height(a) for a in address) >= final, 30, "all nodes at one height")
        hashes = []
        for a in address:
            with LedgerClient(a, timeout_s=30) as client:
                hashes.append([client.get_block(h).block_hash for h in range(1, final + 1)])
        assert all(chain == hashes[0] for chain in hashes), "every node holds the same blocks"

        with LedgerClient(address[0], timeout_s=30) as client:
            for receipt in load.acked:
                assert receipt.status == tx_pb2.TX_STATUS_COMMITTED
                stored = client.get_transaction(tx_id=receipt.tx_id).receipt
                assert (stored.height, stored.index, stored.code) == (
                    receipt.height,
                    receipt.index,
                    receipt.code,
                )
    finally:
        stop_all(*nodes)


def test_a_validator_missing_a_compact_proposals_transactions_fetches_the_whole_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proposals carry transaction hashes, not bytes. Node 3's mempool holds one
    transaction, so gossip cannot give it the proposals' transactions; with node 2 never
    started, no block can commit without node 3's votes: the chain only moves if node 3
    fetches each whole block from its proposer (GetProposal) and validates it."""
    root = tmp_path / "net"
    init_network(root, CHAIN_ID, VALIDATORS, free_base_port(2 * VALIDATORS), 10**15)
    trust(monkeypatch, root / "consortium-ca.pem")
    homes = network_homes(root, VALIDATORS)
    config = homes[3].load_config()
    homes[3].config.write_text(replace(config, mempool_txs_max=1).to_json())
    nodes: list[NodeProcess] = []
    try:
        for i in (0, 1, 3):
            nodes.append(start_node(homes[i].root, homes[i].load_config().listen))
        payer = load_key(homes[0].keys_dir / "client.json")
        builder = TxBuilder(payer, CHAIN_ID)
        batch = [
            builder.transfer(to=payer.public_key, amount_micros=1, expiry_height=5_000)
            for _ in range(200)
        ]
        with LedgerClient(nodes[0].address, timeout_s=60) as client:
            receipts = next(iter(client.submit_batches([batch])))
        assert all(r.status == tx_pb2.TX_STATUS_COMMITTED for r in receipts)
        node3 = nodes[2]
        wait_until(lambda: height(node3.address) >= receipts[-1].height, 30, "node 3 commits")
        log = (homes[3].root / "node.log").read_text()
        assert "fetched the whole block of proposal" in log
    finally:
        stop_all(*nodes)
