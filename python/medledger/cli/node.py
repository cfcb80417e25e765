"""`medledger init`, `node start|join`, `keys new|show` and `verify-chain`: making a
node's home, running it, and checking its chain offline."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.progress import Progress

from medledger.chain import ChainStore
from medledger.chain.verify import verify_chain
from medledger.cli.support import (
    CliError,
    Subcommands,
)
from medledger.config import DEFAULT_LISTEN, Home
from medledger.consensus.guard import GuardFileError
from medledger.crypto import SigningKey
from medledger.genesis import DEFAULT_MIN_CHALLENGE_BLOCKS, Genesis
from medledger.keys import load_key, save_key
from medledger.ops.logs import configure_logging
from medledger.run.homes import DEFAULT_FUND_MICROS, init_home, init_network, join_network
from medledger.run.node import run_node
from medledger.transport.certs import CertificateError, load_identity

__all__ = ["add_commands"]


def cmd_init(args: argparse.Namespace) -> None:
    try:
        _init(args)
    except FileExistsError as error:
        raise CliError(str(error)) from error


def _init(args: argparse.Namespace) -> None:
    if args.validators > 1:
        genesis = init_network(
            args.home,
            args.chain_id,
            args.validators,
            args.base_port,
            args.fund_micros,
            min_challenge_blocks=args.min_challenge_blocks,
            insecure=args.insecure,
        )
        print(f"initialised {args.validators} validators of {genesis.chain_id} under {args.home}")
        print(f"start them with: medledger devnet up --home {args.home}")
        return
    home = Home(args.home)
    genesis = init_home(
        home,
        args.chain_id,
        args.listen,
        args.fund_micros,
        min_challenge_blocks=args.min_challenge_blocks,
        insecure=args.insecure,
    )
    print(f"initialised {home.root} for chain {genesis.chain_id}")
    print(f"  validator key  {home.validator_key}")
    print(f"  client key     {home.keys_dir / 'client.json'} (funded {args.fund_micros} micros)")
    print(f"start it with:   medledger node start --home {home.root}")


def cmd_node_start(args: argparse.Namespace) -> None:
    configure_logging(args.log_format)
    home = Home(args.home)
    try:
        home.load_config()
    except (OSError, ValueError) as error:
        raise CliError(f"{home.config}: {error}") from None
    try:
        failure = asyncio.run(run_node(home, args.listen, insecure=args.insecure))
    except (GuardFileError, CertificateError) as error:
        raise CliError(str(error)) from None
    if failure is not None:
        raise CliError(f"node stopped: {failure}")


def cmd_node_join(args: argparse.Namespace) -> None:
    try:
        genesis = Genesis.load(args.genesis)
        ca = None
        if args.org_ca_dir is not None:
            ca = load_identity(args.org_ca_dir / "ca.key", args.org_ca_dir / "ca.pem")
        key = join_network(
            Home(args.home),
            genesis,
            args.peers.split(","),
            listen=args.listen,
            peer_listen=args.peer_listen,
            organisation_ca=ca,
            insecure=args.insecure,
        )
    except (OSError, ValueError, CertificateError) as error:
        raise CliError(str(error)) from None
    print(f"initialised {args.home} to follow {genesis.chain_id}")
    print(f"  validator key  {key.public_key.hex()}")
    print(f"start it with:   medledger node start --home {args.home}")
    print(
        "then ask the consortium to add it:  medledger gov propose --add-validator "
        f"{key.public_key.hex()} --org ORG --address {args.peer_listen} --out FILE"
    )


def cmd_keys_new(args: argparse.Namespace) -> None:
    key = SigningKey.generate()
    save_key(key, args.file)
    print(key.public_key.hex())


def cmd_keys_show(args: argparse.Namespace) -> None:
    print(load_key(args.file).public_key.hex())


def cmd_verify_chain(args: argparse.Namespace) -> None:
    home = Home(args.home)
    genesis = Genesis.load(home.genesis)
    store = ChainStore(home.data, home.load_config().lmdb_map_size_bytes)
    try:
        total = store.head.height
        with Progress(transient=True) as progress:
            task = progress.add_task("verifying blocks", total=total)
            report = verify_chain(store, genesis, lambda _: progress.advance(task))
    finally:
        store.close()
    if report.ok:
        print(f"chain OK: {report.height} blocks, {report.transactions} transactions verified")
    else:
        print(f"chain BROKEN at height {report.broken_height}: {report.reason}")
        raise SystemExit(2)


def add_commands(commands: Subcommands) -> None:
    init = commands.add_parser("init", help="create a node home: keys, genesis, config")
    init.add_argument("--home", type=Path, required=True, help="directory to create")
    init.add_argument("--chain-id", required=True, help="network name, e.g. city-hospitals-1")
    init.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"gRPC address (default {DEFAULT_LISTEN})"
    )
    init.add_argument(
        "--fund-micros",
        type=int,
        default=DEFAULT_FUND_MICROS,
        help="genesis balance of the client key",
    )
    init.add_argument(
        "--validators", type=int, default=1, help="with N > 1: homes node0..nodeN-1, one genesis"
    )
    init.add_argument("--base-port", type=int, default=7070, help="first port of a network")
    init.add_argument(
        "--min-challenge-blocks",
        type=int,
        default=DEFAULT_MIN_CHALLENGE_BLOCKS,
        help="shortest challenge window a channel may have (genesis)",
    )
    init.add_argument(
        "--insecure", action="store_true", help="configure clear text (development only)"
    )
    init.set_defaults(run=cmd_init)

    node = commands.add_parser("node", help="run a node").add_subparsers(
        dest="action", required=True
    )
    start = node.add_parser("start", help="serve the ledger over gRPC until SIGINT/SIGTERM")
    start.add_argument("--home", type=Path, required=True)
    start.add_argument("--listen", help="override the configured address (host:port)")
    start.add_argument(
        "--insecure", action="store_true", help="serve clear text (development only; logged)"
    )
    start.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines as text, or one JSON object per line (time, level, logger, message)",
    )
    start.set_defaults(run=cmd_node_start)
    join = node.add_parser(
        "join", help="create a home that follows a running network, to be added as a validator"
    )
    join.add_argument("--home", type=Path, required=True, help="directory to create")
    join.add_argument("--genesis", type=Path, required=True, help="the network's genesis.json")
    join.add_argument(
        "--peers",
        required=True,
        help="the genesis validators' addresses, comma-separated, in genesis order",
    )
    join.add_argument("--listen", required=True, help="this node's client API (host:port)")
    join.add_argument("--peer-listen", required=True, help="this node's PeerService (host:port)")
    join.add_argument(
        "--org-ca-dir",
        type=Path,
        help="the organisation's CA (ca.key, ca.pem) to issue this node's TLS certificate; "
        "without it put your own in HOME/tls (node.key, node.pem)",
    )
    join.add_argument("--insecure", action="store_true", help="clear text (development only)")
    join.set_defaults(run=cmd_node_join)

    keys = commands.add_parser("keys", help="Ed25519 key files").add_subparsers(
        dest="action", required=True
    )
    new = keys.add_parser("new", help="generate a key into a new file (mode 0600)")
    new.add_argument("file", type=Path)
    new.set_defaults(run=cmd_keys_new)
    show = keys.add_parser("show", help="print a key file's public key")
    show.add_argument("file", type=Path)
    show.set_defaults(run=cmd_keys_show)

    verify = commands.add_parser("verify-chain", help="re-check every block and app hash from LMDB")
    verify.add_argument("--home", type=Path, required=True)
    verify.set_defaults(run=cmd_verify_chain)
