"""Channel statements and 835-style remittance exports, reconciled against signed states.

`statement` replays a channel's acknowledged updates (`ChannelStore.updates`) and lists
every payment line with what became of it; `remittance_json` and `remittance_csv` render
a statement for a provider's billing system. Everything here is pure: the functions take
messages and return values or strings, and never touch storage, the network or a clock.

Reconciliation is the point. A statement is only trustworthy if its lines are the lines
both parties signed, so `statement` checks, and reports in `Statement.problems`:

* the digest chain: each update's batch, re-encoded deterministically, must hash onto the
  previous digest to give the `lines_digest` of that update's state (32 zero bytes
  before the first), and sequences must run 1, 2, 3... without gaps or repeats;
* the balances: payments minus refunds (see "Locks" below for routed payments) must equal
  the last state's `payee_micros`, and the lines still pending must account for exactly
  the locks the last state holds;
* the ledger, when given a settled channel: it must have settled the last state, paid
  the payee that state's `payee_micros` plus the locks whose preimages it saw revealed,
  and paid the payer the rest of the on-chain deposit;
* optionally (`chain_id=`), both signatures of every stored state.

Locks. A routed update (`new_locks` set) pays its first lines into hash locks, each lock
taking the number of lines it names, rather than to the payee: those lines are "pending".
A later update whose `preimages` open a lock (SHA-256(preimage) == lock hash) makes its
lines "paid"; one naming the hash in `released_locks` makes them "cancelled" (the amount
went back to the payer). Refund lines are never conditional: the channel rules refuse a
refund among a lock's lines.
When the ledger settled the channel, a lock still pending in the settled state is "paid"
if the ledger recorded its preimage (`revealed_hashes`) and "cancelled" otherwise, and
the expected payout counts the revealed ones.

Privacy: the exports carry a line's claim id, procedure code, units, service date and the
pseudonymous `patient_ref` (hex), and nothing else about a patient; refund signatures,
routing destinations and the like are left out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from medledger.channels.signing import (
    ZERO_DIGEST,
    InvalidChannelState,
    decode_state,
    initial_state,
    verify_channel_states,
)
from medledger.crypto import sha256
from medledger.wire.v1 import channels_pb2

__all__ = [
    "CSV_COLUMNS",
    "LineKind",
    "LineStatus",
    "Settlement",
    "Statement",
    "StatementLine",
    "StatementState",
    "Totals",
    "format_micros",
    "remittance_csv",
    "remittance_json",
    "statement",
]

MICROS_PER_UNIT = 1_000_000
REMITTANCE_FORMAT = "medledger-835/v1"
REFUND_GROUP_CODE = "CR"  # CAS group code: correction and reversal
PROCEDURE_QUALIFIER = "HC"  # SVC01-1: HCPCS / CPT

LineKind = Literal["payment", "refund"]
LineStatus = Literal["paid", "pending", "cancelled"]

CSV_COLUMNS = (
    "channel_id",
    "sequence",
    "payment_id",
    "claim_id",
    "procedure_code",
    "units",
    "patient_ref",
    "service_date",
    "kind",
    "status",
    "amount_micros",
    "amount",
)

_STATUS_NAMES = {
    channels_pb2.CHANNEL_STATUS_UNSPECIFIED: "unspecified",
    channels_pb2.CHANNEL_STATUS_OPEN: "open",
    channels_pb2.CHANNEL_STATUS_CLOSING: "closing",
    channels_pb2.CHANNEL_STATUS_SETTLED: "settled",
}


# ---------------------------------------------------------------------- the statement


@dataclass(frozen=True)
class StatementLine:
    """One payment line of one acknowledged update."""

    sequence: int  # of the state whose update carried the line
    position: int  # index in that update's batch
    payment_id: str  # hex
    claim_id: str
    procedure_code: str
    units: int
    patient_ref: str  # hex of the pseudonym reference
    service_date: str
    amount_micros: int  # as carried: never negative, `kind` says which way it moved
    kind: LineKind
    status: LineStatus
    lock_hash: str  # hex; empty unless the line was routed through a hash lock
    acked_unix_ms: int  # when the payee's acknowledgement was stored

    @property
    def signed_micros(self) -> int:
        """The amount towards the payee: negative for a refund."""
        return -self.amount_micros if self.kind == "refund" else self.amount_micros


@dataclass(frozen=True)
class Totals:
    paid_micros: int  # payment lines now the payee's
    refunded_micros: int  # refund lines (always applied)
    net_micros: int  # paid - refunded: what the lines give the payee
    pending_micros: int  # payment lines held by a lock not yet resolved
    cancelled_micros: int  # payment lines whose lock was released or never revealed


@dataclass(frozen=True)
class StatementState:
    """The last state the stored updates lead to (state 0 when there are none)."""

    sequence: int
    deposit_micros: int
    payer_micros: int
    payee_micros: int
    locked_micros: int
    lines_digest: str  # hex
    final: bool


@dataclass(frozen=True)
class Settlement:
    """The channel as the ledger has it."""

    status: str  # "open", "closing", "settled" or "unspecified"
    settled_height: int  # 0 unless settled
    sequence: int  # of the state put forward by a close (0 while open)
    deposit_micros: int
    payer_paid_micros: int
    payee_paid_micros: int

    @property
    def settled(self) -> bool:
        return self.status == "settled"


@dataclass(frozen=True)
class Statement:
    channel_id: bytes
    payer: bytes
    payee: bytes
    lines: tuple[StatementLine, ...]  # by sequence, then position in the batch
    totals: Totals
    state: StatementState
    settlement: Settlement | None  # None when the ledger's view was not given
    problems: tuple[str, ...]  # each reconciliation mismatch, readable; empty: reconciled

    @property
    def reconciled(self) -> bool:
        return not self.problems


def format_micros(micros: int) -> str:
    """An amount in micros as a decimal currency string with 6 decimals."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{fraction:06d}"


@dataclass
class _Line:
    """A line while the updates are replayed: its status may still change."""

    sequence: int
    position: int
    payment: channels_pb2.Payment
    status: LineStatus
    lock_hash: bytes
    acked_unix_ms: int


def _short(digest: bytes) -> str:
    return digest.hex()[:16]


class _Replay:
    """Walks the stored updates in order, collecting lines and problems."""

    def __init__(self, channel: channels_pb2.LocalChannel) -> None:
        self.channel = channel
        self.cid = bytes(channel.channel_id)
        self.problems: list[str] = []
        self.lines: list[_Line] = []
        self.open_locks: dict[bytes, list[_Line]] = {}
        self.seen_ids: dict[tuple[bool, bytes], int] = {}
        self.signed: list[tuple[int, str, bytes, bytes, bytes]] = []
        self.last: channels_pb2.ChannelState | None = None
        self.last_encoded = b""
        self.digest = ZERO_DIGEST

    def feed(self, index: int, stored: channels_pb2.StoredUpdate) -> None:
        update = stored.update
        try:
            state = decode_state(update.state, "update.state")
        except InvalidChannelState as error:
            self.problems.append(f"stored update #{index + 1}: its state does not decode ({error})")
            return
        if not self._in_order(state, update):
            return
        self.signed.append(
            (state.sequence, "payer", update.state, self.channel.payer, update.payer_signature)
        )
        self.signed.append(
            (state.sequence, "payee", update.state, self.channel.payee, stored.payee_signature)
        )
        where = f"update {state.sequence}"
        self._settle_locks(where, update)  # locks opened earlier go first, as in the rules
        self._add_lines(where, state, stored)
        self.last, self.last_encoded = state, bytes(update.state)

    def _in_order(
        self, state: channels_pb2.ChannelState, update: channels_pb2.ChannelUpdate
    ) -> bool:
        """Checks the channel, the sequence and the digest chain; False to skip the update."""
        seq = state.sequence
        where = f"update {seq}"
        if state.channel_id != self.cid or (update.channel_id and update.channel_id != self.cid):
            self.problems.append(
                f"{where}: belongs to channel {state.channel_id.hex()}, not {self.cid.hex()}"
            )
            return False
        expected = (self.last.sequence if self.last is not None else 0) + 1
        if seq < expected:
            self.problems.append(
                f"{where}: sequence {seq} repeats or goes back (expected {expected}); skipped"
            )
            return False
        if seq > expected:
            missing = str(expected) if seq == expected + 1 else f"{expected}..{seq - 1}"
            self.problems.append(
                f"{where}: update(s) {missing} missing (sequence {seq} follows {expected - 1}); "
                "its lines_digest cannot be checked across the gap"
            )
        else:
            want = sha256(self.digest + update.batch.SerializeToString(deterministic=True))
            if want != state.lines_digest:
                self.problems.append(
                    f"{where}: lines_digest {_short(state.lines_digest)}... does not match its "
                    f"stored payment batch ({_short(want)}...): a line was changed, added or "
                    "removed"
                )
        # Go on from the digest both signed, so each later update is checked on its own.
        self.digest = state.lines_digest or ZERO_DIGEST
        return True

    def _settle_locks(self, where: str, update: channels_pb2.ChannelUpdate) -> None:
        outcomes: list[tuple[bytes, LineStatus, str]] = [
            (sha256(preimage), "paid", "a preimage opens no pending lock")
            for preimage in update.preimages
        ]
        outcomes.extend(
            (h, "cancelled", f"released lock {_short(h)}... is not pending")
            for h in update.released_locks
        )
        for lock_hash, status, unknown in outcomes:
            held = self.open_locks.pop(lock_hash, None)
            if held is None:
                self.problems.append(f"{where}: {unknown}")
                continue
            for line in held:
                line.status = status

    def _add_lines(
        self, where: str, state: channels_pb2.ChannelState, stored: channels_pb2.StoredUpdate
    ) -> None:
        update = stored.update
        # The lock each line pays into: the first lines go to the update's new locks.
        owners = [bytes(new.hash) for new in update.new_locks for _ in range(new.payments)]
        locked: dict[bytes, list[_Line]] = {bytes(new.hash): [] for new in update.new_locks}
        for position, payment in enumerate(update.batch.payments):
            key = (payment.refund, bytes(payment.payment_id))
            if key in self.seen_ids:
                kind = "refund" if payment.refund else "payment"
                self.problems.append(
                    f"{where}: {kind} id {payment.payment_id.hex()} already appeared in "
                    f"update {self.seen_ids[key]}"
                )
            self.seen_ids[key] = state.sequence
            routed = owners[position] if position < len(owners) else b""
            conditional = bool(routed) and not payment.refund
            line = _Line(
                sequence=state.sequence,
                position=position,
                payment=payment,
                status="pending" if conditional else "paid",
                lock_hash=routed if conditional else b"",
                acked_unix_ms=stored.acked_unix_ms,
            )
            self.lines.append(line)
            if conditional:
                locked[routed].append(line)
        for routed, lines in locked.items():
            amount = sum(line.payment.amount_micros for line in lines)
            held = next((lock for lock in state.locks if lock.hash == routed), None)
            if held is None or held.amount_micros != amount:
                self.problems.append(
                    f"{where}: the state holds no lock {_short(routed)}... of {amount} micros "
                    "for its routed lines"
                )
            if routed in self.open_locks:
                self.problems.append(f"{where}: lock {_short(routed)}... is already pending")
            self.open_locks[routed] = lines

    def check_signatures(self, chain_id: str) -> None:
        if not self.signed:
            return
        verdicts = verify_channel_states(
            chain_id,
            [entry[2] for entry in self.signed],
            [entry[3] for entry in self.signed],
            [entry[4] for entry in self.signed],
        )
        for (seq, party, _, _, _), valid in zip(self.signed, verdicts, strict=True):
            if not valid:
                self.problems.append(
                    f"update {seq}: {party}_signature is not the {party}'s signature"
                )

    def check_balances(self, last: channels_pb2.ChannelState) -> None:
        """Off the ledger: the lines must add up to the last state's split and locks."""
        paid = _sum(self.lines, "paid")
        refunded = _sum_refunds(self.lines)
        pending = _sum(self.lines, "pending")
        if paid - refunded != last.payee_micros:
            self.problems.append(
                f"net to payee {paid - refunded} micros (payments {paid} - refunds {refunded}) "
                f"differs from the last state's payee_micros {last.payee_micros} "
                f"(sequence {last.sequence})"
            )
        state_locks = {lock.hash for lock in last.locks}
        locked = sum(lock.amount_micros for lock in last.locks)
        if set(self.open_locks) != state_locks or pending != locked:
            self.problems.append(
                f"pending lines of {pending} micros under {len(self.open_locks)} lock(s) differ "
                f"from the last state's {len(state_locks)} lock(s) of {locked} micros"
            )


def statement(
    channel: channels_pb2.LocalChannel,
    updates: Iterable[channels_pb2.StoredUpdate],
    on_chain: channels_pb2.Channel | None,
    *,
    chain_id: str | None = None,
) -> Statement:
    """The statement of `channel` from its acknowledged `updates` (in sequence order, as
    `ChannelStore.updates` yields them), reconciled against the digest chain, the last
    state's balances and, when given, the ledger's record `on_chain`. With `chain_id`, the
    payer's and payee's signatures of every stored state are checked too."""
    replay = _Replay(channel)
    for index, stored in enumerate(updates):
        replay.feed(index, stored)
    if chain_id is not None:
        replay.check_signatures(chain_id)
    last = replay.last or initial_state(channel.channel_id, channel.deposit_micros)
    replay.problems.extend(_check_latest(channel, last, replay.last_encoded))
    replay.check_balances(last)
    settlement = None
    if on_chain is not None:
        settlement, found = _check_on_chain(channel, last, on_chain, replay.open_locks)
        replay.problems.extend(found)
    return Statement(
        channel_id=bytes(channel.channel_id),
        payer=bytes(channel.payer),
        payee=bytes(channel.payee),
        lines=tuple(_freeze(line) for line in replay.lines),
        totals=_totals(replay.lines),
        state=StatementState(
            sequence=last.sequence,
            deposit_micros=last.deposit_micros,
            payer_micros=last.payer_micros,
            payee_micros=last.payee_micros,
            locked_micros=sum(lock.amount_micros for lock in last.locks),
            lines_digest=(last.lines_digest or ZERO_DIGEST).hex(),
            final=last.final,
        ),
        settlement=settlement,
        problems=tuple(replay.problems),
    )


def _sum(lines: Iterable[_Line], status: LineStatus) -> int:
    """The payment (not refund) lines with `status`."""
    return sum(
        ln.payment.amount_micros for ln in lines if ln.status == status and not ln.payment.refund
    )


def _sum_refunds(lines: Iterable[_Line]) -> int:
    return sum(ln.payment.amount_micros for ln in lines if ln.payment.refund)


def _check_latest(
    channel: channels_pb2.LocalChannel, last: channels_pb2.ChannelState, last_encoded: bytes
) -> list[str]:
    """The channel's latest state both signed must be the last stored update's."""
    if not channel.latest.state:
        if last.sequence:
            return [f"the channel has no signed state but the updates reach {last.sequence}"]
        return []
    try:
        latest = decode_state(channel.latest.state, "latest.state")
    except InvalidChannelState as error:
        return [f"the channel's latest signed state does not decode ({error})"]
    if latest.sequence != last.sequence:
        return [
            f"the channel's latest signed state is sequence {latest.sequence} but the stored "
            f"updates end at {last.sequence}"
        ]
    if last_encoded and channel.latest.state != last_encoded:
        return [f"the channel's latest signed state differs from stored update {last.sequence}"]
    return []


def _check_on_chain(
    channel: channels_pb2.LocalChannel,
    last: channels_pb2.ChannelState,
    on_chain: channels_pb2.Channel,
    open_locks: dict[bytes, list[_Line]],
) -> tuple[Settlement, list[str]]:
    problems: list[str] = []
    if on_chain.channel_id != channel.channel_id:
        problems.append(
            f"the ledger's channel is {on_chain.channel_id.hex()}, not {channel.channel_id.hex()}"
        )
    for party in ("payer", "payee"):
        mine, theirs = getattr(channel, party), getattr(on_chain, party)
        if mine and theirs and mine != theirs:
            problems.append(f"the ledger's {party} {theirs.hex()} is not the channel's")
    settlement = Settlement(
        status=_STATUS_NAMES.get(on_chain.status, "unspecified"),
        settled_height=on_chain.settled_height,
        sequence=on_chain.pending_state.sequence,
        deposit_micros=on_chain.deposit_micros,
        payer_paid_micros=on_chain.payer_paid_micros,
        payee_paid_micros=on_chain.payee_paid_micros,
    )
    if not settlement.settled:
        return settlement, problems
    if on_chain.pending_state.sequence != last.sequence:
        problems.append(
            f"the ledger settled state {on_chain.pending_state.sequence} but the statement's "
            f"last state is {last.sequence}"
        )
    # Locks still pending at settlement: the payee's if the ledger saw the preimage.
    revealed = set(on_chain.revealed_hashes)
    won = sum(lock.amount_micros for lock in last.locks if lock.hash in revealed)
    for lock_hash, held in open_locks.items():
        for line in held:
            line.status = "paid" if lock_hash in revealed else "cancelled"
    payee = last.payee_micros + won
    if on_chain.payee_paid_micros != payee:
        problems.append(
            f"the ledger paid the payee {on_chain.payee_paid_micros} micros, but the last state "
            f"gives the payee {last.payee_micros} plus {won} in revealed locks = {payee}"
        )
    payer = on_chain.deposit_micros - payee
    if on_chain.payer_paid_micros != payer:
        problems.append(
            f"the ledger paid the payer {on_chain.payer_paid_micros} micros, but the deposit "
            f"{on_chain.deposit_micros} less the payee's {payee} is {payer}"
        )
    return settlement, problems


def _freeze(line: _Line) -> StatementLine:
    payment = line.payment
    return StatementLine(
        sequence=line.sequence,
        position=line.position,
        payment_id=payment.payment_id.hex(),
        claim_id=payment.line.claim_id,
        procedure_code=payment.line.procedure_code,
        units=payment.line.units,
        patient_ref=payment.line.patient_ref.hex(),
        service_date=payment.line.service_date,
        amount_micros=payment.amount_micros,
        kind="refund" if payment.refund else "payment",
        status=line.status,
        lock_hash=line.lock_hash.hex(),
        acked_unix_ms=line.acked_unix_ms,
    )


def _totals(lines: list[_Line]) -> Totals:
    paid = _sum(lines, "paid")
    refunded = _sum_refunds(lines)
    return Totals(
        paid_micros=paid,
        refunded_micros=refunded,
        net_micros=paid - refunded,
        pending_micros=_sum(lines, "pending"),
        cancelled_micros=_sum(lines, "cancelled"),
    )


# ---------------------------------------------------------------------- the exports


def _money(micros: int) -> dict[str, Any]:
    return {"micros": micros, "amount": format_micros(micros)}


def _procedure(code: str) -> str:
    return f"{PROCEDURE_QUALIFIER}:{code}" if code else ""


def _claim(claim_id: str, lines: list[StatementLine]) -> dict[str, Any]:
    """One CLP-like claim: its service lines grouped by procedure, date and status, its
    refunds as CR adjustments."""
    services: dict[tuple[str, str, str], dict[str, Any]] = {}
    adjustments: list[dict[str, Any]] = []
    for line in lines:
        if line.kind == "refund":
            adjustments.append(
                {
                    "group_code": REFUND_GROUP_CODE,
                    "reason": "refund",
                    "procedure": _procedure(line.procedure_code),
                    "service_date": line.service_date,
                    "units": line.units,
                    "payment_id": line.payment_id,
                    "sequence": line.sequence,
                    "amount": _money(-line.amount_micros),
                }
            )
            continue
        key = (line.procedure_code, line.service_date, line.status)
        service = services.setdefault(
            key,
            {
                "procedure": _procedure(line.procedure_code),
                "service_date": line.service_date,
                "status": line.status,
                "units": 0,
                "micros": 0,
                "payment_ids": [],
            },
        )
        service["units"] += line.units
        service["micros"] += line.amount_micros
        service["payment_ids"].append(line.payment_id)
    service_lines = []
    for service in services.values():
        micros = service.pop("micros")
        service_lines.append({**service, "amount": _money(micros)})
    charge = sum(ln.amount_micros for ln in lines if ln.kind == "payment" and ln.status == "paid")
    pending = sum(
        ln.amount_micros for ln in lines if ln.kind == "payment" and ln.status == "pending"
    )
    refunded = sum(ln.amount_micros for ln in lines if ln.kind == "refund")
    return {
        "claim_id": claim_id,
        "patient_ref": lines[0].patient_ref,
        "total_charge": _money(charge),
        "payment_amount": _money(charge - refunded),
        "pending": _money(pending),
        "service_lines": service_lines,
        "adjustments": adjustments,
    }


def remittance_json(statement: Statement) -> str:
    """An 835-style remittance advice of `statement` as deterministic JSON.

    The header is BPR/N1-like (payer, payee = the provider, the payment amount = the net
    the lines give the payee, the settlement when the ledger settled); each claim is
    CLP-like (claim id, total charge = the paid amount, payment amount after refunds,
    patient_ref) with SVC-like service lines ("HC:<code>", units, amount, payment ids,
    service date, status) and refunds as CAS-like adjustments with group code "CR" and a
    negative amount. Amounts are objects {"micros": int, "amount": "1.500000"}. A claim's
    patient_ref is its first line's."""
    by_claim: dict[str, list[StatementLine]] = {}
    for line in statement.lines:
        by_claim.setdefault(line.claim_id, []).append(line)
    totals = statement.totals
    state = statement.state
    settlement: dict[str, Any] | None = None
    if statement.settlement is not None:
        settlement = {"status": statement.settlement.status}
        if statement.settlement.settled:
            settlement.update(
                height=statement.settlement.settled_height,
                sequence=statement.settlement.sequence,
                payee_paid=_money(statement.settlement.payee_paid_micros),
                payer_paid=_money(statement.settlement.payer_paid_micros),
            )
    document = {
        "format": REMITTANCE_FORMAT,
        "header": {
            "channel_id": statement.channel_id.hex(),
            "payer": statement.payer.hex(),
            "payee": statement.payee.hex(),
            "payment_amount": _money(totals.net_micros),
            "totals": {
                "paid": _money(totals.paid_micros),
                "refunded": _money(totals.refunded_micros),
                "net": _money(totals.net_micros),
                "pending": _money(totals.pending_micros),
                "cancelled": _money(totals.cancelled_micros),
            },
            "state": {
                "sequence": state.sequence,
                "deposit": _money(state.deposit_micros),
                "payer_balance": _money(state.payer_micros),
                "payee_balance": _money(state.payee_micros),
                "locked": _money(state.locked_micros),
                "lines_digest": state.lines_digest,
                "final": state.final,
            },
            "settlement": settlement,
            "reconciled": statement.reconciled,
            "problems": list(statement.problems),
        },
        "claims": [_claim(claim_id, lines) for claim_id, lines in by_claim.items()],
    }
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)


def remittance_csv(statement: Statement) -> str:
    """One row per payment line, with a header row (`CSV_COLUMNS`), in statement order.
    `amount_micros` and `amount` are signed towards the payee: a refund is negative, so the
    rows with status "paid" sum to the net. Claim ids, procedure codes and service dates
    come from the payer: one that a spreadsheet would run as a formula (it starts with
    = + - @, a tab or a carriage return) is written with a leading single quote, so the
    cell shows it as text (OWASP's defence against CSV injection)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    channel_id = statement.channel_id.hex()
    for line in statement.lines:
        writer.writerow(
            (
                channel_id,
                line.sequence,
                line.payment_id,
                _as_text(line.claim_id),
                _as_text(line.procedure_code),
                line.units,
                line.patient_ref,
                _as_text(line.service_date),
                line.kind,
                line.status,
                line.signed_micros,
                format_micros(line.signed_micros),
            )
        )
    return out.getvalue()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: str) -> str:
    """A payer-written cell, kept from being read as a spreadsheet formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
