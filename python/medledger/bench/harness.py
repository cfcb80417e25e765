"""What every benchmark shares: a one-node home in a temporary directory with its client
TLS, streaming pre-signed batches and timing each commit, percentiles, and the report
(printed as JSON and, if asked, written to a file)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.keys import load_key
from medledger.run.homes import init_home
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.credentials import ClientTls, aio_channel
from medledger.transport.grpc_common import channel_options
from medledger.wire.v1 import ledger_pb2, ledger_pb2_grpc, tx_pb2
from medledger.wire.v1.envelope_pb2 import SignedTransaction

__all__ = [
    "WINDOW_BATCHES",
    "BenchNode",
    "latency_cdf",
    "moving_average",
    "one_node",
    "percentile",
    "report",
    "stream_batches",
    "throughput_timeline",
    "write_report",
]

CDF_POINTS = 200
TIMELINE_BUCKETS = 60
TIMELINE_BUCKET_MIN_S = 0.05
RENDER_TIMEOUT_S = 120
WINDOW_BATCHES = 8
"""Batches a stream keeps in flight: enough to keep the node busy, few enough that the
latency measured is the pipeline's, not a queue the load generator built."""


@dataclass
class BenchNode:
    """A running one-validator node made for a benchmark."""

    home: Home
    process: NodeProcess
    tls: ClientTls | None
    """None: the node serves clear text (`--insecure`, for a figure beside TLS)."""

    @property
    def address(self) -> str:
        return self.process.address

    def client_key(self) -> SigningKey:
        """The genesis client key: funded, and its organisation's admin."""
        return load_key(self.home.keys_dir / "client.json")


@contextmanager
def one_node(root: Path, chain_id: str, *, insecure: bool) -> Iterator[BenchNode]:
    """A fresh one-validator home under `root` and its node process, stopped on exit."""
    home = Home(root)
    init_home(home, chain_id, listen="127.0.0.1:0", insecure=insecure)
    tls = None if insecure else ClientTls.from_file(home.consortium_ca)
    process = start_node(home.root)
    try:
        yield BenchNode(home, process, tls)
    finally:
        process.stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(result: Any, json_path: Path | None) -> None:
    """Prints a result dataclass as JSON and writes it to `json_path` if given."""
    text = json.dumps(asdict(result), indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


def latency_cdf(seconds: Sequence[float], points: int = CDF_POINTS) -> list[list[float]]:
    """[[fraction, milliseconds], ...] at `points` evenly spaced fractions: enough to draw
    a latency CDF without keeping every sample."""
    ordered = sorted(seconds)
    if not ordered:
        return []
    return [
        [i / points, ordered[min(len(ordered) - 1, i * len(ordered) // points)] * 1e3]
        for i in range(1, points + 1)
    ]


def throughput_timeline(
    commits: Sequence[tuple[float, int]], buckets: int = TIMELINE_BUCKETS
) -> list[list[float]]:
    """[[seconds since start, committed per second], ...]: the run cut into `buckets`
    equal slices (none shorter than TIMELINE_BUCKET_MIN_S)."""
    if not commits:
        return []
    end = max(t for t, _ in commits)
    width = max(TIMELINE_BUCKET_MIN_S, end / buckets)
    counts = [0] * (int(end / width) + 1)
    for t, count in commits:
        counts[int(t / width)] += count
    return [[i * width, n / width] for i, n in enumerate(counts)]


def moving_average(points: Sequence[Sequence[float]], window_s: float) -> list[list[float]]:
    """`points` ([[t, rate], ...] in equal slices) averaged over the `window_s` before each."""
    if len(points) < 2:
        return [list(p) for p in points]
    width = points[1][0] - points[0][0]
    span = max(1, round(window_s / width))
    return [
        [t, sum(rate for _, rate in points[max(0, i - span + 1) : i + 1]) / min(span, i + 1)]
        for i, (t, _) in enumerate(points)
    ]


def write_report(
    directory: Path,
    name: str,
    *,
    title: str,
    headline: dict[str, float | int | str],
    plots: list[dict[str, Any]],
) -> Path:
    """Writes `name`'s figures to DIRECTORY/NAME.data.json and renders DIRECTORY/
    report.html from every benchmark's data there (`python -m
    medledger.bench.report`, a separate process: plotting libraries load only there).
    Each plot: {"kind": "line" | "cdf" | "bars", "title", "x", "y", "series": {label:
    points or {bar: value}}}. Returns the HTML page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "title": title, "headline": headline, "plots": plots}
    (directory / f"{name}.data.json").write_text(json.dumps(data, indent=1) + "\n")
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "medledger.bench.report", str(directory)],
        check=True,
        timeout=RENDER_TIMEOUT_S,
    )
    return directory / "report.html"


async def stream_batches(
    addresses: list[str],
    batches: list[list[SignedTransaction]],
    streams: int,
    total: int,
    window_batches: int,
    *,
    tls: ClientTls | None,
    commits: list[tuple[float, int]] | None = None,
) -> tuple[float, list[float]]:
    """Streams `batches` over `streams` SubmitStreams spread over `addresses`, each with
    `window_batches` in flight; raises unless every transaction commits OK. Returns the
    seconds taken and each transaction's submit-to-commit latency; appends to `commits`
    (seconds since the start, transactions) as each batch commits."""

    latencies: list[float] = []
    committed = 0
    sent_at: dict[int, float] = {}
    with Progress(transient=True) as progress:
        task = progress.add_task("committing", total=total)

        async def onestream_batches(lane: int) -> None:
            nonlocal committed
            # Streams spread over the validators, as clients of a network would.
            address = addresses[lane % len(addresses)]
            async with aio_channel(address, tls, channel_options()) as channel:
                stub = ledger_pb2_grpc.LedgerServiceStub(channel)
                mine = [(i, b) for i, b in enumerate(batches) if i % streams == lane]
                window = asyncio.Semaphore(window_batches)

                async def requests() -> AsyncIterator[ledger_pb2.SubmitBatch]:
                    for batch_id, txs in mine:
                        await window.acquire()
                        sent_at[batch_id] = time.perf_counter()
                        yield ledger_pb2.SubmitBatch(batch_id=batch_id, txs=txs)

                async for result in stub.SubmitStream(requests(), timeout=600):
                    now = time.perf_counter()
                    window.release()
                    ok = sum(r.code == tx_pb2.RESULT_CODE_OK for r in result.receipts)
                    if ok != len(result.receipts):
                        raise RuntimeError(f"batch {result.batch_id}: {result.receipts[0]}")
                    latencies.extend([now - sent_at[result.batch_id]] * len(result.receipts))
                    committed += ok
                    if commits is not None:
                        commits.append((now - started, ok))
                    progress.update(task, completed=committed)

        started = time.perf_counter()  # read by the streams as they commit
        await asyncio.gather(*(onestream_batches(lane) for lane in range(streams)))
        seconds = time.perf_counter() - started
    return seconds, latencies
