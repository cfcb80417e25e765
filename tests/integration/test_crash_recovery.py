"""SIGKILL the node under sustained load, restart it: every transaction acknowledged as
committed is there, verify-chain passes, and the node resumes at the next height."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from medledger.client import LedgerClient
from medledger.errors import Rejected
from medledger.wire.v1 import tx_pb2
from tests.integration.conftest import launch

BATCH = 200
BATCHES = 400  # far more than can commit before the kill


def test_sigkill_under_load_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    node = launch(tmp_path / "home")
    acknowledged: list[tx_pb2.Receipt] = []
    stream_error: list[BaseException] = []
    try:
        with node.client() as client:
            expiry = client.status().height + 5_000
        builder = node.builder()
        batches = [
            [
                builder.transfer(to=node.payer.public_key, amount_micros=1, expiry_height=expiry)
                for _ in range(BATCH)
            ]
            for _ in range(BATCHES)
        ]

        def load() -> None:
            try:
                with LedgerClient(node.address, timeout_s=60, tls=node.tls) as client:
                    for receipts in client.submit_batches(batches):
                        acknowledged.extend(receipts)
            except Rejected as error:  # the node dies under us: expected
                stream_error.append(error)

        loader = threading.Thread(target=load)
        loader.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 5 * BATCH and time.monotonic() < deadline:
            time.sleep(0.01)
        node.process.kill()
        loader.join(timeout=60)
        assert not loader.is_alive()
        assert stream_error, "the stream should break when the node is killed"
        assert len(acknowledged) >= 5 * BATCH
        assert all(r.status == tx_pb2.TX_STATUS_COMMITTED for r in acknowledged)
        last_acked_height = max(r.height for r in acknowledged)

        node.restart()
        with node.client() as client:
            status = client.status()
            assert status.height >= last_acked_height
            for receipt in acknowledged:
                stored = client.get_transaction(tx_id=receipt.tx_id).receipt
                assert (stored.status, stored.height, stored.index, stored.code) == (
                    tx_pb2.TX_STATUS_COMMITTED,
                    receipt.height,
                    receipt.index,
                    receipt.code,
                )
            fresh = client.submit(
                builder.transfer(to=node.payer.public_key, amount_micros=1, expiry_height=expiry)
            )
            assert fresh.height == status.height + 1
    finally:
        node.process.stop()

    verify = subprocess.run(
        [sys.executable, "-m", "medledger", "verify-chain", "--home", str(node.home.root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "chain OK" in verify.stdout
