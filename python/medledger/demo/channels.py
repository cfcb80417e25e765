"""The demo's channels: an insurer pays a hospital through a payment processor's hub,
each batch of billing lines on one hash lock across both hops; the hospital's remittance
export reconciles every line; both channels close cooperatively and settle on the
ledger, and the three accounts move by exactly what was paid."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medledger.channels.billing import Statement, remittance_csv, statement
from medledger.channels.signing import sign_channel_request
from medledger.channels.store import ChannelStore
from medledger.client import LedgerClient
from medledger.client.channels import ChannelWallet, payment, routed_lock
from medledger.config import Home
from medledger.crypto import SigningKey, sha256
from medledger.demo.cast import Cast
from medledger.demo.story import DemoFailed, Story
from medledger.keys import save_key
from medledger.run.launcher import NodeProcess, start_hub
from medledger.transport.certs import Identity, make_node_certificate, save_identity
from medledger.transport.credentials import ClientTls, sync_channel
from medledger.wire.v1 import channels_pb2, channels_pb2_grpc

__all__ = ["ChannelDemo"]

BATCH = 100
DEPOSIT_MICROS = 50_000_000
SETTLE_WAIT_S = 30.0
# CPT/HCPCS codes and what one line of each pays (micro-units): an office visit, a
# metabolic panel, a blood count, a blood draw.
PRICES = {"99213": 250, "99214": 375, "80053": 140, "85025": 90, "36415": 30}
LINES_PER_CLAIM = 10


def _lines(count: int, patient_ref: bytes) -> list[channels_pb2.Payment]:
    codes = list(PRICES)
    return [
        payment(
            PRICES[codes[n % len(codes)]],
            claim_id=f"CLM-2026-{n // LINES_PER_CLAIM:05d}",
            procedure_code=codes[n % len(codes)],
            units=1,
            patient_ref=patient_ref,
            service_date="2026-11-24",
        )
        for n in range(count)
    ]


def _held_state(
    address: str, channel_id: bytes, party: SigningKey, chain_id: str, tls: ClientTls | None
) -> bytes:
    """The latest state both signed, as the payee at `address` holds it."""
    request = sign_channel_request(
        channels_pb2.GetChannelStateRequest(channel_id=channel_id), party, chain_id
    )
    with sync_channel(address, tls) as channel:
        response = channels_pb2_grpc.ChannelServiceStub(channel).GetChannelState(
            request, timeout=10
        )
    return bytes(response.state.state)


def _settled_off_chain(  # noqa: PLR0917 - where, which, who, what
    address: str,
    channel_id: bytes,
    party: SigningKey,
    chain_id: str,
    total: int,
    tls: ClientTls | None,
) -> channels_pb2.ChannelState:
    """Waits until the payee at `address` holds a state paying `total` with no lock."""
    deadline = time.monotonic() + SETTLE_WAIT_S
    while True:
        state = channels_pb2.ChannelState.FromString(
            _held_state(address, channel_id, party, chain_id, tls)
        )
        if (state.payee_micros == total and not state.locks) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


async def _pay_through_hub(
    wallet: ChannelWallet,
    channel_id: bytes,
    provider: bytes,
    lines: list[channels_pb2.Payment],
    height: int,
) -> tuple[int, float]:
    """Sends `lines` in batches, each on a lock of a hospital's invoice; returns how many
    locks the hospital revealed (its proof of payment) and the seconds it took."""
    batches = [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]
    async with wallet.session(channel_id) as session:
        started = time.perf_counter()
        hashes = await session.invoices(len(batches), provider)
        pending = []
        for lock_hash, batch in zip(hashes, batches, strict=True):
            lock = routed_lock(lock_hash, batch, height)
            await session.send(batch, lock=lock, destination=provider)
            pending.append(session.resolution(lock_hash))
        preimages = await asyncio.wait_for(asyncio.gather(*pending), SETTLE_WAIT_S)
        elapsed = time.perf_counter() - started
    opened = sum(sha256(p) == h for p, h in zip(preimages, hashes, strict=True))
    return opened, elapsed


def _remittance_table(result: Statement) -> Table:
    table = Table(title="The hospital's remittance (835-style), by procedure code")
    for column in ("code", "lines", "paid (µ)"):
        table.add_column(column, justify="right")
    by_code: dict[str, tuple[int, int]] = {}
    for line in result.lines:
        count, paid = by_code.get(line.procedure_code, (0, 0))
        by_code[line.procedure_code] = (count + 1, paid + line.signed_micros)
    for code, (count, paid) in sorted(by_code.items()):
        table.add_row(code, f"{count:,}", f"{paid:,}")
    return table


@dataclass(frozen=True)
class ChannelDemo:
    story: Story
    console: Console
    cast: Cast
    chain_id: str
    root: Path  # the insurer's and the processor's channel stores live under it
    hospital_home: Home  # its node's channel store holds the hospital's side
    hospital_address: str
    insurer_address: str
    processor_address: str
    tls: ClientTls | None  # the consortium's CA bundle (None: clear text)
    hub_ca: Identity | None  # the processor's organisation's CA: it certifies the hub

    def hub_tls(self) -> list[str]:
        """The hub's transport options: a certificate from the processor's organisation,
        and the consortium's CAs to verify the node and the hospital against."""
        if self.tls is None or self.hub_ca is None:
            return ["--insecure"]
        tls_dir = self.root / "processor" / "tls"
        identity = make_node_certificate(self.hub_ca, "hub", ["127.0.0.1:0"])
        save_identity(identity, tls_dir / "hub.key", tls_dir / "hub.pem")
        (tls_dir / "consortium-ca.pem").write_bytes(self.tls.roots_pem)
        return [
            "--tls-key", str(tls_dir / "hub.key"),
            "--tls-cert", str(tls_dir / "hub.pem"),
            "--tls-ca", str(tls_dir / "consortium-ca.pem"),
        ]  # fmt: skip

    def balances(self) -> dict[bytes, int]:
        """The hospital's, the insurer's and the processor's balances, by public key."""
        # The processor's validator committed the last close; read where it landed.
        with LedgerClient(self.processor_address, tls=self.tls) as ledger:
            return {
                who.public_key: ledger.get_account(who.public_key).balance_micros
                for who in (self.cast.hospital, self.cast.insurer, self.cast.processor)
            }

    def run(self, payments: int) -> None:
        before = self.balances()
        hub_store, hub_key = self.root / "processor" / "channels", self.root / "processor.json"
        save_key(self.cast.processor, hub_key)
        processor = ChannelWallet(
            self.cast.processor, LedgerClient(self.processor_address, tls=self.tls), hub_store
        )
        try:
            to_hospital = processor.open(
                payee=self.cast.hospital.public_key,
                deposit_micros=DEPOSIT_MICROS,
                address=self.hospital_address,
            ).channel_id
        finally:
            processor.close_store()
        hub = start_hub(hub_store, hub_key, self.processor_address, tls=self.hub_tls())
        try:
            self.story.check(
                "the processor opens a channel to the hospital and starts its hub",
                f"channel {to_hospital.hex()[:12]}… holds {DEPOSIT_MICROS:,} µ on the ledger; "
                f"hub process listening on {hub.address}",
                ok=True,
            )
            total = self.pay_through_hub(hub, to_hospital, payments)
        finally:
            hub.stop()
        # The hub is stopped; the processor's own wallet closes its channel to the hospital.
        processor = ChannelWallet(
            self.cast.processor, LedgerClient(self.processor_address, tls=self.tls), hub_store
        )
        try:
            processor.close(to_hospital)
            paid_out = processor.on_chain(to_hospital).channel
        finally:
            processor.close_store()
            processor.ledger.close()
        self.story.expect_equal(
            "the processor closes its channel to the hospital",
            (paid_out.payee_paid_micros, paid_out.payer_paid_micros),
            (total, DEPOSIT_MICROS - total),
            f"settled: {paid_out.payee_paid_micros:,} µ to the hospital, "
            f"{paid_out.payer_paid_micros:,} µ back to the processor",
        )
        self.story.figure(f"{total:,} µ settled on both hops")
        self.export(to_hospital, paid_out, payments, total)
        self.show_balances(before, total)

    def pay_through_hub(self, hub: NodeProcess, to_hospital: bytes, payments: int) -> int:
        """Opens the insurer's channel to the hub, pays `payments` lines through it to the
        hospital, checks both hops, closes cooperatively; returns the total paid."""
        story, cast = self.story, self.cast
        wallet = ChannelWallet(
            cast.insurer, LedgerClient(self.insurer_address, tls=self.tls), self.root / "insurer"
        )
        try:
            to_hub = wallet.open(
                payee=cast.processor.public_key, deposit_micros=DEPOSIT_MICROS, address=hub.address
            ).channel_id
            story.check(
                "the insurer opens a channel to the processor's hub",
                f"channel {to_hub.hex()[:12]}… holds {DEPOSIT_MICROS:,} µ on the ledger",
                ok=True,
            )
            lines = _lines(payments, patient_ref=sha256(cast.patient.public_key)[:16])
            total = sum(line.amount_micros for line in lines)
            height = int(wallet.ledger.status().height)
            opened, seconds = asyncio.run(
                _pay_through_hub(wallet, to_hub, cast.hospital.public_key, lines, height)
            )
            batches = -(-payments // BATCH)
            story.figure(f"{payments:,} routed payments at {payments / seconds:,.0f}/s delivered")
            story.check(
                f"the insurer pays {payments:,} billing lines to the hospital through the hub",
                f"{batches} batches, each on one hash lock across both hops; every lock opened "
                f"by the hospital's preimage: {payments / seconds:,.0f} payments/s delivered, "
                f"{total:,} µ",
                ok=opened == batches,
                expected=f"{batches} preimages",
            )
            mine = channels_pb2.ChannelState.FromString(wallet.local(to_hub).latest.state)
            theirs = _settled_off_chain(
                self.hospital_address, to_hospital, cast.processor, self.chain_id, total, self.tls
            )
            story.check(
                "both hops agree off the ledger",
                f"insurer → hub: {mine.payee_micros:,} µ paid; hub → hospital: "
                f"{theirs.payee_micros:,} µ paid; no lock left on either",
                ok=(mine.payee_micros, theirs.payee_micros) == (total, total)
                and not (mine.locks or theirs.locks),
                expected=f"{total:,} µ on both, no locks",
            )
            wallet.close(to_hub)
            paid_in = wallet.on_chain(to_hub).channel
        finally:
            wallet.close_store()
            wallet.ledger.close()
        story.expect_equal(
            "the insurer closes its channel cooperatively",
            (paid_in.payee_paid_micros, paid_in.payer_paid_micros),
            (total, DEPOSIT_MICROS - total),
            f"settled at once on the ledger: {paid_in.payee_paid_micros:,} µ to the processor, "
            f"{paid_in.payer_paid_micros:,} µ back to the insurer",
        )
        return total

    def export(
        self, to_hospital: bytes, settled: channels_pb2.Channel, payments: int, total: int
    ) -> None:
        """The hospital's remittance, from its node's own channel store."""
        store = ChannelStore(self.hospital_home.root / "channels")
        try:
            local = store.channel(to_hospital)
            if local is None:
                raise DemoFailed("the hospital's node holds no such channel")
            result = statement(local, store.updates(to_hospital), settled, chain_id=self.chain_id)
        finally:
            store.close()
        self.console.print(_remittance_table(result))
        rows = remittance_csv(result).count("\n") - 1
        claims = len({line.claim_id for line in result.lines})
        self.story.check(
            "the hospital exports its remittance",
            f"{len(result.lines):,} lines over {claims:,} claims, {result.totals.paid_micros:,} µ "
            f"paid, {rows:,} CSV rows; reconciled with the signed states and the settlement: "
            f"{not result.problems}",
            ok=len(result.lines) == payments
            and result.totals.paid_micros == total
            and not result.problems,
            expected=f"{payments:,} lines, {total:,} µ, no problems",
        )

    def show_balances(self, before: dict[bytes, int], total: int) -> None:
        after = self.balances()
        table = Table(title="Accounts on the ledger, before and after the channels")
        for column in ("party", "before (µ)", "after (µ)", "moved (µ)"):
            table.add_column(column, justify="right")
        for who, was in before.items():
            table.add_row(
                self.cast.name(who), f"{was:,}", f"{after[who]:,}", f"{after[who] - was:+,}"
            )
        self.console.print(table)
        moved_by = tuple(after[w] - before[w] for w in before)
        self.story.expect_equal(
            "the accounts moved by what was paid",
            moved_by,
            (total, -total, 0),
            "hospital {:+,} µ, insurer {:+,} µ, processor {:+,} µ".format(*moved_by),
        )
