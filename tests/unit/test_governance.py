"""Consortium governance through the real Application: approvals counted once per
organisation from its current admins' valid signatures, the weight threshold, replays
and expiry, and what each action changes."""

from __future__ import annotations

import base64
import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from medledger.app import Application, governance, queries
from medledger.app.state import MemoryState, genesis_writes
from medledger.client import TxBuilder
from medledger.client.members import enrolment_signature
from medledger.crypto import SigningKey
from medledger.genesis import Genesis, GenesisOrganisation, GenesisValidator
from medledger.transport.ca_check import check_ca_certificate
from medledger.transport.certs import Identity, make_ca, make_node_certificate
from medledger.transport.membership import Membership
from medledger.wire.v1 import governance_pb2, records_pb2, state_pb2, tx_pb2

CHAIN = "governance-unit"
NOW_MS = 1_800_000_000_000
ORGS = ["org-a", "org-b", "org-c", "org-d"]
ADMINS = {org: SigningKey.from_seed(bytes([60 + i]) * 32) for i, org in enumerate(ORGS)}
APP = Application(CHAIN, 1000, permissioned=True)
R = tx_pb2


class Chain:
    def __init__(self) -> None:
        validator = SigningKey.from_seed(b"v" * 32)
        genesis = Genesis(
            CHAIN,
            0,
            (GenesisValidator("v", validator.public_key, 10),),
            organisations=tuple(
                GenesisOrganisation(
                    org,
                    org.upper(),
                    (ADMINS[org].public_key,),
                    validators=(validator.public_key,) if org == "org-a" else (),
                )
                for org in ORGS
            ),
        )
        self.state = MemoryState(genesis_writes(genesis))
        self.height = 0

    def apply(self, key: SigningKey, body: tx_pb2.TransactionBody) -> tuple[str, str]:
        self.height += 1
        signed = TxBuilder(key, CHAIN).sign(body, expiry_height=self.height + 10)
        decoded = tx_pb2.TransactionBody.FromString(signed.body)
        result = APP.finalize_block(
            self.height, bytes(32), self.state, [(key.public_key, decoded)], time_ms=NOW_MS
        )
        self.state.apply(result.writes)
        outcome = result.outcomes[0]
        return R.ResultCode.Name(outcome.code).removeprefix("RESULT_CODE_"), outcome.message


def proposal(
    action: str, value: object, *, chain_id: str = CHAIN, expires: int = 100
) -> governance_pb2.GovernanceProposal:
    made = governance_pb2.GovernanceProposal(
        chain_id=chain_id, proposal_id=os.urandom(16), expires_height=expires
    )
    target = getattr(made, action) if action != "remove_organisation" else None
    if target is None:
        made.remove_organisation = str(value)
    else:
        target.CopyFrom(value)
    return made


def govern(
    made: governance_pb2.GovernanceProposal,
    *orgs: str,
    signer_of: dict[str, SigningKey] | None = None,
) -> tx_pb2.TransactionBody:
    raw = made.SerializeToString(deterministic=True)
    message = governance.signed_bytes(made.chain_id, raw)
    keys = signer_of or ADMINS
    approvals = [
        governance_pb2.Approval(
            organisation=org, admin=keys[org].public_key, signature=keys[org].sign(message)
        )
        for org in orgs
    ]
    return tx_pb2.TransactionBody(govern=governance_pb2.Govern(proposal=raw, approvals=approvals))


def credential(subject: SigningKey, role: int, org: str) -> tx_pb2.TransactionBody:
    """`org` issues `subject` (who agrees to join it) `role`, for 10 s of block time."""
    return tx_pb2.TransactionBody(
        issue_credential=tx_pb2.IssueCredential(
            subject=subject.public_key,
            role=role,  # type: ignore[arg-type]
            organisation=org,
            expires_ms=NOW_MS + 10_000,
            subject_signature=enrolment_signature(subject, CHAIN, org),
        )
    )


def new_org(org_id: str, admin: SigningKey, weight: int = 1) -> governance_pb2.NewOrganisation:
    return governance_pb2.NewOrganisation(
        id=org_id, name=org_id.upper(), admins=[admin.public_key], weight=weight
    )


def test_more_than_two_thirds_of_the_weight_must_approve() -> None:
    chain = Chain()
    newcomer = SigningKey.generate()
    add = proposal("add_organisation", new_org("org-e", newcomer))
    code, message = chain.apply(ADMINS["org-a"], govern(add, "org-a", "org-b"))
    assert code == "NOT_APPROVED"
    assert "weight 2 of 4" in message
    # The same organisation twice, a stranger's signature, a forged one: still two.
    stranger = SigningKey.generate()
    forged = govern(
        add, "org-a", "org-b", "org-a", "org-c", signer_of={**ADMINS, "org-c": stranger}
    )
    assert chain.apply(ADMINS["org-a"], forged)[0] == "NOT_APPROVED"
    assert chain.apply(ADMINS["org-a"], govern(add, "org-a", "org-b", "org-c")) == ("OK", "")
    # The new organisation's admin enrols a key, which may then submit.
    member = SigningKey.generate()
    issue = credential(member, R.ROLE_PAYER, "org-e")
    assert chain.apply(newcomer, issue)[0] == "OK"
    create = tx_pb2.TransactionBody(create_account=tx_pb2.CreateAccount())
    assert chain.apply(member, create)[0] == "OK"
    # Replayed, it is refused; now five organisations weigh in.
    assert chain.apply(ADMINS["org-a"], govern(add, "org-a", "org-b", "org-c"))[0] == (
        "PROPOSAL_USED"
    )
    registry = queries.consortium(chain.state)
    assert (list(registry.organisations), registry.total_weight) == ([*ORGS, "org-e"], 5)


def test_an_expired_or_foreign_proposal_and_a_taken_id_or_admin_are_refused() -> None:
    chain = Chain()
    everyone = ("org-a", "org-b", "org-c", "org-d")
    late = proposal("add_organisation", new_org("org-e", SigningKey.generate()), expires=0)
    assert chain.apply(ADMINS["org-a"], govern(late, *everyone))[0] == "EXPIRED"
    foreign = proposal("add_organisation", new_org("org-e", SigningKey.generate()), chain_id="x")
    assert chain.apply(ADMINS["org-a"], govern(foreign, *everyone))[0] == "NOT_APPROVED"
    taken = proposal("add_organisation", new_org("org-b", SigningKey.generate()))
    assert chain.apply(ADMINS["org-a"], govern(taken, *everyone))[0] == "ORGANISATION_EXISTS"
    poached = proposal("add_organisation", new_org("org-e", ADMINS["org-b"]))
    assert chain.apply(ADMINS["org-a"], govern(poached, *everyone))[0] == "WRONG_ORGANISATION"
    junk = tx_pb2.TransactionBody(govern=governance_pb2.Govern(proposal=b"\xff\xff"))
    assert chain.apply(ADMINS["org-a"], junk)[0] == "MALFORMED"


def test_a_removed_organisations_members_lose_their_roles_at_once() -> None:
    chain = Chain()
    member = SigningKey.generate()
    issue = credential(member, R.ROLE_PAYER, "org-d")
    assert chain.apply(ADMINS["org-d"], issue)[0] == "OK"
    remove = proposal("remove_organisation", "org-d")
    assert chain.apply(ADMINS["org-a"], govern(remove, "org-a", "org-b", "org-c")) == ("OK", "")
    create = tx_pb2.TransactionBody(create_account=tx_pb2.CreateAccount())
    assert chain.apply(member, create)[0] == "NOT_PERMITTED"
    assert chain.apply(ADMINS["org-d"], issue)[0] == "NOT_PERMITTED"
    assert queries.roles(chain.state, member.public_key, NOW_MS) == frozenset()
    # Three organisations remain: two of them are not more than 2/3.
    back = proposal("add_organisation", new_org("org-e", SigningKey.generate()))
    assert chain.apply(ADMINS["org-a"], govern(back, "org-a", "org-b"))[0] == "NOT_APPROVED"
    # An organisation that runs validators stays until validator-set changes exist.
    keep = proposal("remove_organisation", "org-a")
    code, message = chain.apply(ADMINS["org-b"], govern(keep, "org-a", "org-b", "org-c"))
    assert code == "NOT_PERMITTED"
    assert "validator" in message


def test_the_policy_changes_by_proposal() -> None:
    chain = Chain()
    change = governance_pb2.PolicyChange(break_glass_max_ms=600_000, emergency_overrides_deny=2)
    made = proposal("set_policy", change)
    assert chain.apply(ADMINS["org-b"], govern(made, "org-b", "org-c", "org-d")) == ("OK", "")
    policy = queries.policy(chain.state)
    assert (policy.break_glass_max_ms, policy.emergency_overrides_deny) == (600_000, False)
    assert (policy.governance_numerator, policy.governance_denominator) == (2, 3)


def test_no_organisation_is_added_with_the_weight_to_govern_alone() -> None:
    chain = Chain()
    everyone = ("org-a", "org-b", "org-c", "org-d")
    giant = proposal("add_organisation", new_org("org-big", SigningKey.generate(), weight=9))
    code, message = chain.apply(ADMINS["org-a"], govern(giant, *everyone))
    assert code == "NOT_PERMITTED"
    assert "weight" in message
    # Weight 8 of a total 12 is exactly 2/3: not more, so it cannot pass anything alone.
    big = proposal("add_organisation", new_org("org-big", SigningKey.generate(), weight=8))
    assert chain.apply(ADMINS["org-a"], govern(big, *everyone)) == ("OK", "")


def test_approvals_do_not_last_for_ever_and_a_policy_change_is_unambiguous() -> None:
    chain = Chain()
    everyone = ("org-a", "org-b", "org-c", "org-d")
    distant = proposal(
        "add_organisation", new_org("org-e", SigningKey.generate()), expires=2**64 - 1
    )
    code, message = chain.apply(ADMINS["org-a"], govern(distant, *everyone))
    assert code == "NOT_APPROVED"
    assert "expires_height" in message
    key = SigningKey.generate().public_key
    both = proposal(
        "set_policy", governance_pb2.PolicyChange(add_auditors=[key], remove_auditors=[key])
    )
    assert chain.apply(ADMINS["org-a"], govern(both, *everyone))[0] == "MALFORMED"


def test_a_custodian_whose_organisation_was_removed_can_still_erase_its_records() -> None:
    """A patient's erasure must never become impossible (review, issue 16)."""
    chain = Chain()
    custodian = SigningKey.generate()
    issue = credential(custodian, R.ROLE_CUSTODIAN, "org-d")
    assert chain.apply(ADMINS["org-d"], issue)[0] == "OK"
    anchor = tx_pb2.TransactionBody(
        anchor_record=records_pb2.AnchorRecord(
            record_id=b"r" * 16,
            version=1,
            patient=b"p" * 32,
            commitment=b"c" * 32,
            resource_type="Observation",
        )
    )
    assert chain.apply(custodian, anchor)[0] == "OK"
    remove = proposal("remove_organisation", "org-d")
    assert chain.apply(ADMINS["org-a"], govern(remove, "org-a", "org-b", "org-c"))[0] == "OK"
    assert chain.apply(custodian, anchor)[0] == "NOT_PERMITTED"  # no longer a member
    erase = tx_pb2.TransactionBody(
        erase_record=records_pb2.EraseRecord(
            record_id=b"r" * 16, reason=records_pb2.ERASURE_REASON_PATIENT_REQUEST
        )
    )
    assert chain.apply(ADMINS["org-a"], erase)[0] == "NOT_CUSTODIAN"  # only its custodian
    assert chain.apply(custodian, erase) == ("OK", "")


def _organisation(chain: Chain, org: str) -> state_pb2.Organisation:
    found = queries.organisation(chain.state, org)
    assert found is not None
    return found


def test_a_members_ca_rotates_with_an_overlap_that_governance_ends() -> None:
    chain = Chain()
    first, second, third = make_ca("org-b"), make_ca("org-b-2"), make_ca("org-b-3")
    set_ca = governance_pb2.OrganisationCa
    approvers = ("org-a", "org-b", "org-c")

    def rotate(ca: bytes, *, keep: bool, org: str = "org-b") -> tuple[str, str]:
        change = set_ca(organisation=org, tls_ca=ca, keep_previous=keep)
        return chain.apply(
            ADMINS["org-a"], govern(proposal("set_organisation_ca", change), *approvers)
        )

    assert rotate(first.certificate_pem, keep=False) == ("OK", "")
    assert _organisation(chain, "org-b").tls_ca == first.certificate_pem
    assert rotate(second.certificate_pem, keep=True) == ("OK", "")
    rotating = _organisation(chain, "org-b")
    assert (rotating.tls_ca, rotating.previous_tls_ca) == (
        second.certificate_pem,
        first.certificate_pem,
    )
    # Both are trusted meanwhile: certificates from either name org-b.
    membership = Membership([rotating])
    for ca in (first, second):
        node = make_node_certificate(ca, "node", ["127.0.0.1:1"])
        assert membership.organisation_of(node.certificate_pem) == "org-b"
    # Ending the overlap: the same CA again, without keep_previous.
    assert rotate(second.certificate_pem, keep=False) == ("OK", "")
    ended = _organisation(chain, "org-b")
    assert (ended.tls_ca, ended.previous_tls_ca) == (second.certificate_pem, b"")
    old = make_node_certificate(first, "node", ["127.0.0.1:1"])
    assert Membership([ended]).organisation_of(old.certificate_pem) is None
    # Nothing to change, another member's CA (current or previous), an unknown member.
    assert rotate(second.certificate_pem, keep=False)[0] == "NOT_PERMITTED"
    assert rotate(third.certificate_pem, keep=True) == ("OK", "")
    assert rotate(third.certificate_pem, keep=False, org="org-c")[0] == "ORGANISATION_EXISTS"
    assert rotate(second.certificate_pem, keep=False, org="org-c")[0] == "ORGANISATION_EXISTS"
    assert rotate(third.certificate_pem, keep=False, org="org-x")[0] == "UNKNOWN_ORGANISATION"


def test_a_ca_change_that_is_not_one_ca_certificate_is_malformed() -> None:
    chain = Chain()
    node = make_node_certificate(make_ca("org-b"), "node", ["127.0.0.1:1"])
    for pem in (b"", b"not pem", node.certificate_pem):
        change = governance_pb2.OrganisationCa(organisation="org-b", tls_ca=pem)
        code, message = chain.apply(
            ADMINS["org-a"],
            govern(proposal("set_organisation_ca", change), "org-a", "org-b", "org-c"),
        )
        assert code == "MALFORMED"
        assert "set_organisation_ca.tls_ca" in message


def _with_unknown_key_type(pem: bytes) -> bytes:
    """The same CA with its key's algorithm identifier changed to one `cryptography`
    cannot load (id-ecPublicKey, 1.2.840.10045.2.1, becomes ...2.9)."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")
    assert der.count(ec_public_key) == 1
    changed = der.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209"))
    return x509.load_der_x509_certificate(changed).public_bytes(serialization.Encoding.PEM)


def _self_signed(
    original: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    extensions: list[x509.Extension[x509.ExtensionType]],
    *,
    extra_days: int = 0,
) -> bytes:
    """A CA certificate under `original`'s subject and validity (`extra_days` longer),
    for `key`, with `extensions`."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(original.subject)
        .issuer_name(original.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(original.not_valid_before_utc)
        .not_valid_after(original.not_valid_after_utc + datetime.timedelta(days=extra_days))
    )
    for extension in extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _ca_like(victim: bytes, *, copy_key_identifier: bool) -> bytes:
    """A new key under `victim`'s subject (and, if asked, its key identifier)."""
    original = x509.load_pem_x509_certificate(victim)
    key = ec.generate_private_key(ec.SECP256R1())
    identifier = (
        original.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        if copy_key_identifier
        else x509.Extension(
            x509.SubjectKeyIdentifier.oid,
            False,
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
        )
    )
    constraints = original.extensions.get_extension_for_class(x509.BasicConstraints)
    return _self_signed(original, key, [constraints, identifier])


def _set_ca(
    chain: Chain, org: str, pem: bytes, *approvers: str, keep: bool = False
) -> tuple[str, str]:
    change = governance_pb2.OrganisationCa(organisation=org, tls_ca=pem, keep_previous=keep)
    return chain.apply(ADMINS["org-a"], govern(proposal("set_organisation_ca", change), *approvers))


def test_a_ca_that_would_cut_another_member_off_is_refused() -> None:
    """TLS stacks pick an issuer by subject and key identifier: a second CA under a
    member's subject would have that member's chains checked against the wrong key."""
    chain = Chain()
    victim = make_ca("org-b").certificate_pem
    assert _set_ca(chain, "org-b", victim, "org-a", "org-b", "org-c") == ("OK", "")
    for copy_identifier, conflict in ((False, "subject"), (True, "subject")):
        lookalike = _ca_like(victim, copy_key_identifier=copy_identifier)
        code, message = _set_ca(chain, "org-c", lookalike, "org-a", "org-c", "org-d")
        assert code == "ORGANISATION_EXISTS"
        assert f"org-b's CA (same {conflict})" in message
        assert _organisation(chain, "org-c").tls_ca == b""
    # The member's own rotation under its subject is fine with distinct key identifiers,
    # refused when the identifier is copied (the two could not be told apart).
    own = _ca_like(victim, copy_key_identifier=False)
    code, message = _set_ca(chain, "org-b", own, "org-a", "org-b", "org-c", keep=True)
    assert (code, message) == ("OK", "")
    copied = _ca_like(own, copy_key_identifier=True)
    code, message = _set_ca(chain, "org-b", copied, "org-a", "org-b", "org-c", keep=True)
    assert code == "NOT_PERMITTED"
    assert "key identifier" in message


def test_the_organisation_itself_must_approve_a_change_of_its_ca() -> None:
    chain = Chain()
    theirs = make_ca("coalition").certificate_pem
    code, message = _set_ca(chain, "org-b", theirs, "org-a", "org-c", "org-d")
    assert code == "NOT_APPROVED"
    assert "org-b must approve" in message
    assert _organisation(chain, "org-b").tls_ca == b""


def test_a_ca_renewed_with_its_key_replaces_the_old_certificate() -> None:
    chain = Chain()
    first = make_ca("org-b")
    assert _set_ca(chain, "org-b", first.certificate_pem, "org-a", "org-b", "org-c")[0] == "OK"
    renewed = _renew(first)
    assert renewed != first.certificate_pem
    assert _set_ca(chain, "org-b", renewed, "org-a", "org-b", "org-c") == ("OK", "")
    held = _organisation(chain, "org-b")
    assert (held.tls_ca, held.previous_tls_ca) == (renewed, b"")
    # Node certificates the old certificate's key signed still name org-b.
    node = make_node_certificate(first, "node", ["127.0.0.1:1"])
    assert Membership([held]).organisation_of(node.certificate_pem) == "org-b"


def _renew(ca: Identity) -> bytes:
    """`ca` re-issued with its key, for a year longer."""
    original = x509.load_pem_x509_certificate(ca.certificate_pem)
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _self_signed(original, key, list(original.extensions), extra_days=365)


def test_a_ca_whose_key_cannot_be_read_is_malformed_and_trusts_nothing() -> None:
    """It used to pass the checks and then raise inside block application, on every
    node at the same block."""
    chain = Chain()
    unreadable = _with_unknown_key_type(make_ca("org-b").certificate_pem)
    code, message = _set_ca(chain, "org-b", unreadable, "org-a", "org-b", "org-c")
    assert code == "MALFORMED"
    assert "set_organisation_ca.tls_ca" in message
    assert "public key" in message
    # Had one been stored, peers' certificates are simply not its members'.
    held = state_pb2.Organisation(id="org-b", tls_ca=unreadable)
    node = make_node_certificate(make_ca("org-b"), "node", ["127.0.0.1:1"])
    assert Membership([held]).organisation_of(node.certificate_pem) is None


def test_a_genesis_whose_members_share_a_ca_subject_is_refused() -> None:
    validator = SigningKey.from_seed(b"w" * 32)
    first = make_ca("org-a").certificate_pem
    organisations = (
        GenesisOrganisation("org-a", "A", (ADMINS["org-a"].public_key,), tls_ca=first),
        GenesisOrganisation(
            "org-b",
            "B",
            (ADMINS["org-b"].public_key,),
            tls_ca=_ca_like(first, copy_key_identifier=False),
        ),
    )
    genesis = Genesis(
        CHAIN, 0, (GenesisValidator("w", validator.public_key, 1),), organisations=organisations
    )
    with pytest.raises(ValueError, match=r"org-b.*conflicts with 'org-a'.*same subject"):
        genesis.check_organisations()


def _patched_der(pem: bytes, old: bytes, new: bytes) -> bytes:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1
    patched = der.replace(old, new)
    body = base64.encodebytes(patched).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def test_a_ca_the_library_cannot_parse_is_malformed_not_an_exception() -> None:
    """An X.509 version 4 made `cryptography` raise InvalidVersion (not ValueError) from
    the stateless check, in admission and in block application; a serial of zero or
    below, which a coming release refuses at parsing, would judge apart nodes on two
    library versions."""
    ca = make_ca("org-b").certificate_pem
    version_3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2, i.e. v3
    serial = x509.load_pem_x509_certificate(ca).serial_number.to_bytes(20, "big").lstrip(b"\0")
    encoded_serial = bytes([2, len(serial)]) + serial
    negative = bytes([2, len(serial), serial[0] | 0x80]) + serial[1:]
    for pem, reason in (
        (_patched_der(ca, version_3, bytes.fromhex("a003020103")), "unreadable certificate"),
        (_patched_der(ca, encoded_serial, negative), "serial number must be positive"),
    ):
        chain = Chain()
        code, message = _set_ca(chain, "org-b", pem, "org-a", "org-b", "org-c")
        assert code == "MALFORMED", message
        assert reason in message
        with pytest.raises(ValueError, match=reason):
            check_ca_certificate(pem, "tls_ca")


def test_a_subject_that_differs_only_in_case_or_spacing_is_the_same_subject() -> None:
    """TLS stacks compare names canonically (ASCII case and white space folded)."""
    chain = Chain()
    victim = make_ca("acme")
    assert _set_ca(chain, "org-b", victim.certificate_pem, "org-a", "org-b", "org-c")[0] == "OK"
    key = ec.generate_private_key(ec.SECP256R1())
    lookalike_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ACME"),
            x509.NameAttribute(NameOID.COMMON_NAME, "  acme   MEDLEDGER ca "),
        ]
    )
    original = x509.load_pem_x509_certificate(victim.certificate_pem)
    lookalike = (
        x509.CertificateBuilder()
        .subject_name(lookalike_name)
        .issuer_name(lookalike_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(original.not_valid_before_utc)
        .not_valid_after(original.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    code, message = _set_ca(chain, "org-c", lookalike, "org-a", "org-c", "org-d")
    assert code == "ORGANISATION_EXISTS"
    assert "org-b's CA (same subject)" in message
