"""What every `medledger` subcommand module shares: the user-error type, hex arguments,
and finding the node address and signing key from `--node`, `--home` and `--key`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TypeAlias

from google.protobuf import json_format
from google.protobuf.message import Message

from medledger.client import LedgerClient
from medledger.config import DEFAULT_LISTEN, Home
from medledger.crypto import SigningKey
from medledger.keys import load_key
from medledger.transport.certs import CertificateError
from medledger.transport.credentials import ClientTls

__all__ = [
    "EXPIRY_BLOCKS",
    "TLS_CA_ENV",
    "CliError",
    "Subcommands",
    "add_connection",
    "client_key",
    "client_tls",
    "hex_bytes",
    "ledger_client",
    "node_address",
    "print_message",
]

EXPIRY_BLOCKS = 100
"""How many blocks a transaction the CLI submits stays valid for."""

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What `add_subparsers` returns: each command module adds its commands to it."""

TLS_CA_ENV = "MEDLEDGER_TLS_CA"
"""The consortium's CA bundle, when neither --tls-ca nor --home names one."""


def print_message(message: Message) -> None:
    print(json.dumps(json_format.MessageToDict(message), indent=2))


class CliError(Exception):
    """A user error: printed without a traceback, exit status 1."""


def hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from error


def node_address(args: argparse.Namespace) -> str:
    if args.node:
        return str(args.node)
    if args.home:
        return Home(args.home).load_config().listen
    return DEFAULT_LISTEN


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    """How to reach the node: TLS verified against the consortium's CA bundle (from
    --tls-ca, the home's `tls/consortium-ca.pem`, or $MEDLEDGER_TLS_CA), or clear text
    with --insecure (or a home whose node runs insecure)."""
    # grpc is imported only by commands that talk to a node.

    if getattr(args, "insecure", False):
        return None
    try:
        if getattr(args, "tls_ca", None):
            return ClientTls.from_file(args.tls_ca)
        if getattr(args, "home", None):
            home = Home(args.home)
            # A home run in clear text speaks clear text to its own node only.
            if home.load_config().insecure and not getattr(args, "node", None):
                return None
            if home.consortium_ca.exists():
                return ClientTls.from_file(home.consortium_ca)
        if os.environ.get(TLS_CA_ENV):
            return ClientTls.from_file(Path(os.environ[TLS_CA_ENV]))
    except (OSError, CertificateError) as error:
        raise CliError(f"the consortium's CA bundle: {error}") from None
    raise CliError(
        f"give --tls-ca FILE (the consortium's CA bundle), --home DIR or ${TLS_CA_ENV}; "
        "or --insecure for a node run --insecure"
    )


def ledger_client(args: argparse.Namespace, reader: SigningKey | None = None) -> LedgerClient:
    return LedgerClient(node_address(args), reader=reader, tls=client_tls(args))


def client_key(args: argparse.Namespace) -> SigningKey:
    if getattr(args, "key", None):
        return load_key(args.key)
    if args.home:
        return load_key(Home(args.home).keys_dir / "client.json")
    raise CliError("give --key FILE (or --home DIR to use its client key)")


def add_connection(sub: argparse.ArgumentParser, *, key: bool = True) -> None:
    """The --node, --home (and --key) options of a command that talks to a node."""
    sub.add_argument("--node", help="node address HOST:PORT (default: the home's)")
    sub.add_argument("--home", type=Path, help="a node home: its address, client key and CA bundle")
    sub.add_argument(
        "--tls-ca", type=Path, help=f"the consortium's CA bundle (PEM; default ${TLS_CA_ENV})"
    )
    sub.add_argument("--insecure", action="store_true", help="clear text, to a node run --insecure")
    if key:
        sub.add_argument("--key", type=Path, help="signing key file")
