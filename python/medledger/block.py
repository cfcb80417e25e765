"""Blocks: assembling them, hashing them, and validating them in Rust.

`validate_block` is what a node runs on a block it did not make: header links, the
transaction Merkle root, every transaction signature and a commit certificate with more
than 2/3 of the voting power, all in the Rust core with the GIL released. With `commit=None`
it checks a proposal: every rule but the commit certificate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medledger import merkle
from medledger._core import (
    ValidatedBlock,
    ValidatorSet,
    block_hash,
    block_id,
    block_tx_hashes,
    tx_hash,
    validate_block,
)
from medledger.crypto import SigningKey, vote_signing_message
from medledger.limits import BLOCK_BYTES_MAX, BLOCK_TXS_MAX, TX_BYTES_MAX, VALIDATORS_MAX
from medledger.wire.v1 import envelope_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BLOCK_BYTES_MAX",
    "BLOCK_TXS_MAX",
    "GENESIS_PARENT_HASH",
    "TX_BYTES_MAX",
    "VALIDATORS_MAX",
    "ValidatedBlock",
    "ValidatorSet",
    "assemble_block",
    "block_hash",
    "block_id",
    "block_tx_hashes",
    "encode_block",
    "make_commit",
    "tx_hash",
    "validate_block",
]

GENESIS_PARENT_HASH = bytes(32)
"""The parent hash of the block at height 1."""


def assemble_block(
    *,
    chain_id: str,
    height: int,
    parent_hash: bytes,
    txs: Sequence[envelope_pb2.SignedTransaction],
    proposer: bytes,
    validators: ValidatorSet,
    next_validators: ValidatorSet,
    app_hash: bytes,
    time_unix_ms: int,
    leaves: Sequence[bytes] | None = None,
) -> envelope_pb2.Block:
    """A block carrying `txs` in order, with its Merkle root computed in Rust. `leaves`,
    when given, are the canonical encodings of `txs` the caller already holds.
    `validators` sign it; `next_validators` are those of the next height."""
    if leaves is None:
        leaves = [tx.SerializeToString(deterministic=True) for tx in txs]
    header = envelope_pb2.BlockHeader(
        chain_id=chain_id,
        height=height,
        parent_hash=parent_hash,
        time_unix_ms=time_unix_ms,
        tx_root=merkle.root(leaves),
        tx_count=len(txs),
        app_hash=app_hash,
        validators_hash=validators.hash,
        proposer=proposer,
        next_validators_hash=next_validators.hash,
    )
    return envelope_pb2.Block(header=header, txs=txs)


def _field_prefix(field: int, length: int) -> bytes:
    """The tag and varint length that open a protobuf length-delimited field."""
    out = bytearray([field << 3 | 2])
    while length >= 0x80:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def encode_block(header: bytes, encoded_txs: Sequence[bytes]) -> bytes:
    """An encoded Block (field 1 the header, field 2 each transaction) from parts already
    encoded, without decoding them again. With canonical parts (the header as protobuf
    serialises it, each transaction's canonical encoding) the block is canonical: the
    only form validation accepts."""
    parts = [_field_prefix(1, len(header)), header]
    append = parts.append
    for tx in encoded_txs:
        length = len(tx)
        # Transactions are at most TX_BYTES_MAX: two varint bytes cover all but the largest.
        if length < 0x4000:
            append(
                bytes((0x12, length & 0x7F | 0x80, length >> 7))
                if length >= 0x80
                else bytes((0x12, length))
            )
        else:
            append(_field_prefix(2, length))
        append(tx)
    return b"".join(parts)


def make_commit(
    *,
    chain_id: str,
    header: envelope_pb2.BlockHeader,
    round: int,
    signers: Sequence[tuple[int, SigningKey]],
) -> envelope_pb2.CommitCertificate:
    """A commit certificate for `header`: each (validator index, key) precommits to it."""
    hash_ = block_hash(header.SerializeToString(deterministic=True))
    message = vote_signing_message(
        chain_id, envelope_pb2.VOTE_TYPE_PRECOMMIT, header.height, round, hash_
    )
    return envelope_pb2.CommitCertificate(
        height=header.height,
        round=round,
        block_hash=hash_,
        signatures=[
            envelope_pb2.CommitSignature(validator_index=index, signature=key.sign(message))
            for index, key in signers
        ],
    )
