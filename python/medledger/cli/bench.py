"""`medledger bench node|cluster|records|channels`: the benchmarks on real node
processes (see `medledger.bench`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medledger.bench.channels import run_channels_bench
from medledger.bench.node import run_node_bench
from medledger.bench.records import run_records_bench
from medledger.cli.support import (
    Subcommands,
)

__all__ = ["add_commands"]


def cmd_bench_node(args: argparse.Namespace) -> None:
    run_node_bench(
        txs=args.txs,
        batch=args.batch,
        streams=args.streams,
        json_path=args.json,
        report_dir=args.report,
        home=args.home,
        validators=getattr(args, "validators", 1),
        window=args.window,
        payers=args.payers,
        insecure=args.insecure,
    )


def cmd_bench_records(args: argparse.Namespace) -> None:
    run_records_bench(
        anchors=args.anchors,
        fetches=args.fetches,
        transfers=args.transfers,
        json_path=args.json,
        report_dir=args.report,
        insecure=args.insecure,
    )


def cmd_bench_channels(args: argparse.Namespace) -> None:
    run_channels_bench(
        payments=args.payments,
        channels=args.channels,
        batch=args.batch,
        hub_rate=args.hub_rate or None,
        json_path=args.json,
        report_dir=args.report,
        insecure=args.insecure,
    )


def add_commands(commands: Subcommands) -> None:
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
    bench_node.add_argument(
        "--report", type=Path, help="write an HTML report with plots into this directory"
    )
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
    cluster.add_argument(
        "--report", type=Path, help="write an HTML report with plots into this directory"
    )
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
    records.add_argument(
        "--report", type=Path, help="write an HTML report with plots into this directory"
    )
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
    channels.add_argument(
        "--report", type=Path, help="write an HTML report with plots into this directory"
    )
    channels.add_argument("--insecure", action="store_true", help="clear text, to compare")
    channels.set_defaults(run=cmd_bench_channels)
