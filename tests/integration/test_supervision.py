"""A node whose long-lived task dies does not linger as a zombie that answers health
checks: health turns NOT_SERVING, the cause is logged once, and the process exits
non-zero for its supervisor to restart it. The fault is real: a chain LMDB map too small
for the blocks (issue 15, cases 2 and 7: block production died and health said SERVING)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medledger.client import LedgerClient
from medledger.config import Home
from medledger.errors import Rejected
from medledger.keys import load_key
from medledger.run.homes import init_home
from medledger.run.launcher import start_node
from medledger.transport.credentials import sync_channel
from medledger.tx import sign_transaction
from tests.integration.conftest import CHAIN_ID, tls_of
from tests.integration.test_block_size import padded_body

MAP_BYTES = 2 * 1024 * 1024
STATUS = health_pb2.HealthCheckResponse


def test_a_node_whose_block_production_dies_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    home.config.write_text(
        replace(
            home.load_config(), lmdb_map_size_bytes=MAP_BYTES, lmdb_map_size_max_bytes=MAP_BYTES
        ).to_json()
    )
    node = start_node(home.root)
    try:
        key = load_key(home.keys_dir / "client.json")
        seen: list[int] = []
        with sync_channel(node.address, tls_of(home)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health.Check  # type: ignore[attr-defined]
            assert check(health_pb2.HealthCheckRequest(), timeout=5).status == STATUS.SERVING
            with LedgerClient(node.address, tls=tls_of(home)) as client:
                txs = [
                    sign_transaction(key, CHAIN_ID, padded_body(n + 1, 0, b"\x05" * 32))
                    for n in range(60)  # 3.6 MB: more than the map holds
                ]
                # One batch, admitted at once while the map is still nearly empty (the
                # node refuses new transactions once it is 95% full): the block that
                # carries them cannot fit. The node dies meanwhile, so no answer comes.
                with contextlib.suppress(Rejected):
                    for _ in client.submit_batches([txs], timeout_s=10):
                        pass
            deadline = time.monotonic() + 30
            while node.process.poll() is None and time.monotonic() < deadline:
                try:
                    request = health_pb2.HealthCheckRequest()
                    seen.append(check(request, timeout=1).status)
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        assert node.process.wait(timeout=30) == 1
        assert STATUS.NOT_SERVING in seen
        log = (home.root / "node.log").read_text() if (home.root / "node.log").exists() else ""
        output = (
            log + "".join(node.output) + (node.process.stdout.read() if node.process.stdout else "")
        )
        logged = "CRITICAL medledger.node.supervisor task block-producer ended: MapFullError"
        assert output.count(logged) == 1, output[-3000:]
        assert "medledger: node stopped: task block-producer ended: MapFullError" in output
    finally:
        node.stop()


def test_a_node_nearly_out_of_storage_refuses_new_transactions_naming_it(
    tmp_path: Path,
) -> None:
    """Before its LMDB map fills (which would stop it), a node refuses new transactions
    with RESOURCE_EXHAUSTED on `storage`, and goes on serving what it holds."""
    home = Home(tmp_path / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    home.config.write_text(
        replace(
            home.load_config(),
            lmdb_map_size_bytes=1024 * 1024,
            lmdb_map_size_max_bytes=4 * 1024 * 1024,
        ).to_json()
    )
    node = start_node(home.root)
    try:
        key = load_key(home.keys_dir / "client.json")
        refused = None
        with LedgerClient(node.address, tls=tls_of(home)) as client:
            for n in range(200):
                tx = sign_transaction(key, CHAIN_ID, padded_body(n + 1, 0, b"\x05" * 32))
                try:
                    client.submit(tx)  # waits for the commit
                except Rejected as error:
                    refused = error
                    break
            assert refused is not None, "never refused"
            assert (refused.status, refused.field) == ("RESOURCE_EXHAUSTED", "storage")
            assert "lmdb_map_size_max_bytes" in str(refused)
            assert client.status().height > 0  # it still answers
        assert node.process.poll() is None  # and still runs
    finally:
        node.stop()
