"""`medledger tx` and `medledger query`: signing and submitting transactions, and
reading accounts, transactions (with their proofs) and blocks from a node."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import Message

from medledger.cli.support import (
    EXPIRY_BLOCKS,
    CliError,
    Subcommands,
    client_key,
    hex_bytes,
    ledger_client,
    print_message,
)
from medledger.client import TxBuilder, verify_transaction_proof
from medledger.config import DEFAULT_LISTEN
from medledger.genesis import Genesis
from medledger.wire.v1 import tx_pb2

__all__ = ["add_commands"]


def submit_kind(args: argparse.Namespace, build: Callable[..., Message]) -> None:
    with ledger_client(args) as client:
        status = client.status()
        builder = TxBuilder(client_key(args), status.chain_id)
        tx = build(builder, expiry_height=status.height + EXPIRY_BLOCKS)
        receipt = client.submit(tx, wait=not args.no_wait)  # type: ignore[arg-type]
    print_message(receipt)


def cmd_tx_transfer(args: argparse.Namespace) -> None:
    submit_kind(
        args,
        lambda builder, expiry_height: builder.transfer(
            to=args.to,
            amount_micros=args.amount,
            reference=args.reference,
            expiry_height=expiry_height,
        ),
    )


def cmd_tx_create_account(args: argparse.Namespace) -> None:
    submit_kind(
        args, lambda builder, expiry_height: builder.create_account(expiry_height=expiry_height)
    )


def cmd_tx_register(args: argparse.Namespace) -> None:
    kind = tx_pb2.ParticipantKind.Value(f"PARTICIPANT_KIND_{args.kind.upper()}")
    role = tx_pb2.Role.Value(f"ROLE_{args.role.upper().replace('-', '_')}")
    submit_kind(
        args,
        lambda builder, expiry_height: builder.register_participant(
            kind=kind, role=role, display_name=args.name, expiry_height=expiry_height
        ),
    )


def cmd_query(args: argparse.Namespace) -> None:
    # A signed reader gets what its key is entitled to: a transaction's body and proof
    # if it signed it (or is an auditor or validator), whole blocks if it is one of those.
    reader = client_key(args) if args.key or args.home else None
    with ledger_client(args, reader=reader) as client:
        if args.what == "status":
            print_message(client.status())
        elif args.what == "account":
            print_message(client.get_account(hex_bytes(args.id)))
        elif args.what == "block":
            print_message(client.get_block(int(args.id or 0)))
        else:
            response = client.get_transaction(tx_id=hex_bytes(args.id))
            print_message(response)
            if args.genesis and not response.HasField("proof"):
                raise CliError(
                    "the node serves a transaction's proof only to its signer, an auditor or "
                    "a validator: give --key or --home"
                )
            if args.genesis:
                genesis = Genesis.load(args.genesis)
                block_hash = verify_transaction_proof(
                    response, genesis.validator_set(), genesis.chain_id
                )
                print(f"proof verified against {args.genesis}: block {block_hash.hex()}")


def connection(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--node", help=f"node address (default: the home's, else {DEFAULT_LISTEN})")
    sub.add_argument("--home", type=Path, help="a node home, for its address and client key")


def add_commands(commands: Subcommands) -> None:
    tx = commands.add_parser("tx", help="sign and submit transactions").add_subparsers(
        dest="action", required=True
    )
    transfer = tx.add_parser("transfer", help="move micro-units to another account")
    transfer.add_argument(
        "--to", type=hex_bytes, required=True, help="receiving owner's public key (hex)"
    )
    transfer.add_argument("--amount", type=int, required=True, help="amount in micro-units")
    transfer.add_argument("--reference", default="", help="invoice or claim number")
    create = tx.add_parser("create-account", help="open an account owned by the signing key")
    register = tx.add_parser("register", help="register the signing key as a participant")
    register.add_argument("--kind", choices=["organisation", "person"], required=True)
    roles = [r.removeprefix("ROLE_").lower().replace("_", "-") for r in tx_pb2.Role.keys()[1:]]
    register.add_argument("--role", choices=roles, required=True)
    register.add_argument("--name", required=True, help="organisation name or pseudonym (no PHI)")
    for sub, run in (
        (transfer, cmd_tx_transfer),
        (create, cmd_tx_create_account),
        (register, cmd_tx_register),
    ):
        connection(sub)
        sub.add_argument("--key", type=Path, help="signing key file")
        sub.add_argument(
            "--no-wait", action="store_true", help="return once admitted, not committed"
        )
        sub.set_defaults(run=run)

    query = commands.add_parser("query", help="read from a node")
    query.add_argument("what", choices=["status", "account", "tx", "block"])
    query.add_argument("id", nargs="?", help="account key or tx id (hex), or block height")
    query.add_argument(
        "--genesis", type=Path, help="with `tx`: verify the proof against this genesis"
    )
    query.add_argument("--key", type=Path, help="sign the read with this key (see the README)")
    connection(query)
    query.set_defaults(run=cmd_query)
