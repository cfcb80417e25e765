"""Re-checking a node's whole chain from its LMDB files, as an auditor would.

Every block is validated by the Rust core against its parent (links, Merkle root, every
signature, the commit quorum, the app hash its header claims), and every block is
replayed through the application from genesis so the app hash each block produced, and
each stored transaction result, is recomputed rather than trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medledger.app import Application
from medledger.app.state import MemoryState, genesis_writes
from medledger.app.validators import ValidatorSchedule
from medledger.block import validate_block
from medledger.chain.store import ChainStore
from medledger.errors import MedledgerError
from medledger.genesis import Genesis
from medledger.wire.v1 import envelope_pb2, tx_pb2

__all__ = ["ChainReport", "verify_chain"]


@dataclass(frozen=True)
class ChainReport:
    height: int
    transactions: int
    broken_height: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_height is None


def verify_chain(
    store: ChainStore,
    genesis: Genesis,
    on_block: Callable[[int], None] | None = None,
) -> ChainReport:
    """Checks every block from 1 to the head; reports the first broken height. Each
    block's certificate is checked against the validator set of its height, as the
    replay itself derives it (genesis, then each governance change from H+2)."""
    schedule = ValidatorSchedule.of(genesis, [])
    app = Application(
        genesis.chain_id,
        expiry_horizon_blocks=0,
        min_challenge_blocks=genesis.min_challenge_blocks,
        permissioned=genesis.permissioned,
    )
    state = MemoryState(genesis_writes(genesis))
    parent_hash, app_hash = bytes(32), genesis.hash()
    head = store.head
    transactions = 0
    for height in range(1, head.height + 1):
        block_bytes, commit_bytes = store.block(height), store.commit(height)
        if block_bytes is None or commit_bytes is None:
            return ChainReport(height - 1, transactions, height, "block or commit missing")
        try:
            validated = validate_block(
                block_bytes,
                commit_bytes,
                chain_id=genesis.chain_id,
                height=height,
                parent_hash=parent_hash,
                validators=schedule.set_at(height),
                next_validators=schedule.set_at(height + 1),
                app_hash=app_hash,
            )
        except MedledgerError as error:
            return ChainReport(height - 1, transactions, height, str(error))
        block = envelope_pb2.Block.FromString(block_bytes)
        bodies = [(tx.public_key, tx_pb2.TransactionBody.FromString(tx.body)) for tx in block.txs]
        result = app.finalize_block(height, app_hash, state, bodies, time_ms=validated.time_unix_ms)
        if store.app_hash_after(height) != result.app_hash:
            return ChainReport(
                height - 1, transactions, height, "stored app hash differs from replay"
            )
        for index, ((_, body), outcome) in enumerate(zip(bodies, result.outcomes, strict=True)):
            record = store.tx_record(body.tx_id)
            if record is None or (record.height, record.index, record.code) != (
                height,
                index,
                outcome.code,
            ):
                return ChainReport(
                    height - 1, transactions, height, f"tx index entry for txs[{index}] differs"
                )
        state.apply(result.writes)
        schedule.updates_in(result.writes)
        parent_hash, app_hash = validated.block_hash, result.app_hash
        transactions += len(bodies)
        if on_block is not None:
            on_block(height)
    if (parent_hash, app_hash) != (head.block_hash, head.app_hash):
        return ChainReport(
            head.height, transactions, head.height, "head record differs from the chain"
        )
    return ChainReport(head.height, transactions)
