"""Micropayment channels through the `medledger` command, as a payer and a provider use
them: open, stream billed payments, a provider refund, status, remittance export and a
cooperative close that settles on the ledger."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from medledger.config import Home
from medledger.keys import load_key
from medledger.run.launcher import start_hub, start_node
from medledger.transport.credentials import TLS_CA_ENV
from tests.e2e.cli_runner import medledger
from tests.integration.conftest import hub_tls_args


def test_payer_and_provider_run_a_channel_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hospital"
    medledger(
        "init", "--home", str(home), "--chain-id", "cli-channels-1", "--listen", "127.0.0.1:0"
    )
    monkeypatch.setenv(TLS_CA_ENV, str(Home(home).consortium_ca))  # for --node
    provider = load_key(home / "keys" / "client.json").public_key.hex()
    insurer_key = tmp_path / "insurer.json"
    insurer = medledger("keys", "new", str(insurer_key)).stdout.strip()
    node = start_node(home)
    try:
        at = ["--node", node.address]
        payer = ["--key", str(insurer_key), "--store", str(tmp_path / "insurer-channels"), *at]
        agreed = medledger("member", "agree", "--org", "org-0", "--key", str(insurer_key), *at)
        medledger(
            "member", "issue", "--subject", insurer, "--role", "payer", "--home", str(home),
            "--subject-signature", agreed.stdout.strip(), *at,
        )  # fmt: skip
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


def test_a_payer_pays_a_provider_through_a_hub_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "hospital"
    medledger("init", "--home", str(home), "--chain-id", "cli-hub-1", "--listen", "127.0.0.1:0")
    monkeypatch.setenv(TLS_CA_ENV, str(Home(home).consortium_ca))  # for --node
    provider = load_key(home / "keys" / "client.json").public_key.hex()
    hub_key, insurer_key = tmp_path / "hub.json", tmp_path / "insurer.json"
    hub_pub = medledger("keys", "new", str(hub_key)).stdout.strip()
    insurer = medledger("keys", "new", str(insurer_key)).stdout.strip()
    node = start_node(home)
    hub = None
    try:
        at = ["--node", node.address]
        for key, account, role in (
            (hub_key, hub_pub, "payment-processor"),
            (insurer_key, insurer, "payer"),
        ):
            agreed = medledger("member", "agree", "--org", "org-0", "--key", str(key), *at)
            medledger(
                "member", "issue", "--subject", account, "--role", role, "--home", str(home),
                "--subject-signature", agreed.stdout.strip(), *at,
            )  # fmt: skip
            medledger("tx", "create-account", "--key", str(key), *at)
            medledger(
                "tx", "transfer", "--home", str(home), "--to", account, "--amount", "5000000", *at
            )
        hub_store = tmp_path / "hub-channels"
        as_hub = ["--key", str(hub_key), "--store", str(hub_store), *at]
        to_provider = json.loads(
            medledger(
                "channel", "open", "--payee", provider, "--deposit", "1000000", *as_hub
            ).stdout
        )["channel_id"]
        hub = start_hub(hub_store, hub_key, node.address, tls=hub_tls_args(Home(home), tmp_path))

        payer = ["--key", str(insurer_key), "--store", str(tmp_path / "insurer-channels"), *at]
        to_hub = json.loads(
            medledger(
                "channel",
                "open",
                "--payee",
                hub_pub,
                "--deposit",
                "1000000",
                "--payee-address",
                hub.address,
                *payer,
            ).stdout
        )["channel_id"]
        paid = json.loads(
            medledger(
                "channel",
                "pay",
                to_hub,
                "--to",
                provider,
                "--amount",
                "40",
                "--count",
                "300",
                "--batch",
                "100",
                "--claim",
                "CLM-9",
                "--code",
                "J1100",
                *payer,
            ).stdout
        )
        # Every payment was delivered to the provider (its preimage came back) and the
        # payer's last state pays the hub for all of them, with no lock left pending.
        assert (paid["acknowledged"], paid["payee_micros"], paid["locked_micros"]) == (
            300,
            12_000,
            0,
        )
        # The provider's statement of the hub's channel lists every forwarded line, each
        # with its billing code, and reconciles (the export fails otherwise).
        rows = list(
            csv.DictReader(
                io.StringIO(
                    medledger(
                        "channel",
                        "export",
                        to_provider,
                        "--format",
                        "csv",
                        "--home",
                        str(home),
                        *at,
                    ).stdout
                )
            )
        )
        lines = [row for row in rows if row["kind"] == "payment"]
        assert len(lines) == 300
        assert {row["procedure_code"] for row in lines} == {"J1100"}
        assert sum(int(row["amount_micros"]) for row in lines) == 12_000
    finally:
        try:
            if hub is not None:
                hub.stop()
        finally:
            node.stop()
