"""The records acceptance story, typed at the `medledger` command line against a local
network of 4 validator processes: a hospital stores a patient's Bundle, a researcher is
refused, then granted Observations only, then revoked; a clinician breaks the glass; the
patient sees all of it; erasure leaves the old anchor's proof valid offline; no clear
text of the records is anywhere in the chain's files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli_runner import init_network_as_typed, medledger

CHAIN_ID = "e2e-records-1"
BUNDLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"code": "vital-signs"}]}],
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                    "text": "Heart rate of Jane Doe",
                },
                "valueQuantity": {"value": 71.25, "unit": "beats/min"},
            }
        },
        {
            "resource": {
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "category": [{"coding": [{"code": "problem-list-item"}]}],
                "code": {"text": "Essential hypertension"},
                "note": [{"text": "Patient Jane Doe, born 1961-04-03"}],
                "subject": {"reference": "Patient/jane-doe-7781"},
            }
        },
    ],
}
CLEAR_TEXT = [b"Jane Doe", b"8867-4", b"Essential hypertension", b"1961-04-03", b"71.25"]


def test_the_records_story_as_users_type_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "net"
    port = init_network_as_typed(root, CHAIN_ID, monkeypatch)
    hospital = ["--home", str(root / "node0")]
    nodes = [f"127.0.0.1:{port + i}" for i in range(4)]
    keys = {}
    for who in ("patient", "researcher", "clinician"):
        path = tmp_path / f"{who}.json"
        keys[who] = (path, medledger("keys", "new", str(path)).stdout.strip())
    patient_key, patient = keys["patient"]
    researcher_key, researcher = keys["researcher"]
    clinician_key, clinician = keys["clinician"]
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(BUNDLE))

    def as_researcher(record: str, *, node: str = nodes[0]) -> subprocess.CompletedProcess[str]:
        return medledger(
            "record", "get", record, "--purpose", "research", "--key", str(researcher_key),
            "--node", node, check=False,
        )  # fmt: skip

    try:
        medledger("devnet", "up", "--home", str(root))
        # node0's organisation admin issues the roles (its vault's custodian role too).
        custodian = medledger("keys", "show", str(root / "node0" / "keys" / "client.json"))
        medledger(
            "member", "issue", "--subject", custodian.stdout.strip(), "--role", "custodian",
            *hospital,
        )  # fmt: skip
        for (path, subject), role in (
            (keys["patient"], "patient"),
            (keys["researcher"], "researcher"),
            (keys["clinician"], "clinician"),
        ):
            agreed = medledger("member", "agree", "--org", "org-0", "--key", str(path), *hospital)
            medledger(
                "member", "issue", "--subject", subject, "--role", role,
                "--subject-signature", agreed.stdout.strip(), *hospital,
            )  # fmt: skip
        stored = medledger("record", "put", str(bundle), "--patient", patient, *hospital)
        lines = [json.loads(line) for line in stored.stdout.splitlines()]
        assert [line["resource_type"] for line in lines] == ["Observation", "Condition"]
        observation, condition = (line["record_id"] for line in lines)

        refused = as_researcher(observation)
        assert refused.returncode == 1
        assert "PERMISSION_DENIED" in refused.stderr
        assert "no consent" in refused.stderr

        granted = medledger(
            "consent", "grant", "--grantee", researcher, "--purpose", "research",
            "--resource-type", "Observation", "--days", "30", "--key", str(patient_key),
            "--node", nodes[1],
        )  # fmt: skip
        consent_id = json.loads(granted.stdout)["consent_id"]
        read = as_researcher(observation)
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout) == BUNDLE["entry"][0]["resource"]  # type: ignore[index]
        assert "PERMISSION_DENIED" in as_researcher(condition).stderr

        medledger(
            "consent", "revoke", consent_id, "--reason", "purpose-completed", "--key",
            str(patient_key), "--node", nodes[2],
        )  # fmt: skip
        assert "revoked" in as_researcher(observation).stderr

        glass = medledger(
            "record", "get", condition, "--purpose", "emergency", "--emergency",
            "unresponsive on arrival", "--key", str(clinician_key), "--node", nodes[0],
        )  # fmt: skip
        assert json.loads(glass.stdout)["code"]["text"] == "Essential hypertension"
        # The hospital's privacy officer sees the emergency release in its review queue.
        review = json.loads(medledger("access", "review", "--json", *hospital).stdout)
        assert [(r["requester"], r["record_id"]) for r in review] == [(clinician, condition)]
        assert review[0]["emergency_reason"] == "unresponsive on arrival"

        # The patient's view, from any validator.
        as_patient = ["--key", str(patient_key)]
        log = medledger(
            "access", "log", "--patient", patient, *as_patient, "--node", nodes[3]
        ).stdout
        assert log.count("refused") == 3
        assert log.count("released") == 2
        assert "BREAK-GLASS" in log
        assert "unresponsive on arrival" not in log  # the words stay in the vault
        assert "no consent covers" in log
        assert "revoked" in log
        assert "permitted by consent" in log
        audit = json.loads(
            medledger(
                "access", "log", "--patient", patient, "--fhir", *as_patient, "--node", nodes[2]
            ).stdout
        )
        assert [event["resourceType"] for event in audit] == ["AuditEvent"] * 5
        assert [event["agent"][0]["who"]["identifier"]["value"] for event in audit] == [
            researcher, researcher, researcher, researcher, clinician,
        ]  # fmt: skip
        consents = json.loads(
            medledger("consent", "list", "--patient", patient, *as_patient, *hospital).stdout
        )
        assert [(c["resourceType"], c["status"]) for c in consents] == [("Consent", "inactive")]

        # Erasure: the record cannot be read any more; its old anchor's proof still holds.
        proof = tmp_path / "observation-proof.json"
        medledger(
            "record", "proof", observation, "--out", str(proof), "--node", nodes[1], *hospital
        )
        medledger("record", "erase", observation, "--reason", "patient-request", *hospital)
        gone = medledger(
            "record", "get", observation, "--purpose", "treatment", "--key", str(patient_key),
            "--node", nodes[0], check=False,
        )  # fmt: skip
        assert gone.returncode == 1
        assert "erased" in gone.stderr
    finally:
        medledger("devnet", "down", "--home", str(root))

    # Offline, with every node stopped: every block and app hash replays from genesis.
    for node in range(4):
        replay = medledger("verify-chain", "--home", str(root / f"node{node}")).stdout
        assert "chain OK" in replay
    # Offline, with every node stopped.
    genesis = str(root / "node0" / "genesis.json")
    checked = medledger("verify-proof", str(proof), "--genesis", genesis)
    assert checked.stdout.startswith("proof OK: record " + observation)
    document = json.loads(proof.read_text())
    document["commitment"] = "00" * 32
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    rejected = medledger("verify-proof", str(tampered), "--genesis", genesis, check=False)
    assert rejected.returncode == 1
    assert "INVALID" in rejected.stderr

    # No clear text of the records in any byte of any node's chain files (or logs).
    for node in range(4):
        files = [*(root / f"node{node}" / "data").rglob("*"), root / f"node{node}" / "node.log"]
        scanned = [f for f in files if f.is_file()]
        assert any(f.name == "data.mdb" for f in scanned)
        for path in scanned:
            content = path.read_bytes()
            for value in CLEAR_TEXT:
                assert value not in content, f"{value!r} found in {path}"
