"""The consent decision, the records and consent rules of the application, and the vault's
cryptography checked against Wycheproof X25519 and ChaCha20-Poly1305 vectors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medledger.app import Application
from medledger.app.consent import decide
from medledger.app.state import MemoryState
from medledger.client import TxBuilder
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.fhir.export import access_event_to_fhir, consent_to_fhir
from medledger.fhir.ingest import BundleError, resources_of_bundle
from medledger.genesis import GenesisPolicy
from medledger.vault import envelope
from medledger.wire.v1 import records_pb2, state_pb2, tx_pb2
from tests.conftest import load_vector
from tests.consortium import NOW_MS, enrol

PATIENT, CUSTODIAN, READER = b"P" * 32, b"C" * 32, b"R" * 32
NOW = 1_800_000_000_000
RESEARCH, TREATMENT = records_pb2.PURPOSE_RESEARCH, records_pb2.PURPOSE_TREATMENT
RECORD = records_pb2.RecordState(
    record_id=b"r" * 16,
    custodian=CUSTODIAN,
    patient=PATIENT,
    resource_type="Observation",
    category="laboratory",
    security_labels=["N"],
    latest_version=1,
)


POLICY = state_pb2.Policy(break_glass_max_ms=3_600_000, emergency_overrides_deny=True)


def consent(
    decision: int = records_pb2.CONSENT_DECISION_PERMIT,
    purposes: tuple[int, ...] = (RESEARCH,),
    status: int = records_pb2.CONSENT_STATUS_ACTIVE,
    valid: tuple[int, int] = (NOW - 1000, NOW + 1000),
    **scope: Any,
) -> records_pb2.ConsentState:
    grant = records_pb2.GrantConsent(
        consent_id=bytes([len(scope) + decision]) * 16,
        patient=PATIENT,
        grantee=READER,
        decision=decision,  # type: ignore[arg-type]
        actions=[records_pb2.CONSENT_ACTION_READ],
        purposes=purposes,  # type: ignore[arg-type]
        scope=records_pb2.ConsentScope(**scope),
        valid_from_ms=valid[0],
        valid_until_ms=valid[1],
    )
    return records_pb2.ConsentState(grant=grant, version=1, status=status)  # type: ignore[arg-type]


def decision(*consents: records_pb2.ConsentState, **kwargs: Any) -> tuple[bool, str]:
    arguments: dict[str, Any] = {
        "record": RECORD,
        "requester": READER,
        "requester_is_clinician": False,
        "purpose": RESEARCH,
        "consents": consents,
        "now_ms": NOW,
        "policy": POLICY,
    }
    arguments.update(kwargs)
    made = decide(**arguments)
    return made.permitted, made.reason


@pytest.mark.parametrize(
    ("consents", "permitted", "reason"),
    [
        ((), False, "no consent"),
        ((consent(),), True, "permitted by"),
        ((consent(resource_types=["Observation"]),), True, "permitted by"),
        ((consent(resource_types=["Condition"]),), False, "no consent"),
        ((consent(categories=["imaging"]),), False, "no consent"),
        ((consent(security_labels=["N", "R"]),), True, "permitted by"),
        ((consent(security_labels=["R"]),), False, "no consent"),
        ((consent(record_ids=[b"x" * 16]),), False, "no consent"),
        ((consent(purposes=(TREATMENT,)),), False, "no consent"),
        ((consent(valid=(NOW - 2000, NOW)),), False, "expired"),
        ((consent(valid=(NOW + 1, NOW + 2000)),), False, "not yet valid"),
        ((consent(status=records_pb2.CONSENT_STATUS_REVOKED),), False, "revoked"),
        (
            (
                consent(),
                consent(decision=records_pb2.CONSENT_DECISION_DENY, record_ids=[b"r" * 16]),
            ),
            False,
            "denied by",
        ),
    ],
)
def test_consent_rules(
    consents: tuple[records_pb2.ConsentState, ...], permitted: bool, reason: str
) -> None:
    made = decision(*consents)
    assert made[0] is permitted
    assert reason in made[1]


def test_the_patient_and_the_custodian_need_no_consent_and_erasure_stops_everyone() -> None:
    assert decision(requester=PATIENT) == (True, "the patient's own record")
    assert decision(requester=CUSTODIAN) == (True, "the record's custodian")
    erased = records_pb2.RecordState()
    erased.CopyFrom(RECORD)
    erased.erased_height = 9
    assert decision(consent(), requester=PATIENT, record=erased)[0] is False


def test_break_glass_is_for_clinicians_opens_a_window_and_closes() -> None:
    deny = consent(decision=records_pb2.CONSENT_DECISION_DENY)
    refused = decide(
        record=RECORD, requester=READER, requester_is_clinician=False, purpose=RESEARCH,
        consents=(), now_ms=NOW, policy=POLICY, emergency_reason="curious",
    )  # fmt: skip
    assert not refused.permitted
    assert refused.field == "requester"
    assert "holds no clinician role" in refused.reason
    declared = decide(
        record=RECORD, requester=READER, requester_is_clinician=True, purpose=RESEARCH,
        consents=(deny,), now_ms=NOW, policy=POLICY, emergency_reason="cardiac arrest",
    )  # fmt: skip
    assert declared.permitted
    assert declared.break_glass
    assert "overrode the patient's denial" in declared.reason
    assert declared.window_until_ms == NOW + POLICY.break_glass_max_ms
    window = records_pb2.BreakGlassWindow(
        requester=READER, patient=PATIENT, until_ms=declared.window_until_ms,
        emergency_reason_hash=b"h" * 32, custodian=CUSTODIAN,
    )  # fmt: skip
    inside = decide(
        record=RECORD, requester=READER, requester_is_clinician=True, purpose=TREATMENT,
        consents=(), now_ms=NOW + 1000, policy=POLICY, window=window,
    )  # fmt: skip
    assert inside.permitted
    assert inside.break_glass
    assert inside.window_until_ms == 0
    after = decide(
        record=RECORD, requester=READER, requester_is_clinician=True, purpose=TREATMENT,
        consents=(), now_ms=window.until_ms, policy=POLICY, window=window,
    )  # fmt: skip
    assert not after.permitted
    # A clinician whose role was revoked meanwhile reads nothing more under the window.
    revoked = decide(
        record=RECORD, requester=READER, requester_is_clinician=False, purpose=TREATMENT,
        consents=(), now_ms=NOW + 1000, policy=POLICY, window=window,
    )  # fmt: skip
    assert not revoked.permitted


def test_a_window_another_custodian_opened_covers_none_of_this_custodians_records() -> None:
    """Case 1 of issue 16: a window is keyed to the custodian whose vault opened it."""
    elsewhere = records_pb2.BreakGlassWindow(
        requester=READER, patient=PATIENT, until_ms=NOW + 10_000, emergency_reason_hash=b"h" * 32,
        custodian=b"M" * 32,
    )  # fmt: skip
    made = decide(
        record=RECORD, requester=READER, requester_is_clinician=True, purpose=TREATMENT,
        consents=(consent(decision=records_pb2.CONSENT_DECISION_DENY, purposes=(TREATMENT,)),),
        now_ms=NOW, policy=POLICY, window=elsewhere,
    )  # fmt: skip
    assert not made.permitted
    assert "denied by" in made.reason


def test_the_policy_decides_whether_an_emergency_overrides_a_denial() -> None:
    strict = state_pb2.Policy(break_glass_max_ms=3_600_000, emergency_overrides_deny=False)
    deny = consent(decision=records_pb2.CONSENT_DECISION_DENY, purposes=(TREATMENT,))
    made = decide(
        record=RECORD, requester=READER, requester_is_clinician=True, purpose=TREATMENT,
        consents=(deny,), now_ms=NOW, policy=strict, emergency_reason="stroke",
    )  # fmt: skip
    assert not made.permitted
    assert "lets no emergency override" in made.reason
    # Without a denial the emergency is released, under either policy.
    made = decide(
        record=RECORD, requester=READER, requester_is_clinician=True, purpose=TREATMENT,
        consents=(), now_ms=NOW, policy=strict, emergency_reason="stroke",
    )  # fmt: skip
    assert made.permitted
    assert "overrode" not in made.reason


# ------------------------------------------------------------------ application rules

CHAIN = "records-unit"


CUSTODIANS = [SigningKey.from_seed(bytes([200 + i]) * 32) for i in range(3)]
CLINICIAN = SigningKey.from_seed(b"c" * 32)


def apply(
    *txs: tuple[SigningKey, tx_pb2.TransactionBody], state: MemoryState | None = None
) -> list[int]:
    """Applies each transaction in its own block, on a consortium where CUSTODIANS[0]
    and CUSTODIANS[1] hold the custodian role (hospital-a) and CLINICIAN the clinician's."""
    if state is None:
        state = consortium_state()
    results: list[int] = []
    for height, (key, body) in enumerate(txs, start=2):
        signed = TxBuilder(key, CHAIN).sign(body, expiry_height=100)
        decoded = tx_pb2.TransactionBody.FromString(signed.body)
        result = Application(CHAIN, 1000, permissioned=True).finalize_block(
            height, bytes(32), state, [(key.public_key, decoded)], time_ms=NOW_MS + height
        )
        state.apply(result.writes)
        results.append(result.outcomes[0].code)
    return results


def consortium_state(policy: GenesisPolicy | None = None) -> MemoryState:
    custodian = [tx_pb2.ROLE_CUSTODIAN]
    return enrol(
        CHAIN,
        {
            CUSTODIANS[0]: custodian,
            CUSTODIANS[1]: custodian,
            CUSTODIANS[2]: [tx_pb2.ROLE_RESEARCHER],
            CLINICIAN: [tx_pb2.ROLE_CLINICIAN],
            PATIENT_KEY: [tx_pb2.ROLE_PATIENT],
        },
        policy=policy,
    )


PATIENT_KEY = SigningKey.from_seed(b"p" * 32)


def anchor(version: int, patient: bytes = PATIENT) -> tx_pb2.TransactionBody:
    return tx_pb2.TransactionBody(
        anchor_record=records_pb2.AnchorRecord(
            record_id=b"r" * 16,
            version=version,
            patient=patient,
            commitment=b"c" * 32,
            resource_type="Observation",
        )
    )


def test_anchors_version_in_order_by_their_custodian_only() -> None:
    custodian, other = CUSTODIANS[0], CUSTODIANS[1]
    access = tx_pb2.TransactionBody(
        record_access=records_pb2.RecordAccess(
            record_id=b"r" * 16, requester=READER, purpose=RESEARCH, reason="no consent",
            outcome=records_pb2.ACCESS_OUTCOME_REFUSED,
        )
    )  # fmt: skip
    erase = tx_pb2.TransactionBody(
        erase_record=records_pb2.EraseRecord(
            record_id=b"r" * 16, reason=records_pb2.ERASURE_REASON_PATIENT_REQUEST
        )
    )
    codes = apply(
        (custodian, anchor(2)),
        (custodian, anchor(1)),
        (custodian, anchor(1)),
        (other, anchor(2)),
        (custodian, anchor(2, patient=b"Q" * 32)),
        (custodian, anchor(2)),
        (other, access),
        (custodian, access),
        (other, erase),
        (custodian, erase),
        (custodian, anchor(3)),
    )
    r = tx_pb2
    assert codes == [
        r.RESULT_CODE_WRONG_VERSION, r.RESULT_CODE_OK, r.RESULT_CODE_WRONG_VERSION,
        r.RESULT_CODE_NOT_CUSTODIAN, r.RESULT_CODE_WRONG_VERSION, r.RESULT_CODE_OK,
        r.RESULT_CODE_NOT_CUSTODIAN, r.RESULT_CODE_OK, r.RESULT_CODE_NOT_CUSTODIAN,
        r.RESULT_CODE_OK, r.RESULT_CODE_RECORD_ERASED,
    ]  # fmt: skip


def test_consents_are_granted_once_and_revoked_once_by_their_patient() -> None:
    patient = PATIENT_KEY
    builder = TxBuilder(patient, CHAIN)
    grant = builder.grant_consent(
        grantee=READER, purposes=[RESEARCH], valid_from_ms=0, valid_until_ms=NOW,
        expiry_height=100, consent_id=b"k" * 16,
    )  # fmt: skip
    body = tx_pb2.TransactionBody.FromString(grant.body)
    revoke = tx_pb2.TransactionBody.FromString(
        builder.revoke_consent(consent_id=b"k" * 16, expiry_height=100).body
    )
    unknown = tx_pb2.TransactionBody.FromString(
        builder.revoke_consent(consent_id=b"z" * 16, expiry_height=100).body
    )
    codes = apply(
        (patient, body), (patient, body), (patient, revoke), (patient, revoke), (patient, unknown)
    )
    r = tx_pb2
    assert codes == [
        r.RESULT_CODE_OK, r.RESULT_CODE_CONSENT_EXISTS, r.RESULT_CODE_OK,
        r.RESULT_CODE_CONSENT_REVOKED, r.RESULT_CODE_UNKNOWN_CONSENT,
    ]  # fmt: skip
    # Signed by someone else, the same grant is refused at admission, naming the field.
    with pytest.raises(Rejected) as raised:
        Application(CHAIN, 1000).check_tx(body, 1, SigningKey.generate().public_key)
    assert (raised.value.status, raised.value.field) == (
        "PERMISSION_DENIED",
        "body.grant_consent.patient",
    )


# ------------------------------------------------------------------ FHIR


def test_consents_and_access_events_export_as_valid_fhir() -> None:
    exported = consent_to_fhir(consent(resource_types=["Observation"], security_labels=["N"]))
    assert exported["resourceType"] == "Consent"
    assert exported["decision"] == "permit"
    assert exported["provision"][0]["purpose"][0]["code"] == "HRESCH"
    event = records_pb2.AccessEvent(
        access=records_pb2.RecordAccess(
            record_id=b"r" * 16, version=1, requester=READER, purpose=RESEARCH,
            outcome=records_pb2.ACCESS_OUTCOME_RELEASED, reason="permitted by consent",
            consent_id=b"k" * 16, break_glass=True, emergency_reason_hash=b"h" * 32, time_ms=NOW,
        ),
        custodian=CUSTODIAN,
        patient=PATIENT,
    )  # fmt: skip
    audit = access_event_to_fhir(event)
    assert audit["resourceType"] == "AuditEvent"
    assert audit["outcome"]["code"]["code"] == "0"
    assert audit["category"][0]["text"] == "break-glass"


def test_bundle_ingest_refuses_what_is_not_a_valid_bundle() -> None:
    with pytest.raises(BundleError, match="not JSON"):
        resources_of_bundle(b"{")
    with pytest.raises(BundleError, match="bundle"):
        resources_of_bundle(json.dumps({"resourceType": "Bundle"}).encode())
    with pytest.raises(BundleError, match="no resources"):
        resources_of_bundle(json.dumps({"resourceType": "Bundle", "type": "collection"}).encode())


# ------------------------------------------------------------------ vault cryptography


def wycheproof(name: str) -> list[dict[str, Any]]:
    groups = load_vector(f"wycheproof/{name}")["testGroups"]
    return [
        dict(test, **{k: v for k, v in g.items() if k != "tests"})
        for g in groups
        for test in g["tests"]
    ]


def test_x25519_as_the_vault_uses_it_passes_wycheproof() -> None:
    checked = 0
    for case in wycheproof("x25519_test.json"):
        private = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["private"]))
        try:
            shared = private.exchange(
                X25519PublicKey.from_public_bytes(bytes.fromhex(case["public"]))
            )
        except ValueError:
            # OpenSSL refuses low-order points (all-zero shared secret): Wycheproof marks
            # those "acceptable", never "valid".
            assert case["result"] != "valid" or "ZeroSharedSecret" in case["flags"]
            continue
        assert shared.hex() == case["shared"], case["tcId"]
        checked += 1
    assert checked > 400


def test_chacha20_poly1305_as_the_vault_uses_it_passes_wycheproof() -> None:
    checked = 0
    for case in wycheproof("chacha20_poly1305_test.json"):
        if case["keySize"] != 256 or case["ivSize"] != 96:
            continue
        aead = ChaCha20Poly1305(bytes.fromhex(case["key"]))
        sealed = bytes.fromhex(case["ct"] + case["tag"])
        try:
            opened = aead.decrypt(bytes.fromhex(case["iv"]), sealed, bytes.fromhex(case["aad"]))
        except Exception:
            assert case["result"] == "invalid", case["tcId"]
            continue
        assert case["result"] == "valid", case["tcId"]
        assert opened.hex() == case["msg"], case["tcId"]
        checked += 1
    assert checked > 200


def test_a_wrapped_key_opens_only_for_its_recipient_record_and_version() -> None:
    recipient, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    public = recipient.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key, salt = envelope.new_data_key(), envelope.new_salt()
    wrapped = envelope.wrap_key(key, salt, public, b"r" * 16, 3)
    assert envelope.unwrap_key(wrapped, recipient, b"r" * 16, 3) == (key, salt)
    for private, record, version in (
        (other, b"r" * 16, 3),
        (recipient, b"s" * 16, 3),
        (recipient, b"r" * 16, 4),
    ):
        with pytest.raises(envelope.EnvelopeError):
            envelope.unwrap_key(wrapped, private, record, version)
    commitment = envelope.commitment(salt, b"content")
    sealed = envelope.seal_body(key, b"r" * 16, 1, commitment, b"content")
    assert envelope.open_body(key, b"r" * 16, 1, commitment, sealed) == b"content"
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_body(key, b"r" * 16, 2, commitment, sealed)  # another version's AAD


@pytest.mark.parametrize(
    "resource_type",
    [
        "Observ\u00e9",  # a letter to str.isalnum() in every Python, not a FHIR type
        "Observation\U0002ebf0",  # CJK Extension I: a letter to Python 3.12, not to 3.11
        "\U0002ebf0",
        "Obs\u0661",  # ARABIC-INDIC DIGIT ONE: isalnum() everywhere
        "observation",
        "Observation1",
        "Observation ",
    ],
)
def test_resource_types_are_checked_by_an_ascii_rule_every_validator_shares(
    resource_type: str,
) -> None:
    """The verdict inside finalize_block must not depend on the interpreter's Unicode
    tables: validators on different Python versions would compute different app hashes."""
    body = anchor(1)
    body.anchor_record.resource_type = resource_type
    assert apply((CUSTODIANS[0], body)) == [tx_pb2.RESULT_CODE_MALFORMED]


def test_fhir_resource_type_names_are_anchored() -> None:
    for name in ("Observation", "MedicationRequest", "Patient"):
        body = anchor(1)
        body.anchor_record.resource_type = name
        assert apply((CUSTODIANS[0], body)) == [tx_pb2.RESULT_CODE_OK]
