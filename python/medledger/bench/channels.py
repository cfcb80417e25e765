"""`medledger bench channels`: acknowledged (durable on the payee's side) payments per
second on one payer → payee channel, across many channels to the same payee, and across
many channels through one hub, with p50/p99 latency, beside the ceiling that the Ed25519
work alone sets on this machine, measured in the same run.

The payee is a real node process (its ChannelService and LMDB); the payers run in this
process. Every update is signed by the payer, verified and countersigned by the payee
after its LMDB commit (fsync), and the countersignature verified by the payer, which
stores the state both signed before it counts the payments acknowledged.

Through the hub (a real `medledger hub start` process with its own LMDB) a payment counts
when its lock's preimage is back at the payer: the hub held the payer's lock durably,
forwarded the lines, the provider held the hub's lock durably and revealed the preimage.
The preimages then settle both hops in the following updates. Its row gives two
latencies: acknowledged (by the hub, durably) and delivered (the preimage is back).

Every row but one is a closed loop: each channel sends as fast as its window allows, so
the figures are the throughput at saturation and the latency there. The last row sends
through the hub at a fixed offered rate (`hub_rate`, payments per second, spread evenly
over the channels), the way a processor's load arrives; its latency clock starts at each
batch's scheduled time, so a batch the hub delays also delays the clock of none after it
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medledger.bench.harness import (
    WINDOW_BATCHES,
    one_node,
    percentile,
    report,
    stream_batches,
    write_report,
)
from medledger.channels.payer import PayerSession
from medledger.channels.signing import sign_state, state_message
from medledger.channels.store import ChannelStore, GroupCommit
from medledger.client import LedgerClient, TxBuilder
from medledger.client.channels import payment, routed_lock
from medledger.client.members import enrolment_signature
from medledger.config import Home
from medledger.crypto import SigningKey, verify
from medledger.keys import save_key
from medledger.run.launcher import hub_tls_options, start_hub
from medledger.transport.credentials import ClientTls
from medledger.wire.v1 import channels_pb2, tx_pb2

if TYPE_CHECKING:
    from medledger.channels.store import ChannelStore
    from medledger.client import TxBuilder
    from medledger.config import Home
    from medledger.crypto import SigningKey
    from medledger.run.launcher import NodeProcess
    from medledger.transport.credentials import ClientTls
    from medledger.wire.v1 import channels_pb2
    from medledger.wire.v1.envelope_pb2 import SignedTransaction

__all__ = ["ChannelsBenchResult", "run_channels_bench"]

CHAIN_ID = "medledger-bench-channels"
DEPOSIT = 10**12
SIGNATURE_SAMPLES = 2_000
# Updates each channel keeps in flight: enough to keep one channel's pipeline full; with
# many channels a few each, so the payee's queue (and the latency) stays short.
IN_FLIGHT_ONE = 32
IN_FLIGHT_MANY = 1
IN_FLIGHT_HUB = 1
LOCK_BASE_HEIGHT = 1_000
"""Routed locks expire at this height plus ROUTED_LOCK_BLOCKS: far beyond the bench."""


@dataclass
class Run:
    channels: int
    payments: int
    payments_per_s: float
    # From sending an update (the channel's window had room) to holding the payee's
    # countersignature of it, durable on both sides.
    ack_latency_p50_ms: float
    ack_latency_p99_ms: float
    # Through a hub only: from sending to holding the preimage (the provider has it).
    delivered_latency_p50_ms: float | None = None
    delivered_latency_p99_ms: float | None = None
    offered_per_s: float | None = None  # paced rows: the rate the payers offered


@dataclass
class ChannelsBenchResult:
    batch: int
    one_channel: Run
    many_channels: Run
    # Through one hub: acknowledged by the hub, and delivered (the preimage is back).
    through_hub: Run
    # The same at a fixed offered rate (None when not asked for).
    through_hub_paced: Run | None
    # Payments per second if an update's four Ed25519 operations (payer signs, payee
    # verifies and countersigns, payer verifies) were the only work, on this machine.
    sign_verify_ceiling_per_s: float
    payer_fsyncs: int


def _setup_phases(
    bank: TxBuilder, everyone: list[SigningKey], hub_key: SigningKey, expiry: int
) -> list[list[SignedTransaction]]:
    """Set-up, not measured: the payee's key (its organisation's admin) enrols everyone
    (each agreeing to join), each opens an account, then the payee funds it."""

    year_later_ms = int(time.time() * 1000) + 365 * 24 * 3600 * 1000
    return [
        [
            bank.issue_credential(
                subject=p.public_key,
                role=tx_pb2.ROLE_PAYMENT_PROCESSOR if p is hub_key else tx_pb2.ROLE_PAYER,
                organisation="org-0",
                expires_ms=year_later_ms,
                expiry_height=expiry,
                subject_signature=enrolment_signature(p, CHAIN_ID, "org-0"),
            )
            for p in everyone
        ],
        [
            TxBuilder(p, CHAIN_ID).sign(
                tx_pb2.TransactionBody(create_account=tx_pb2.CreateAccount()),
                expiry_height=expiry,
            )
            for p in everyone
        ],
        [
            bank.transfer(to=p.public_key, amount_micros=DEPOSIT, expiry_height=expiry)
            for p in everyone
        ],
    ]


def run_channels_bench(
    *,
    payments: int,
    channels: int,
    batch: int,
    hub_rate: float | None = None,
    json_path: Path | None = None,
    insecure: bool = False,
    report_dir: Path | None = None,
) -> ChannelsBenchResult:
    """Over TLS, as a network runs (the node, the hub and the payers' sessions);
    `insecure`: clear text, for a figure beside it."""

    with (
        tempfile.TemporaryDirectory(prefix="medledger-bench-channels-") as tmp,
        one_node(Path(tmp) / "node", CHAIN_ID, insecure=insecure) as node,
    ):
        tls = node.tls
        payee = node.client_key()
        payers = [SigningKey.generate() for _ in range(channels + 1)]
        hub_key = SigningKey.generate()
        hub_payers = [SigningKey.generate() for _ in range(channels)]
        hub = None
        try:
            pairs = [(p, payee) for p in [*payers, hub_key]] + [(p, hub_key) for p in hub_payers]
            all_locals = _open_channels(node.address, tls, payee, hub_key, pairs)
            locals_ = all_locals[: len(payers)]
            hub_home = None if insecure else node.home  # the hub belongs to the node's organisation
            hub = _start_hub(Path(tmp), hub_key, all_locals[len(payers)], node.address, hub_home)
            via_hub = all_locals[len(payers) + 1 :]
            for local in via_hub:
                local.address = hub.address
            store = ChannelStore(Path(tmp) / "payers")

            def pay(
                keys: list[SigningKey],
                channels: list[channels_pb2.LocalChannel],
                in_flight: int,
                **routing: Any,
            ) -> tuple[Run, int]:
                return asyncio.run(
                    _pay(
                        store,
                        keys,
                        channels,
                        payments,
                        batch=batch,
                        in_flight=in_flight,
                        tls=tls,
                        **routing,
                    )
                )

            one, fsyncs_one = pay(payers[:1], locals_[:1], IN_FLIGHT_ONE)
            many, fsyncs_many = pay(payers[1:], locals_[1:], IN_FLIGHT_MANY)

            def through_hub(rate: float | None) -> tuple[Run, int]:
                return pay(
                    hub_payers, via_hub, IN_FLIGHT_HUB, destination=payee.public_key, rate=rate
                )

            routed, fsyncs_routed = through_hub(None)
            paced = fsyncs_paced = None
            if hub_rate:
                paced, fsyncs_paced = through_hub(hub_rate)
            store.close()
        finally:
            if hub is not None:
                hub.stop()
    result = ChannelsBenchResult(
        batch=batch,
        one_channel=one,
        many_channels=many,
        through_hub=routed,
        through_hub_paced=paced,
        sign_verify_ceiling_per_s=_sign_verify_ceiling(payee, batch),
        payer_fsyncs=fsyncs_one + fsyncs_many + fsyncs_routed + (fsyncs_paced or 0),
    )
    report(result, json_path)
    if report_dir is not None:
        _write_report(report_dir, result)
    return result


def _write_report(directory: Path, result: ChannelsBenchResult) -> None:
    runs = {
        "one channel": result.one_channel,
        "many channels": result.many_channels,
        "through a hub": result.through_hub,
    }
    if result.through_hub_paced is not None:
        runs["hub, paced"] = result.through_hub_paced
    headline: dict[str, float | int | str] = {
        f"{name}: payments/s ({run.channels} channels)": run.payments_per_s
        for name, run in runs.items()
    }
    headline["sign+verify ceiling, payments/s"] = result.sign_verify_ceiling_per_s
    headline["payments per signed state"] = result.batch
    write_report(
        directory,
        "channels",
        title="Channel micropayments acknowledged, one payee node",
        headline=headline,
        plots=[
            {
                "kind": "bars",
                "title": "acknowledged payments per second",
                "y": "payments/s",
                "series": {"payments/s": {n: r.payments_per_s for n, r in runs.items()}},
            },
            {
                "kind": "bars",
                "title": "acknowledgement latency (ms)",
                "y": "ms",
                "series": {
                    "p50": {n: r.ack_latency_p50_ms for n, r in runs.items()},
                    "p99": {n: r.ack_latency_p99_ms for n, r in runs.items()},
                },
            },
        ],
    )


async def _pay(
    store: ChannelStore,
    payers: list[SigningKey],
    locals_: list[channels_pb2.LocalChannel],
    payments: int,
    *,
    batch: int,
    in_flight: int,
    destination: bytes = b"",
    rate: float | None = None,
    tls: ClientTls | None,
) -> tuple[Run, int]:
    """Pays `payments` spread over the channels; with `destination` every batch is
    routed through the channels' payee (a hub) on an invoice of `destination`; with
    `rate` the batches are sent on a schedule that offers that many payments per second."""

    commit = GroupCommit(store)
    commit.start()
    acked_after: list[float] = []
    delivered_after: list[float] = []
    per_channel = payments // len(payers)

    def record(into: list[float], began: float, _: object) -> None:
        into.append(time.perf_counter() - began)

    connected = asyncio.Barrier(len(payers) + 1)

    # Paced: each channel sends a batch every `period` seconds, the channels staggered.
    period = batch * len(payers) / rate if rate else 0.0

    async def one_channel(index: int, key: SigningKey, local: channels_pb2.LocalChannel) -> None:
        session = PayerSession(
            key,
            CHAIN_ID,
            store,
            local,
            local.address,
            commit=commit,
            in_flight_max=in_flight,
            tls=tls,
        )
        # Each channel's own lines: random ids, so ids never repeat across channels
        # (a hub forwards many channels' lines on one channel, where ids must be unique).
        lines = [
            payment(25, claim_id=f"CLM{i // 4}", procedure_code="99213", units=1)
            for i in range(batch)
        ]
        async with session:
            starts = range(0, per_channel, batch)
            hashes = await session.invoices(len(starts), destination) if destination else []
            await connected.wait()  # measure payments, not connection set-up
            pending: list[asyncio.Future[Any]] = []
            # At most `in_flight` batches not yet acknowledged (routed: not yet
            # delivered). Unpaced, the clock starts once there is room, so the latency
            # is the channel's and not a queue this loop built in front of it; paced, at
            # the batch's scheduled time, so waiting for room counts.
            room = asyncio.Semaphore(in_flight)
            origin = time.perf_counter() + period * index / len(payers)
            for n, i in enumerate(starts):
                due = origin + n * period
                if period:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await room.acquire()
                began = due if period else time.perf_counter()
                for line in lines:  # a fresh id per payment, the billing line reused
                    line.payment_id = i.to_bytes(8, "big") + line.payment_id[8:]
                payments_now = lines[: min(batch, per_channel - i)]
                lock = (
                    routed_lock(hashes[n], payments_now, LOCK_BASE_HEIGHT) if destination else None
                )
                acked = await session.send(payments_now, lock=lock, destination=destination)
                acked.add_done_callback(partial(record, acked_after, began))
                last: asyncio.Future[Any] = acked  # what frees the room: ack, or delivery
                if lock is not None:
                    last = session.resolution(lock.hash)
                    last.add_done_callback(partial(record, delivered_after, began))
                    pending.append(last)
                last.add_done_callback(lambda _: room.release())
                pending.append(acked)
            await asyncio.gather(*pending)

    tasks = [
        asyncio.create_task(one_channel(j, k, c))
        for j, (k, c) in enumerate(zip(payers, locals_, strict=True))
    ]
    await connected.wait()
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    await commit.stop()
    paid = per_channel * len(payers)
    run = _run(
        len(payers),
        paid,
        seconds,
        acked_after=acked_after,
        delivered_after=delivered_after,
        rate=rate,
    )
    return run, commit.transactions


def _run(
    channels: int,
    payments: int,
    seconds: float,
    *,
    acked_after: list[float],
    delivered_after: list[float],
    rate: float | None,
) -> Run:
    run = Run(
        channels=channels,
        payments=payments,
        payments_per_s=payments / seconds,
        ack_latency_p50_ms=statistics.median(acked_after) * 1e3,
        ack_latency_p99_ms=percentile(acked_after, 0.99) * 1e3,
        offered_per_s=rate,
    )
    if delivered_after:
        run.delivered_latency_p50_ms = statistics.median(delivered_after) * 1e3
        run.delivered_latency_p99_ms = percentile(delivered_after, 0.99) * 1e3
    return run


def _open_channels(
    address: str,
    tls: ClientTls | None,
    bank: SigningKey,
    hub_key: SigningKey,
    pairs: list[tuple[SigningKey, SigningKey]],
) -> list[channels_pb2.LocalChannel]:
    """Set-up, not measured: `bank` enrols and funds every payer of `pairs` (payer,
    payee; `hub_key` as a payment processor), and each opens its channel; the payers'
    records of those channels."""

    with LedgerClient(address, tls=tls) as ledger:
        expiry = ledger.status().height + 1_000
    setup = _setup_phases(TxBuilder(bank, CHAIN_ID), [p for p, _ in pairs], hub_key, expiry)
    opens = [
        TxBuilder(p, CHAIN_ID).open_channel(
            payee=to.public_key,
            deposit_micros=DEPOSIT,
            challenge_blocks=100,
            expiry_height=expiry,
        )
        for p, to in pairs
    ]
    for txs in [*setup, opens]:
        asyncio.run(stream_batches([address], [txs], 1, len(txs), WINDOW_BATCHES, tls=tls))
    return [
        channels_pb2.LocalChannel(
            channel_id=tx_pb2.TransactionBody.FromString(tx.body).open_channel.channel_id,
            payer=p.public_key,
            payee=to.public_key,
            deposit_micros=DEPOSIT,
            address=address,
        )
        for (p, to), tx in zip(pairs, opens, strict=True)
    ]


def _start_hub(
    root: Path,
    key: SigningKey,
    to_provider: channels_pb2.LocalChannel,
    node: str,
    organisation: Home | None,
) -> NodeProcess:
    """A hub process whose store holds its channel to the provider; with `organisation`
    (a home whose CA is at hand) it serves TLS with a certificate from that CA."""

    store = ChannelStore(root / "hub")
    store.write([store.channel_write(to_provider)])
    store.close()
    save_key(key, root / "hub.key")
    tls = ["--insecure"] if organisation is None else hub_tls_options(organisation, root)
    return start_hub(root / "hub", root / "hub.key", node, tls=tls)


def _sign_verify_ceiling(key: SigningKey, batch: int) -> float:
    state = bytes(range(100))  # about the size of a state
    message = state_message(CHAIN_ID, state)
    began = time.perf_counter()
    for _ in range(SIGNATURE_SAMPLES):
        signature = sign_state(key, CHAIN_ID, state)
        verify(key.public_key, message, signature)
    per_pair_s = (time.perf_counter() - began) / SIGNATURE_SAMPLES
    return batch / (2 * per_pair_s)
