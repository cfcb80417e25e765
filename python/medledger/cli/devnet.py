"""`medledger devnet up|down` and `medledger demo`: a local network of validator
processes, and the README's main job on one."""

from __future__ import annotations

import argparse
from pathlib import Path

from medledger.cli.support import (
    CliError,
    Subcommands,
)
from medledger.demo import DemoFailed, run_demo
from medledger.run.devnet import devnet_down, devnet_up
from medledger.run.homes import DEFAULT_FUND_MICROS, init_network

__all__ = ["add_commands"]


def cmd_devnet_up(args: argparse.Namespace) -> None:
    if not any(args.home.glob("node*/config.json")):
        init_network(
            args.home,
            args.chain_id,
            args.validators,
            args.base_port,
            DEFAULT_FUND_MICROS,
            insecure=args.insecure,
        )
    for node in devnet_up(args.home):
        print(f"{node.home.name} listening on {node.address} (pid {node.process.pid})")
    print(f"stop with: medledger devnet down --home {args.home}")


def cmd_devnet_down(args: argparse.Namespace) -> None:
    print(f"stopped {devnet_down(args.home)} node(s)")


def cmd_demo(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--validators", args.validators),
        ("--transfers", args.transfers),
        ("--channel-payments", args.channel_payments),
    ):
        if value < 1:
            raise CliError(f"{flag} must be at least 1")
    try:
        run_demo(
            args.home,
            args.validators,
            transfers=args.transfers,
            channel_payments=args.channel_payments,
            insecure=args.insecure,
        )
    except DemoFailed as failed:
        raise CliError(f"demo failed: {failed}") from None


def add_commands(commands: Subcommands) -> None:
    devnet = commands.add_parser("devnet", help="a local network of validator processes")
    devnet_actions = devnet.add_subparsers(dest="action", required=True)
    up = devnet_actions.add_parser("up", help="start (first initialising) a local network")
    up.add_argument("--home", type=Path, required=True)
    up.add_argument("--validators", type=int, default=4)
    up.add_argument("--chain-id", default="devnet-1")
    up.add_argument("--base-port", type=int, default=7070)
    up.add_argument(
        "--insecure", action="store_true", help="a new network in clear text (development only)"
    )
    up.set_defaults(run=cmd_devnet_up)
    down = devnet_actions.add_parser("down", help="stop the network `devnet up` started")
    down.add_argument("--home", type=Path, required=True)
    down.set_defaults(run=cmd_devnet_down)

    demo = commands.add_parser("demo", help="start a network and run a demonstration workload")
    demo.add_argument("--home", type=Path, help="keep the node homes here (default: a temp dir)")
    demo.add_argument("--validators", type=int, default=4, help="validator processes (default 4)")
    demo.add_argument(
        "--insecure", action="store_true", help="nodes in clear text (development only)"
    )
    demo.add_argument(
        "--transfers", type=int, default=20_000, help="streamed micropayments on the ledger"
    )
    demo.add_argument(
        "--channel-payments", type=int, default=5_000, help="billing lines paid through the hub"
    )
    demo.set_defaults(run=cmd_demo)
