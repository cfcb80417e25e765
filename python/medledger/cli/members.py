"""`medledger member issue|revoke|show`: an organisation's admins issue roles to their
people's and systems' keys, revoke them, and anyone reads a key's enrolment."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from medledger.cli.support import (
    CliError,
    add_connection,
    client_key,
    hex_bytes,
    ledger_client,
    print_message,
)
from medledger.client import TxBuilder
from medledger.client.members import enrolment_signature
from medledger.errors import Rejected
from medledger.wire.v1 import tx_pb2

__all__ = ["add_commands"]

DAY_MS = 24 * 60 * 60 * 1000
EXPIRY_BLOCKS = 1_000
ROLES = {
    name.removeprefix("ROLE_").lower().replace("_", "-"): value
    for name, value in tx_pb2.Role.items()
    if value != tx_pb2.ROLE_UNSPECIFIED
}


def _role_name(role: int) -> str:
    return tx_pb2.Role.Name(role).removeprefix("ROLE_").lower().replace("_", "-")  # type: ignore[arg-type]


def _submit(args: argparse.Namespace, body_of: Any) -> None:
    admin = client_key(args)
    with ledger_client(args, reader=admin) as client:
        status = client.status()
        builder = TxBuilder(admin, status.chain_id)
        tx = body_of(client, builder, admin, status.height + EXPIRY_BLOCKS)
        print_message(client.submit(tx, wait=True))


def _own_organisation(client: Any, admin: Any) -> str:
    """The organisation the signing key administers, as the ledger knows it."""

    try:
        member = client.get_member(admin.public_key).member
    except Rejected:
        member = None
    if member is None or not member.admin:
        raise CliError("the signing key administers no organisation; give --org")
    return str(member.organisation)


def cmd_member_issue(args: argparse.Namespace) -> None:
    def build(client: Any, builder: Any, admin: Any, expiry_height: int) -> Any:
        return builder.issue_credential(
            subject=args.subject,
            role=ROLES[args.role],
            organisation=args.org or _own_organisation(client, admin),
            expires_ms=int(time.time() * 1000) + args.days * DAY_MS,
            expiry_height=expiry_height,
            subject_signature=args.subject_signature or b"",
        )

    _submit(args, build)


def cmd_member_agree(args: argparse.Namespace) -> None:
    """The key's agreement to be enrolled by an organisation (its first role needs it)."""

    with ledger_client(args) as client:
        chain_id = client.status().chain_id
    print(enrolment_signature(client_key(args), chain_id, args.org).hex())


def cmd_member_revoke(args: argparse.Namespace) -> None:
    def build(_client: Any, builder: Any, _admin: Any, expiry_height: int) -> Any:
        return builder.revoke_credential(
            subject=args.subject, role=ROLES[args.role], expiry_height=expiry_height
        )

    _submit(args, build)


def cmd_member_show(args: argparse.Namespace) -> None:
    with ledger_client(args, reader=client_key(args)) as client:
        response = client.get_member(args.public_key)
    member = response.member
    print(
        json.dumps(
            {
                "public_key": member.public_key.hex(),
                "organisation": member.organisation,
                "admin": member.admin,
                "active_roles": [_role_name(r) for r in response.active_roles],
                "roles": [
                    {
                        "role": _role_name(grant.role),
                        "expires_ms": grant.expires_ms,
                        "issued_height": grant.issued_height,
                        "issuer": grant.issuer.hex(),
                        "revoked_height": grant.revoked_height,
                    }
                    for grant in member.roles
                ],
            },
            indent=2,
        )
    )


def add_commands(commands: Any) -> None:
    member = commands.add_parser("member", help="enrol keys: roles issued by organisations")
    actions = member.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="as an organisation's admin, issue a role to a key")
    issue.add_argument("--subject", type=hex_bytes, required=True, help="public key (hex)")
    issue.add_argument("--role", choices=sorted(ROLES), required=True)
    issue.add_argument("--org", help="organisation id (default: the one the key administers)")
    issue.add_argument("--days", type=int, default=365, help="valid for this many days")
    issue.add_argument(
        "--subject-signature",
        type=hex_bytes,
        help="a key no organisation enrolled yet: its `member agree` output",
    )
    add_connection(issue)
    issue.set_defaults(run=cmd_member_issue)
    agree = actions.add_parser(
        "agree", help="as a key, agree to be enrolled by an organisation (prints a signature)"
    )
    agree.add_argument("--org", required=True, help="the organisation's id")
    add_connection(agree)
    agree.set_defaults(run=cmd_member_agree)
    revoke = actions.add_parser("revoke", help="as an admin of its organisation, revoke a role")
    revoke.add_argument("--subject", type=hex_bytes, required=True)
    revoke.add_argument("--role", choices=sorted(ROLES), required=True)
    add_connection(revoke)
    revoke.set_defaults(run=cmd_member_revoke)
    show = actions.add_parser(
        "show", help="a key's organisation and roles (as the key, an admin or an auditor)"
    )
    show.add_argument("public_key", type=hex_bytes)
    add_connection(show)
    show.set_defaults(run=cmd_member_show)
