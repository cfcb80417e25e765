"""`medledger gov propose|sign|show|submit`: consortium governance by proposal files.

One organisation writes a proposal file; it is passed to the others (mail, a shared
drive: it holds no secret), each of whose admins signs it; any member then submits it.
The file is JSON: the proposal's bytes (hex, exactly what is signed) and the approvals
collected so far."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from medledger.app.governance import proposal_of, signed_bytes
from medledger.cli.support import (
    CliError,
    add_connection,
    client_key,
    hex_bytes,
    ledger_client,
    print_message,
)
from medledger.client import TxBuilder
from medledger.crypto import verify
from medledger.errors import Rejected
from medledger.wire.v1 import governance_pb2, tx_pb2

__all__ = ["add_commands"]

EXPIRY_BLOCKS = 10_000
FORMAT = "medledger-governance-proposal/v1"


def _read(path: Path) -> governance_pb2.Govern:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        govern = governance_pb2.Govern(proposal=bytes.fromhex(data["proposal"]))
        for approval in data["approvals"]:
            govern.approvals.add(
                organisation=approval["organisation"],
                admin=bytes.fromhex(approval["admin"]),
                signature=bytes.fromhex(approval["signature"]),
            )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CliError(f"{path}: {error}") from error
    return govern


def _write(path: Path, govern: governance_pb2.Govern) -> None:
    data = {
        "format": FORMAT,
        "proposal": govern.proposal.hex(),
        "approvals": [
            {
                "organisation": a.organisation,
                "admin": a.admin.hex(),
                "signature": a.signature.hex(),
            }
            for a in govern.approvals
        ],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def _summary(govern: governance_pb2.Govern) -> dict[str, Any]:
    proposal = proposal_of(govern)
    message = signed_bytes(proposal.chain_id, govern.proposal)
    return {
        "proposal": MessageToDict(proposal, preserving_proto_field_name=True),
        "approvals": [
            {
                "organisation": a.organisation,
                "admin": a.admin.hex(),
                "signature_verifies": verify(a.admin, message, a.signature),
            }
            for a in govern.approvals
        ],
    }


def cmd_gov_propose(args: argparse.Namespace) -> None:
    proposal = governance_pb2.GovernanceProposal(
        proposal_id=os.urandom(16), description=args.description
    )
    _set_action(args, proposal)
    with ledger_client(args) as client:
        status = client.status()
    proposal.chain_id = status.chain_id
    proposal.expires_height = status.height + args.expires_in
    _write(args.out, governance_pb2.Govern(proposal=proposal.SerializeToString(deterministic=True)))
    print(json.dumps(_summary(_read(args.out)), indent=2))


def _set_organisation_ca(
    args: argparse.Namespace, proposal: governance_pb2.GovernanceProposal
) -> None:
    if args.org_tls_ca is None:
        raise CliError("--set-org-ca needs --org-tls-ca")
    proposal.set_organisation_ca.CopyFrom(
        governance_pb2.OrganisationCa(
            organisation=args.set_org_ca,
            tls_ca=args.org_tls_ca.read_bytes(),
            keep_previous=args.keep_previous_ca,
        )
    )


def _set_action(args: argparse.Namespace, proposal: governance_pb2.GovernanceProposal) -> None:
    validator = args.add_validator or args.remove_validator or args.set_power
    if validator is not None:
        update = proposal.change_validators.updates.add(public_key=validator)
        if args.add_validator:
            if not args.org or not args.address:
                raise CliError("--add-validator needs --org and --address")
            update.organisation, update.address = args.org, args.address
        if not args.remove_validator:
            update.power = args.power
    elif args.add_org:
        if not args.name or not args.admin:
            raise CliError("--add-org needs --name and at least one --admin")
        tls_ca = args.org_tls_ca.read_bytes() if args.org_tls_ca is not None else b""
        proposal.add_organisation.CopyFrom(
            governance_pb2.NewOrganisation(
                id=args.add_org,
                name=args.name,
                admins=args.admin,
                weight=args.weight,
                tls_ca=tls_ca,
            )
        )
    elif args.set_org_ca:
        _set_organisation_ca(args, proposal)
    elif args.remove_org:
        proposal.remove_organisation = args.remove_org
    elif args.break_glass_max_minutes is not None or args.emergency_overrides_deny is not None:
        change = proposal.set_policy
        if args.break_glass_max_minutes is not None:
            change.break_glass_max_ms = args.break_glass_max_minutes * 60_000
        if args.emergency_overrides_deny is not None:
            change.emergency_overrides_deny = 1 if args.emergency_overrides_deny == "yes" else 2
    else:
        raise CliError(
            "say what to change: --add-org, --set-org-ca, --remove-org, --add-validator, "
            "--remove-validator, --set-power or a policy option"
        )


def cmd_gov_sign(args: argparse.Namespace) -> None:
    govern = _read(args.file)
    admin = client_key(args)
    organisation = args.org
    if organisation is None:
        try:
            with ledger_client(args, reader=admin) as client:
                member = client.get_member(admin.public_key).member
        except Rejected as error:
            raise CliError(f"the signing key is no organisation's admin here: {error}") from error
        if not member.admin:
            raise CliError("the signing key administers no organisation; give --org")
        organisation = member.organisation
    proposal = proposal_of(govern)
    # What is signed, shown first: the admin approves the bytes, not the file's name.
    print(json.dumps(_summary(govern)["proposal"], indent=2))
    signature = admin.sign(signed_bytes(proposal.chain_id, govern.proposal))
    kept = [a for a in govern.approvals if a.organisation != organisation]
    del govern.approvals[:]
    govern.approvals.extend(kept)
    govern.approvals.add(organisation=organisation, admin=admin.public_key, signature=signature)
    _write(args.file, govern)
    print(f"{organisation} approves; {len(govern.approvals)} approval(s) in {args.file}")


def cmd_gov_show(args: argparse.Namespace) -> None:
    print(json.dumps(_summary(_read(args.file)), indent=2))


def cmd_gov_submit(args: argparse.Namespace) -> None:
    govern = _read(args.file)
    with ledger_client(args) as client:
        status = client.status()
        builder = TxBuilder(client_key(args), status.chain_id)
        tx = builder.sign(
            tx_pb2.TransactionBody(govern=govern), expiry_height=status.height + EXPIRY_BLOCKS
        )
        receipt = client.submit(tx, wait=True)
    print_message(receipt)
    if receipt.code != tx_pb2.RESULT_CODE_OK:
        raise CliError(f"the proposal did not take effect: {receipt.message}")


def add_commands(commands: Any) -> None:
    gov = commands.add_parser("gov", help="consortium governance by proposal files")
    actions = gov.add_subparsers(dest="action", required=True)
    propose = actions.add_parser("propose", help="write a proposal file for others to sign")
    propose.add_argument("--out", type=Path, required=True)
    propose.add_argument("--description", default="", help="why (no PHI); at most 512 bytes")
    propose.add_argument("--add-org", help="a new organisation's id")
    propose.add_argument("--name", help="with --add-org: its name")
    propose.add_argument(
        "--admin", type=hex_bytes, action="append", help="with --add-org: an admin key (hex)"
    )
    propose.add_argument("--weight", type=int, default=1, help="with --add-org")
    propose.add_argument(
        "--org-tls-ca",
        type=Path,
        help="with --add-org or --set-org-ca: its CA certificate (PEM); its nodes' "
        "certificates chain to it",
    )
    propose.add_argument("--set-org-ca", metavar="ORG", help="rotate a member's CA to --org-tls-ca")
    propose.add_argument(
        "--keep-previous-ca",
        action="store_true",
        help="with --set-org-ca: trust the CA it held so far too, until a later "
        "--set-org-ca with the same CA and without this flag",
    )
    propose.add_argument("--remove-org", help="an organisation's id")
    propose.add_argument("--add-validator", type=hex_bytes, help="a validator key (hex) to add")
    propose.add_argument("--org", help="with --add-validator: the organisation that runs it")
    propose.add_argument(
        "--address", help="with --add-validator: host:port of its node, for the other validators"
    )
    propose.add_argument(
        "--remove-validator", type=hex_bytes, help="a validator key (hex) to remove"
    )
    propose.add_argument("--set-power", type=hex_bytes, help="a validator key (hex) whose power")
    propose.add_argument(
        "--power", type=int, default=10, help="with --add-validator or --set-power (default 10)"
    )
    propose.add_argument("--break-glass-max-minutes", type=int)
    propose.add_argument("--emergency-overrides-deny", choices=["yes", "no"])
    propose.add_argument(
        "--expires-in", type=int, default=EXPIRY_BLOCKS, help="blocks it may wait for approvals"
    )
    add_connection(propose, key=False)
    propose.set_defaults(run=cmd_gov_propose)
    sign = actions.add_parser("sign", help="approve a proposal file as an organisation's admin")
    sign.add_argument("file", type=Path)
    sign.add_argument("--org", help="the organisation approving (default: the key's)")
    add_connection(sign)
    sign.set_defaults(run=cmd_gov_sign)
    show = actions.add_parser("show", help="print a proposal file and check its signatures")
    show.add_argument("file", type=Path)
    show.set_defaults(run=cmd_gov_show)
    submit = actions.add_parser("submit", help="submit an approved proposal")
    submit.add_argument("file", type=Path)
    add_connection(submit)
    submit.set_defaults(run=cmd_gov_submit)
