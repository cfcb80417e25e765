"""The `medledger` command: one parser made of each command group's own.

medledger init --home DIR --chain-id ID     create keys, genesis and config
medledger node start --home DIR             run a node (127.0.0.1 by default)
medledger keys new FILE | keys show FILE    manage key files (mode 0600)
medledger tx transfer --to KEY --amount N   sign and submit a transfer
medledger query status|account|tx|block     read from a node
medledger verify-chain --home DIR           re-check every block from LMDB
medledger demo                              the README's main job
medledger bench node                        committed tx/s and latency of one node
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medledger import __version__
from medledger.cli import bench, channels, devnet, governance, ledger, members, node, records
from medledger.cli.support import CliError
from medledger.errors import Rejected
from medledger.keys import KeyFileError

__all__ = ["build_parser", "main"]

COMMAND_GROUPS = (node, ledger, devnet, members, governance, records, channels, bench)
"""In the order `medledger --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medledger",
        description="A permissioned, Byzantine-fault-tolerant ledger for healthcare networks.",
    )
    parser.add_argument("--version", action="version", version=f"medledger {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CliError, KeyFileError) as error:
        print(f"medledger: {error}", file=sys.stderr)
        return 1
    except Rejected as rejected:
        print(f"medledger: refused ({rejected.status}): {rejected}", file=sys.stderr)
        return 1
    return 0
