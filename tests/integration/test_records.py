"""Records, consent and access audit against a real node process (vault included):
what a hospital, a researcher, a clinician and a patient do, and every refusal."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import lmdb
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medledger.app.governance import signed_bytes
from medledger.client import LedgerClient, TxBuilder, enrol
from medledger.client.reads import sign_read
from medledger.client.records import RecordsClient
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.keys import load_key
from medledger.run.homes import init_home
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.credentials import aio_channel, sync_channel
from medledger.vault.envelope import EnvelopeError, commitment, open_body, unwrap_key
from medledger.vault.requests import sign_request
from medledger.wire.v1 import governance_pb2, records_pb2, records_pb2_grpc, tx_pb2
from tests.integration.conftest import tls_of

CHAIN_ID = "records-1"
DAY_MS = 24 * 3600 * 1000
OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "category": [{"coding": [{"code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
    "valueQuantity": {"value": 72, "unit": "beats/min"},
}
CONDITION = {
    "resourceType": "Condition",
    "category": [{"coding": [{"code": "problem-list-item"}]}],
    "code": {"text": "Hypertension"},
    "subject": {"display": "Jane Doe"},
}


def now_ms() -> int:
    return int(time.time() * 1000)


class Network:
    def __init__(self, home: Home, node: NodeProcess) -> None:
        self.home = home
        self.node = node
        self.hospital = load_key(home.keys_dir / "client.json")
        self.patient = SigningKey.generate()
        self.researcher = SigningKey.generate()
        self.clinician = SigningKey.generate()
        self.tls = tls_of(home)
        self.ledger = LedgerClient(node.address, tls=self.tls)
        self.records = RecordsClient(node.address, CHAIN_ID, tls=self.tls)

    def commit(self, key: SigningKey, build: str, **fields: object) -> tx_pb2.Receipt:
        builder = TxBuilder(key, CHAIN_ID)
        expiry = self.ledger.status().height + 100
        tx = getattr(builder, build)(expiry_height=expiry, **fields)
        return self.ledger.submit(tx, wait=True)

    def govern(self, change: governance_pb2.PolicyChange) -> None:
        """A policy change by governance: the network's one organisation approves."""
        proposal = governance_pb2.GovernanceProposal(
            chain_id=CHAIN_ID,
            proposal_id=os.urandom(16),
            expires_height=self.ledger.status().height + 100,
            set_policy=change,
        )
        raw = proposal.SerializeToString(deterministic=True)
        signature = self.hospital.sign(signed_bytes(CHAIN_ID, raw))
        approval = governance_pb2.Approval(
            organisation="org-0", admin=self.hospital.public_key, signature=signature
        )
        body = tx_pb2.TransactionBody(
            govern=governance_pb2.Govern(proposal=raw, approvals=[approval])
        )
        tx = TxBuilder(self.hospital, CHAIN_ID).sign(
            body, expiry_height=self.ledger.status().height + 100
        )
        receipt = self.ledger.submit(tx, wait=True)
        assert receipt.code == tx_pb2.RESULT_CODE_OK, receipt.message

    def put(self, resource: Mapping[str, Any], **extra: Any) -> bytes:
        stored = self.records.put(
            self.hospital,
            patient=self.patient.public_key,
            resource_type=str(resource["resourceType"]),
            content=json.dumps(resource).encode(),
            **extra,
        )
        return stored.record_id


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    home = Home(tmp_path_factory.mktemp("records") / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    node = start_node(home.root)
    try:
        network = Network(home, node)
        try:
            # The hospital's admin (its client key, which its vault also signs with)
            # issues the roles: nobody declares their own.
            enrol(
                network.ledger,
                network.hospital,
                "org-0",
                {
                    network.hospital: [tx_pb2.ROLE_CUSTODIAN],
                    network.patient: [tx_pb2.ROLE_PATIENT],
                    network.researcher: [tx_pb2.ROLE_RESEARCHER],
                    network.clinician: [tx_pb2.ROLE_CLINICIAN],
                },
            )
            yield network
        finally:
            network.ledger.close()
    finally:
        node.stop()


def refused(call, status: str = "PERMISSION_DENIED") -> Rejected:  # type: ignore[no-untyped-def]
    with pytest.raises(Rejected) as raised:
        call()
    assert raised.value.status == status, raised.value
    return raised.value


def test_consent_grants_scoped_reads_revocation_refuses_and_all_is_audited(
    net: Network,
) -> None:
    observation = net.put(OBSERVATION, category="vital-signs")
    condition = net.put(CONDITION, category="problem-list-item")
    research = records_pb2.PURPOSE_RESEARCH

    # No consent yet: refused, and the refusal is on the ledger.
    why = refused(lambda: net.records.fetch(net.researcher, observation, purpose=research))
    assert "no consent" in why.reason

    consent = net.commit(
        net.patient,
        "grant_consent",
        grantee=net.researcher.public_key,
        purposes=[research],
        resource_types=["Observation"],
        valid_from_ms=now_ms() - 1000,
        valid_until_ms=now_ms() + 30 * DAY_MS,
    )
    assert consent.code == tx_pb2.RESULT_CODE_OK
    (granted,) = net.records.consents(net.patient.public_key, net.patient)
    consent_id = granted.grant.consent_id

    fetched = net.records.fetch(net.researcher, observation, purpose=research)
    assert json.loads(fetched.content) == OBSERVATION
    assert fetched.access.access.consent_id == consent_id
    # Only Observations, and only for research.
    refused(lambda: net.records.fetch(net.researcher, condition, purpose=research))
    refused(
        lambda: net.records.fetch(
            net.researcher, observation, purpose=records_pb2.PURPOSE_TREATMENT
        )
    )

    net.commit(
        net.patient,
        "revoke_consent",
        consent_id=consent_id,
        reason=records_pb2.REVOCATION_REASON_PURPOSE_COMPLETED,
    )
    why = refused(lambda: net.records.fetch(net.researcher, observation, purpose=research))
    assert "revoked" in why.reason

    # Break-glass: a registered clinician declares an emergency; a researcher may not.
    emergency = records_pb2.PURPOSE_EMERGENCY
    glass = net.records.fetch(
        net.clinician, condition, purpose=emergency, emergency_reason="unconscious in ED"
    )
    assert json.loads(glass.content) == CONDITION
    assert glass.access.access.break_glass
    # Within the window the clinician reads the patient's other record without a new
    # declaration; the access is still flagged.
    again = net.records.fetch(net.clinician, observation, purpose=emergency)
    assert again.access.access.break_glass
    refused(
        lambda: net.records.fetch(
            net.researcher, condition, purpose=emergency, emergency_reason="curious"
        )
    )

    # The patient's view: every access, with outcome, reason and consent.
    events = net.records.access_events(net.patient.public_key, net.patient)
    summary = [
        (e.access.requester, e.access.record_id, e.access.outcome, e.access.break_glass)
        for e in events
    ]
    released, refused_ = records_pb2.ACCESS_OUTCOME_RELEASED, records_pb2.ACCESS_OUTCOME_REFUSED
    r, c = net.researcher.public_key, net.clinician.public_key
    assert summary == [
        (r, observation, refused_, False),
        (r, observation, released, False),
        (r, condition, refused_, False),
        (r, observation, refused_, False),
        (r, observation, refused_, False),
        (c, condition, released, True),
        (c, observation, released, True),
        (r, condition, refused_, False),
    ]
    assert all(e.access.reason for e in events)
    assert events[1].access.consent_id == consent_id
    # The chain holds the salted hash of the clinician's words; the words stay in the vault.
    assert len(events[5].access.emergency_reason_hash) == 32
    assert b"unconscious" not in events[5].SerializeToString()
    reviewed = {e.tx_id: (words, salt) for e, words, salt in net.records.reviews(net.hospital)}
    words, salt = reviewed[events[5].tx_id]
    assert words == "unconscious in ED"
    assert commitment(salt, words.encode()) == events[5].access.emergency_reason_hash
    # The read within the window the declaration opened carries the same words.
    assert reviewed[events[6].tx_id][0] == "unconscious in ED"


def test_a_patient_always_reads_their_own_records_and_a_deny_overrides_a_permit(
    net: Network,
) -> None:
    record = net.put(OBSERVATION)
    own = net.records.fetch(net.patient, record, purpose=records_pb2.PURPOSE_TREATMENT)
    assert json.loads(own.content) == OBSERVATION
    reader = SigningKey.generate()
    window = {"valid_from_ms": now_ms() - 1000, "valid_until_ms": now_ms() + DAY_MS}
    purposes = [records_pb2.PURPOSE_TREATMENT]
    net.commit(net.patient, "grant_consent", grantee=reader.public_key, purposes=purposes, **window)
    assert net.records.fetch(reader, record, purpose=records_pb2.PURPOSE_TREATMENT).content
    net.commit(
        net.patient,
        "grant_consent",
        grantee=reader.public_key,
        purposes=purposes,
        deny=True,
        record_ids=[record],
        **window,
    )
    why = refused(lambda: net.records.fetch(reader, record, purpose=records_pb2.PURPOSE_TREATMENT))
    assert "denied by" in why.reason


def deny_to(net: Network, grantee: bytes, record: bytes) -> None:
    receipt = net.commit(
        net.patient,
        "grant_consent",
        grantee=grantee,
        purposes=list(records_pb2.Purpose.values())[1:],
        deny=True,
        record_ids=[record],
        valid_from_ms=now_ms() - 1000,
        valid_until_ms=now_ms() + DAY_MS,
    )
    assert receipt.code == tx_pb2.RESULT_CODE_OK


def test_no_key_opens_a_break_glass_window_for_itself_past_a_denial(net: Network) -> None:
    """Issue 16, case 1. The patient denies Mallory. Mallory cannot anchor a record for
    the patient without a custodian role; even holding one (issued by a member), the
    window her own RecordAccess opens is capped to the policy's hour and covers only her
    own records: the hospital's vault refuses her, and the refusal is in the log."""
    condition = net.put(CONDITION)
    mallory = SigningKey.generate()
    enrol(net.ledger, net.hospital, "org-0", {mallory: [tx_pb2.ROLE_RESEARCHER]})
    deny_to(net, mallory.public_key, condition)
    fake = b"\x66" * 16
    anchor = tx_pb2.TransactionBody(
        anchor_record=records_pb2.AnchorRecord(
            record_id=fake, version=1, patient=net.patient.public_key,
            commitment=b"\x00" * 32, resource_type="Condition",
        )
    )  # fmt: skip
    expiry = net.ledger.status().height + 100
    refused_anchor = net.ledger.submit(
        TxBuilder(mallory, CHAIN_ID).sign(anchor, expiry_height=expiry)
    )
    assert refused_anchor.code == tx_pb2.RESULT_CODE_NOT_PERMITTED
    assert "custodian role" in refused_anchor.message

    # The worst case: Mallory holds a custodian role (her organisation's vault).
    enrol(net.ledger, net.hospital, "org-0", {mallory: [tx_pb2.ROLE_CUSTODIAN]})
    expiry = net.ledger.status().height + 100
    anchored = net.ledger.submit(TxBuilder(mallory, CHAIN_ID).sign(anchor, expiry_height=expiry))
    assert anchored.code == tx_pb2.RESULT_CODE_OK
    year_3000 = 32_503_680_000_000
    opening = tx_pb2.TransactionBody(
        record_access=records_pb2.RecordAccess(
            record_id=fake, version=1, requester=mallory.public_key,
            purpose=records_pb2.PURPOSE_EMERGENCY, outcome=records_pb2.ACCESS_OUTCOME_RELEASED,
            reason="break-glass declared", break_glass=True, emergency_reason_hash=b"x" * 32,
            break_glass_until_ms=year_3000,
        )
    )  # fmt: skip
    expiry = net.ledger.status().height + 100
    opened = net.ledger.submit(TxBuilder(mallory, CHAIN_ID).sign(opening, expiry_height=expiry))
    assert opened.code == tx_pb2.RESULT_CODE_NOT_PERMITTED  # she holds no clinician role
    assert "record_access.requester" in opened.message

    before = len(net.records.access_events(net.patient.public_key, net.patient))
    why = refused(
        lambda: net.records.fetch(mallory, condition, purpose=records_pb2.PURPOSE_TREATMENT)
    )
    assert (why.field, "denied by" in why.reason) == ("record_id", True)
    why = refused(
        lambda: net.records.fetch(
            mallory, condition, purpose=records_pb2.PURPOSE_EMERGENCY, emergency_reason="x"
        )
    )
    assert why.field == "requester"
    log = net.records.access_events(net.patient.public_key, net.patient)[before:]
    assert [(e.access.requester, e.access.outcome) for e in log] == [
        (mallory.public_key, records_pb2.ACCESS_OUTCOME_REFUSED)
    ] * 2


def test_a_self_declared_clinician_gets_no_break_glass(net: Network) -> None:
    """Issue 16, case 2. A fresh key cannot register at all (it is no member); a member
    who labels itself a clinician holds no clinician role. Either way the vault refuses
    the emergency, naming the requester, and the refusal is in the patient's log."""
    condition = net.put(CONDITION)
    fresh = SigningKey.generate()
    register = {
        "kind": tx_pb2.PARTICIPANT_KIND_PERSON,
        "role": tx_pb2.ROLE_CLINICIAN,
        "display_name": "dr-mallory",
    }
    why = refused(lambda: net.commit(fresh, "register_participant", **register))
    assert why.field == "tx.public_key"
    labelled = SigningKey.generate()
    enrol(net.ledger, net.hospital, "org-0", {labelled: [tx_pb2.ROLE_PATIENT]})
    assert net.commit(labelled, "register_participant", **register).code == tx_pb2.RESULT_CODE_OK
    before = len(net.records.access_events(net.patient.public_key, net.patient))
    for requester in (fresh, labelled):
        why = refused(
            lambda requester=requester: net.records.fetch(
                requester, condition, purpose=records_pb2.PURPOSE_EMERGENCY, emergency_reason="x"
            )
        )
        assert why.field == "requester"
        assert "clinician role" in why.reason
    log = net.records.access_events(net.patient.public_key, net.patient)[before:]
    assert [(e.access.requester, e.access.outcome, e.access.break_glass) for e in log] == [
        (fresh.public_key, records_pb2.ACCESS_OUTCOME_REFUSED, False),
        (labelled.public_key, records_pb2.ACCESS_OUTCOME_REFUSED, False),
    ]


def test_every_break_glass_release_is_queued_for_the_custodians_privacy_officer(
    net: Network,
) -> None:
    record = net.put(CONDITION)
    deny_to(net, net.clinician.public_key, record)
    glass = net.records.fetch(
        net.clinician, record, purpose=records_pb2.PURPOSE_EMERGENCY, emergency_reason="stroke"
    )
    assert glass.access.access.break_glass
    assert "overrode the patient's denial" in glass.access.access.reason  # the default policy
    queued = [e for e, _, _ in net.records.reviews(net.hospital) if e.access.record_id == record]
    assert [(e.access.requester, e.patient) for e in queued] == [
        (net.clinician.public_key, net.patient.public_key)
    ]
    officer = SigningKey.generate()
    enrol(net.ledger, net.hospital, "org-0", {officer: [tx_pb2.ROLE_AUDITOR]})
    assert net.records.reviews(officer) == net.records.reviews(net.hospital)
    why = refused(lambda: net.records.reviews(net.researcher))
    assert why.field == "requester"


def test_health_metadata_is_read_only_by_those_entitled_to_it(net: Network) -> None:
    """Issue 16, case 3: consents, access events, anchors and the blocks that carry them
    were served to anyone. Now a read is signed, and each reader sees its part."""
    record = net.put(CONDITION)
    net.commit(
        net.patient,
        "grant_consent",
        grantee=net.researcher.public_key,
        purposes=[records_pb2.PURPOSE_RESEARCH],
        valid_from_ms=now_ms() - 1000,
        valid_until_ms=now_ms() + DAY_MS,
    )
    patient = net.patient.public_key
    stub = records_pb2_grpc.RecordServiceStub(sync_channel(net.node.address, net.tls))
    reads: list[tuple[Any, Any]] = [
        (stub.GetRecord, records_pb2.GetRecordRequest(record_id=record)),
        (stub.ListConsents, records_pb2.ListConsentsRequest(patient=patient)),
        (stub.ListAccessEvents, records_pb2.ListAccessEventsRequest(patient=patient)),
    ]
    for call, request in reads:
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=10)  # unsigned
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "requester" in (raised.value.details() or "")
        forged = sign_read(request, net.patient, CHAIN_ID)
        forged.requester = net.researcher.public_key  # someone else's name on it
        with pytest.raises(grpc.RpcError) as raised:
            call(forged, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

    stranger = SigningKey.generate()
    refused(lambda: net.records.consents(patient, stranger))
    refused(lambda: net.records.access_events(patient, stranger))
    refused(lambda: net.records.record(record, stranger), "NOT_FOUND")  # reveals nothing
    everything = net.records.consents(patient, net.patient)
    mine = net.records.consents(patient, net.researcher)
    assert 0 < len(mine) < len(everything)
    assert {c.grant.grantee for c in mine} == {net.researcher.public_key}
    assert net.records.record(record, net.researcher).record.patient == patient
    # An organisation's own auditor role opens nothing here (an admin could issue it to
    # itself); the consortium's auditors are appointed by governance.
    auditor = SigningKey.generate()
    enrol(net.ledger, net.hospital, "org-0", {auditor: [tx_pb2.ROLE_AUDITOR]})
    refused(lambda: net.records.consents(patient, auditor))
    net.govern(governance_pb2.PolicyChange(add_auditors=[auditor.public_key]))
    assert net.records.consents(patient, auditor) == everything
    assert net.records.access_events(patient, auditor) == net.records.access_events(
        patient, net.patient
    )
    # The blocks that carry them: headers to anyone, transactions to full readers.
    height = net.ledger.status().height
    assert net.ledger.get_block(height).redacted
    assert not net.ledger.get_block(height).block.txs
    with LedgerClient(net.node.address, reader=auditor, tls=net.tls) as full:
        assert not full.get_block(height).redacted
        consent_tx = full.get_block(height - 1)
    with LedgerClient(net.node.address, reader=stranger, tls=net.tls) as other:
        assert other.get_block(height).redacted
        receipts = [
            other.get_transaction(tx_id=tx_pb2.TransactionBody.FromString(tx.body).tx_id)
            for tx in consent_tx.block.txs
        ]
    assert receipts
    assert not any(r.HasField("tx") for r in receipts)


def test_a_dismissed_auditors_block_stream_turns_to_headers(net: Network) -> None:
    """Entitlement is asked for every block a stream sends, not once when it opens."""
    auditor = SigningKey.generate()
    net.govern(governance_pb2.PolicyChange(add_auditors=[auditor.public_key]))
    start = net.ledger.status().height
    with LedgerClient(net.node.address, reader=auditor, tls=net.tls) as client:
        stream = client.stream_blocks(start, timeout_s=60)
        assert not next(stream).redacted
        net.govern(governance_pb2.PolicyChange(remove_auditors=[auditor.public_key]))
        dismissed_at = net.ledger.status().height
        for block in stream:
            if block.block.header.height > dismissed_at:
                assert block.redacted
                break
            net.put(OBSERVATION)  # more blocks


def test_expired_consent_is_refused(net: Network) -> None:
    record = net.put(OBSERVATION)
    reader = SigningKey.generate()
    net.commit(
        net.patient,
        "grant_consent",
        grantee=reader.public_key,
        purposes=[records_pb2.PURPOSE_RESEARCH],
        valid_from_ms=now_ms() - 2 * DAY_MS,
        valid_until_ms=now_ms() - DAY_MS,
    )
    why = refused(lambda: net.records.fetch(reader, record, purpose=records_pb2.PURPOSE_RESEARCH))
    assert "expired" in why.reason


def test_forged_or_foreign_consents_are_refused_and_change_nothing(net: Network) -> None:
    before = net.records.consents(net.patient.public_key, net.patient)
    stranger = SigningKey.generate()
    # A grant for the patient signed by someone else: refused at admission.
    builder = TxBuilder(stranger, CHAIN_ID)
    body = tx_pb2.TransactionBody(
        grant_consent=records_pb2.GrantConsent(
            consent_id=b"\x01" * 16,
            patient=net.patient.public_key,
            grantee=stranger.public_key,
            decision=records_pb2.CONSENT_DECISION_PERMIT,
            actions=[records_pb2.CONSENT_ACTION_READ],
            purposes=[records_pb2.PURPOSE_RESEARCH],
            valid_from_ms=0,
            valid_until_ms=now_ms() + DAY_MS,
        )
    )
    tx = builder.sign(body, expiry_height=net.ledger.status().height + 10)
    why = refused(lambda: net.ledger.submit(tx, wait=True))
    assert why.field == "body.grant_consent.patient"
    # The patient's key in the envelope with a forged signature: refused at admission.
    forged = builder.sign(body, expiry_height=net.ledger.status().height + 10)
    forged.public_key = net.patient.public_key
    why = refused(lambda: net.ledger.submit(forged, wait=True), "INVALID_ARGUMENT")
    assert why.field == "tx.signature"
    assert net.records.consents(net.patient.public_key, net.patient) == before


def test_tampered_ciphertext_unknown_record_and_bad_requests_get_clear_errors(
    net: Network, tmp_path: Path
) -> None:
    record = net.put(OBSERVATION)
    refused(
        lambda: net.records.fetch(net.patient, b"\x09" * 16, purpose=records_pb2.PURPOSE_TREATMENT),
        "NOT_FOUND",
    )
    events_before = net.records.access_events(net.patient.public_key, net.patient)
    stub = records_pb2_grpc.VaultServiceStub(sync_channel(net.node.address, net.tls))
    request = records_pb2.FetchRequest(
        record_id=record,
        requester=net.patient.public_key,
        purpose=records_pb2.PURPOSE_TREATMENT,
        recipient_key=b"\x05" * 32,
    )
    signed = sign_request(request, net.researcher, CHAIN_ID)  # signed by the wrong key
    with pytest.raises(grpc.RpcError) as raised:
        stub.Fetch(signed, timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature" in (raised.value.details() or "")
    raw_fetch: grpc.UnaryUnaryMultiCallable[bytes, bytes] = sync_channel(
        net.node.address, net.tls
    ).unary_unary("/medledger.wire.v1.VaultService/Fetch")
    with pytest.raises(grpc.RpcError) as raised:
        raw_fetch(b"\xff\xff\xff", timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FetchRequest" in (raised.value.details() or "")
    assert net.records.access_events(net.patient.public_key, net.patient) == events_before

    # Flip one byte of the stored ciphertext in the vault's LMDB: the fetch fails
    # authentication instead of returning altered content.
    env = lmdb.open(str(net.home.root / "vault" / "bodies"), map_size=4 << 30)
    key = record + (1).to_bytes(4, "big")
    with env.begin(write=True) as txn:
        stored = txn.get(key)
        assert stored is not None
        sealed = bytearray(stored)
        sealed[20] ^= 0x01
        txn.put(key, bytes(sealed))
    env.close()
    with pytest.raises(EnvelopeError, match="ciphertext"):
        net.records.fetch(net.patient, record, purpose=records_pb2.PURPOSE_TREATMENT)


def test_amendments_chain_versions_and_erasure_shreds_the_key_material(net: Network) -> None:
    record = net.put(OBSERVATION)
    amended = dict(OBSERVATION, status="amended")
    second = net.records.put(
        net.hospital,
        patient=net.patient.public_key,
        resource_type="Observation",
        content=json.dumps(amended).encode(),
        record_id=record,
    )
    assert second.version == 2
    assert [v.version for v in net.records.record(record, net.hospital).versions] == [1, 2]
    first = net.records.fetch(net.patient, record, purpose=records_pb2.PURPOSE_TREATMENT, version=1)
    assert json.loads(first.content) == OBSERVATION
    latest = net.records.fetch(net.patient, record, purpose=records_pb2.PURPOSE_TREATMENT)
    assert (latest.version, json.loads(latest.content)) == (2, amended)

    # The data key and salt as released to the patient (unwrapped here by hand).
    recipient = X25519PrivateKey.generate()
    request = records_pb2.FetchRequest(
        record_id=record,
        requester=net.patient.public_key,
        purpose=records_pb2.PURPOSE_TREATMENT,
        recipient_key=recipient.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )
    stub = records_pb2_grpc.VaultServiceStub(sync_channel(net.node.address, net.tls))
    response = stub.Fetch(sign_request(request, net.patient, CHAIN_ID), timeout=10)
    data_key, salt = unwrap_key(response.wrapped_key, recipient, record, 2)

    # Each version has its own data key: version 1's, as released, opens not version 2.
    request.version = 1
    first_key, _ = unwrap_key(
        stub.Fetch(sign_request(request, net.patient, CHAIN_ID), timeout=10).wrapped_key,
        recipient,
        record,
        1,
    )
    assert first_key != data_key
    with pytest.raises(EnvelopeError):
        open_body(first_key, record, 2, response.commitment, response.ciphertext)
    assert open_body(data_key, record, 2, response.commitment, response.ciphertext)
    # At rest the keys are wrapped under the vault's key-encryption key (a 0600 file).
    assert (net.home.keys_dir / "vault-kek.json").stat().st_mode & 0o777 == 0o600
    for path in (net.home.root / "vault").rglob("*"):
        if path.is_file():
            assert data_key not in path.read_bytes(), path
            assert first_key not in path.read_bytes(), path
    stranger = SigningKey.generate()
    refused(lambda: net.records.erase(stranger, record))
    net.records.erase(net.hospital, record, records_pb2.ERASURE_REASON_PATIENT_REQUEST)
    state = net.records.record(record, net.hospital).record
    assert state.erased_height > 0
    assert state.erasure_reason == records_pb2.ERASURE_REASON_PATIENT_REQUEST
    why = refused(
        lambda: net.records.fetch(net.patient, record, purpose=records_pb2.PURPOSE_TREATMENT)
    )
    assert "erased" in why.reason
    refused(lambda: net.records.erase(net.hospital, record), "FAILED_PRECONDITION")
    # Neither the key nor the salt survives in any byte of the vault's files.
    for path in (net.home.root / "vault").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert data_key not in content, path
            assert salt not in content, path


def vault_bodies(net: Network) -> int:
    env = lmdb.open(str(net.home.root / "vault" / "bodies"), map_size=4 << 30, readonly=True)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


def test_a_body_whose_anchor_is_refused_leaves_nothing_behind(net: Network) -> None:
    """Issue 16, case 4: the vault stored a body before its anchor committed, and kept it
    when the anchor failed. Now a refused anchor removes the body and its keys."""
    before = vault_bodies(net)
    revoke = TxBuilder(net.hospital, CHAIN_ID).revoke_credential(
        subject=net.hospital.public_key,
        role=tx_pb2.ROLE_CUSTODIAN,
        expiry_height=net.ledger.status().height + 100,
    )
    assert net.ledger.submit(revoke).code == tx_pb2.RESULT_CODE_OK
    try:
        why = refused(lambda: net.put(OBSERVATION), "FAILED_PRECONDITION")
        assert "custodian role" in why.reason
        assert vault_bodies(net) == before
    finally:
        enrol(net.ledger, net.hospital, "org-0", {net.hospital: [tx_pb2.ROLE_CUSTODIAN]})
    assert net.put(OBSERVATION)
    assert vault_bodies(net) == before + 1


def test_hundreds_of_concurrent_fetches_are_all_answered(net: Network) -> None:
    """More fetches in flight than LMDB has reader slots (126), within the listener's
    limit of calls at once (`client_rpcs_max`, 512): each one awaits its audit commit,
    and none may hold a read transaction meanwhile."""
    record = net.put(OBSERVATION)

    async def fetch_all() -> list[grpc.StatusCode]:
        async with aio_channel(net.node.address, net.tls) as channel:
            stub = records_pb2_grpc.VaultServiceStub(channel)

            async def one() -> grpc.StatusCode:
                recipient = X25519PrivateKey.generate().public_key()
                request = records_pb2.FetchRequest(
                    record_id=record,
                    requester=net.patient.public_key,
                    purpose=records_pb2.PURPOSE_TREATMENT,
                    recipient_key=recipient.public_bytes(Encoding.Raw, PublicFormat.Raw),
                )
                try:
                    await stub.Fetch(sign_request(request, net.patient, CHAIN_ID), timeout=60)
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            return await asyncio.gather(*(one() for _ in range(200)))

    codes = asyncio.run(fetch_all())
    assert set(codes) == {grpc.StatusCode.OK}, {c: codes.count(c) for c in set(codes)}
