"""The `medledger` command as a user types it."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import lmdb
import pytest

from medledger.config import Home
from medledger.run.homes import free_base_port
from medledger.run.launcher import start_node
from medledger.transport.credentials import TLS_CA_ENV
from tests.e2e.cli_runner import medledger


def test_help_lists_every_command() -> None:
    text = medledger("--help").stdout
    for command in ("init", "node", "keys", "tx", "query", "verify-chain", "demo", "bench"):
        assert command in text
    assert "--amount" in medledger("tx", "transfer", "--help").stdout


def test_keys_new_writes_a_private_file_and_show_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    public = medledger("keys", "new", str(path)).stdout.strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert medledger("keys", "show", str(path)).stdout.strip() == public
    again = medledger("keys", "new", str(path), check=False)
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr


def test_init_transfer_query_and_verify_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    medledger("init", "--home", str(home), "--chain-id", "cli-test-1", "--listen", "127.0.0.1:0")
    monkeypatch.setenv(TLS_CA_ENV, str(Home(home).consortium_ca))  # for --node
    assert (
        "already initialised"
        in medledger("init", "--home", str(home), "--chain-id", "x", check=False).stderr
    )
    bob_key = tmp_path / "bob.json"
    bob = medledger("keys", "new", str(bob_key)).stdout.strip()
    node = start_node(home)
    try:
        at = ["--node", node.address]
        # Bob's key may submit once the home's organisation (its client key) enrols it.
        refused = medledger("tx", "create-account", "--key", str(bob_key), *at, check=False)
        assert refused.returncode == 1
        assert "PERMISSION_DENIED" in refused.stderr
        assert "tx.public_key" in refused.stderr
        # Only with Bob's agreement to join org-0.
        issue = ["member", "issue", "--subject", bob, "--role", "payer", "--home", str(home)]
        unagreed = medledger(*issue, *at, check=False)
        assert "subject_signature" in unagreed.stdout
        agreed = medledger("member", "agree", "--org", "org-0", "--key", str(bob_key), *at)
        medledger(*issue, "--subject-signature", agreed.stdout.strip(), *at)
        shown = json.loads(medledger("member", "show", bob, "--key", str(bob_key), *at).stdout)
        assert (shown["organisation"], shown["active_roles"]) == ("org-0", ["payer"])
        medledger("tx", "create-account", "--key", str(bob_key), *at)
        receipt = json.loads(
            medledger(
                "tx", "transfer", "--home", str(home), "--to", bob, "--amount", "2500", *at
            ).stdout
        )
        assert receipt["status"] == "TX_STATUS_COMMITTED"
        assert receipt["code"] == "RESULT_CODE_OK"
        account = json.loads(medledger("query", "account", bob, *at).stdout)
        assert account["balanceMicros"] == "2500"
        tx_id = base64.b64decode(receipt["txId"]).hex()
        genesis = str(home / "genesis.json")
        # The body and proof go to the transaction's signer (the home's client key).
        unsigned = medledger("query", "tx", tx_id, "--genesis", genesis, *at, check=False)
        assert unsigned.returncode == 1
        assert "only to its signer" in unsigned.stderr
        shown = medledger("query", "tx", tx_id, "--genesis", genesis, "--home", str(home), *at)
        assert "proof verified against" in shown.stdout
        status = json.loads(medledger("query", "status", *at).stdout)
        assert status["chainId"] == "cli-test-1"
        refused = medledger(
            "tx", "transfer", "--key", str(bob_key), "--to", bob, "--amount", "0", *at, check=False
        )
        assert refused.returncode == 1
        assert "INVALID_ARGUMENT" in refused.stderr
        assert "body.transfer.amount_micros" in refused.stderr
    finally:
        node.stop()
    verified = medledger("verify-chain", "--home", str(home))
    # the enrolment refused (no agreement), the one agreed, the account, the transfer
    assert "chain OK: 4 blocks, 4 transactions" in verified.stdout


def test_verify_chain_reports_the_first_tampered_height(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    medledger("init", "--home", str(home), "--chain-id", "cli-test-2", "--listen", "127.0.0.1:0")
    monkeypatch.setenv(TLS_CA_ENV, str(Home(home).consortium_ca))
    node = start_node(home)
    try:
        for amount in ("1", "2", "3"):
            medledger(
                "tx",
                "transfer",
                "--home",
                str(home),
                "--to",
                "00" * 31 + "01",
                "--amount",
                amount,
                "--node",
                node.address,
            )
    finally:
        node.stop()
    env = lmdb.open(str(home / "data"), max_dbs=16)
    blocks = env.open_db(b"blocks")
    with env.begin(write=True) as txn:
        stored = txn.get((2).to_bytes(8, "big"), db=blocks)
        assert stored is not None
        raw = bytearray(stored)
        raw[-1] ^= 0x01  # flip one bit of the block's last transaction
        txn.put((2).to_bytes(8, "big"), bytes(raw), db=blocks)
    env.close()
    result = medledger("verify-chain", "--home", str(home), check=False)
    assert result.returncode == 2
    assert "BROKEN at height 2" in result.stdout


def test_devnet_up_and_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "devnet"
    try:
        up = medledger(
            "devnet",
            "up",
            "--home",
            str(root),
            "--validators",
            "4",
            "--base-port",
            str(free_base_port(8)),
        )
        monkeypatch.setenv(TLS_CA_ENV, str(root / "consortium-ca.pem"))
        addresses = [line.split()[3] for line in up.stdout.splitlines() if "listening on" in line]
        assert len(addresses) == 4
        deadline = time.monotonic() + 60
        heights: list[int] = []
        while time.monotonic() < deadline:
            heights = [
                int(json.loads(medledger("query", "status", "--node", a).stdout).get("height", 0))
                for a in addresses
            ]
            if min(heights) >= 2:
                break
            time.sleep(0.5)
        assert min(heights) >= 2, heights
    finally:
        down = medledger("devnet", "down", "--home", str(root))
    assert "stopped 4 node(s)" in down.stdout
