"""Consortium governance as the organisations type it, on a local network of 4 validator
processes (4 organisations of weight 1): a proposal file passed between them; signed by
two it is refused, by three it adds a hospital whose admin then enrols a key that
transacts; a policy change; `verify-chain` replays it all from every node's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli_runner import init_network_as_typed, medledger

CHAIN_ID = "e2e-governance-1"


def test_organisations_add_a_hospital_by_proposal_and_change_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "net"
    port = init_network_as_typed(root, CHAIN_ID, monkeypatch)
    homes = [["--home", str(root / f"node{i}")] for i in range(4)]
    newcomer_key, member_key = tmp_path / "new-admin.json", tmp_path / "member.json"
    newcomer = medledger("keys", "new", str(newcomer_key)).stdout.strip()
    member = medledger("keys", "new", str(member_key)).stdout.strip()
    short, enough = tmp_path / "short.json", tmp_path / "enough.json"
    try:
        medledger("devnet", "up", "--home", str(root))
        for path in (short, enough):
            medledger(
                "gov", "propose", "--add-org", "st-elsewhere", "--name", "St Elsewhere",
                "--admin", newcomer, "--description", "a fifth hospital joins",
                "--out", str(path), *homes[0],
            )  # fmt: skip
        for home in homes[:2]:
            medledger("gov", "sign", str(short), *home)
        refused = medledger("gov", "submit", str(short), *homes[0], check=False)
        assert refused.returncode == 1
        assert "RESULT_CODE_NOT_APPROVED" in refused.stdout
        assert "weight 2 of 4" in refused.stdout

        for home in homes[1:]:  # organisations 1, 2 and 3: 3 of 4
            medledger("gov", "sign", str(enough), *home)
        shown = json.loads(medledger("gov", "show", str(enough)).stdout)
        assert [a["signature_verifies"] for a in shown["approvals"]] == [True] * 3
        medledger("gov", "submit", str(enough), *homes[2])
        again = medledger("gov", "submit", str(enough), *homes[2], check=False)
        assert "RESULT_CODE_PROPOSAL_USED" in again.stdout

        # The new organisation's admin enrols a key, which may then transact.
        at = ["--node", f"127.0.0.1:{port + 3}"]
        agreed = medledger(
            "member", "agree", "--org", "st-elsewhere", "--key", str(member_key), *at
        ).stdout.strip()
        medledger(
            "member", "issue", "--subject", member, "--role", "payer", "--key",
            str(newcomer_key), "--subject-signature", agreed, *at,
        )  # fmt: skip
        shown = json.loads(
            medledger("member", "show", member, "--key", str(member_key), *at).stdout
        )
        assert (shown["organisation"], shown["active_roles"]) == ("st-elsewhere", ["payer"])
        opened = json.loads(medledger("tx", "create-account", "--key", str(member_key), *at).stdout)
        assert opened["code"] == "RESULT_CODE_OK"

        # A policy change: 4 of 5 organisations approve a 15-minute break-glass limit.
        policy = tmp_path / "policy.json"
        medledger(
            "gov", "propose", "--break-glass-max-minutes", "15", "--out", str(policy), *homes[1]
        )
        for home in [*homes[:3], ["--key", str(newcomer_key), *at]]:
            medledger("gov", "sign", str(policy), *home)
        medledger("gov", "submit", str(policy), "--key", str(member_key), *at)
    finally:
        medledger("devnet", "down", "--home", str(root))
    for i in range(4):
        verified = medledger("verify-chain", "--home", str(root / f"node{i}"))
        assert "chain OK" in verified.stdout
