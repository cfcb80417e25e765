"""What every `medledger` subcommand module shares: the user-error type, hex arguments,
and finding the node address and signing key from `--node`, `--home` and `--key`."""

from __future__ import annotations

import argparse
from pathlib import Path

from medledger.config import DEFAULT_LISTEN, Home
from medledger.crypto import SigningKey
from medledger.keys import load_key

__all__ = ["CliError", "add_connection", "client_key", "hex_bytes", "node_address"]


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


def client_key(args: argparse.Namespace) -> SigningKey:
    if getattr(args, "key", None):
        return load_key(args.key)
    if args.home:
        return load_key(Home(args.home).keys_dir / "client.json")
    raise CliError("give --key FILE (or --home DIR to use its client key)")


def add_connection(sub: argparse.ArgumentParser, *, key: bool = True) -> None:
    """The --node, --home (and --key) options of a command that talks to a node."""
    sub.add_argument("--node", help="node address HOST:PORT (default: the home's)")
    sub.add_argument("--home", type=Path, help="a node home: its address and client key")
    if key:
        sub.add_argument("--key", type=Path, help="signing key file")
