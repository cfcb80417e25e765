"""Admitted transactions waiting for a block, with count and byte limits."""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

from medledger.errors import Rejected
from medledger.wire.v1 import envelope_pb2, tx_pb2

__all__ = ["Mempool", "PendingTx"]

FRAMING_BYTES = 8
"""What a transaction adds to a block's encoding beyond its own bytes (tag and length)."""


@dataclass(eq=False)
class PendingTx:
    """A verified, admitted transaction and everyone waiting for its receipt."""

    tx: envelope_pb2.SignedTransaction
    body: tx_pb2.TransactionBody
    encoded: bytes  # canonical encoding: the Merkle leaf
    tx_hash: bytes
    body_hash: bytes
    waiters: list[asyncio.Future[tx_pb2.Receipt]] = field(default_factory=list)

    @property
    def tx_id(self) -> bytes:
        return self.body.tx_id

    @property
    def block_bytes(self) -> int:
        """What the transaction adds to a block that carries it."""
        return self.tx.ByteSize() + FRAMING_BYTES

    def wait(self) -> asyncio.Future[tx_pb2.Receipt]:
        future: asyncio.Future[tx_pb2.Receipt] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        return future

    def resolve(self, receipt: tx_pb2.Receipt) -> None:
        for future in self.waiters:
            if not future.done():
                future.set_result(receipt)
        self.waiters.clear()


class Mempool:
    """FIFO of admitted transactions. Full means `RESOURCE_EXHAUSTED`, never unbounded."""

    def __init__(self, txs_max: int, bytes_max: int) -> None:
        self.txs_max = txs_max
        self.bytes_max = bytes_max
        self._txs: OrderedDict[bytes, PendingTx] = OrderedDict()
        self._by_hash: dict[bytes, PendingTx] = {}
        self._bytes = 0
        self.added = 0  # transactions ever added: tells a caller what a call added
        self.not_empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._txs)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, tx_id: bytes) -> PendingTx | None:
        return self._txs.get(tx_id)

    def by_hash(self, tx_hash: bytes) -> PendingTx | None:
        return self._by_hash.get(tx_hash)

    def add(self, pending: PendingTx) -> None:
        if len(self._txs) >= self.txs_max:
            raise Rejected(
                "RESOURCE_EXHAUSTED", "mempool", f"full at {self.txs_max} transactions; retry later"
            )
        if self._bytes + len(pending.encoded) > self.bytes_max:
            raise Rejected(
                "RESOURCE_EXHAUSTED", "mempool", f"full at {self.bytes_max} bytes; retry later"
            )
        assert pending.tx_id not in self._txs, "admission checks for duplicates first"
        self._txs[pending.tx_id] = pending
        self._by_hash[pending.tx_hash] = pending
        self._bytes += len(pending.encoded)
        self.added += 1
        self.not_empty.set()

    def remove(self, tx_id: bytes) -> PendingTx | None:
        pending = self._txs.pop(tx_id, None)
        if pending is not None:
            self._forget_hash(pending)
            self._bytes -= len(pending.encoded)
            if not self._txs:
                self.not_empty.clear()
        return pending

    def _forget_hash(self, pending: PendingTx) -> None:
        if self._by_hash.get(pending.tx_hash) is pending:
            del self._by_hash[pending.tx_hash]

    def newest(self, count: int) -> list[PendingTx]:
        """The `count` most recently added transactions still waiting, oldest first."""
        if count <= 0:
            return []
        return list(itertools.islice(reversed(self._txs.values()), count))[::-1]

    def peek(self, count_max: int, bytes_max: int) -> list[PendingTx]:
        """The oldest transactions that fit a block of `count_max` transactions and
        `bytes_max` bytes, left in place (a proposal may not be decided; its
        transactions stay for the next one)."""
        chosen: list[PendingTx] = []
        size = 0
        for pending in self._txs.values():
            size += pending.block_bytes
            if len(chosen) == count_max or size > bytes_max:
                break
            chosen.append(pending)
        return chosen

    def take(self, count_max: int, bytes_max: int) -> list[PendingTx]:
        """Removes and returns what `peek` would return."""
        taken = self.peek(count_max, bytes_max)
        for pending in taken:
            self.remove(pending.tx_id)
        return taken
