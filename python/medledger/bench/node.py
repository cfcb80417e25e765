"""`medledger bench node`: committed transfers per second and submit-to-commit latency of
one node, with the per-transaction cost of each stage measured in the same run."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from medledger.app import Application
from medledger.app.state import MemoryState
from medledger.bench.harness import (
    WINDOW_BATCHES,
    latency_cdf,
    moving_average,
    percentile,
    report,
    stream_batches,
    throughput_timeline,
    write_report,
)
from medledger.chain import ChainStore
from medledger.client import TxBuilder
from medledger.client.members import enrolment_signature
from medledger.config import Home
from medledger.crypto import SigningKey, tx_signing_message, verify_batch
from medledger.genesis import Genesis, GenesisValidator
from medledger.keys import load_key
from medledger.run.homes import (
    DEFAULT_FUND_MICROS,
    free_base_port,
    init_home,
    init_network,
    network_homes,
)
from medledger.run.launcher import start_node
from medledger.transport.credentials import ClientTls
from medledger.wire.v1 import ledger_pb2, tx_pb2
from medledger.wire.v1.envelope_pb2 import SignedTransaction

__all__ = ["NodeBenchResult", "run_node_bench"]

CHAIN_ID = "medledger-bench"
PAYERS = 100
"""Distinct signing accounts in the workload. Signature verification gathers the terms of
one key (see `medledger._core.verify_batch`), so a single payer would flatter it; a
hundred payers stand for the payment processors and providers of a regional network."""


@dataclass
class NodeBenchResult:
    txs: int
    batch: int
    streams: int
    window_batches: int
    seconds: float
    committed_tx_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    cost_us_per_tx: dict[str, float]
    validators: int = 1
    payers: int = PAYERS
    # Signatures per second that Rust batch verification alone reaches on this machine,
    # and the committed tx/s that sets as a ceiling when every validator (all on this
    # machine) verifies every transaction once.
    verify_sigs_per_s: float = 0.0
    verify_ceiling_tx_per_s: float = 0.0


def run_node_bench(
    *,
    txs: int,
    batch: int,
    streams: int,
    json_path: Path | None = None,
    home: Path | None = None,
    validators: int = 1,
    window: int = WINDOW_BATCHES,
    payers: int = PAYERS,
    insecure: bool = False,
    report_dir: Path | None = None,
) -> NodeBenchResult:
    """`insecure`: nodes and clients in clear text (for a figure beside the TLS one).
    `report_dir`: also write the HTML report (throughput over time, latency CDF, cost
    per stage) there."""
    with tempfile.TemporaryDirectory(prefix="medledger-bench-") as tmp:
        return _run(
            report_dir=report_dir,
            insecure=insecure,
            txs=txs,
            batch=batch,
            streams=streams,
            window=window,
            json_path=json_path,
            root=home or Path(tmp) / "net",
            validators=validators,
            payers=payers,
        )


def _run(
    *,
    txs: int,
    batch: int,
    streams: int,
    window: int,
    json_path: Path | None,
    root: Path,
    validators: int,
    payers: int,
    insecure: bool,
    report_dir: Path | None,
) -> NodeBenchResult:

    if validators == 1:
        homes = [Home(root)]
        init_home(homes[0], CHAIN_ID, listen="127.0.0.1:0", insecure=insecure)
    else:
        base_port = free_base_port(2 * validators)
        init_network(root, CHAIN_ID, validators, base_port, DEFAULT_FUND_MICROS, insecure=insecure)
        homes = network_homes(root, validators)
    home = homes[0]
    tls = None if insecure else ClientTls.from_file(home.consortium_ca)
    funder = TxBuilder(load_key(home.keys_dir / "client.json"), CHAIN_ID)
    builders = [TxBuilder(SigningKey.generate(), CHAIN_ID) for _ in range(payers)]
    # Set-up, not measured: the genesis client (its organisation's admin) enrols every
    # payer, each payer opens an account, then the genesis client funds it.
    day_later_ms = int(time.time() * 1000) + 24 * 3600 * 1000
    setup = [
        [
            funder.issue_credential(
                subject=b.key.public_key,
                role=tx_pb2.ROLE_PAYER,
                organisation="org-0",
                expires_ms=day_later_ms,
                expiry_height=10_000,
                subject_signature=enrolment_signature(b.key, CHAIN_ID, "org-0"),
            )
            for b in builders
        ],
        [b.create_account(expiry_height=10_000) for b in builders],
        [
            funder.transfer(to=b.key.public_key, amount_micros=txs, expiry_height=10_000)
            for b in builders
        ],
    ]
    with Progress(transient=True) as progress:
        task = progress.add_task("pre-signing transfers", total=txs)
        signed = []
        for i in range(txs):
            # Payer i pays payer i+1: every transfer succeeds and moves money.
            payee = builders[(i + 1) % payers].key.public_key
            signed.append(
                builders[i % payers].transfer(to=payee, amount_micros=1, expiry_height=10_000)
            )
            if i % 1000 == 0:
                progress.update(task, completed=i)
    batches = [signed[i : i + batch] for i in range(0, txs, batch)]
    costs = _stage_costs(signed[: min(txs, 8_000)])
    verify_rate = 1e6 / costs["verify"]

    nodes = [start_node(h.root, h.load_config().listen) for h in homes]
    try:
        addresses = [n.address for n in nodes]
        for phase in setup:
            chunks = [phase[i : i + batch] for i in range(0, len(phase), batch)]
            asyncio.run(stream_batches(addresses[:1], chunks, 1, len(phase), window, tls=tls))
        commits: list[tuple[float, int]] = []
        seconds, latencies = asyncio.run(
            stream_batches(addresses, batches, streams, txs, window, tls=tls, commits=commits)
        )
    finally:
        for node in nodes:
            node.stop()
    costs["end_to_end"] = seconds / txs * 1e6
    costs["network_and_other"] = max(
        0.0, costs["end_to_end"] - sum(v for k, v in costs.items() if k != "end_to_end")
    )
    result = NodeBenchResult(
        txs=txs,
        batch=batch,
        streams=streams,
        window_batches=window,
        seconds=seconds,
        committed_tx_per_s=txs / seconds,
        latency_p50_ms=statistics.median(latencies) * 1e3,
        latency_p99_ms=percentile(latencies, 0.99) * 1e3,
        cost_us_per_tx={k: round(v, 2) for k, v in costs.items()},
        validators=validators,
        payers=payers,
        verify_sigs_per_s=round(verify_rate),
        verify_ceiling_tx_per_s=round(verify_rate / validators),
    )
    report(result, json_path)
    if report_dir is not None:
        _write_report(report_dir, result, commits, latencies)
    return result


def _write_report(
    directory: Path,
    result: NodeBenchResult,
    commits: list[tuple[float, int]],
    latencies: list[float],
) -> None:
    name = "node" if result.validators == 1 else f"cluster-{result.validators}"
    where = "one validator" if result.validators == 1 else f"{result.validators} validators"
    costs = {k: v for k, v in result.cost_us_per_tx.items() if k != "end_to_end"}
    timeline = throughput_timeline(commits)
    write_report(
        directory,
        name,
        title=f"Committed transfers, {where} on this machine",
        headline={
            "committed tx/s": result.committed_tx_per_s,
            "latency p50 (ms)": result.latency_p50_ms,
            "latency p99 (ms)": result.latency_p99_ms,
            "transactions": result.txs,
            "streams x batch": f"{result.streams} x {result.batch}",
            "Rust batch verification, signatures/s (same run)": result.verify_sigs_per_s,
            "ceiling that sets, tx/s": result.verify_ceiling_tx_per_s,
        },
        plots=[
            {
                "kind": "line",
                "title": "committed transactions per second over the run",
                "x": "seconds",
                "y": "tx/s",
                "series": {
                    "per slice (batches commit in blocks)": timeline,
                    "1 s average": moving_average(timeline, 1.0),
                },
            },
            {
                "kind": "cdf",
                "title": "submit-to-commit latency (CDF)",
                "x": "milliseconds",
                "y": "fraction of transactions",
                "series": {"latency": [[ms, q] for q, ms in latency_cdf(latencies)]},
            },
            {
                "kind": "bars",
                "title": "cost per transaction by stage (µs, in-process, same run)",
                "y": "µs",
                "series": {"µs per tx": costs},
            },
        ],
    )


def _stage_costs(sample: list[SignedTransaction]) -> dict[str, float]:
    """Per-transaction cost of each pipeline stage, measured in-process on `sample`."""

    txs = sample
    n = len(txs)
    started = time.perf_counter()
    bodies = [tx_pb2.TransactionBody.FromString(tx.body) for tx in txs]
    encoded = [tx.SerializeToString(deterministic=True) for tx in txs]
    decode = time.perf_counter() - started

    started = time.perf_counter()
    verify_batch(
        [tx.public_key for tx in txs],
        [tx_signing_message(CHAIN_ID, tx.body) for tx in txs],
        [tx.signature for tx in txs],
    )
    verify = time.perf_counter() - started

    state = MemoryState(
        [
            (
                "accounts",
                payer,
                ledger_pb2.Account(owner=payer, balance_micros=10**15).SerializeToString(),
            )
            for payer in {tx.public_key for tx in txs}
        ]
    )
    started = time.perf_counter()
    result = Application(CHAIN_ID, 10_000).finalize_block(
        1,
        bytes(32),
        state,
        [(tx.public_key, body) for tx, body in zip(txs, bodies, strict=True)],
        time_ms=1,
    )
    apply = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore(Path(tmp), 1 << 30)

        store.init_genesis(Genesis(CHAIN_ID, 0, (GenesisValidator("v", bytes(32), 1),)))
        records = [(b.tx_id, bytes(32), bytes(80)) for b in bodies]
        started = time.perf_counter()
        store.commit_block(
            height=1,
            block=b"".join(encoded),
            commit=bytes(100),
            block_hash=bytes(32),
            app_hash=result.app_hash,
            tx_index=records,
            writes=result.writes,
        )
        storage = time.perf_counter() - started
        store.close()
    return {
        "decode": decode / n * 1e6,
        "verify": verify / n * 1e6,
        "apply": apply / n * 1e6,
        "storage": storage / n * 1e6,
    }
