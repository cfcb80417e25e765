"""Patient consent: grants and revocations on the ledger, and the one function that
decides whether a requester may read a record (deny overrides permit; expiry enforced;
break-glass for clinicians, time-boxed and flagged)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medledger.app.outcome import TxOutcome
from medledger.app.records import RECORD_ID_BYTES
from medledger.app.state import CONSENTS, BlockState
from medledger.errors import Rejected
from medledger.limits import CONSENT_TEXT_BYTES_MAX, SCOPE_ITEMS_MAX
from medledger.wire.v1 import records_pb2, state_pb2, tx_pb2

__all__ = [
    "Decision",
    "check_grant",
    "check_revoke",
    "consent_key",
    "decide",
    "grant_consent",
    "permits",
    "revoke_consent",
]

KEY_BYTES = 32


def consent_key(patient: bytes, consent_id: bytes) -> bytes:
    return patient + consent_id


def _invalid(field: str, reason: str) -> Rejected:
    return Rejected("INVALID_ARGUMENT", field, reason)


def _check_patient_is_signer(field: str, patient: bytes, signer: bytes) -> None:
    if len(patient) != KEY_BYTES:
        raise _invalid(field, f"must be {KEY_BYTES} bytes, got {len(patient)}")
    if patient != signer:
        raise Rejected("PERMISSION_DENIED", field, "only the patient may sign this; not the signer")


def check_grant(msg: records_pb2.GrantConsent, signer: bytes) -> None:
    field = "body.grant_consent"
    if len(msg.consent_id) != RECORD_ID_BYTES:
        raise _invalid(f"{field}.consent_id", f"must be {RECORD_ID_BYTES} bytes")
    _check_patient_is_signer(f"{field}.patient", msg.patient, signer)
    if len(msg.grantee) != KEY_BYTES:
        raise _invalid(f"{field}.grantee", f"must be {KEY_BYTES} bytes, got {len(msg.grantee)}")
    if msg.grantee == msg.patient:
        raise _invalid(f"{field}.grantee", "a patient needs no consent to read their records")
    if msg.decision not in (records_pb2.CONSENT_DECISION_PERMIT, records_pb2.CONSENT_DECISION_DENY):
        raise _invalid(f"{field}.decision", "must be permit or deny")
    if not msg.actions or any(a != records_pb2.CONSENT_ACTION_READ for a in msg.actions):
        raise _invalid(f"{field}.actions", "must list read (the only action defined)")
    known = set(records_pb2.Purpose.values()) - {records_pb2.PURPOSE_UNSPECIFIED}
    if not msg.purposes or any(p not in known for p in msg.purposes):
        raise _invalid(f"{field}.purposes", "must list at least one known purpose of use")
    if msg.valid_until_ms <= msg.valid_from_ms:
        raise _invalid(f"{field}.valid_until_ms", "must be after valid_from_ms")
    scope = msg.scope
    for name in ("resource_types", "categories", "security_labels", "record_ids"):
        items = getattr(scope, name)
        if len(items) > SCOPE_ITEMS_MAX:
            raise _invalid(f"{field}.scope.{name}", f"more than {SCOPE_ITEMS_MAX}")
    if any(len(t.encode()) > CONSENT_TEXT_BYTES_MAX for t in scope.resource_types):
        raise _invalid(
            f"{field}.scope.resource_types", f"longer than {CONSENT_TEXT_BYTES_MAX} bytes"
        )
    if any(len(r) != RECORD_ID_BYTES for r in scope.record_ids):
        raise _invalid(f"{field}.scope.record_ids", f"each must be {RECORD_ID_BYTES} bytes")


def check_revoke(msg: records_pb2.RevokeConsent, signer: bytes) -> None:
    if len(msg.consent_id) != RECORD_ID_BYTES:
        raise _invalid("body.revoke_consent.consent_id", f"must be {RECORD_ID_BYTES} bytes")
    _check_patient_is_signer("body.revoke_consent.patient", msg.patient, signer)
    known = set(records_pb2.RevocationReason.values()) - {records_pb2.REVOCATION_REASON_UNSPECIFIED}
    if msg.reason not in known:
        raise _invalid("body.revoke_consent.reason", "must be a known revocation reason code")


def grant_consent(
    state: BlockState, height: int, _signer: bytes, msg: records_pb2.GrantConsent
) -> TxOutcome:
    key = consent_key(msg.patient, msg.consent_id)
    if state.get(CONSENTS, key, records_pb2.ConsentState) is not None:
        return TxOutcome(tx_pb2.RESULT_CODE_CONSENT_EXISTS, "grant_consent.consent_id: in use")
    state.put(
        CONSENTS,
        key,
        records_pb2.ConsentState(
            grant=msg,
            version=1,
            status=records_pb2.CONSENT_STATUS_ACTIVE,
            granted_height=height,
            updated_height=height,
        ),
    )
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")


def revoke_consent(
    state: BlockState, height: int, _signer: bytes, msg: records_pb2.RevokeConsent
) -> TxOutcome:
    key = consent_key(msg.patient, msg.consent_id)
    consent = state.get(CONSENTS, key, records_pb2.ConsentState)
    if consent is None:
        return TxOutcome(tx_pb2.RESULT_CODE_UNKNOWN_CONSENT, "revoke_consent.consent_id: unknown")
    if consent.status == records_pb2.CONSENT_STATUS_REVOKED:
        return TxOutcome(tx_pb2.RESULT_CODE_CONSENT_REVOKED, "already revoked")
    consent.version += 1
    consent.status = records_pb2.CONSENT_STATUS_REVOKED
    consent.updated_height = height
    consent.revocation_reason = msg.reason
    state.put(CONSENTS, key, consent)
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")


# --------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Decision:
    permitted: bool
    reason: str
    consent: records_pb2.ConsentState | None = None
    break_glass: bool = False
    emergency_reason: str = ""  # a new declaration's words (the vault keeps them)
    # A new break-glass declaration opens a window until this time (0: none opened).
    window_until_ms: int = 0
    # Within a window: the salted hash of the words that opened it.
    emergency_reason_hash: bytes = b""
    # The request field a refusal is about (what PERMISSION_DENIED names).
    field: str = "record_id"


def _in_scope(scope: records_pb2.ConsentScope, record: records_pb2.RecordState) -> bool:
    if scope.resource_types and record.resource_type not in scope.resource_types:
        return False
    if scope.categories and record.category not in scope.categories:
        return False
    if scope.security_labels and not set(record.security_labels) <= set(scope.security_labels):
        return False
    return not scope.record_ids or record.record_id in scope.record_ids


def permits(
    record: records_pb2.RecordState,
    grantee: bytes,
    consents: Sequence[records_pb2.ConsentState],
    now_ms: int,
) -> bool:
    """Whether an active, current PERMIT to `grantee` covers `record` (for some purpose)
    and no such DENY does."""
    current = [
        c
        for c in consents
        if c.grant.grantee == grantee
        and c.status == records_pb2.CONSENT_STATUS_ACTIVE
        and c.grant.valid_from_ms <= now_ms < c.grant.valid_until_ms
        and _in_scope(c.grant.scope, record)
    ]
    denied = any(c.grant.decision == records_pb2.CONSENT_DECISION_DENY for c in current)
    return not denied and any(
        c.grant.decision == records_pb2.CONSENT_DECISION_PERMIT for c in current
    )


def _name(consent: records_pb2.ConsentState) -> str:
    return f"consent {consent.grant.consent_id.hex()} v{consent.version}"


def decide(  # noqa: PLR0911 - one return per rule reads best
    *,
    record: records_pb2.RecordState,
    requester: bytes,
    requester_is_clinician: bool,
    purpose: int,
    consents: Sequence[records_pb2.ConsentState],
    now_ms: int,
    policy: state_pb2.Policy,
    emergency_reason: str = "",
    window: records_pb2.BreakGlassWindow | None = None,
) -> Decision:
    """Whether `requester` may read `record` for `purpose` at `now_ms`, and why.

    `requester_is_clinician` is the requester's clinician role as issued on the ledger
    (never a role it declared itself); `window` is a break-glass window this record's
    custodian opened for the requester. Whether an emergency overrides the patient's
    explicit denial is the consortium's `policy`; either way the reason says so."""
    if record.erased_height:
        return Decision(False, "the record was erased")
    if requester == record.patient:
        return Decision(True, "the patient's own record")
    if requester == record.custodian:
        return Decision(True, "the record's custodian")
    matching = [
        c
        for c in consents
        if c.grant.grantee == requester
        and records_pb2.CONSENT_ACTION_READ in c.grant.actions
        and purpose in c.grant.purposes
        and _in_scope(c.grant.scope, record)
    ]
    active = [c for c in matching if c.status == records_pb2.CONSENT_STATUS_ACTIVE]
    current = [c for c in active if c.grant.valid_from_ms <= now_ms < c.grant.valid_until_ms]
    denies = [c for c in current if c.grant.decision == records_pb2.CONSENT_DECISION_DENY]
    permits = [c for c in current if c.grant.decision == records_pb2.CONSENT_DECISION_PERMIT]
    window_open = (
        window is not None and window.custodian == record.custodian and now_ms < window.until_ms
    )
    if permits and not denies:
        return Decision(True, f"permitted by {_name(permits[0])}", permits[0])
    if (emergency_reason or window_open) and not requester_is_clinician:
        return Decision(
            False,
            "break-glass: the requester holds no clinician role from a member organisation",
            field="requester",
        )
    if emergency_reason or window_open:
        if denies and not policy.emergency_overrides_deny:
            return Decision(
                False,
                f"denied by {_name(denies[0])}; this network's policy lets no emergency "
                "override a patient's denial",
                denies[0],
            )
        overrode = f"; overrode the patient's denial ({_name(denies[0])})" if denies else ""
        if emergency_reason:
            return Decision(
                True,
                "break-glass declared" + overrode,
                denies[0] if denies else None,
                break_glass=True,
                emergency_reason=emergency_reason,
                window_until_ms=now_ms + policy.break_glass_max_ms,
            )
        assert window is not None
        return Decision(
            True,
            "within a break-glass window" + overrode,
            denies[0] if denies else None,
            break_glass=True,
            emergency_reason_hash=window.emergency_reason_hash,
        )
    if denies:
        return Decision(False, f"denied by {_name(denies[0])}", denies[0])
    if active:
        expired = [c for c in active if now_ms >= c.grant.valid_until_ms]
        if expired:
            return Decision(False, f"{_name(expired[0])} expired", expired[0])
        return Decision(False, f"{_name(active[0])} is not yet valid", active[0])
    if matching:
        return Decision(False, f"{_name(matching[0])} was revoked", matching[0])
    return Decision(False, "no consent covers this record, requester and purpose")
