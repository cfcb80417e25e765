"""Application state as one block sees it: committed state under a write overlay.

Reads go to the overlay first, then to the committed store. Writes stay in the overlay
until the block is committed, in the same LMDB write transaction as the block itself, so
a block is applied completely or not at all.
"""

from __future__ import annotations

import struct
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from medledger.crypto import sha256
from medledger.genesis import Genesis
from medledger.wire.v1 import ledger_pb2, state_pb2

__all__ = [
    "ACCESS_EVENTS",
    "ACCOUNTS",
    "BREAK_GLASS",
    "BREAK_GLASS_REVIEW",
    "CHANNELS",
    "CONSENTS",
    "CONSORTIUM_KEY",
    "GOVERNANCE",
    "MEMBERS",
    "ORGANISATIONS",
    "PARTICIPANTS",
    "POLICY",
    "POLICY_KEY",
    "RECORDS",
    "RECORD_VERSIONS",
    "RELEASES",
    "TABLES",
    "BlockState",
    "MemoryState",
    "StateReader",
    "genesis_writes",
    "next_app_hash",
]

# Application state tables (LMDB named databases). Keys:
ACCOUNTS = "accounts"  # owner public key
PARTICIPANTS = "participants"  # public key
RECORDS = "records"  # record id
RECORD_VERSIONS = "record_versions"  # record id || version (u32 BE)
CONSENTS = "consents"  # patient || consent id
ACCESS_EVENTS = "access_events"  # patient || height (u64 BE) || tx id
BREAK_GLASS = "break_glass"  # patient || custodian || requester
BREAK_GLASS_REVIEW = "break_glass_review"  # custodian || height (u64 BE) || tx id
CHANNELS = "channels"  # channel id
ORGANISATIONS = "organisations"  # organisation id (ASCII)
MEMBERS = "members"  # public key
POLICY = "policy"  # POLICY_KEY: the one Policy record
RELEASES = "releases"  # record id || requester: a record released to the requester
POLICY_KEY = b"policy"
CONSORTIUM_KEY = b"consortium"  # in POLICY: the Consortium record
GOVERNANCE = "governance"  # proposal id -> GovernanceRecord
VALIDATORS = "validators"  # effective height (u64 BE), or b"latest" -> ValidatorSetRecord
VALIDATORS_LATEST_KEY = b"latest"
TABLES = (
    ACCOUNTS,
    PARTICIPANTS,
    RECORDS,
    RECORD_VERSIONS,
    CONSENTS,
    ACCESS_EVENTS,
    BREAK_GLASS,
    BREAK_GLASS_REVIEW,
    CHANNELS,
    ORGANISATIONS,
    MEMBERS,
    POLICY,
    RELEASES,
    GOVERNANCE,
    VALIDATORS,
)

M = TypeVar("M", bound=Message)


class StateReader(Protocol):
    def get(self, table: str, key: bytes) -> bytes | None: ...


class BlockState:
    """Decoded records cached per block; every modified record is a pending write."""

    def __init__(self, reader: StateReader, chain_id: str = "", time_ms: int = 0) -> None:
        self._reader = reader
        self._records: dict[tuple[str, bytes], Message | None] = {}
        self._dirty: set[tuple[str, bytes]] = set()
        self.tx_id = b""  # the transaction being applied (keys of records it creates)
        # Signatures made off the ledger (channel states) are bound to the chain.
        self.chain_id = chain_id
        # The block's time (its header's `time_unix_ms`): what credentials expire against.
        self.time_ms = time_ms
        # Whether each signer may submit, as far as this block has seen: asked for every
        # transaction, answered once per signer until a write to members or organisations.
        self.submitters: dict[bytes, bool] = {}

    def get(self, table: str, key: bytes, kind: type[M]) -> M | None:
        """The record at `key` as this block sees it, decoded as `kind`."""
        slot = (table, key)
        if slot not in self._records:
            raw = self._reader.get(table, key)
            self._records[slot] = None if raw is None else kind.FromString(raw)
        return self._records[slot]  # type: ignore[return-value]

    def put(self, table: str, key: bytes, record: Message) -> None:
        self._records[(table, key)] = record
        self._dirty.add((table, key))
        if table in (MEMBERS, ORGANISATIONS):
            self.submitters.clear()

    def account(self, owner: bytes) -> ledger_pb2.Account | None:
        return self.get(ACCOUNTS, owner, ledger_pb2.Account)

    def put_account(self, account: ledger_pb2.Account) -> None:
        self.put(ACCOUNTS, account.owner, account)

    def participant(self, public_key: bytes) -> state_pb2.Participant | None:
        return self.get(PARTICIPANTS, public_key, state_pb2.Participant)

    def put_participant(self, participant: state_pb2.Participant) -> None:
        self.put(PARTICIPANTS, participant.public_key, participant)

    def writes(self) -> list[tuple[str, bytes, bytes]]:
        """Pending writes as (table, key, encoded value), in a canonical order."""
        out = []
        for table, key in sorted(self._dirty):
            record = self._records[(table, key)]
            assert record is not None, "only existing records are ever marked dirty"
            out.append((table, key, record.SerializeToString(deterministic=True)))
        return out


def next_app_hash(previous: bytes, writes: list[tuple[str, bytes, bytes]]) -> bytes:
    """Chains the previous app hash with a digest of this block's state writes.

    Two honest nodes that applied the same blocks hold the same app hash; a node whose
    state diverged is detected at the next block header it checks.
    """
    parts = [previous]
    for table, key, value in writes:
        parts.append(
            table.encode()
            + b"\x00"
            + len(key).to_bytes(4, "big")
            + key
            + len(value).to_bytes(4, "big")
            + value
        )
    return sha256(b"".join(parts))


def genesis_validators(genesis: Genesis) -> state_pb2.ValidatorSetRecord:
    """The set in force from height 1: the genesis validators, each with the
    organisation that runs it."""
    runs = {key: org.id for org in genesis.organisations for key in org.validators}
    return state_pb2.ValidatorSetRecord(
        effective_height=1,
        validators=[
            state_pb2.ValidatorEntry(
                public_key=v.public_key, power=v.power, organisation=runs.get(v.public_key, "")
            )
            for v in genesis.validators
        ],
    )


def genesis_writes(genesis: Genesis) -> list[tuple[str, bytes, bytes]]:
    """The state at height 0: one account per genesis allocation; on a permissioned
    chain also its organisations, their admins (enrolled, holding no role) and the
    policy."""
    writes = [
        (
            ACCOUNTS,
            allocation.owner,
            ledger_pb2.Account(
                owner=allocation.owner, balance_micros=allocation.balance_micros
            ).SerializeToString(deterministic=True),
        )
        for allocation in genesis.allocations
    ]
    if not genesis.permissioned:
        return writes  # an open chain's state is what it always was (same app hashes)
    for org in genesis.organisations:
        record = state_pb2.Organisation(
            id=org.id,
            name=org.name,
            admins=org.admins,
            weight=org.weight,
            validators=org.validators,
            tls_ca=org.tls_ca,
        )
        writes.append(
            (ORGANISATIONS, org.id.encode(), record.SerializeToString(deterministic=True))
        )
        for admin in org.admins:
            member = state_pb2.Member(public_key=admin, organisation=org.id, admin=True)
            writes.append((MEMBERS, admin, member.SerializeToString(deterministic=True)))
    numerator, denominator = genesis.policy.governance_threshold
    policy = state_pb2.Policy(
        break_glass_max_ms=genesis.policy.break_glass_max_ms,
        emergency_overrides_deny=genesis.policy.emergency_overrides_deny,
        governance_numerator=numerator,
        governance_denominator=denominator,
        auditors=genesis.policy.auditors,
        validator_change_numerator=genesis.policy.validator_change_max[0],
        validator_change_denominator=genesis.policy.validator_change_max[1],
        validators_min=genesis.policy.validators_min,
    )
    writes.append((POLICY, POLICY_KEY, policy.SerializeToString(deterministic=True)))
    validators = genesis_validators(genesis).SerializeToString(deterministic=True)
    writes.append((VALIDATORS, VALIDATORS_LATEST_KEY, validators))
    writes.append((VALIDATORS, struct.pack(">Q", 1), validators))
    registry = state_pb2.Consortium(
        organisations=sorted(org.id for org in genesis.organisations),
        total_weight=sum(org.weight for org in genesis.organisations),
    )
    writes.append((POLICY, CONSORTIUM_KEY, registry.SerializeToString(deterministic=True)))
    writes.sort()
    return writes


class MemoryState:
    """State held in memory, for replaying a chain from genesis without touching disk."""

    def __init__(self, writes: list[tuple[str, bytes, bytes]]) -> None:
        self._tables: dict[str, dict[bytes, bytes]] = {table: {} for table in TABLES}
        self.apply(writes)

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._tables[table].get(key)

    def scan(self, table: str, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Entries whose key starts with `prefix`, in key order (as LMDB returns them)."""
        found = sorted((k, v) for k, v in self._tables[table].items() if k.startswith(prefix))
        return found[:limit]

    def scan_last(self, table: str, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        found = sorted((k, v) for k, v in self._tables[table].items() if k.startswith(prefix))
        return found[-limit:]

    def apply(self, writes: list[tuple[str, bytes, bytes]]) -> None:
        for table, key, value in writes:
            self._tables[table][key] = value
