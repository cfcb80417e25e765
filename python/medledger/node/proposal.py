"""Assembling a proposal: the one place a block is built, by a validator in consensus and
by a lone validator alike. The time is passed in: whoever calls reads its clock once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from medledger.block import ValidatorSet, assemble_block, block_hash, encode_block
from medledger.chain import Head
from medledger.crypto import SigningKey
from medledger.node.mempool import PendingTx
from medledger.wire.v1 import envelope_pb2

__all__ = ["ProposedBlock", "propose_block"]


class ProposerLedger(Protocol):
    """What building a block reads of the ledger beside it."""

    chain_id: str
    key: SigningKey

    @property
    def head(self) -> Head: ...

    @property
    def head_time_ms(self) -> int: ...

    def validators_at(self, height: int) -> ValidatorSet: ...


@dataclass(frozen=True)
class ProposedBlock:
    value_id: bytes
    """The block hash: what validators vote for."""
    value: bytes
    """The encoded block: the header and the transactions' canonical encodings."""
    header: bytes
    header_message: envelope_pb2.BlockHeader
    time_ms: int
    txs: list[PendingTx]


def propose_block(
    ledger: ProposerLedger, height: int, txs: Sequence[PendingTx], now_ms: int
) -> ProposedBlock:
    """The block at `height` on the ledger's head carrying `txs` (admitted, prepared by
    `Application.prepare_proposal`), proposed by the ledger's key at `now_ms`, or just
    after the parent's time if this clock is behind it (block times strictly increase)."""
    head = ledger.head
    leaves = [p.encoded for p in txs]
    block = assemble_block(
        chain_id=ledger.chain_id,
        height=height,
        parent_hash=head.block_hash,
        txs=[p.tx for p in txs],
        proposer=ledger.key.public_key,
        validators=ledger.validators_at(height),
        next_validators=ledger.validators_at(height + 1),
        app_hash=head.app_hash,
        time_unix_ms=max(now_ms, ledger.head_time_ms + 1),
        leaves=leaves,
    )
    header = block.header.SerializeToString()
    # The canonical encodings, not the transactions as clients sent them (which may carry
    # unknown fields): validation accepts only a canonical block.
    return ProposedBlock(
        value_id=block_hash(header),
        value=encode_block(header, leaves),
        header=header,
        header_message=block.header,
        time_ms=block.header.time_unix_ms,
        txs=list(txs),
    )
