"""Application state as one block sees it: committed state under a write overlay.

Reads go to the overlay first, then to the committed store. Writes stay in the overlay
until the block is committed, in the same LMDB write transaction as the block itself, so
a block is applied completely or not at all.
"""

from __future__ import annotations

from typing import Protocol

from medledger.crypto import sha256
from medledger.genesis import Genesis
from medledger.wire.v1 import ledger_pb2, state_pb2

__all__ = [
    "ACCOUNTS",
    "PARTICIPANTS",
    "BlockState",
    "MemoryState",
    "StateReader",
    "genesis_writes",
    "next_app_hash",
]

ACCOUNTS = "accounts"
PARTICIPANTS = "participants"
TABLES = (ACCOUNTS, PARTICIPANTS)


class StateReader(Protocol):
    def get(self, table: str, key: bytes) -> bytes | None: ...


class BlockState:
    """Decoded records cached per block; every modified record is a pending write."""

    def __init__(self, reader: StateReader) -> None:
        self._reader = reader
        self._accounts: dict[bytes, ledger_pb2.Account | None] = {}
        self._participants: dict[bytes, state_pb2.Participant | None] = {}
        self._dirty: set[tuple[str, bytes]] = set()

    def account(self, owner: bytes) -> ledger_pb2.Account | None:
        if owner not in self._accounts:
            raw = self._reader.get(ACCOUNTS, owner)
            self._accounts[owner] = None if raw is None else ledger_pb2.Account.FromString(raw)
        return self._accounts[owner]

    def put_account(self, account: ledger_pb2.Account) -> None:
        self._accounts[account.owner] = account
        self._dirty.add((ACCOUNTS, account.owner))

    def participant(self, public_key: bytes) -> state_pb2.Participant | None:
        if public_key not in self._participants:
            raw = self._reader.get(PARTICIPANTS, public_key)
            self._participants[public_key] = (
                None if raw is None else state_pb2.Participant.FromString(raw)
            )
        return self._participants[public_key]

    def put_participant(self, participant: state_pb2.Participant) -> None:
        self._participants[participant.public_key] = participant
        self._dirty.add((PARTICIPANTS, participant.public_key))

    def writes(self) -> list[tuple[str, bytes, bytes]]:
        """Pending writes as (table, key, encoded value), in a canonical order."""
        out = []
        for table, key in sorted(self._dirty):
            record = (self._accounts if table == ACCOUNTS else self._participants)[key]
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


def genesis_writes(genesis: Genesis) -> list[tuple[str, bytes, bytes]]:
    """The state at height 0: one account per genesis allocation."""
    return [
        (
            ACCOUNTS,
            allocation.owner,
            ledger_pb2.Account(
                owner=allocation.owner, balance_micros=allocation.balance_micros
            ).SerializeToString(deterministic=True),
        )
        for allocation in genesis.allocations
    ]


class MemoryState:
    """State held in memory, for replaying a chain from genesis without touching disk."""

    def __init__(self, writes: list[tuple[str, bytes, bytes]]) -> None:
        self._tables: dict[str, dict[bytes, bytes]] = {table: {} for table in TABLES}
        self.apply(writes)

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._tables[table].get(key)

    def apply(self, writes: list[tuple[str, bytes, bytes]]) -> None:
        for table, key, value in writes:
            self._tables[table][key] = value
