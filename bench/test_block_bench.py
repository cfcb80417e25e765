"""Validating a 10,000-transaction block: medledger's Rust validator beside a
straightforward pure-Python validator (protobuf + hashlib + cryptography) of the same
block, in the same run."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pytest_benchmark.fixture import BenchmarkFixture

from bench.conftest import CHAIN_ID, BlockCase
from bench.test_merkle_bench import hashlib_root
from medledger.block import validate_block
from medledger.crypto import signing_message, vote_signing_message
from medledger.wire.v1 import envelope_pb2


def python_validate(case: BlockCase) -> bytes:
    """The same rules as the Rust validator, written plainly in Python."""
    block = envelope_pb2.Block.FromString(case.block)
    commit = envelope_pb2.CommitCertificate.FromString(case.commit)
    header = block.header
    if header.chain_id != CHAIN_ID or header.height != case.height:
        raise ValueError("header")
    if header.parent_hash != case.parent_hash or header.tx_count != len(block.txs):
        raise ValueError("header")
    encoded = [tx.SerializeToString(deterministic=True) for tx in block.txs]
    if hashlib_root(encoded) != header.tx_root:
        raise ValueError("tx_root")
    for tx in block.txs:
        try:
            Ed25519PublicKey.from_public_bytes(tx.public_key).verify(
                tx.signature, signing_message("tx", CHAIN_ID, tx.body)
            )
        except InvalidSignature as error:
            raise ValueError("tx signature") from error
    block_hash = hashlib.sha256(header.SerializeToString(deterministic=True)).digest()
    if commit.block_hash != block_hash or commit.height != header.height:
        raise ValueError("commit")
    vote = vote_signing_message(
        CHAIN_ID, envelope_pb2.VOTE_TYPE_PRECOMMIT, commit.height, commit.round, block_hash
    )
    power = 0
    for signature in commit.signatures:
        key = case.validator_keys[signature.validator_index]
        Ed25519PublicKey.from_public_bytes(key).verify(signature.signature, vote)
        power += 10
    if power * 3 <= 40 * 2:
        raise ValueError("quorum")
    return block_hash


def rust_validate(case: BlockCase, threads: int) -> bytes:
    validated = validate_block(
        case.block,
        case.commit,
        chain_id=CHAIN_ID,
        height=case.height,
        parent_hash=case.parent_hash,
        validators=case.validators,
        threads=threads,
    )
    return validated.block_hash


@pytest.mark.benchmark(group="validate a 10000-tx block")
def test_peer_python_validator(benchmark: BenchmarkFixture, block_case: BlockCase) -> None:
    block_hash = benchmark.pedantic(python_validate, args=(block_case,), rounds=3, iterations=1)
    assert block_hash == rust_validate(block_case, threads=2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.benchmark(group="validate a 10000-tx block")
def test_medledger_validate_block(
    benchmark: BenchmarkFixture, block_case: BlockCase, threads: int
) -> None:
    block_hash = benchmark.pedantic(
        rust_validate, args=(block_case, threads), rounds=5, iterations=1
    )
    assert len(block_hash) == 32
