"""Members and their roles: keys enrolled by a member organisation, holding roles that
the organisation's admins issued, until they expire (block time) or are revoked.

A role is a credential on the ledger, never a claim the key makes about itself: the
`RegisterParticipant` label grants nothing. Every permission in the application (who may
submit, who may be a record's custodian, who may declare an emergency) is asked here.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from medledger.app.outcome import TxOutcome
from medledger.app.state import (
    CONSORTIUM_KEY,
    MEMBERS,
    ORGANISATIONS,
    POLICY,
    POLICY_KEY,
    BlockState,
)
from medledger.crypto import signing_message, verify
from medledger.errors import Rejected
from medledger.genesis import ORGANISATION_ID
from medledger.wire.v1 import state_pb2, tx_pb2

__all__ = [
    "ISSUABLE_ROLES",
    "active_roles",
    "check_issue",
    "check_revoke",
    "consortium",
    "enrolment_message",
    "holds",
    "issue_credential",
    "organisation_of",
    "policy",
    "put_consortium",
    "revoke_credential",
    "submitter",
]

OK = TxOutcome(tx_pb2.RESULT_CODE_OK, "")
M = TypeVar("M", bound=Message)
SIGNATURE_BYTES = 64
ISSUABLE_ROLES = frozenset(v for v in tx_pb2.Role.values() if v != tx_pb2.ROLE_UNSPECIFIED)


def _invalid(field: str, reason: str) -> Rejected:
    return Rejected("INVALID_ARGUMENT", field, reason)


def check_issue(msg: tx_pb2.IssueCredential, _signer: bytes) -> None:
    field = "body.issue_credential"
    if len(msg.subject) != 32:
        raise _invalid(f"{field}.subject", f"must be a 32-byte public key, got {len(msg.subject)}")
    if msg.role not in ISSUABLE_ROLES:
        raise _invalid(f"{field}.role", "must be a known role")
    if not ORGANISATION_ID.fullmatch(msg.organisation):
        raise _invalid(f"{field}.organisation", "must be an organisation id")
    if msg.expires_ms == 0:
        raise _invalid(f"{field}.expires_ms", "must be set")
    if msg.subject_signature and len(msg.subject_signature) != SIGNATURE_BYTES:
        raise _invalid(f"{field}.subject_signature", f"must be {SIGNATURE_BYTES} bytes")


def check_revoke(msg: tx_pb2.RevokeCredential, _signer: bytes) -> None:
    field = "body.revoke_credential"
    if len(msg.subject) != 32:
        raise _invalid(f"{field}.subject", f"must be a 32-byte public key, got {len(msg.subject)}")
    if msg.role not in ISSUABLE_ROLES:
        raise _invalid(f"{field}.role", "must be a known role")


def active_roles(
    member: state_pb2.Member | None,
    organisation: state_pb2.Organisation | None,
    time_ms: int,
) -> frozenset[int]:
    """The roles `member` holds at `time_ms`: issued, not revoked, not expired, by an
    organisation that is still a member."""
    if member is None or organisation is None or organisation.removed_height:
        return frozenset()
    return frozenset(
        grant.role
        for grant in member.roles
        if grant.revoked_height == 0 and time_ms < grant.expires_ms
    )


def _member(state: BlockState, key: bytes) -> state_pb2.Member | None:
    return state.get(MEMBERS, key, state_pb2.Member)


def organisation_of(state: BlockState, org_id: str) -> state_pb2.Organisation | None:
    """A member organisation (None if unknown or removed)."""
    found = state.get(ORGANISATIONS, org_id.encode(), state_pb2.Organisation)
    return None if found is None or found.removed_height else found


def _copy_of(state: BlockState, key: bytes, kind: type[M]) -> M:
    """A record of the policy table, copied so that changing it changes nothing until
    it is put back (an empty one if there is none)."""
    made = kind()
    stored = state.get(POLICY, key, kind)
    if stored is not None:
        made.CopyFrom(stored)
    return made


def consortium(state: BlockState) -> state_pb2.Consortium:
    """The member organisations and their total weight (a copy to change and put)."""
    return _copy_of(state, CONSORTIUM_KEY, state_pb2.Consortium)


def put_consortium(state: BlockState, registry: state_pb2.Consortium) -> None:
    state.put(POLICY, CONSORTIUM_KEY, registry)


def holds(state: BlockState, key: bytes, role: int, time_ms: int) -> bool:
    """Whether `key` holds `role` at `time_ms`, as this block sees the state."""
    member = _member(state, key)
    if member is None:
        return False
    return role in active_roles(member, organisation_of(state, member.organisation), time_ms)


def submitter(
    member: state_pb2.Member | None, organisation: state_pb2.Organisation | None, time_ms: int
) -> bool:
    """Whether a key may submit transactions: an admin of a member organisation, or a
    member holding at least one role now."""
    if member is None or organisation is None or organisation.removed_height:
        return False
    return member.admin or bool(active_roles(member, organisation, time_ms))


def policy(state: BlockState) -> state_pb2.Policy:
    """The consortium's policy (a copy to change and put)."""
    return _copy_of(state, POLICY_KEY, state_pb2.Policy)


def enrolment_message(chain_id: str, organisation: str) -> bytes:
    """What a key signs to agree to be enrolled by `organisation` on this chain."""
    return signing_message("enrolment", chain_id, organisation.encode())


def _is_admin(organisation: state_pb2.Organisation | None, key: bytes) -> bool:
    return (
        organisation is not None and not organisation.removed_height and key in organisation.admins
    )


def issue_credential(
    state: BlockState, height: int, signer: bytes, msg: tx_pb2.IssueCredential
) -> TxOutcome:
    organisation = organisation_of(state, msg.organisation)
    if organisation is None:
        return TxOutcome(
            tx_pb2.RESULT_CODE_UNKNOWN_ORGANISATION, "issue_credential.organisation: unknown"
        )
    if not _is_admin(organisation, signer):
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_PERMITTED,
            "issue_credential: the signer is not an admin of the organisation",
        )
    if msg.expires_ms <= state.time_ms:
        return TxOutcome(
            tx_pb2.RESULT_CODE_INVALID_CREDENTIAL,
            "issue_credential.expires_ms: not after the block time",
        )
    member = _member(state, msg.subject)
    if member is None and not verify(
        msg.subject, enrolment_message(state.chain_id, msg.organisation), msg.subject_signature
    ):
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_PERMITTED,
            "issue_credential.subject_signature: the key has not agreed to join this organisation",
        )
    if member is None:
        member = state_pb2.Member(
            public_key=msg.subject, organisation=msg.organisation, enrolled_height=height
        )
    elif member.organisation != msg.organisation:
        return TxOutcome(
            tx_pb2.RESULT_CODE_WRONG_ORGANISATION,
            f"issue_credential.subject: enrolled by {member.organisation!r}",
        )
    grant = state_pb2.RoleGrant(
        role=msg.role, expires_ms=msg.expires_ms, issued_height=height, issuer=signer
    )
    for i, held in enumerate(member.roles):
        if held.role == msg.role:
            member.roles[i].CopyFrom(grant)
            break
    else:
        member.roles.append(grant)
    state.put(MEMBERS, msg.subject, member)
    return OK


def revoke_credential(
    state: BlockState, height: int, signer: bytes, msg: tx_pb2.RevokeCredential
) -> TxOutcome:
    member = _member(state, msg.subject)
    if member is None:
        return TxOutcome(
            tx_pb2.RESULT_CODE_UNKNOWN_CREDENTIAL, "revoke_credential.subject: not enrolled"
        )
    if not _is_admin(organisation_of(state, member.organisation), signer):
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_PERMITTED,
            "revoke_credential: the signer is not an admin of the subject's organisation",
        )
    for grant in member.roles:
        if grant.role == msg.role and grant.revoked_height == 0:
            grant.revoked_height = height
            state.put(MEMBERS, msg.subject, member)
            return OK
    return TxOutcome(
        tx_pb2.RESULT_CODE_UNKNOWN_CREDENTIAL, "revoke_credential.role: not held by the subject"
    )
