"""The `medledger` command line.

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
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import Message

from medledger import __version__
from medledger.cli_channels import add_commands as add_channel_commands
from medledger.cli_governance import add_commands as add_governance_commands
from medledger.cli_members import add_commands as add_member_commands
from medledger.cli_records import add_commands as add_record_commands
from medledger.cli_support import CliError, client_key, hex_bytes, ledger_client
from medledger.config import DEFAULT_LISTEN, Home, NodeConfig
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.genesis import (
    DEFAULT_MIN_CHALLENGE_BLOCKS,
    Allocation,
    Genesis,
    GenesisValidator,
    founding_organisation,
)
from medledger.keys import KeyFileError, load_key, save_key
from medledger.wire.v1 import tx_pb2

__all__ = ["main"]

DEFAULT_FUND_MICROS = 10**15
EXPIRY_BLOCKS = 100


def print_message(message: Message) -> None:
    print(json.dumps(json_format.MessageToDict(message), indent=2))


# ------------------------------------------------------------------------ commands


def init_home(
    home: Home,
    chain_id: str,
    listen: str = DEFAULT_LISTEN,
    fund_micros: int = DEFAULT_FUND_MICROS,
    *,
    extra_allocations: Sequence[Allocation] = (),
    min_challenge_blocks: int = DEFAULT_MIN_CHALLENGE_BLOCKS,
    insecure: bool = False,
) -> Genesis:
    """Creates a one-validator home: keys (mode 0600), genesis with a funded client
    account (and `extra_allocations`), one organisation (`org-0`, whose admin is the
    client key and which runs the validator) with its CA, the node's TLS certificate,
    and config (`insecure`: clear text)."""
    from medledger.transport.certs import make_ca  # noqa: PLC0415
    from medledger.transport.files import (  # noqa: PLC0415
        issue_node_certificate,
        save_ca,
        write_bundle,
    )

    if home.config.exists():
        raise CliError(f"{home.root} is already initialised")
    home.root.mkdir(parents=True, exist_ok=True)
    validator, client = SigningKey.generate(), SigningKey.generate()
    save_key(validator, home.validator_key)
    save_key(client, home.keys_dir / "client.json")
    ca = make_ca("org-0")
    save_ca(home, ca)
    issue_node_certificate(home, ca, "node0", [listen])
    write_bundle(home.consortium_ca, [ca.certificate_pem])
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=int(time.time() * 1000),
        validators=(GenesisValidator("validator-0", validator.public_key, 10),),
        allocations=(Allocation(client.public_key, fund_micros), *extra_allocations),
        min_challenge_blocks=min_challenge_blocks,
        organisations=(founding_organisation(0, client, validator, ca.certificate_pem),),
    )
    genesis.validator_set()
    home.genesis.write_text(genesis.to_json())
    home.config.write_text(NodeConfig(listen=listen, insecure=insecure).to_json())
    return genesis


def cmd_init(args: argparse.Namespace) -> None:
    if args.validators > 1:
        from medledger.network import init_network  # noqa: PLC0415

        try:
            genesis = init_network(
                args.home,
                args.chain_id,
                args.validators,
                args.base_port,
                args.fund_micros,
                min_challenge_blocks=args.min_challenge_blocks,
                insecure=args.insecure,
            )
        except FileExistsError as error:
            raise CliError(str(error)) from error
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
    from medledger.consensus.guard import GuardFileError  # noqa: PLC0415
    from medledger.node.process import run_node  # noqa: PLC0415 - grpc only when serving
    from medledger.transport.certs import CertificateError  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
    from medledger.network import join_network  # noqa: PLC0415
    from medledger.transport.certs import CertificateError, load_identity  # noqa: PLC0415

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


def submit_kind(args: argparse.Namespace, build: Callable[..., Message]) -> None:
    from medledger.client import TxBuilder  # noqa: PLC0415

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
    from medledger.client import verify_transaction_proof  # noqa: PLC0415

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


def cmd_verify_chain(args: argparse.Namespace) -> None:
    from rich.progress import Progress  # noqa: PLC0415

    from medledger.chain import ChainStore  # noqa: PLC0415
    from medledger.chain.verify import verify_chain  # noqa: PLC0415

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


def cmd_devnet_up(args: argparse.Namespace) -> None:
    from medledger.network import devnet_up, init_network  # noqa: PLC0415

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
    from medledger.network import devnet_down  # noqa: PLC0415

    print(f"stopped {devnet_down(args.home)} node(s)")


def cmd_demo(args: argparse.Namespace) -> None:
    from medledger.demo import DemoFailed, run_demo  # noqa: PLC0415

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


def cmd_bench_node(args: argparse.Namespace) -> None:
    from medledger.loadgen import run_node_bench  # noqa: PLC0415

    run_node_bench(
        txs=args.txs,
        batch=args.batch,
        streams=args.streams,
        json_path=args.json,
        home=args.home,
        validators=getattr(args, "validators", 1),
        window=args.window,
        payers=args.payers,
        insecure=args.insecure,
    )


def cmd_bench_records(args: argparse.Namespace) -> None:
    from medledger.records_bench import run_records_bench  # noqa: PLC0415

    run_records_bench(
        anchors=args.anchors,
        fetches=args.fetches,
        transfers=args.transfers,
        json_path=args.json,
        insecure=args.insecure,
    )


def cmd_bench_channels(args: argparse.Namespace) -> None:
    from medledger.channels_bench import run_channels_bench  # noqa: PLC0415

    run_channels_bench(
        payments=args.payments,
        channels=args.channels,
        batch=args.batch,
        hub_rate=args.hub_rate or None,
        json_path=args.json,
        insecure=args.insecure,
    )


# ----------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat table of commands
    parser = argparse.ArgumentParser(
        prog="medledger",
        description="A permissioned, Byzantine-fault-tolerant ledger for healthcare networks.",
    )
    parser.add_argument("--version", action="version", version=f"medledger {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    def connection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--node", help=f"node address (default: the home's, else {DEFAULT_LISTEN})"
        )
        sub.add_argument("--home", type=Path, help="a node home, for its address and client key")

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

    verify = commands.add_parser("verify-chain", help="re-check every block and app hash from LMDB")
    verify.add_argument("--home", type=Path, required=True)
    verify.set_defaults(run=cmd_verify_chain)

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

    add_member_commands(commands)
    add_governance_commands(commands)
    add_record_commands(commands)
    add_channel_commands(commands)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(
        dest="action", required=True
    )
    bench_node = bench.add_parser("node", help="committed transfers/s and latency of one node")
    bench_node.add_argument("--txs", type=int, default=100_000, help="transfers to commit")
    bench_node.add_argument(
        "--batch", type=int, default=1_000, help="transactions per streamed batch"
    )
    bench_node.add_argument("--streams", type=int, default=2, help="concurrent SubmitStream calls")
    bench_node.add_argument("--json", type=Path, help="write the result here")
    bench_node.add_argument("--window", type=int, default=8, help="batches in flight per stream")
    bench_node.add_argument("--home", type=Path, help="node home (default: a temp dir)")
    bench_node.add_argument("--payers", type=int, default=100, help="distinct signing accounts")
    bench_node.add_argument("--insecure", action="store_true", help="clear text, to compare")
    bench_node.set_defaults(run=cmd_bench_node)
    cluster = bench.add_parser("cluster", help="committed tx/s and latency of a local network")
    cluster.add_argument("--validators", type=int, default=4)
    cluster.add_argument("--txs", type=int, default=100_000)
    cluster.add_argument("--batch", type=int, default=1_000)
    cluster.add_argument("--streams", type=int, default=4, help="spread over the validators")
    cluster.add_argument("--json", type=Path)
    cluster.add_argument("--window", type=int, default=2, help="batches in flight per stream")
    cluster.add_argument("--home", type=Path)
    cluster.add_argument("--payers", type=int, default=100, help="distinct signing accounts")
    cluster.add_argument("--insecure", action="store_true", help="clear text, to compare")
    cluster.set_defaults(run=cmd_bench_node)
    records = bench.add_parser(
        "records", help="anchors/s and consent-checked fetches/s beside transfers/s, one node"
    )
    records.add_argument("--anchors", type=int, default=20_000)
    records.add_argument("--fetches", type=int, default=2_000)
    records.add_argument("--transfers", type=int, default=20_000)
    records.add_argument("--json", type=Path)
    records.add_argument("--insecure", action="store_true", help="clear text, to compare")
    records.set_defaults(run=cmd_bench_records)
    channels = bench.add_parser(
        "channels", help="acknowledged payments/s on one channel and on many, one payee"
    )
    channels.add_argument("--payments", type=int, default=200_000)
    channels.add_argument("--channels", type=int, default=100)
    channels.add_argument("--batch", type=int, default=100, help="payments per signed state")
    channels.add_argument(
        "--hub-rate",
        type=float,
        default=50_000,
        help="payments/s offered in the paced hub row (0: leave the row out)",
    )
    channels.add_argument("--json", type=Path)
    channels.add_argument("--insecure", action="store_true", help="clear text, to compare")
    channels.set_defaults(run=cmd_bench_channels)
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
