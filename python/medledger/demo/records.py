"""The demo's records: a hospital stores a FHIR Bundle in its vault and anchors it; the
patient grants a researcher consent for Observations only, then revokes it; every fetch,
released or refused, is on the ledger before the vault answers, and the patient reads
who looked, when, why and with what outcome."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from rich.console import Console

from medledger.client import LedgerClient, TxBuilder, new_tx_id
from medledger.client.access_log import access_table
from medledger.client.anchor_proof import anchor_proof_document, verify_anchor_proof
from medledger.client.records import RecordsClient
from medledger.crypto import SigningKey
from medledger.demo.cast import Cast
from medledger.demo.story import Story
from medledger.errors import Rejected
from medledger.fhir.ingest import resources_of_bundle
from medledger.genesis import Genesis
from medledger.transport.credentials import ClientTls
from medledger.wire.v1 import records_pb2, tx_pb2

__all__ = ["PHI", "run_records"]

DAY_MS = 24 * 3600 * 1000
EXPIRY_BLOCKS = 100
HEIGHT_WAIT_S = 30.0
RESEARCH = records_pb2.PURPOSE_RESEARCH

# What identifies the patient. None of it may ever reach a block (checked after shutdown).
PHI = ("Elena", "Marquez", "MRN-448812", "1971-03-09", "Tucson")

BUNDLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {
            "fullUrl": "urn:uuid:8f0c7a4e-3b2d-4c1e-9a55-2d6f1b7e0c11",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-448812"}],
                "name": [{"family": "Marquez", "given": ["Elena"]}],
                "gender": "female",
                "birthDate": "1971-03-09",
                "address": [{"city": "Tucson", "state": "AZ"}],
            },
        },
        {
            "fullUrl": "urn:uuid:2a7d9c31-5e84-4f0b-b1c6-7e3a9d2f4b58",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "laboratory",
                            }
                        ]
                    }
                ],
                "code": {
                    "coding": [
                        {
                            "system": "http://loinc.org",
                            "code": "4548-4",
                            "display": "Hemoglobin A1c/Hemoglobin.total in Blood",
                        }
                    ]
                },
                "subject": {"reference": "urn:uuid:8f0c7a4e-3b2d-4c1e-9a55-2d6f1b7e0c11"},
                "effectiveDateTime": "2026-11-24T09:30:00Z",
                "valueQuantity": {
                    "value": 7.2,
                    "unit": "%",
                    "system": "http://unitsofmeasure.org",
                    "code": "%",
                },
            },
        },
        {
            "fullUrl": "urn:uuid:c41e0b77-9d2a-4e6f-8b3c-5a1d7f9e2c60",
            "resource": {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                "code": "problem-list-item",
                            }
                        ]
                    }
                ],
                "code": {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "44054006",
                            "display": "Diabetes mellitus type 2",
                        }
                    ]
                },
                "subject": {"reference": "urn:uuid:8f0c7a4e-3b2d-4c1e-9a55-2d6f1b7e0c11"},
                "onsetDateTime": "2019-06-01",
            },
        },
    ],
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _wait_for_height(client: LedgerClient, height: int) -> None:
    """The vault decides on its own node's committed state: a consent committed through
    another validator counts once this node has that block too."""
    deadline = time.monotonic() + HEIGHT_WAIT_S
    while client.status().height < height:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the vault's node did not reach height {height}")
        time.sleep(0.02)


def _try(fetch: Callable[[], object]) -> str:
    """'released' or 'refused STATUS (field: reason)'."""
    try:
        fetch()
    except Rejected as rejected:
        return f"refused {rejected.status} ({rejected})"
    return "released"


def run_records(
    story: Story,
    *,
    vault_address: str,
    patient_address: str,
    cast: Cast,
    genesis: Genesis,
    console: Console,
    tls: ClientTls | None,
) -> None:
    chain_id = genesis.chain_id
    with (
        RecordsClient(vault_address, chain_id, tls=tls) as records,
        LedgerClient(vault_address, reader=cast.hospital, tls=tls) as vault_node,
        LedgerClient(patient_address, tls=tls) as patient_node,
    ):

        def commit(key: SigningKey, build: str, **fields: object) -> tx_pb2.Receipt:
            """Signs and commits through the patient's validator, then waits until the
            vault's validator holds the block."""
            tx = getattr(TxBuilder(key, chain_id), build)(
                expiry_height=patient_node.status().height + EXPIRY_BLOCKS, **fields
            )
            receipt: tx_pb2.Receipt = patient_node.submit(tx, wait=True)
            _wait_for_height(vault_node, receipt.height)
            return receipt

        registered = commit(
            cast.researcher,
            "register_participant",
            kind=tx_pb2.PARTICIPANT_KIND_PERSON,
            role=tx_pb2.ROLE_RESEARCHER,
            display_name=cast.name(cast.researcher.public_key),
        )
        story.expect_equal(
            "a researcher registers",
            registered.code,
            tx_pb2.RESULT_CODE_OK,
            f"{cast.name(cast.researcher.public_key)} at height {registered.height}",
        )

        stored = {}
        for resource in resources_of_bundle(json.dumps(BUNDLE).encode()):
            stored[resource.resource_type] = records.put(
                cast.hospital,
                patient=cast.patient.public_key,
                resource_type=resource.resource_type,
                category=resource.category,
                security_labels=resource.security_labels,
                content=resource.content,
            )
        observation, condition = stored["Observation"].record_id, stored["Condition"].record_id
        anchors = [records.record(s.record_id, cast.hospital).record for s in stored.values()]
        story.check(
            "the hospital stores a FHIR Bundle (Patient, Observation, Condition)",
            f"{len(stored)} records encrypted in its vault and anchored at heights "
            f"{sorted({s.height for s in stored.values()})}; on chain: resource type, category "
            f"and SHA-256(salt ‖ content) only, e.g. the Observation's "
            f"{stored['Observation'].commitment.hex()[:16]}…",
            ok=sorted(stored) == ["Condition", "Observation", "Patient"]
            and all(a.patient == cast.patient.public_key for a in anchors),
            expected="3 anchors naming the patient's pseudonym",
        )

        proof = verify_anchor_proof(
            anchor_proof_document(vault_node.get_transaction(tx_id=stored["Condition"].tx_id)),
            genesis,
        )
        story.check(
            "an auditor verifies the Condition's anchor offline",
            f"version {proof.version}, commitment {proof.commitment.hex()[:16]}… in block "
            f"{proof.height}, certified by more than 2/3 of the genesis validators",
            ok=proof.commitment == stored["Condition"].commitment,
            expected="the commitment the vault returned",
        )

        now = _now_ms()
        consent_id = new_tx_id()
        granted = commit(
            cast.patient,
            "grant_consent",
            consent_id=consent_id,
            grantee=cast.researcher.public_key,
            purposes=[RESEARCH],
            resource_types=["Observation"],
            valid_from_ms=now - 1_000,
            valid_until_ms=now + 30 * DAY_MS,
        )
        story.expect_equal(
            "the patient consents: Observations, for research, 30 days",
            granted.code,
            tx_pb2.RESULT_CODE_OK,
            f"consent {consent_id.hex()[:12]}… signed by the patient, height {granted.height}",
        )

        fetched = records.fetch(cast.researcher, observation, purpose=RESEARCH)
        value = json.loads(fetched.content)["valueQuantity"]
        story.check(
            "the researcher fetches the Observation",
            f"released under consent {fetched.access.access.consent_id.hex()[:12]}…; decrypted "
            f"and matched to its anchor: HbA1c {value['value']} {value['unit']}",
            ok=fetched.access.access.consent_id == consent_id,
            expected="released under the patient's consent",
        )

        outcome = _try(lambda: records.fetch(cast.researcher, condition, purpose=RESEARCH))
        story.check(
            "the researcher fetches the Condition (not consented)",
            outcome,
            ok=outcome.startswith("refused PERMISSION_DENIED"),
            expected="PERMISSION_DENIED",
        )

        revoked = commit(
            cast.patient,
            "revoke_consent",
            consent_id=consent_id,
            reason=records_pb2.REVOCATION_REASON_PATIENT_WITHDREW,
        )
        story.expect_equal(
            "the patient revokes the consent",
            revoked.code,
            tx_pb2.RESULT_CODE_OK,
            f"height {revoked.height}",
        )

        outcome = _try(lambda: records.fetch(cast.researcher, observation, purpose=RESEARCH))
        story.check(
            "the researcher fetches the Observation again",
            outcome,
            ok=outcome.startswith("refused PERMISSION_DENIED"),
            expected="PERMISSION_DENIED",
        )

        events = records.access_events(cast.patient.public_key, cast.patient)
        outcomes = [
            records_pb2.AccessOutcome.Name(e.access.outcome).removeprefix("ACCESS_OUTCOME_")
            for e in events
        ]
        console.print(access_table(events, "The patient's access log", cast.name))
        story.figure(f"{len(stored)} FHIR resources in the vault, anchored on chain")
        story.figure(f"{len(events)} accesses audited: {', '.join(o.lower() for o in outcomes)}")
        story.expect_equal(
            "the patient reads the access log from the ledger",
            outcomes,
            ["RELEASED", "REFUSED", "REFUSED"],
            f"{len(events)} accesses, each with who, when, why and outcome: {', '.join(outcomes)}",
        )
