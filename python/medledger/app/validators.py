"""The validator set as state: which keys vote at which height, and how governance
changes it.

A change approved in block H takes effect at H+2 (as in CometBFT): when block H is
committed, every node already knows the sets of H+1 and H+2, so a validator joining or
leaving is known to all one full height before its first or last vote counts. Each set is
kept under its effective height (the history `verify-chain`, catch-up and the replica read
per height) and under `LATEST_KEY` (the one a new change starts from).

A change is refused when it moves at least the policy's share of the power at once (1/3
by default: a new set must overlap the old one in more than 2/3 of the old power, so a
Byzantine third of the old set cannot hand the chain to a new majority in one step), or
leaves fewer than `validators_min` validators (4 by default: fewer tolerate no fault).
"""

from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from medledger.app.members import organisation_of, policy
from medledger.app.outcome import TxOutcome
from medledger.app.state import (
    ORGANISATIONS,
    VALIDATORS,
    VALIDATORS_LATEST_KEY,
    BlockState,
    genesis_validators,
)
from medledger.block import ValidatorSet
from medledger.errors import Rejected
from medledger.genesis import ORGANISATION_ID, Genesis
from medledger.limits import ADDRESS_BYTES_MAX, UPDATES_MAX, VALIDATORS_MAX
from medledger.wire.v1 import governance_pb2, state_pb2, tx_pb2

__all__ = [
    "LATEST_KEY",
    "UPDATES_MAX",
    "ValidatorSchedule",
    "change_validators",
    "check_changes",
    "height_key",
    "validator_set",
]

LATEST_KEY = VALIDATORS_LATEST_KEY
POWER_MAX = 2**32 - 1
ADDRESS = re.compile(r"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
"""host:port (a name, IPv4 or [IPv6]) of a validator's PeerService."""
DEFAULT_CHANGE_MAX = (1, 3)
DEFAULT_VALIDATORS_MIN = 4


def height_key(height: int) -> bytes:
    return struct.pack(">Q", height)


def validator_set(record: state_pb2.ValidatorSetRecord) -> ValidatorSet:
    return ValidatorSet([(v.public_key, v.power) for v in record.validators])


def _invalid(field: str, reason: str) -> Rejected:
    return Rejected("INVALID_ARGUMENT", field, reason)


def check_changes(field: str, changes: governance_pb2.ValidatorChanges) -> None:
    """Stateless rules; raises `Rejected` naming the field."""
    if not 1 <= len(changes.updates) <= UPDATES_MAX:
        raise _invalid(f"{field}.updates", f"1 to {UPDATES_MAX} updates")
    keys = [u.public_key for u in changes.updates]
    if len(set(keys)) != len(keys):
        raise _invalid(f"{field}.updates", "a key named twice")
    for i, update in enumerate(changes.updates):
        where = f"{field}.updates[{i}]"
        if len(update.public_key) != 32:
            raise _invalid(f"{where}.public_key", "must be 32 bytes")
        if update.power > POWER_MAX:
            raise _invalid(f"{where}.power", f"0 (remove) to {POWER_MAX}")
        if update.organisation and not ORGANISATION_ID.fullmatch(update.organisation):
            raise _invalid(f"{where}.organisation", "must be an organisation id")
        if update.address and (
            len(update.address) > ADDRESS_BYTES_MAX or not ADDRESS.fullmatch(update.address)
        ):
            raise _invalid(f"{where}.address", "must be host:port")


def _refused(message: str) -> TxOutcome:
    return TxOutcome(tx_pb2.RESULT_CODE_VALIDATOR_CHANGE_REFUSED, message)


def change_validators(  # noqa: PLR0911 - one return per rule reads best
    state: BlockState, height: int, changes: governance_pb2.ValidatorChanges
) -> TxOutcome:
    """Applies an approved change: the new set takes effect at `height + 2`."""
    field = "govern.change_validators"
    latest = state.get(VALIDATORS, LATEST_KEY, state_pb2.ValidatorSetRecord)
    if latest is None:
        return _refused(f"{field}: this chain's genesis recorded no validator set")
    if len(latest.validators) == 1:
        # A lone validator produces blocks without consensus; it has nothing to hand to.
        return _refused(f"{field}: a lone validator's chain cannot change its set")
    if latest.effective_height > height + 1:
        # Measured against the set of height + 1, two changes in one block could together
        # move more than the policy allows: one per block.
        return _refused(f"{field}: a change already takes effect at {latest.effective_height}")
    rules = policy(state)
    numerator = rules.validator_change_numerator or DEFAULT_CHANGE_MAX[0]
    denominator = rules.validator_change_denominator or DEFAULT_CHANGE_MAX[1]
    minimum = rules.validators_min or DEFAULT_VALIDATORS_MIN
    applied = _updated(state, latest, changes)
    if isinstance(applied, TxOutcome):
        return applied
    entries, moved, runs = applied
    total = sum(v.power for v in latest.validators)
    if moved * denominator >= total * numerator:
        return _refused(
            f"{field}: moves {moved} of {total} power at once; the policy allows less than "
            f"{numerator}/{denominator}"
        )
    if len(entries) < minimum:
        return _refused(f"{field}: would leave {len(entries)} validators; at least {minimum}")
    if len(entries) > VALIDATORS_MAX:
        return _refused(f"{field}: more than {VALIDATORS_MAX} validators")
    record = state_pb2.ValidatorSetRecord(effective_height=height + 2, validators=entries)
    state.put(VALIDATORS, height_key(height + 2), record)
    state.put(VALIDATORS, LATEST_KEY, record)
    for org_id, (added, removed) in sorted(runs.items()):
        found = state.get(ORGANISATIONS, org_id.encode(), state_pb2.Organisation)
        if found is None:
            continue  # an open chain's genesis validator, run by no organisation
        organisation = state_pb2.Organisation()
        organisation.CopyFrom(found)
        kept = [key for key in organisation.validators if key not in removed]
        del organisation.validators[:]
        organisation.validators.extend(kept + added)
        state.put(ORGANISATIONS, org_id.encode(), organisation)
    return TxOutcome(tx_pb2.RESULT_CODE_OK, "")


Runs = dict[str, tuple[list[bytes], list[bytes]]]
"""Per organisation: the validator keys it starts and stops running."""


def _updated(
    state: BlockState,
    latest: state_pb2.ValidatorSetRecord,
    changes: governance_pb2.ValidatorChanges,
) -> tuple[list[state_pb2.ValidatorEntry], int, Runs] | TxOutcome:
    """The set after `changes`, the power they move, and who runs what; or why not."""
    field = "govern.change_validators"
    entries = [state_pb2.ValidatorEntry() for _ in latest.validators]
    for entry, old in zip(entries, latest.validators, strict=True):
        entry.CopyFrom(old)
    by_key = {entry.public_key: entry for entry in entries}
    moved = 0
    runs: Runs = {}
    for i, update in enumerate(changes.updates):
        where = f"{field}.updates[{i}]"
        held = by_key.get(update.public_key)
        if held is None:
            if update.power == 0:
                return _refused(f"{where}.public_key: not a validator")
            if organisation_of(state, update.organisation) is None:
                return TxOutcome(
                    tx_pb2.RESULT_CODE_UNKNOWN_ORGANISATION,
                    f"{where}.organisation: not a member organisation",
                )
            if not update.address:
                return _refused(f"{where}.address: a new validator needs one")
            entries.append(
                state_pb2.ValidatorEntry(
                    public_key=update.public_key,
                    power=update.power,
                    organisation=update.organisation,
                    address=update.address,
                )
            )
            runs.setdefault(update.organisation, ([], []))[0].append(update.public_key)
            moved += update.power
            continue
        if update.organisation and update.organisation != held.organisation:
            return _refused(f"{where}.organisation: another organisation runs it")
        if update.power == held.power and not update.address:
            return _refused(f"{where}: changes nothing")
        moved += abs(update.power - held.power)
        if update.power == 0:
            entries.remove(held)
            runs.setdefault(held.organisation, ([], []))[1].append(held.public_key)
        else:
            held.power = update.power
        if update.address:
            held.address = update.address
    return entries, moved, runs


@dataclass
class ValidatorSchedule:
    """Every validator set a chain has had, by effective height: what validates the
    block at any height. Built from genesis and the stored history; extended as blocks
    holding changes commit."""

    genesis: state_pb2.ValidatorSetRecord
    _heights: list[int] = field(default_factory=list)
    _records: list[state_pb2.ValidatorSetRecord] = field(default_factory=list)
    _sets: list[ValidatorSet] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._heights = [self.genesis.effective_height]
        self._records = [self.genesis]
        self._sets = [validator_set(self.genesis)]

    @classmethod
    def of(cls, genesis: Genesis, stored: Iterable[tuple[bytes, bytes]]) -> ValidatorSchedule:
        """From the genesis and the `validators` table's entries (key, encoded record)."""
        schedule = cls(genesis_validators(genesis))
        for key, value in stored:
            if len(key) == 8:
                schedule.add(state_pb2.ValidatorSetRecord.FromString(value))
        return schedule

    def add(self, record: state_pb2.ValidatorSetRecord) -> None:
        height = record.effective_height
        at = bisect.bisect_left(self._heights, height)
        if at < len(self._heights) and self._heights[at] == height:
            self._records[at], self._sets[at] = record, validator_set(record)
            return
        self._heights.insert(at, height)
        self._records.insert(at, record)
        self._sets.insert(at, validator_set(record))

    def _at(self, height: int) -> int:
        return max(0, bisect.bisect_right(self._heights, height) - 1)

    def set_at(self, height: int) -> ValidatorSet:
        """The set that validates the block at `height`."""
        return self._sets[self._at(height)]

    def record_at(self, height: int) -> state_pb2.ValidatorSetRecord:
        return self._records[self._at(height)]

    def organisation_of(self, height: int, public_key: bytes) -> str | None:
        for validator in self._records[self._at(height)].validators:
            if validator.public_key == public_key:
                return validator.organisation
        return None

    def keys_at(self, height: int) -> list[bytes]:
        return [v.public_key for v in self._records[self._at(height)].validators]

    def index_at(self, height: int, public_key: bytes) -> int | None:
        keys = self.keys_at(height)
        return keys.index(public_key) if public_key in keys else None

    def changes(self, up_to: int) -> list[state_pb2.ValidatorSetRecord]:
        """The sets that replaced another, effective at `up_to` or before, oldest first."""
        return [r for r in self._records[1:] if r.effective_height <= up_to]

    def addresses(self) -> dict[bytes, str]:
        """Every address the history names, the latest for each key."""
        found: dict[bytes, str] = {}
        for record in self._records:
            for v in record.validators:
                if v.address:
                    found[v.public_key] = v.address
        return found

    def updates_in(self, writes: Iterable[tuple[str, bytes, bytes]]) -> bool:
        """Takes the sets a committed block scheduled (from its state writes)."""
        changed = False
        for table, key, value in writes:
            if table == VALIDATORS and key != LATEST_KEY:
                self.add(state_pb2.ValidatorSetRecord.FromString(value))
                changed = True
        return changed
