"""Merkle tree hash of 10,000 transaction-sized leaves: medledger beside a pure-Python
hashlib implementation and pymerkle, in the same run."""

from __future__ import annotations

import hashlib

import pytest
from pymerkle import InmemoryTree
from pytest_benchmark.fixture import BenchmarkFixture

from medledger import merkle


def hashlib_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 tree hash written the straightforward way with hashlib."""
    sha256 = hashlib.sha256
    level = [sha256(b"\x00" + leaf).digest() for leaf in leaves]
    if not level:
        return sha256(b"").digest()
    while len(level) > 1:
        paired = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def pymerkle_root(leaves: list[bytes]) -> bytes:
    tree = InmemoryTree(algorithm="sha256")
    for leaf in leaves:
        tree.append_entry(leaf)
    root: bytes = tree.get_root()
    return root


@pytest.mark.benchmark(group="merkle root of 10000 leaves")
def test_peer_hashlib_root(benchmark: BenchmarkFixture, merkle_leaves: list[bytes]) -> None:
    assert benchmark(hashlib_root, merkle_leaves) == merkle.root(merkle_leaves)


@pytest.mark.benchmark(group="merkle root of 10000 leaves")
def test_peer_pymerkle_root(benchmark: BenchmarkFixture, merkle_leaves: list[bytes]) -> None:
    result = benchmark.pedantic(pymerkle_root, args=(merkle_leaves,), rounds=3, iterations=1)
    assert result == merkle.root(merkle_leaves)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.benchmark(group="merkle root of 10000 leaves")
def test_medledger_root(
    benchmark: BenchmarkFixture, merkle_leaves: list[bytes], threads: int
) -> None:
    assert benchmark(merkle.root, merkle_leaves, threads=threads) == hashlib_root(merkle_leaves)
