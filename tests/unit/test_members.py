"""Issued roles: who may issue and revoke them, what they permit (submitting, holding
records, declaring an emergency), and the ledger's bounds on break-glass windows."""

from __future__ import annotations

import pytest

from medledger.app import Application, queries
from medledger.app.records import break_glass_key, review_key
from medledger.app.state import BREAK_GLASS, BREAK_GLASS_REVIEW, MemoryState
from medledger.client import TxBuilder
from medledger.client.members import enrolment_signature
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.genesis import DEFAULT_BREAK_GLASS_MAX_MS
from medledger.wire.v1 import records_pb2, tx_pb2
from tests.consortium import ADMINS, FAR_FUTURE_MS, NOW_MS, enrol

CHAIN = "members-unit"
APP = Application(CHAIN, 1000, permissioned=True)
CUSTODIAN = SigningKey.from_seed(b"k" * 32)
CLINICIAN = SigningKey.from_seed(b"d" * 32)
PATIENT = SigningKey.from_seed(b"q" * 32)
STRANGER = SigningKey.from_seed(b"s" * 32)
R = tx_pb2


class Chain:
    """A consortium state and a height, applying one block per call."""

    def __init__(self) -> None:
        self.state: MemoryState = enrol(
            CHAIN,
            {
                CUSTODIAN: [R.ROLE_CUSTODIAN],
                CLINICIAN: [R.ROLE_CLINICIAN],
                PATIENT: [R.ROLE_PATIENT],
            },
        )
        self.height = 1
        self.time_ms = NOW_MS

    def apply(self, key: SigningKey, body: tx_pb2.TransactionBody, *, after_ms: int = 1) -> str:
        """Applies `body` signed by `key` in the next block, `after_ms` later; returns
        the result code's name."""
        self.height += 1
        self.time_ms += after_ms
        signed = TxBuilder(key, CHAIN).sign(body, expiry_height=self.height + 10)
        decoded = tx_pb2.TransactionBody.FromString(signed.body)
        result = APP.finalize_block(
            self.height, bytes(32), self.state, [(key.public_key, decoded)], time_ms=self.time_ms
        )
        self.state.apply(result.writes)
        return R.ResultCode.Name(result.outcomes[0].code).removeprefix("RESULT_CODE_")


def issue(
    subject: SigningKey,
    role: int,
    org: str = "hospital-a",
    expires_ms: int = FAR_FUTURE_MS,
    *,
    agreed_to: str | None = "",
) -> tx_pb2.TransactionBody:
    """`subject` is issued `role` by `org`, with its agreement to join `agreed_to` (by
    default `org`; None: no agreement at all)."""
    joins = org if agreed_to == "" else agreed_to
    return tx_pb2.TransactionBody(
        issue_credential=tx_pb2.IssueCredential(
            subject=subject.public_key,
            role=role,  # type: ignore[arg-type]
            organisation=org,
            expires_ms=expires_ms,
            subject_signature=b"" if joins is None else enrolment_signature(subject, CHAIN, joins),
        )
    )


def revoke(subject: bytes, role: int) -> tx_pb2.TransactionBody:
    return tx_pb2.TransactionBody(
        revoke_credential=tx_pb2.RevokeCredential(subject=subject, role=role)  # type: ignore[arg-type]
    )


def create_account() -> tx_pb2.TransactionBody:
    return tx_pb2.TransactionBody(create_account=tx_pb2.CreateAccount())


ADMIN_A, ADMIN_B = ADMINS["hospital-a"], ADMINS["hospital-b"]


def test_only_an_organisations_admins_issue_its_roles_and_a_key_has_one_organisation() -> None:
    chain = Chain()
    fresh = SigningKey.generate()
    assert chain.apply(CUSTODIAN, issue(fresh, R.ROLE_CLINICIAN)) == "NOT_PERMITTED"
    assert chain.apply(ADMIN_A, issue(fresh, R.ROLE_CLINICIAN, org="nowhere")) == (
        "UNKNOWN_ORGANISATION"
    )
    assert chain.apply(ADMIN_B, issue(fresh, R.ROLE_CLINICIAN)) == "NOT_PERMITTED"
    assert chain.apply(ADMIN_A, issue(fresh, R.ROLE_CLINICIAN, expires_ms=NOW_MS)) == (
        "INVALID_CREDENTIAL"
    )
    # Without the key's agreement, or with its agreement to join another organisation.
    for agreed_to in (None, "hospital-b"):
        code = chain.apply(ADMIN_A, issue(fresh, R.ROLE_CLINICIAN, agreed_to=agreed_to))
        assert code == "NOT_PERMITTED"
    assert chain.apply(ADMIN_A, issue(fresh, R.ROLE_CLINICIAN)) == "OK"
    # hospital-b cannot add roles to a key hospital-a enrolled.
    assert chain.apply(ADMIN_B, issue(fresh, R.ROLE_AUDITOR, org="hospital-b")) == (
        "WRONG_ORGANISATION"
    )
    member = queries.member(chain.state, fresh.public_key)
    assert member is not None
    assert member.organisation == "hospital-a"
    assert queries.roles(chain.state, fresh.public_key, chain.time_ms) == {R.ROLE_CLINICIAN}


def test_a_role_counts_until_it_expires_or_its_organisation_revokes_it() -> None:
    chain = Chain()
    fresh = SigningKey.generate()
    soon = chain.time_ms + 1_000
    assert chain.apply(ADMIN_A, issue(fresh, R.ROLE_PAYER, expires_ms=soon)) == "OK"
    assert chain.apply(fresh, create_account()) == "OK"
    # Past its expiry (block time), the key may no longer submit.
    assert chain.apply(fresh, create_account(), after_ms=2_000) == "NOT_PERMITTED"
    assert chain.apply(ADMIN_A, issue(fresh, R.ROLE_PAYER)) == "OK"  # renewed
    assert chain.apply(fresh, create_account()) == "ACCOUNT_EXISTS"  # permitted again
    assert chain.apply(ADMIN_B, revoke(fresh.public_key, R.ROLE_PAYER)) == "NOT_PERMITTED"
    assert chain.apply(ADMIN_A, revoke(fresh.public_key, R.ROLE_AUDITOR)) == "UNKNOWN_CREDENTIAL"
    assert chain.apply(ADMIN_A, revoke(STRANGER.public_key, R.ROLE_PAYER)) == ("UNKNOWN_CREDENTIAL")
    assert chain.apply(ADMIN_A, revoke(fresh.public_key, R.ROLE_PAYER)) == "OK"
    assert chain.apply(ADMIN_A, revoke(fresh.public_key, R.ROLE_PAYER)) == "UNKNOWN_CREDENTIAL"
    assert chain.apply(fresh, create_account()) == "NOT_PERMITTED"


def test_a_stranger_may_not_submit_and_self_registration_grants_no_role() -> None:
    """Case 2 of issue 16: a fresh key registering itself as a clinician gains nothing."""
    chain = Chain()
    register = tx_pb2.TransactionBody(
        register_participant=tx_pb2.RegisterParticipant(
            kind=R.PARTICIPANT_KIND_PERSON, role=R.ROLE_CLINICIAN, display_name="dr-mallory"
        )
    )
    assert chain.apply(STRANGER, register) == "NOT_PERMITTED"
    assert chain.apply(STRANGER, create_account()) == "NOT_PERMITTED"
    # An enrolled patient may register a label; it is no role.
    assert chain.apply(PATIENT, register) == "OK"
    assert queries.roles(chain.state, PATIENT.public_key, chain.time_ms) == {R.ROLE_PATIENT}
    # Admission says so first, naming the key.
    with pytest.raises(Rejected) as refused:
        APP.submitter_organisation(chain.state, STRANGER.public_key, chain.time_ms)
    assert (refused.value.status, refused.value.field) == ("PERMISSION_DENIED", "tx.public_key")
    assert APP.submitter_organisation(chain.state, PATIENT.public_key, chain.time_ms) == (
        "hospital-a"
    )
    assert APP.submitter_organisation(chain.state, ADMIN_B.public_key, chain.time_ms) == (
        "hospital-b"
    )


def anchor(record_id: bytes, patient: bytes) -> tx_pb2.TransactionBody:
    return tx_pb2.TransactionBody(
        anchor_record=records_pb2.AnchorRecord(
            record_id=record_id,
            version=1,
            patient=patient,
            commitment=b"c" * 32,
            resource_type="Condition",
        )
    )


def access(
    record_id: bytes, requester: bytes, *, until_ms: int = 0, break_glass: bool = True
) -> tx_pb2.TransactionBody:
    return tx_pb2.TransactionBody(
        record_access=records_pb2.RecordAccess(
            record_id=record_id,
            version=1,
            requester=requester,
            purpose=records_pb2.PURPOSE_EMERGENCY,
            outcome=records_pb2.ACCESS_OUTCOME_RELEASED,
            reason="break-glass declared",
            break_glass=break_glass,
            emergency_reason_hash=b"h" * 32 if break_glass else b"",
            break_glass_until_ms=until_ms,
        )
    )


def test_only_a_custodian_role_holder_anchors_and_reports_access() -> None:
    chain = Chain()
    assert chain.apply(PATIENT, anchor(b"r" * 16, PATIENT.public_key)) == "NOT_PERMITTED"
    assert chain.apply(CUSTODIAN, anchor(b"r" * 16, PATIENT.public_key)) == "OK"
    assert chain.apply(ADMIN_A, revoke(CUSTODIAN.public_key, R.ROLE_CUSTODIAN)) == "OK"
    # A vault whose custodian role was revoked can no longer audit, so no longer release.
    plain = access(b"r" * 16, PATIENT.public_key, break_glass=False)
    assert chain.apply(CUSTODIAN, plain) == "NOT_PERMITTED"


def test_a_break_glass_window_is_bounded_by_block_time_never_extended_and_reviewed() -> None:
    """Case 1 of issue 16 on the ledger: a window asked for the year 3000 ends at most the
    policy's maximum after the block; only a clinician's release opens one; it is keyed
    to the custodian; each emergency release is listed for the custodian's review."""
    chain = Chain()
    record = b"r" * 16
    assert chain.apply(CUSTODIAN, anchor(record, PATIENT.public_key)) == "OK"
    year_3000 = 32_503_680_000_000
    assert chain.apply(CUSTODIAN, access(record, PATIENT.public_key, until_ms=year_3000)) == (
        "NOT_PERMITTED"  # the requester holds no clinician role
    )
    assert chain.apply(CUSTODIAN, access(record, CLINICIAN.public_key, until_ms=year_3000)) == "OK"
    opened_at = chain.time_ms
    window = queries.break_glass_window(
        chain.state, PATIENT.public_key, CUSTODIAN.public_key, CLINICIAN.public_key
    )
    assert window is not None
    assert window.until_ms == opened_at + DEFAULT_BREAK_GLASS_MAX_MS
    assert window.custodian == CUSTODIAN.public_key
    # Declared again while open: recorded and reviewed, the window keeps its end.
    assert chain.apply(CUSTODIAN, access(record, CLINICIAN.public_key, until_ms=year_3000)) == "OK"
    again = queries.break_glass_window(
        chain.state, PATIENT.public_key, CUSTODIAN.public_key, CLINICIAN.public_key
    )
    assert again == window
    assert (
        chain.state.get(
            BREAK_GLASS, break_glass_key(PATIENT.public_key, b"x" * 32, CLINICIAN.public_key)
        )
        is None
    )
    reviews = queries.break_glass_reviews(chain.state, CUSTODIAN.public_key)
    assert [r.access.requester for r in reviews] == [CLINICIAN.public_key] * 2
    assert (
        chain.state.get(
            BREAK_GLASS_REVIEW,
            review_key(CUSTODIAN.public_key, reviews[0].height, reviews[0].tx_id),
        )
        is not None
    )
