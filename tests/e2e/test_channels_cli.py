"""Micropayment channels through the `medledger` command, as a payer and a provider use
them: open, stream billed payments, a provider refund, status, remittance export and a
cooperative close that settles on the ledger."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from medledger.keys import load_key
from medledger.node.launcher import start_node
from tests.e2e.cli_runner import medledger


def test_payer_and_provider_run_a_channel_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "hospital"
    medledger(
        "init", "--home", str(home), "--chain-id", "cli-channels-1", "--listen", "127.0.0.1:0"
    )
    provider = load_key(home / "keys" / "client.json").public_key.hex()
    insurer_key = tmp_path / "insurer.json"
    insurer = medledger("keys", "new", str(insurer_key)).stdout.strip()
    node = start_node(home)
    try:
        at = ["--node", node.address]
        payer = ["--key", str(insurer_key), "--store", str(tmp_path / "insurer-channels"), *at]
        medledger("tx", "create-account", "--key", str(insurer_key), *at)
        medledger(
            "tx", "transfer", "--home", str(home), "--to", insurer, "--amount", "5000000", *at
        )

        opened = json.loads(
            medledger("channel", "open", "--payee", provider, "--deposit", "1000000", *payer).stdout
        )
        channel = opened["channel_id"]
        paid = json.loads(
            medledger(
                "channel",
                "pay",
                channel,
                "--amount",
                "250",
                "--count",
                "400",
                "--batch",
                "50",
                "--claim",
                "CLM-1",
                "--code",
                "99213",
                "--units",
                "1",
                "--date",
                "2026-11-25",
                *payer,
            ).stdout
        )
        assert (paid["acknowledged"], paid["sequence"], paid["payee_micros"]) == (400, 8, 100_000)

        # The provider refunds one line; the payer's next stream includes it.
        refund = medledger(
            "channel",
            "refund",
            channel,
            "--amount",
            "250",
            "--claim",
            "CLM-1",
            "--code",
            "99213",
            "--home",
            str(home),
            *at,
        )
        assert "offered" in refund.stdout
        again = json.loads(
            medledger(
                "channel", "pay", channel, "--amount", "100", "--claim", "CLM-2", *payer
            ).stdout
        )
        assert again["payee_micros"] == 100_000 - 250 + 100

        status = json.loads(medledger("channel", "status", channel, *payer).stdout)
        assert status["on_chain"]["status"] == "CHANNEL_STATUS_OPEN"
        assert status["local"]["sequence"] == 9

        # Both sides' statements reconcile; the provider reads its node's own store.
        remittance = json.loads(medledger("channel", "export", channel, *payer).stdout)
        assert remittance == json.loads(
            medledger("channel", "export", channel, "--home", str(home), *at).stdout
        )
        rows = list(
            csv.DictReader(
                io.StringIO(
                    medledger("channel", "export", channel, "--format", "csv", *payer).stdout
                )
            )
        )
        assert len(rows) == 400 + 1 + 1
        assert sum(int(row["amount_micros"]) for row in rows if row["kind"] == "payment") == 100_100

        closed = json.loads(medledger("channel", "close", channel, *payer).stdout)
        assert closed["payee_paid_micros"] == 99_850
        assert closed["payer_paid_micros"] == 1_000_000 - 99_850
        settled = json.loads(medledger("channel", "export", channel, *payer).stdout)
        assert "settlement" in json.dumps(settled)

        refused = medledger("channel", "pay", channel, "--amount", "1", *payer, check=False)
        assert refused.returncode == 1
        assert "refused (FAILED_PRECONDITION)" in refused.stderr
        assert "final state" in refused.stderr
    finally:
        node.stop()
