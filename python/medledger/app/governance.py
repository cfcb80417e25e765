"""Consortium governance: a proposal approved by organisations holding more than the
policy's share of governance weight (by default more than 2/3) adds or removes an
organisation, changes the validator set (`medledger.app.validators`) or changes the
policy.

The proposal travels as bytes: each approving organisation's admin signs exactly those
bytes under the `governance` domain, bound to the chain, and the `Govern` transaction
carries them with the approvals. The ledger counts one approval per organisation (from
one of its current admins, with a signature that verifies), refuses a proposal used
before or past its expiry height, and keeps a record of what took effect.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from medledger.app import members
from medledger.app.members import consortium, organisation_of, put_consortium
from medledger.app.outcome import TxOutcome
from medledger.app.state import (
    GOVERNANCE,
    MEMBERS,
    ORGANISATIONS,
    POLICY,
    POLICY_KEY,
    BlockState,
)
from medledger.app.validators import change_validators, check_changes
from medledger.crypto import signing_message, verify
from medledger.errors import Rejected
from medledger.genesis import ORGANISATION_ID
from medledger.limits import (
    ADMINS_MAX,
    APPROVALS_MAX,
    AUDITORS_MAX,
    DESCRIPTION_BYTES_MAX,
    NAME_BYTES_MAX,
)
from medledger.transport.ca_check import ca_conflict, check_ca_certificate, overlap_refusal
from medledger.wire.v1 import governance_pb2, state_pb2, tx_pb2

__all__ = ["APPROVALS_MAX", "check_govern", "govern", "proposal_of", "signed_bytes"]

PROPOSAL_ID_BYTES = 16
HORIZON_BLOCKS = 100_000
"""A proposal's expiry height is at most this far ahead when it is submitted: collected
approvals do not last for ever."""
DAY_MS = 24 * 60 * 60 * 1000
KEY_BYTES = 32
SIGNATURE_BYTES = 64


def _invalid(field: str, reason: str) -> Rejected:
    return Rejected("INVALID_ARGUMENT", field, reason)


def signed_bytes(chain_id: str, proposal: bytes) -> bytes:
    """What an approving admin signs: the encoded proposal, under the governance domain."""
    return signing_message("governance", chain_id, proposal)


def proposal_of(msg: governance_pb2.Govern) -> governance_pb2.GovernanceProposal:
    try:
        return governance_pb2.GovernanceProposal.FromString(msg.proposal)
    except DecodeError:
        raise _invalid("body.govern.proposal", "not a GovernanceProposal") from None


def check_govern(msg: governance_pb2.Govern, _signer: bytes) -> None:
    """Stateless rules; raises `Rejected` naming the field."""
    field = "body.govern.proposal"
    proposal = proposal_of(msg)
    if len(proposal.proposal_id) != PROPOSAL_ID_BYTES:
        raise _invalid(f"{field}.proposal_id", f"must be {PROPOSAL_ID_BYTES} bytes")
    if len(proposal.description.encode()) > DESCRIPTION_BYTES_MAX:
        raise _invalid(f"{field}.description", f"longer than {DESCRIPTION_BYTES_MAX} bytes")
    _check_action(field, proposal)
    if not msg.approvals or len(msg.approvals) > APPROVALS_MAX:
        raise _invalid("body.govern.approvals", f"must hold 1 to {APPROVALS_MAX} approvals")
    for approval in msg.approvals:
        if (
            not ORGANISATION_ID.fullmatch(approval.organisation)
            or len(approval.admin) != KEY_BYTES
            or len(approval.signature) != SIGNATURE_BYTES
        ):
            raise _invalid(
                "body.govern.approvals", "each needs an organisation id, a key and a signature"
            )


def _check_action(field: str, proposal: governance_pb2.GovernanceProposal) -> None:
    action = proposal.WhichOneof("action")
    if action is None:
        raise _invalid(f"{field}.action", "no action is set")
    if action == "add_organisation":
        _check_new_organisation(f"{field}.add_organisation", proposal.add_organisation)
    elif action == "remove_organisation":
        if not ORGANISATION_ID.fullmatch(proposal.remove_organisation):
            raise _invalid(f"{field}.remove_organisation", "must be an organisation id")
    elif action == "change_validators":
        check_changes(f"{field}.change_validators", proposal.change_validators)
    elif action == "set_organisation_ca":
        _check_organisation_ca(f"{field}.set_organisation_ca", proposal.set_organisation_ca)
    else:
        change = proposal.set_policy
        if change.break_glass_max_ms > DAY_MS:
            raise _invalid(f"{field}.set_policy.break_glass_max_ms", "at most 24 hours")
        if change.emergency_overrides_deny > 2:
            raise _invalid(f"{field}.set_policy.emergency_overrides_deny", "must be 0, 1 or 2")
        if set(change.add_auditors) & set(change.remove_auditors):
            raise _invalid(f"{field}.set_policy", "a key both appointed and dismissed")
        keys = [*change.add_auditors, *change.remove_auditors]
        if len(keys) > AUDITORS_MAX or any(len(key) != KEY_BYTES for key in keys):
            raise _invalid(
                f"{field}.set_policy", f"at most {AUDITORS_MAX} auditor keys of 32 bytes"
            )
        if not (change.break_glass_max_ms or change.emergency_overrides_deny or keys):
            raise _invalid(f"{field}.set_policy", "changes nothing")


def _check_organisation_ca(field: str, change: governance_pb2.OrganisationCa) -> None:
    if not ORGANISATION_ID.fullmatch(change.organisation):
        raise _invalid(f"{field}.organisation", "must be an organisation id")
    try:
        check_ca_certificate(change.tls_ca, f"{field}.tls_ca")
    except ValueError as error:
        raise _invalid(f"{field}.tls_ca", str(error)) from None


def _check_new_organisation(field: str, new: governance_pb2.NewOrganisation) -> None:
    if not ORGANISATION_ID.fullmatch(new.id):
        raise _invalid(f"{field}.id", "lowercase ASCII letters, digits and '-', at most 32 bytes")
    if not new.name or len(new.name.encode()) > NAME_BYTES_MAX:
        raise _invalid(f"{field}.name", f"1 to {NAME_BYTES_MAX} bytes")
    if not 1 <= len(new.admins) <= ADMINS_MAX or any(len(a) != KEY_BYTES for a in new.admins):
        raise _invalid(f"{field}.admins", f"1 to {ADMINS_MAX} keys of {KEY_BYTES} bytes")
    if len(set(new.admins)) != len(new.admins):
        raise _invalid(f"{field}.admins", "named twice")
    if not 1 <= new.weight < 2**32:
        raise _invalid(f"{field}.weight", "1 to 2^32 - 1")
    if new.tls_ca:
        try:
            check_ca_certificate(new.tls_ca, f"{field}.tls_ca")
        except ValueError as error:
            raise _invalid(f"{field}.tls_ca", str(error)) from None


def _approving(state: BlockState, msg: governance_pb2.Govern) -> tuple[list[str], int]:
    """The organisations whose approval counts (one each: a current admin's signature
    over the proposal's bytes that verifies), and their total weight."""
    message = signed_bytes(state.chain_id, msg.proposal)
    counted: dict[str, int] = {}
    for approval in msg.approvals:
        if approval.organisation in counted:
            continue
        organisation = organisation_of(state, approval.organisation)
        if organisation is None or approval.admin not in organisation.admins:
            continue
        if verify(approval.admin, message, approval.signature):
            counted[approval.organisation] = organisation.weight
    return sorted(counted), sum(counted.values())


def govern(  # noqa: PLR0911 - one return per rule reads best
    state: BlockState, height: int, _signer: bytes, msg: governance_pb2.Govern
) -> TxOutcome:
    proposal = proposal_of(msg)
    if proposal.chain_id != state.chain_id:
        return TxOutcome(tx_pb2.RESULT_CODE_NOT_APPROVED, "govern.proposal: for another chain")
    if proposal.expires_height < height:
        return TxOutcome(
            tx_pb2.RESULT_CODE_EXPIRED, f"govern.proposal: expired at {proposal.expires_height}"
        )
    if proposal.expires_height > height + HORIZON_BLOCKS:
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_APPROVED,
            f"govern.proposal.expires_height: more than {HORIZON_BLOCKS} blocks ahead",
        )
    if state.get(GOVERNANCE, proposal.proposal_id, governance_pb2.GovernanceRecord) is not None:
        return TxOutcome(tx_pb2.RESULT_CODE_PROPOSAL_USED, "govern.proposal: took effect before")
    approved_by, approved = _approving(state, msg)
    total = consortium(state).total_weight
    policy = members.policy(state)
    numerator, denominator = policy.governance_numerator, policy.governance_denominator
    if approved * denominator <= total * numerator:
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_APPROVED,
            f"govern.approvals: weight {approved} of {total} ({', '.join(approved_by) or 'none'})"
            f" is not more than {numerator}/{denominator}",
        )
    outcome = _apply(state, height, proposal, (numerator, denominator), approved_by)
    if outcome.code != tx_pb2.RESULT_CODE_OK:
        return outcome
    state.put(
        GOVERNANCE,
        proposal.proposal_id,
        governance_pb2.GovernanceRecord(
            proposal_id=proposal.proposal_id,
            height=height,
            tx_id=state.tx_id,
            approved_by=approved_by,
            approved_weight=approved,
            total_weight=total,
        ),
    )
    return outcome


def _apply(
    state: BlockState,
    height: int,
    proposal: governance_pb2.GovernanceProposal,
    threshold: tuple[int, int],
    approved_by: list[str],
) -> TxOutcome:
    action = proposal.WhichOneof("action")
    if action == "add_organisation":
        return _add_organisation(state, height, proposal.add_organisation, threshold)
    if action == "remove_organisation":
        return _remove_organisation(state, height, proposal.remove_organisation)
    if action == "change_validators":
        return change_validators(state, height, proposal.change_validators)
    if action == "set_organisation_ca":
        return _set_organisation_ca(state, proposal.set_organisation_ca, approved_by)
    return _set_policy(state, proposal.set_policy)


def _conflict_with_others(state: BlockState, tls_ca: bytes, besides: str) -> str | None:
    """Which other member's CA (current or previous) `tls_ca` would be confused with, and
    by what (`ca_conflict`): a shared key lets a certificate name either organisation; a
    shared subject or key identifier makes TLS stacks check the other's chains against
    the wrong CA, cutting it off from every peer. None when it is distinct from all."""
    for org_id in consortium(state).organisations:
        other = organisation_of(state, org_id)
        if other is None or org_id == besides:
            continue
        for held in (other.tls_ca, other.previous_tls_ca):
            conflict = ca_conflict(tls_ca, held) if held else None
            if conflict is not None:
                return f"{org_id}'s CA (same {conflict})"
    return None


def _set_organisation_ca(
    state: BlockState, change: governance_pb2.OrganisationCa, approved_by: list[str]
) -> TxOutcome:
    """A CA rotation: the new CA, and with `keep_previous` the current one still trusted
    beside it; the same certificate without `keep_previous` ends an overlap. The
    organisation itself must be among the approvers: otherwise a coalition could give it
    a CA of the coalition's and be taken for its nodes on the peer port."""
    field = "govern.set_organisation_ca"
    organisation = organisation_of(state, change.organisation)
    if organisation is None:
        return TxOutcome(
            tx_pb2.RESULT_CODE_UNKNOWN_ORGANISATION, f"{field}.organisation: not a member"
        )
    if change.organisation not in approved_by:
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_APPROVED,
            f"govern.approvals: {change.organisation} must approve a change of its own CA",
        )
    conflict = _conflict_with_others(state, change.tls_ca, change.organisation)
    if conflict is not None:
        return TxOutcome(
            tx_pb2.RESULT_CODE_ORGANISATION_EXISTS, f"{field}.tls_ca: conflicts with {conflict}"
        )
    updated = state_pb2.Organisation()
    updated.CopyFrom(organisation)
    if change.tls_ca == organisation.tls_ca:
        if change.keep_previous or not organisation.previous_tls_ca:
            return TxOutcome(tx_pb2.RESULT_CODE_NOT_PERMITTED, f"{field}: changes nothing")
        updated.previous_tls_ca = b""  # the overlap ends: only the new CA is trusted
    else:
        # A new key, or the same key re-issued (a renewal: new validity or subject).
        if change.keep_previous and organisation.tls_ca:
            overlap = overlap_refusal(change.tls_ca, organisation.tls_ca)
            if overlap is not None:
                return TxOutcome(tx_pb2.RESULT_CODE_NOT_PERMITTED, f"{field}.tls_ca: {overlap}")
        updated.previous_tls_ca = organisation.tls_ca if change.keep_previous else b""
        updated.tls_ca = change.tls_ca
    state.put(ORGANISATIONS, change.organisation.encode(), updated)
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")


def _add_organisation(
    state: BlockState,
    height: int,
    new: governance_pb2.NewOrganisation,
    threshold: tuple[int, int],
) -> TxOutcome:
    if state.get(ORGANISATIONS, new.id.encode(), state_pb2.Organisation) is not None:
        return TxOutcome(  # a removed organisation's id is not reused either
            tx_pb2.RESULT_CODE_ORGANISATION_EXISTS, "govern.add_organisation.id: taken"
        )
    numerator, denominator = threshold
    total = consortium(state).total_weight + new.weight
    if new.weight * denominator > total * numerator:
        # It could then pass any proposal alone (name its own auditors, remove others).
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_PERMITTED,
            "govern.add_organisation.weight: would alone be over the approval threshold",
        )
    conflict = _conflict_with_others(state, new.tls_ca, new.id) if new.tls_ca else None
    if conflict is not None:
        return TxOutcome(
            tx_pb2.RESULT_CODE_ORGANISATION_EXISTS,
            f"govern.add_organisation.tls_ca: conflicts with {conflict}",
        )
    for admin in new.admins:
        if state.get(MEMBERS, admin, state_pb2.Member) is not None:
            return TxOutcome(
                tx_pb2.RESULT_CODE_WRONG_ORGANISATION,
                "govern.add_organisation.admins: a key another organisation enrolled",
            )
    state.put(
        ORGANISATIONS,
        new.id.encode(),
        state_pb2.Organisation(
            id=new.id, name=new.name, admins=new.admins, weight=new.weight, tls_ca=new.tls_ca
        ),
    )
    for admin in new.admins:
        state.put(
            MEMBERS,
            admin,
            state_pb2.Member(
                public_key=admin, organisation=new.id, admin=True, enrolled_height=height
            ),
        )
    registry = consortium(state)
    registry.organisations.append(new.id)
    registry.organisations.sort()
    registry.total_weight += new.weight
    put_consortium(state, registry)
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")


def _remove_organisation(state: BlockState, height: int, org_id: str) -> TxOutcome:
    organisation = organisation_of(state, org_id)
    if organisation is None:
        return TxOutcome(
            tx_pb2.RESULT_CODE_UNKNOWN_ORGANISATION, "govern.remove_organisation: unknown"
        )
    registry = consortium(state)
    if len(registry.organisations) <= 1:
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_PERMITTED, "govern.remove_organisation: the last member"
        )
    if organisation.validators:
        # Its validators would stay in the set, run by nobody the consortium knows.
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_PERMITTED,
            "govern.remove_organisation: it runs validators; remove them first (change_validators)",
        )
    # Its members' roles stop counting at once: a role counts only while the
    # organisation that issued it is a member (members.active_roles).
    removed = state_pb2.Organisation()
    removed.CopyFrom(organisation)
    removed.removed_height = height
    state.put(ORGANISATIONS, org_id.encode(), removed)
    registry.organisations.remove(org_id)
    registry.total_weight -= organisation.weight
    put_consortium(state, registry)
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")


def _set_policy(state: BlockState, change: governance_pb2.PolicyChange) -> TxOutcome:
    policy = state_pb2.Policy()
    policy.CopyFrom(members.policy(state))
    if change.break_glass_max_ms:
        policy.break_glass_max_ms = change.break_glass_max_ms
    if change.emergency_overrides_deny:
        policy.emergency_overrides_deny = change.emergency_overrides_deny == 1
    auditors = [a for a in policy.auditors if a not in change.remove_auditors]
    auditors += [a for a in change.add_auditors if a not in auditors]
    if len(auditors) > AUDITORS_MAX:
        return TxOutcome(
            tx_pb2.RESULT_CODE_NOT_PERMITTED, f"govern.set_policy: over {AUDITORS_MAX} auditors"
        )
    del policy.auditors[:]
    policy.auditors.extend(auditors)
    state.put(POLICY, POLICY_KEY, policy)
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")
