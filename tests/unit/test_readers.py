"""Who reads which health metadata (`app.readers.Reading`), over a consortium state built
by real transactions: what an organisation cannot grant itself, and what a denied grantee
or a flood cannot do."""

from __future__ import annotations

import pytest

from medledger.app import Application, queries
from medledger.app.readers import Reading
from medledger.app.state import MemoryState
from medledger.client import TxBuilder
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.wire.v1 import records_pb2, tx_pb2
from tests.consortium import ADMINS, NOW_MS, enrol

CHAIN = "readers-unit"
APP = Application(CHAIN, 1000, permissioned=True)
CUSTODIAN = SigningKey.from_seed(b"K" * 32)
PATIENT = SigningKey.from_seed(b"P" * 32)
GRANTEE = SigningKey.from_seed(b"G" * 32)
OUTSIDER_CUSTODIAN = SigningKey.from_seed(b"O" * 32)
RECORD = b"r" * 16


def apply(state: MemoryState, key: SigningKey, body: tx_pb2.TransactionBody, height: int) -> int:
    signed = TxBuilder(key, CHAIN).sign(body, expiry_height=height + 10)
    decoded = tx_pb2.TransactionBody.FromString(signed.body)
    result = APP.finalize_block(
        height, bytes(32), state, [(key.public_key, decoded)], time_ms=NOW_MS + height
    )
    state.apply(result.writes)
    return result.outcomes[0].code


def chain() -> MemoryState:
    state = enrol(
        CHAIN,
        {
            CUSTODIAN: [tx_pb2.ROLE_CUSTODIAN],
            PATIENT: [tx_pb2.ROLE_PATIENT],
            GRANTEE: [tx_pb2.ROLE_RESEARCHER],
        },
    )
    anchor = tx_pb2.TransactionBody(
        anchor_record=records_pb2.AnchorRecord(
            record_id=RECORD,
            version=1,
            patient=PATIENT.public_key,
            commitment=b"c" * 32,
            resource_type="Condition",
            category="hiv",
        )
    )
    assert apply(state, CUSTODIAN, anchor, 2) == tx_pb2.RESULT_CODE_OK
    return state


def consent(decision: int, consent_id: bytes) -> tx_pb2.TransactionBody:
    return tx_pb2.TransactionBody(
        grant_consent=records_pb2.GrantConsent(
            consent_id=consent_id,
            patient=PATIENT.public_key,
            grantee=GRANTEE.public_key,
            decision=decision,  # type: ignore[arg-type]
            actions=[records_pb2.CONSENT_ACTION_READ],
            purposes=[records_pb2.PURPOSE_RESEARCH],
            valid_from_ms=0,
            valid_until_ms=NOW_MS * 2,
        )
    )


def reading(state: MemoryState, key: SigningKey) -> Reading:
    return Reading(state, key.public_key, NOW_MS + 100, validators=())


def test_an_admin_who_issues_itself_the_auditor_role_reads_nothing_more() -> None:
    state = chain()
    admin_b = ADMINS["hospital-b"]
    issue = tx_pb2.TransactionBody(
        issue_credential=tx_pb2.IssueCredential(
            subject=admin_b.public_key,
            role=tx_pb2.ROLE_AUDITOR,
            organisation="hospital-b",
            expires_ms=NOW_MS * 2,
        )
    )
    assert apply(state, admin_b, issue, 3) == tx_pb2.RESULT_CODE_OK
    assert tx_pb2.ROLE_AUDITOR in queries.roles(state, admin_b.public_key, NOW_MS + 100)
    view = reading(state, admin_b)
    assert not view.full
    with pytest.raises(Rejected):
        view.consents(PATIENT.public_key)
    record = queries.record(state, RECORD)
    assert record is not None
    with pytest.raises(Rejected):
        view.record(record)


def test_a_denied_grantee_reads_no_anchors_and_a_permitted_one_does() -> None:
    state = chain()
    record = queries.record(state, RECORD)
    assert record is not None
    apply(state, PATIENT, consent(records_pb2.CONSENT_DECISION_DENY, b"d" * 16), 3)
    with pytest.raises(Rejected):
        reading(state, GRANTEE).record(record)
    # The grantee still sees the consent naming it, and only that.
    assert [c.grant.consent_id for c in reading(state, GRANTEE).consents(PATIENT.public_key)] == [
        b"d" * 16
    ]
    state = chain()
    apply(state, PATIENT, consent(records_pb2.CONSENT_DECISION_PERMIT, b"p" * 16), 3)
    reading(state, GRANTEE).record(record)  # permitted: no error


def test_a_custodian_of_another_record_reads_no_consents_of_the_patient() -> None:
    """A custodian that anchors a junk record naming the patient gains nothing."""
    state = enrol(CHAIN, {OUTSIDER_CUSTODIAN: [tx_pb2.ROLE_CUSTODIAN]})
    junk = tx_pb2.TransactionBody(
        anchor_record=records_pb2.AnchorRecord(
            record_id=b"j" * 16,
            version=1,
            patient=PATIENT.public_key,
            commitment=b"c" * 32,
            resource_type="Condition",
        )
    )
    assert apply(state, OUTSIDER_CUSTODIAN, junk, 2) == tx_pb2.RESULT_CODE_OK
    with pytest.raises(Rejected):
        reading(state, OUTSIDER_CUSTODIAN).consents(PATIENT.public_key)


def test_lists_keep_the_newest_entries_when_there_are_too_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queries, "LIST_MAX", 3)
    state = chain()
    for height in range(3, 9):
        access = tx_pb2.TransactionBody(
            record_access=records_pb2.RecordAccess(
                record_id=RECORD,
                requester=GRANTEE.public_key,
                purpose=records_pb2.PURPOSE_RESEARCH,
                outcome=records_pb2.ACCESS_OUTCOME_REFUSED,
                reason="no consent",
            )
        )
        assert apply(state, CUSTODIAN, access, height) == tx_pb2.RESULT_CODE_OK
    events = queries.access_events(state, PATIENT.public_key)
    assert [e.height for e in events] == [6, 7, 8]
