"""Blocks are bounded by bytes, not only by count: a client that pads its transactions to
the largest admissible size (unknown protobuf fields are admitted and kept) must not make
the node build a block it cannot commit. A real node process on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from medledger.block import BLOCK_BYTES_MAX
from medledger.config import NodeConfig
from medledger.keys import load_key
from medledger.tx import sign_transaction
from medledger.wire.v1 import tx_pb2
from tests.integration.conftest import CHAIN_ID, launch

PAD_BYTES = 60_000
TXS = 600  # 36 MB in all: more than BLOCK_BYTES_MAX and twice the gRPC message limit
BATCH = 100


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def padded_body(n: int, height: int, to: bytes) -> bytes:
    body = tx_pb2.TransactionBody(
        chain_id=CHAIN_ID,
        tx_id=n.to_bytes(16, "big"),
        expiry_height=height + 1_000,
        transfer=tx_pb2.Transfer(to=to, amount_micros=1),
    ).SerializeToString(deterministic=True)
    unknown_field = _varint((1000 << 3) | 2) + _varint(PAD_BYTES) + b"\x00" * PAD_BYTES
    return body + unknown_field


def test_padded_transactions_fill_several_blocks_and_all_commit(tmp_path: Path) -> None:
    node = launch(tmp_path / "home")
    try:
        assert TXS * PAD_BYTES > BLOCK_BYTES_MAX > NodeConfig().block_tx_bytes_max
        # A validator key reads whole blocks (a full reader).
        with node.client(reader=load_key(node.home.validator_key)) as client:
            height = client.status().height
            txs = [
                sign_transaction(node.payer, CHAIN_ID, padded_body(n + 1, height, b"\x05" * 32))
                for n in range(TXS)
            ]
            receipts = [
                r
                for batch in client.submit_batches(
                    [txs[i : i + BATCH] for i in range(0, TXS, BATCH)], timeout_s=120
                )
                for r in batch
            ]
            assert len(receipts) == TXS
            assert {r.status for r in receipts} == {tx_pb2.TX_STATUS_COMMITTED}
            heights = {r.height for r in receipts}
            assert len(heights) >= 3  # at most ~15 MiB of transactions per block
            for block_height in heights:
                block = client.get_block(block_height)
                assert not block.redacted
                assert block.block.ByteSize() <= NodeConfig().block_tx_bytes_max + 1024 * 1024
            assert client.status().height >= max(heights)
    finally:
        node.process.stop()
