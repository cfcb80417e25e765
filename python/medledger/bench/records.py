"""`medledger bench records`: on one node (a real process, LMDB, its vault), committed
record anchors per second and consent-checked fetches per second — each fetch signed,
consent evaluated against committed state, its access event committed on the ledger
before the key is released, then unwrapped (HPKE) and decrypted by the client — beside
the committed transfers per second of the same node in the same run."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medledger.bench.harness import (
    WINDOW_BATCHES,
    latency_cdf,
    one_node,
    percentile,
    report,
    stream_batches,
    write_report,
)
from medledger.client import LedgerClient, TxBuilder, enrol
from medledger.client.records import RecordsClient, fetch_request, open_fetched
from medledger.crypto import SigningKey
from medledger.transport.credentials import ClientTls, aio_channel
from medledger.transport.grpc_common import channel_options
from medledger.vault.requests import sign_request
from medledger.wire.v1 import records_pb2, records_pb2_grpc, tx_pb2

if TYPE_CHECKING:
    from medledger.crypto import SigningKey
    from medledger.transport.credentials import ClientTls
    from medledger.wire.v1.envelope_pb2 import SignedTransaction

__all__ = ["RecordsBenchResult", "run_records_bench"]

CHAIN_ID = "medledger-bench-records"
BATCH = 500
FETCHES_IN_FLIGHT = 256
RECORDS = 64


@dataclass
class RecordsBenchResult:
    anchors: int
    anchors_per_s: float
    fetches: int
    fetches_per_s: float
    fetch_latency_p50_ms: float
    fetch_latency_p99_ms: float
    transfers: int
    transfers_per_s: float


def run_records_bench(
    *,
    anchors: int,
    fetches: int,
    transfers: int,
    json_path: Path | None = None,
    insecure: bool = False,
    report_dir: Path | None = None,
) -> RecordsBenchResult:
    """Over TLS, as a network runs; `insecure`: clear text, for a figure beside it."""

    with (
        tempfile.TemporaryDirectory(prefix="medledger-bench-records-") as tmp,
        one_node(Path(tmp) / "node", CHAIN_ID, insecure=insecure) as node,
    ):
        tls = node.tls
        custodian = node.client_key()
        patient, reader = SigningKey.generate(), SigningKey.generate()
        builder = TxBuilder(custodian, CHAIN_ID)
        anchor_txs = [
            builder.sign(
                tx_pb2.TransactionBody(
                    anchor_record=records_pb2.AnchorRecord(
                        record_id=i.to_bytes(16, "big"),
                        version=1,
                        patient=patient.public_key,
                        commitment=bytes(32),
                        resource_type="Observation",
                        category="laboratory",
                    )
                ),
                expiry_height=10_000,
            )
            for i in range(anchors)
        ]
        transfer_txs = [
            builder.transfer(to=custodian.public_key, amount_micros=1, expiry_height=10_000)
            for _ in range(transfers)
        ]
        # Set-up, not measured: the organisation's admin (the custodian's own key here)
        # issues the roles.
        with LedgerClient(node.address, tls=tls) as ledger:
            enrol(
                ledger,
                custodian,
                "org-0",
                {
                    custodian: [tx_pb2.ROLE_CUSTODIAN],
                    patient: [tx_pb2.ROLE_PATIENT],
                    reader: [tx_pb2.ROLE_RESEARCHER],
                },
            )
        anchor_s = _commit_all(node.address, anchor_txs, tls)
        transfer_s = _commit_all(node.address, transfer_txs, tls)
        # Records in the vault and a consent covering them, then the fetches.
        with RecordsClient(node.address, CHAIN_ID, tls=tls) as records:
            record_ids = [
                records.put(
                    custodian,
                    patient=patient.public_key,
                    resource_type="Observation",
                    category="laboratory",
                    content=json.dumps(
                        {"resourceType": "Observation", "status": "final", "n": i}
                    ).encode(),
                ).record_id
                for i in range(RECORDS)
            ]
        with LedgerClient(node.address, tls=tls) as ledger:
            now = int(time.time() * 1000)
            grant = TxBuilder(patient, CHAIN_ID).grant_consent(
                grantee=reader.public_key,
                purposes=[records_pb2.PURPOSE_RESEARCH],
                resource_types=["Observation"],
                valid_from_ms=now - 1000,
                valid_until_ms=now + 3_600_000,
                expiry_height=ledger.status().height + 100,
            )
            ledger.submit(grant, wait=True)
        fetch_s, latencies = asyncio.run(
            _fetch_all(node.address, reader, [record_ids[i % RECORDS] for i in range(fetches)], tls)
        )
    result = RecordsBenchResult(
        anchors=anchors,
        anchors_per_s=anchors / anchor_s,
        fetches=fetches,
        fetches_per_s=fetches / fetch_s,
        fetch_latency_p50_ms=statistics.median(latencies) * 1e3,
        fetch_latency_p99_ms=percentile(latencies, 0.99) * 1e3,
        transfers=transfers,
        transfers_per_s=transfers / transfer_s,
    )
    report(result, json_path)
    if report_dir is not None:
        write_report(
            report_dir,
            "records",
            title="Records: anchors and consent-checked fetches beside transfers, one node",
            headline=asdict(result),
            plots=[
                {
                    "kind": "bars",
                    "title": "per second (same node, same run)",
                    "y": "per second",
                    "series": {
                        "rate": {
                            "anchors": result.anchors_per_s,
                            "fetches": result.fetches_per_s,
                            "transfers": result.transfers_per_s,
                        }
                    },
                },
                {
                    "kind": "cdf",
                    "title": "consent-checked fetch latency (CDF)",
                    "x": "milliseconds",
                    "y": "fraction of fetches",
                    "series": {"fetch": [[ms, q] for q, ms in latency_cdf(latencies)]},
                },
            ],
        )
    return result


def _commit_all(address: str, txs: list[SignedTransaction], tls: ClientTls | None) -> float:
    """Seconds to get every transaction committed through two SubmitStreams."""
    batches = [txs[i : i + BATCH] for i in range(0, len(txs), BATCH)]
    seconds, _ = asyncio.run(
        stream_batches([address], batches, 2, len(txs), WINDOW_BATCHES, tls=tls)
    )
    return seconds


async def _fetch_all(
    address: str, reader: SigningKey, record_ids: list[bytes], tls: ClientTls | None
) -> tuple[float, list[float]]:

    latencies: list[float] = []
    in_flight = asyncio.Semaphore(FETCHES_IN_FLIGHT)
    async with aio_channel(address, tls, channel_options()) as channel:
        stub = records_pb2_grpc.VaultServiceStub(channel)

        async def one(record_id: bytes) -> None:
            async with in_flight:
                began = time.perf_counter()
                request, recipient = fetch_request(
                    reader.public_key, record_id, purpose=records_pb2.PURPOSE_RESEARCH
                )
                response = await stub.Fetch(sign_request(request, reader, CHAIN_ID), timeout=60)
                open_fetched(response, recipient)
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in record_ids))
        return time.perf_counter() - started, latencies
