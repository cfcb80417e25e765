"""Admission derives one canonical encoding per transaction: the Merkle leaf a block
commits to and the hash every node files the transaction under. A transaction that
arrives with fields this version does not know (the signature covers only the body) is
admitted under the same hash a peer computes from the block, whether this node took it
from its mempool or decoded it from the block. Real LMDB, real signatures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from medledger.block import assemble_block, tx_hash
from medledger.client import TxBuilder
from medledger.config import Home
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.ledger_node import LedgerNode
from medledger.run.homes import init_home
from medledger.wire.v1 import envelope_pb2

CHAIN_ID = "medledger-admission-test"
UNKNOWN_FIELD_111 = b"\xf8\x06\x01"  # field 111, varint 1: not in SignedTransaction


def with_unknown_field(tx: envelope_pb2.SignedTransaction) -> envelope_pb2.SignedTransaction:
    return envelope_pb2.SignedTransaction.FromString(tx.SerializeToString() + UNKNOWN_FIELD_111)


def test_a_transaction_with_unknown_fields_is_filed_under_its_canonical_hash(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    builder = TxBuilder(load_key(home.keys_dir / "client.json"), CHAIN_ID)
    to = builder.key.public_key
    admitted_tx = with_unknown_field(builder.transfer(to=to, amount_micros=1, expiry_height=99))
    in_block_only = with_unknown_field(builder.transfer(to=to, amount_micros=2, expiry_height=99))
    canonical = envelope_pb2.SignedTransaction(
        body=admitted_tx.body, public_key=admitted_tx.public_key, signature=admitted_tx.signature
    ).SerializeToString(deterministic=True)
    assert admitted_tx.SerializeToString(deterministic=True) != canonical  # it kept field 111

    async def scenario() -> None:
        node = LedgerNode(
            home, home.load_config(), Genesis.load(home.genesis), load_key(home.validator_key)
        )
        try:
            (answer,) = node.submit([admitted_tx])
            assert answer.receipt is None  # admitted, waiting for a block
            assert answer.tx_hash == tx_hash(canonical)
            pending = node.mempool.by_hash(answer.tx_hash)
            assert pending is not None
            assert pending.encoded == canonical

            # A peer's block holding both: one from the mempool, one decoded here.
            block = assemble_block(
                chain_id=CHAIN_ID,
                height=1,
                parent_hash=node.head.block_hash,
                txs=[admitted_tx, in_block_only],
                proposer=node.key.public_key,
                validators=node.validators,
                next_validators=node.validators,
                app_hash=node.head.app_hash,
                time_unix_ms=0,
            )
            entries = node.block_entries(block.SerializeToString())
            assert [e.tx_hash for e in entries] == [
                tx_hash(canonical),
                tx_hash(in_block_only.SerializeToString()),
            ]
            # Only the admitted one counts as verified and checked already.
            assert entries[0].checked
            assert not entries[1].checked
        finally:
            await node.stop()

    asyncio.run(scenario())
