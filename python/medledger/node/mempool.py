"""Admitted transactions waiting for a block, with count and byte limits.

Two lanes. Time-critical transactions (a challenge inside its window, a settlement, a
payee claiming a lock; see `medledger.app.channels.time_critical`) wait in a reserved
lane that blocks take first and that has room of its own, so no burst of ordinary
transactions can push them past a challenge window. Ordinary ones wait first in, first
out, with a quota per signer so that one key cannot hold the whole pool."""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

from medledger.app.channels import NOT_URGENT, URGENT_FOR_PAYEE, channel_id_of
from medledger.errors import Rejected
from medledger.limits import (
    FRAMING_BYTES,
    URGENT_BYTES_MAX,
    URGENT_PAYEE_PER_CHANNEL_MAX,
    URGENT_PER_CHANNEL_MAX,
    URGENT_TXS_MAX,
)
from medledger.wire.v1 import envelope_pb2, tx_pb2

# The lane limits and FRAMING_BYTES live in medledger.limits, re-exported here.
__all__ = [
    "FRAMING_BYTES",
    "URGENT_BYTES_MAX",
    "URGENT_PAYEE_PER_CHANNEL_MAX",
    "URGENT_PER_CHANNEL_MAX",
    "URGENT_TXS_MAX",
    "Mempool",
    "PendingTx",
]

K = TypeVar("K")


@dataclass(eq=False, slots=True)
class PendingTx:
    """A verified, admitted transaction and everyone waiting for its receipt.

    It is also a block entry (`medledger.node.ledger_node.TxEntry`) as it stands: its
    signature verified and the application's stateless checks passed at admission."""

    tx: envelope_pb2.SignedTransaction
    body: tx_pb2.TransactionBody
    encoded: bytes  # canonical encoding: the Merkle leaf
    tx_hash: bytes
    body_hash: bytes
    waiters: list[asyncio.Future[tx_pb2.Receipt]] = field(default_factory=list)
    added_at: int = 0  # the mempool's count of additions when this one was added
    organisation: str = ""  # its signer's, counted in the organisation's quota ("": none)

    @property
    def tx_id(self) -> bytes:
        return self.body.tx_id

    @property
    def signer(self) -> bytes:
        return self.tx.public_key

    @property
    def checked(self) -> bool:
        """Admission verified its signature and ran the stateless checks."""
        return True

    @property
    def block_bytes(self) -> int:
        """What the transaction adds to a block that carries it: blocks are built from
        the canonical encodings (medledger.block.encode_block), whose size is held."""
        return len(self.encoded) + FRAMING_BYTES

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

    def __init__(
        self,
        txs_max: int,
        bytes_max: int,
        signer_txs_max: int | None = None,
        organisation_txs_max: int | None = None,
    ) -> None:
        self.txs_max = txs_max
        self.bytes_max = bytes_max
        self.signer_txs_max = signer_txs_max if signer_txs_max is not None else txs_max
        self.organisation_txs_max = (
            organisation_txs_max if organisation_txs_max is not None else txs_max
        )
        self._by_organisation: dict[str, int] = {}  # ordinary transactions per organisation
        self._txs: OrderedDict[bytes, PendingTx] = OrderedDict()
        self._urgent: OrderedDict[bytes, PendingTx] = OrderedDict()
        self._by_signer: dict[bytes, int] = {}  # ordinary transactions waiting per signer
        # Urgent transactions waiting per (channel, signed by its payee), and each one's slot.
        self._by_channel: dict[tuple[bytes, bool], int] = {}
        self._urgent_slot: dict[bytes, tuple[bytes, bool]] = {}
        self._urgent_bytes = 0
        self._by_hash: dict[bytes, PendingTx] = {}
        self._bytes = 0
        self.added = 0  # transactions ever added: tells a caller what a call added
        self.not_empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._txs) + len(self._urgent)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, tx_id: bytes) -> PendingTx | None:
        return self._txs.get(tx_id) or self._urgent.get(tx_id)

    def by_hash(self, tx_hash: bytes) -> PendingTx | None:
        return self._by_hash.get(tx_hash)

    def add(self, pending: PendingTx, *, urgent: int = NOT_URGENT, organisation: str = "") -> None:
        """Queues an admitted transaction; `urgent` (URGENT, or URGENT_FOR_PAYEE when the
        channel's payee signed it) puts it in the reserved lane (the caller decides, from
        the committed state). `organisation` enrolled the signer ("" on an open chain).
        A full lane or an exhausted quota (per signer, per organisation) is
        RESOURCE_EXHAUSTED. The caller has made sure the id is not waiting already
        (admission answers a duplicate from the pool)."""
        if urgent != NOT_URGENT:
            self._add_urgent(pending, for_payee=urgent == URGENT_FOR_PAYEE)
            return
        if len(self._txs) >= self.txs_max:
            raise Rejected(
                "RESOURCE_EXHAUSTED", "mempool", f"full at {self.txs_max} transactions; retry later"
            )
        if self._bytes - self._urgent_bytes + len(pending.encoded) > self.bytes_max:
            raise Rejected(
                "RESOURCE_EXHAUSTED", "mempool", f"full at {self.bytes_max} bytes; retry later"
            )
        signer = pending.tx.public_key
        held = self._by_signer.get(signer, 0)
        if held >= self.signer_txs_max:
            raise Rejected(
                "RESOURCE_EXHAUSTED",
                "tx.public_key",
                f"this signer already has {held} transactions waiting; retry later",
            )
        if organisation:
            members_held = self._by_organisation.get(organisation, 0)
            if members_held >= self.organisation_txs_max:
                raise Rejected(
                    "RESOURCE_EXHAUSTED",
                    "tx.public_key",
                    f"organisation {organisation!r} already has {members_held} transactions "
                    "waiting; retry later",
                )
            self._by_organisation[organisation] = members_held + 1
            pending.organisation = organisation
        self._by_signer[signer] = held + 1
        self._txs[pending.body.tx_id] = pending
        # `_track`, inlined: every node runs this once per transaction.
        self._by_hash[pending.tx_hash] = pending
        self._bytes += len(pending.encoded)
        self.added = pending.added_at = self.added + 1
        if not self.not_empty.is_set():
            self.not_empty.set()

    def _add_urgent(self, pending: PendingTx, *, for_payee: bool) -> None:
        slot = (_channel_of(pending), for_payee)
        waiting = self._by_channel.get(slot, 0)
        per_channel = URGENT_PAYEE_PER_CHANNEL_MAX if for_payee else URGENT_PER_CHANNEL_MAX
        size = len(pending.encoded)
        if (
            len(self._urgent) >= URGENT_TXS_MAX
            or self._urgent_bytes + size > URGENT_BYTES_MAX
            or waiting >= per_channel
        ):
            raise Rejected(
                "RESOURCE_EXHAUSTED", "mempool", "the time-critical lane is full; retry later"
            )
        self._by_channel[slot] = waiting + 1
        self._urgent[pending.tx_id] = pending
        self._urgent_slot[pending.tx_id] = slot
        self._urgent_bytes += size
        self._track(pending)

    def _track(self, pending: PendingTx) -> None:
        self._by_hash[pending.tx_hash] = pending
        self._bytes += len(pending.encoded)
        self.added += 1
        pending.added_at = self.added
        if not self.not_empty.is_set():
            self.not_empty.set()

    def remove(self, tx_id: bytes) -> PendingTx | None:
        pending = self._txs.pop(tx_id, None)
        if pending is not None:
            by_signer = self._by_signer
            signer = pending.tx.public_key
            left = by_signer[signer] - 1  # `_decrement`, inline (once per transaction)
            if left:
                by_signer[signer] = left
            else:
                del by_signer[signer]
            if pending.organisation:
                _decrement(self._by_organisation, pending.organisation)
        else:
            pending = self._urgent.pop(tx_id, None)
            if pending is None:
                return None
            _decrement(self._by_channel, self._urgent_slot.pop(tx_id))
            self._urgent_bytes -= len(pending.encoded)
        if self._by_hash.get(pending.tx_hash) is pending:
            del self._by_hash[pending.tx_hash]
        self._bytes -= len(pending.encoded)
        if not self._txs and not self._urgent:
            self.not_empty.clear()
        return pending

    def newest(self, count: int) -> list[PendingTx]:
        """The `count` most recently added transactions still waiting, oldest first."""
        if count <= 0:
            return []
        waiting = sorted(
            itertools.chain(
                itertools.islice(reversed(self._txs.values()), count),
                itertools.islice(reversed(self._urgent.values()), count),
            ),
            key=lambda p: p.added_at,
        )
        return waiting[-count:]

    def peek(self, count_max: int, bytes_max: int) -> list[PendingTx]:
        """The oldest transactions that fit a block of `count_max` transactions and
        `bytes_max` bytes, left in place (a proposal may not be decided; its
        transactions stay for the next one)."""
        chosen: list[PendingTx] = []
        size = 0
        for pending in itertools.chain(self._urgent.values(), self._txs.values()):
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


def _channel_of(pending: PendingTx) -> bytes:
    return channel_id_of(pending.body)


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
