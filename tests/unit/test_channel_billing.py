"""Channel statements and remittance exports over real states built by the channel rules
and signed with real keys: totals, lock outcomes, the JSON and CSV exports, and the
reconciliation problems that tampering produces."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from medledger.channels.billing import (
    CSV_COLUMNS,
    Statement,
    format_micros,
    remittance_csv,
    remittance_json,
    statement,
)
from medledger.channels.rules import LockedPayments, UpdateParts, next_state
from medledger.channels.signing import initial_state, sign_state
from medledger.crypto import SigningKey, sha256
from medledger.wire.v1 import channels_pb2

CHAIN = "billing-test"
PAYER, PAYEE = SigningKey.from_seed(b"\x21" * 32), SigningKey.from_seed(b"\x22" * 32)
CID = b"b" * 16
DEPOSIT = 20_000_000
PATIENT_1, PATIENT_2 = b"\x01" * 16, b"\x02" * 16
PREIMAGE_1, PREIMAGE_2, PREIMAGE_3 = b"\x31" * 32, b"\x32" * 32, b"\x33" * 32
EXPIRY = 500
ACKED_MS = 1_700_000_000_000


def pid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def pay(
    n: int,
    amount: int,
    claim: str,
    code: str,
    units: int = 1,
    patient: bytes = PATIENT_1,
    date: str = "2024-03-01",
    *,
    refund: bool = False,
) -> channels_pb2.Payment:
    return channels_pb2.Payment(
        payment_id=pid(n),
        amount_micros=amount,
        line=channels_pb2.BillingLine(
            claim_id=claim,
            procedure_code=code,
            units=units,
            patient_ref=patient,
            service_date=date,
        ),
        refund=refund,
        refund_signature=b"\x99" * 64 if refund else b"",
    )


@dataclass
class Spec:
    payments: Sequence[channels_pb2.Payment]
    preimage: bytes | None = None  # a routed batch, locked under sha256(preimage)
    preimages: Sequence[bytes] = ()
    released: Sequence[bytes] = ()
    final: bool = False


@dataclass
class Channel:
    local: channels_pb2.LocalChannel
    stored: list[channels_pb2.StoredUpdate]
    states: list[channels_pb2.ChannelState] = field(default_factory=list)

    @property
    def last(self) -> channels_pb2.ChannelState:
        return self.states[-1]

    def settled(self, *, revealed: Sequence[bytes] = (), won: int = 0) -> channels_pb2.Channel:
        payee = self.last.payee_micros + won
        return channels_pb2.Channel(
            channel_id=CID,
            payer=PAYER.public_key,
            payee=PAYEE.public_key,
            deposit_micros=DEPOSIT,
            status=channels_pb2.CHANNEL_STATUS_SETTLED,
            pending_state=self.last,
            revealed_hashes=sorted(revealed),
            settled_height=42,
            payee_paid_micros=payee,
            payer_paid_micros=DEPOSIT - payee,
        )

    def statement(
        self,
        on_chain: channels_pb2.Channel | None = None,
        stored: Sequence[channels_pb2.StoredUpdate] | None = None,
    ) -> Statement:
        return statement(
            self.local, self.stored if stored is None else stored, on_chain, chain_id=CHAIN
        )


def build(specs: Sequence[Spec]) -> Channel:
    state = initial_state(CID, DEPOSIT)
    stored: list[channels_pb2.StoredUpdate] = []
    states: list[channels_pb2.ChannelState] = []
    for i, spec in enumerate(specs):
        batch = channels_pb2.PaymentBatch(payments=spec.payments)
        lock = None
        routed = sum(not p.refund for p in spec.payments)  # refunds follow a lock's lines
        if spec.preimage is not None:
            paid = sum(p.amount_micros for p in spec.payments if not p.refund)
            lock = channels_pb2.HashLock(
                hash=sha256(spec.preimage), amount_micros=paid, expiry_height=EXPIRY
            )
        parts = UpdateParts(
            batch=batch,
            batch_bytes=batch.SerializeToString(deterministic=True),
            deposit_micros=DEPOSIT,
            locks=[LockedPayments(lock, routed)] if lock is not None else [],
            preimages=spec.preimages,
            released=spec.released,
            final=spec.final,
        )
        state = next_state(state, parts)
        encoded = state.SerializeToString(deterministic=True)
        update = channels_pb2.ChannelUpdate(
            channel_id=CID,
            batch=batch,
            state=encoded,
            payer_signature=sign_state(PAYER, CHAIN, encoded),
            new_locks=[channels_pb2.NewLock(hash=lock.hash, payments=routed)]
            if lock is not None
            else [],
            preimages=spec.preimages,
            released_locks=spec.released,
        )
        stored.append(
            channels_pb2.StoredUpdate(
                update=update,
                payee_signature=sign_state(PAYEE, CHAIN, encoded),
                acked_unix_ms=ACKED_MS + i,
            )
        )
        states.append(state)
    local = channels_pb2.LocalChannel(
        channel_id=CID,
        payer=PAYER.public_key,
        payee=PAYEE.public_key,
        deposit_micros=DEPOSIT,
        challenge_blocks=5,
        address="127.0.0.1:1",
    )
    if stored:
        last = stored[-1]
        local.latest.CopyFrom(
            channels_pb2.SignedChannelState(
                state=last.update.state,
                payer_signature=last.update.payer_signature,
                payee_signature=last.payee_signature,
            )
        )
    # Through the wire encoding, as ChannelStore.updates gives them back.
    reread = [channels_pb2.StoredUpdate.FromString(s.SerializeToString()) for s in stored]
    return Channel(local, reread, states)


# Claims A (two lines, patient 1), B (patient 2, paid in two updates), C (routed,
# resolved), D (routed, released), E (plain, last update).
SPECS = [
    Spec(
        [
            pay(1, 1_500_000, "CLM-A", "99213"),
            pay(2, 400_000, "CLM-A", "85025", units=2),
            pay(3, 900_000, "CLM-B", "J1100", units=3, patient=PATIENT_2, date="2024-03-02"),
        ]
    ),
    Spec(
        [
            pay(4, 200_000, "CLM-A", "85025", refund=True),
            pay(5, 300_000, "CLM-B", "J1100", units=1, patient=PATIENT_2, date="2024-03-02"),
        ]
    ),
    Spec([pay(6, 1_000_000, "CLM-C", "99214"), pay(7, 250_000, "CLM-C", "36415")], PREIMAGE_1),
    Spec([pay(8, 700_000, "CLM-D", "99215")], PREIMAGE_2),
    Spec(
        [pay(9, 50_000, "CLM-E", "A0425", units=12, date="2024-03-05")],
        preimages=[PREIMAGE_1],
        released=[sha256(PREIMAGE_2)],
    ),
]
PAID = 1_500_000 + 400_000 + 900_000 + 300_000 + 1_000_000 + 250_000 + 50_000
REFUNDED = 200_000
CANCELLED = 700_000


@pytest.fixture
def channel() -> Channel:
    return build(SPECS)


def statuses(stmt: Statement) -> dict[str, str]:
    return {line.payment_id: line.status for line in stmt.lines}


def walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


# ---------------------------------------------------------------------- the statement


def test_statement_totals_lines_and_lock_outcomes(channel: Channel) -> None:
    stmt = channel.statement()
    assert stmt.problems == ()
    assert stmt.reconciled
    assert (stmt.channel_id, stmt.payer, stmt.payee) == (
        CID,
        PAYER.public_key,
        PAYEE.public_key,
    )
    assert stmt.totals.paid_micros == PAID
    assert stmt.totals.refunded_micros == REFUNDED
    assert stmt.totals.net_micros == PAID - REFUNDED == channel.last.payee_micros
    assert stmt.totals.pending_micros == 0
    assert stmt.totals.cancelled_micros == CANCELLED
    assert stmt.state.sequence == 5
    assert stmt.state.payee_micros == channel.last.payee_micros
    assert stmt.state.payer_micros == DEPOSIT - (PAID - REFUNDED)
    assert stmt.state.locked_micros == 0
    assert stmt.state.lines_digest == channel.last.lines_digest.hex()
    assert stmt.settlement is None

    assert [(ln.sequence, ln.position) for ln in stmt.lines] == [
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
        (4, 0),
        (5, 0),
    ]
    assert statuses(stmt) == {
        pid(n).hex(): ("cancelled" if n == 8 else "paid") for n in range(1, 10)
    }
    refund = stmt.lines[3]
    assert (refund.kind, refund.amount_micros, refund.signed_micros) == (
        "refund",
        200_000,
        -200_000,
    )
    routed = stmt.lines[5]
    assert routed.lock_hash == sha256(PREIMAGE_1).hex()
    assert routed.acked_unix_ms == ACKED_MS + 2
    first = stmt.lines[2]
    assert (first.claim_id, first.procedure_code, first.units) == ("CLM-B", "J1100", 3)
    assert (first.patient_ref, first.service_date) == (PATIENT_2.hex(), "2024-03-02")
    assert first.lock_hash == ""


def test_statement_before_a_lock_resolves_shows_it_pending() -> None:
    chan = build(SPECS[:3])
    stmt = chan.statement()
    assert stmt.problems == ()
    assert stmt.totals.pending_micros == 1_250_000
    assert stmt.state.locked_micros == 1_250_000
    assert stmt.totals.net_micros == chan.last.payee_micros
    assert {ln.status for ln in stmt.lines if ln.sequence == 3} == {"pending"}


def test_empty_channel_reconciles_against_state_zero() -> None:
    chan = build([])
    stmt = statement(chan.local, [], None)
    assert stmt.problems == ()
    assert stmt.lines == ()
    assert (stmt.state.sequence, stmt.state.payer_micros) == (0, DEPOSIT)


def test_settled_channel_reconciles(channel: Channel) -> None:
    stmt = channel.statement(channel.settled())
    assert stmt.problems == ()
    assert stmt.settlement is not None
    assert stmt.settlement.settled
    assert stmt.settlement.settled_height == 42
    assert stmt.settlement.payee_paid_micros == PAID - REFUNDED


def test_lock_revealed_on_the_ledger_counts_as_paid() -> None:
    chan = build(SPECS[:3])  # the CLM-C lock is still pending in the last state
    stmt = chan.statement(chan.settled(revealed=[sha256(PREIMAGE_1)], won=1_250_000))
    assert stmt.problems == ()
    assert stmt.totals.pending_micros == 0
    assert stmt.totals.net_micros == chan.last.payee_micros + 1_250_000
    assert {ln.status for ln in stmt.lines if ln.sequence == 3} == {"paid"}

    expired = chan.statement(chan.settled())  # never revealed: back to the payer
    assert expired.problems == ()
    assert expired.totals.cancelled_micros == 1_250_000


def test_statement_is_deterministic(channel: Channel) -> None:
    assert channel.statement() == channel.statement()
    assert remittance_json(channel.statement()) == remittance_json(channel.statement())


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "0.000000"), (1, "0.000001"), (1_500_000, "1.500000"), (-200_000, "-0.200000")],
)
def test_format_micros(micros: int, text: str) -> None:
    assert format_micros(micros) == text


# ---------------------------------------------------------------------- exports


def test_remittance_json(channel: Channel) -> None:
    doc = json.loads(remittance_json(channel.statement(channel.settled())))
    header = doc["header"]
    assert header["channel_id"] == CID.hex()
    assert header["payer"] == PAYER.public_key.hex()
    assert header["payee"] == PAYEE.public_key.hex()
    assert header["payment_amount"] == {"micros": PAID - REFUNDED, "amount": "4.200000"}
    assert header["totals"]["cancelled"]["micros"] == CANCELLED
    assert header["settlement"]["status"] == "settled"
    assert header["settlement"]["height"] == 42
    assert header["settlement"]["payee_paid"]["micros"] == PAID - REFUNDED
    assert header["state"]["sequence"] == 5
    assert header["reconciled"] is True
    assert header["problems"] == []

    claims = {claim["claim_id"]: claim for claim in doc["claims"]}
    assert [claim["claim_id"] for claim in doc["claims"]] == [
        "CLM-A",
        "CLM-B",
        "CLM-C",
        "CLM-D",
        "CLM-E",
    ]
    a = claims["CLM-A"]
    assert a["patient_ref"] == PATIENT_1.hex()
    assert a["total_charge"] == {"micros": 1_900_000, "amount": "1.900000"}
    assert a["payment_amount"] == {"micros": 1_700_000, "amount": "1.700000"}
    assert [svc["procedure"] for svc in a["service_lines"]] == ["HC:99213", "HC:85025"]
    assert a["service_lines"][1]["units"] == 2
    assert a["service_lines"][1]["payment_ids"] == [pid(2).hex()]
    (adjustment,) = a["adjustments"]
    assert adjustment["group_code"] == "CR"
    assert adjustment["amount"] == {"micros": -200_000, "amount": "-0.200000"}
    assert adjustment["payment_id"] == pid(4).hex()
    assert adjustment["procedure"] == "HC:85025"

    b = claims["CLM-B"]  # two payments for one service: one service line
    assert b["patient_ref"] == PATIENT_2.hex()
    (svc,) = b["service_lines"]
    assert svc == {
        "procedure": "HC:J1100",
        "service_date": "2024-03-02",
        "status": "paid",
        "units": 4,
        "amount": {"micros": 1_200_000, "amount": "1.200000"},
        "payment_ids": [pid(3).hex(), pid(5).hex()],
    }
    assert claims["CLM-C"]["total_charge"]["micros"] == 1_250_000
    d = claims["CLM-D"]
    assert d["total_charge"]["micros"] == 0
    assert d["service_lines"][0]["status"] == "cancelled"
    assert sum(c["payment_amount"]["micros"] for c in doc["claims"]) == PAID - REFUNDED


def test_remittance_json_open_channel_has_no_payout() -> None:
    chan = build(SPECS[:2])
    open_channel = channels_pb2.Channel(
        channel_id=CID,
        payer=PAYER.public_key,
        payee=PAYEE.public_key,
        deposit_micros=DEPOSIT,
        status=channels_pb2.CHANNEL_STATUS_OPEN,
    )
    doc = json.loads(remittance_json(chan.statement(open_channel)))
    assert doc["header"]["settlement"] == {"status": "open"}
    assert json.loads(remittance_json(chan.statement()))["header"]["settlement"] is None


def test_remittance_csv(channel: Channel) -> None:
    text = remittance_csv(channel.statement())
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == 9
    first = records[0]
    assert first == {
        "channel_id": CID.hex(),
        "sequence": "1",
        "payment_id": pid(1).hex(),
        "claim_id": "CLM-A",
        "procedure_code": "99213",
        "units": "1",
        "patient_ref": PATIENT_1.hex(),
        "service_date": "2024-03-01",
        "kind": "payment",
        "status": "paid",
        "amount_micros": "1500000",
        "amount": "1.500000",
    }
    refund = records[3]
    assert (refund["kind"], refund["amount_micros"], refund["amount"]) == (
        "refund",
        "-200000",
        "-0.200000",
    )
    assert records[7]["status"] == "cancelled"
    paid = sum(int(r["amount_micros"]) for r in records if r["status"] == "paid")
    assert paid == PAID - REFUNDED


@pytest.mark.parametrize(
    "written", ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tX", "\rX"]
)
def test_a_claim_id_a_spreadsheet_would_run_is_exported_as_text(written: str) -> None:
    chan = build([Spec([pay(1, 1_000, written, "99213", date=written)])])
    (record,) = csv.DictReader(io.StringIO(remittance_csv(chan.statement())))
    assert (record["claim_id"], record["service_date"]) == ("'" + written, "'" + written)
    assert record["procedure_code"] == "99213"  # an ordinary cell is left as it is
    # The JSON export is data, not a sheet: it carries the claim id as written.
    assert json.loads(remittance_json(chan.statement()))["claims"][0]["claim_id"] == written


def test_exports_carry_only_the_pseudonymous_patient_ref(channel: Channel) -> None:
    stmt = channel.statement(channel.settled())
    doc = json.loads(remittance_json(stmt))
    allowed = {
        # header
        "format", "header", "channel_id", "payer", "payee", "payment_amount", "totals",
        "paid", "refunded", "net", "pending", "cancelled", "state", "sequence", "deposit",
        "payer_balance", "payee_balance", "locked", "lines_digest", "final", "settlement",
        "status", "height", "payee_paid", "payer_paid", "reconciled", "problems",
        # claims
        "claims", "claim_id", "patient_ref", "total_charge", "service_lines", "adjustments",
        "procedure", "service_date", "units", "payment_ids", "group_code", "reason",
        "payment_id", "micros", "amount",
    }  # fmt: skip
    assert set(walk_keys(doc)) <= allowed
    text = remittance_json(stmt) + remittance_csv(stmt)
    assert (b"\x99" * 64).hex() not in text  # refund signatures stay out
    assert PATIENT_1.hex() in text


# ---------------------------------------------------------------------- tampering


def test_changed_line_amount_breaks_the_digest(channel: Channel) -> None:
    stored = [channels_pb2.StoredUpdate.FromString(s.SerializeToString()) for s in channel.stored]
    stored[1].update.batch.payments[1].amount_micros += 1
    stmt = channel.statement(stored=stored)
    assert any(
        p.startswith("update 2: lines_digest") and "stored payment batch" in p
        for p in stmt.problems
    ), stmt.problems
    assert any("net to payee" in p and "payee_micros" in p for p in stmt.problems)
    assert not any(p.startswith(("update 1", "update 3")) for p in stmt.problems)


def test_missing_update_is_reported(channel: Channel) -> None:
    stored = channel.stored[:1] + channel.stored[2:]
    stmt = channel.statement(stored=stored)
    assert any("update(s) 2 missing" in p and "follows 1" in p for p in stmt.problems), (
        stmt.problems
    )
    assert any("net to payee" in p for p in stmt.problems)


def test_missing_last_update_disagrees_with_the_latest_state(channel: Channel) -> None:
    stmt = channel.statement(stored=channel.stored[:-1])
    assert any("latest signed state is sequence 5" in p for p in stmt.problems), stmt.problems


def test_repeated_update_is_skipped_and_reported(channel: Channel) -> None:
    stored = [*channel.stored[:2], channel.stored[1], *channel.stored[2:]]
    stmt = channel.statement(stored=stored)
    assert len(stmt.lines) == 9
    assert stmt.problems == ("update 2: sequence 2 repeats or goes back (expected 3); skipped",)


def test_on_chain_payout_differing_is_reported(channel: Channel) -> None:
    on_chain = channel.settled()
    on_chain.payee_paid_micros -= 100
    on_chain.payer_paid_micros += 100
    stmt = channel.statement(on_chain)
    assert any("ledger paid the payee" in p for p in stmt.problems), stmt.problems
    assert any("ledger paid the payer" in p for p in stmt.problems)
    assert not json.loads(remittance_json(stmt))["header"]["reconciled"]


def test_settled_on_an_older_state_is_reported(channel: Channel) -> None:
    on_chain = channel.settled()
    on_chain.pending_state.CopyFrom(channel.states[2])
    stmt = channel.statement(on_chain)
    assert any("ledger settled state 3" in p for p in stmt.problems), stmt.problems


def test_bad_signature_is_reported(channel: Channel) -> None:
    stored = [channels_pb2.StoredUpdate.FromString(s.SerializeToString()) for s in channel.stored]
    stored[2].payee_signature = stored[1].payee_signature
    stmt = channel.statement(stored=stored)
    assert stmt.problems == ("update 3: payee_signature is not the payee's signature",)
    # Without a chain id the signatures are not checked.
    assert statement(channel.local, stored, None).problems == ()


def test_preimage_without_its_lock_is_reported(channel: Channel) -> None:
    stored = [channels_pb2.StoredUpdate.FromString(s.SerializeToString()) for s in channel.stored]
    stored[4].update.preimages.append(PREIMAGE_3)
    stmt = channel.statement(stored=stored)
    assert "update 5: a preimage opens no pending lock" in stmt.problems
