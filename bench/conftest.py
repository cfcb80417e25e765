"""Inputs shared by the benchmarks, built once per session."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from medledger.block import ValidatorSet, assemble_block, make_commit
from medledger.crypto import SigningKey
from medledger.tx import sign_transaction
from medledger.wire.v1 import envelope_pb2

CHAIN_ID = "medledger-bench"
SIGNATURES = 2048
MERKLE_LEAVES = 10_000
BLOCK_TXS = 10_000


@dataclass(frozen=True)
class SignedBatch:
    public_keys: list[bytes]
    messages: list[bytes]
    signatures: list[bytes]


def _signed(key_count: int) -> SignedBatch:
    keys = [SigningKey.generate() for _ in range(key_count)]
    messages = [b"claim %06d: CPT 99213, 1 unit, 125000000 micros" % i for i in range(SIGNATURES)]
    signers = [keys[i % len(keys)] for i in range(SIGNATURES)]
    return SignedBatch(
        public_keys=[k.public_key for k in signers],
        messages=messages,
        signatures=[k.sign(m) for k, m in zip(signers, messages, strict=True)],
    )


@pytest.fixture(scope="session")
def signed_batch() -> SignedBatch:
    """64 signers (payment processors, providers): each key signs 32 messages."""
    return _signed(64)


@pytest.fixture(scope="session")
def distinct_signed_batch() -> SignedBatch:
    """Every signature by a different key: the worst case for batch verification, which
    decodes each public key once and gathers the terms of one key."""
    return _signed(SIGNATURES)


@pytest.fixture(scope="session")
def merkle_leaves() -> list[bytes]:
    # About the size of an encoded transfer: three SHA-256 blocks per leaf hash.
    return [(b"%08d" % i) * 15 for i in range(MERKLE_LEAVES)]


@dataclass(frozen=True)
class BlockCase:
    block: bytes
    commit: bytes
    height: int
    parent_hash: bytes
    validator_keys: list[bytes]
    validators: ValidatorSet


@pytest.fixture(scope="session")
def block_case() -> BlockCase:
    validator_keys = [SigningKey.from_seed(bytes([200 + i]) * 32) for i in range(4)]
    validators = ValidatorSet([(k.public_key, 10) for k in validator_keys])
    clients = [SigningKey.generate() for _ in range(256)]
    txs = [
        sign_transaction(clients[i % len(clients)], CHAIN_ID, b"transfer %08d -> provider" % i)
        for i in range(BLOCK_TXS)
    ]
    block = assemble_block(
        chain_id=CHAIN_ID,
        height=42,
        parent_hash=b"\x11" * 32,
        txs=txs,
        proposer=validator_keys[0].public_key,
        validators=validators,
        next_validators=validators,
        app_hash=b"\x22" * 32,
        time_unix_ms=1_700_000_000_000,
    )
    commit = make_commit(
        chain_id=CHAIN_ID,
        header=block.header,
        round=0,
        signers=[(i, validator_keys[i]) for i in range(4)],
    )
    return BlockCase(
        block=block.SerializeToString(),
        commit=commit.SerializeToString(),
        height=42,
        parent_hash=b"\x11" * 32,
        validator_keys=[k.public_key for k in validator_keys],
        validators=validators,
    )


def decode_block(data: bytes) -> envelope_pb2.Block:
    return envelope_pb2.Block.FromString(data)
