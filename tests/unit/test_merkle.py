"""RFC 9162 Merkle trees: outside roots, pymerkle agreement, and proof properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from medledger import merkle
from medledger.errors import InvalidArgument
from tests.conftest import load_vector

leaves_strategy = st.lists(st.binary(max_size=40), min_size=1, max_size=70)


def flip_bit(data: bytes, bit: int) -> bytes:
    index = (bit // 8) % len(data)
    return data[:index] + bytes([data[index] ^ (1 << (bit % 8))]) + data[index + 1 :]


def test_rfc6962_reference_roots() -> None:
    vectors = load_vector("rfc6962/merkle_rfc6962.json")
    leaves = [bytes.fromhex(h) for h in vectors["leaves_hex"]]
    assert merkle.root([]).hex() == vectors["root_empty"]
    for case in vectors["roots"]:
        assert merkle.root(leaves[: case["tree_size"]]).hex() == case["root"], case


@settings(max_examples=50, deadline=None)
@given(leaves=st.lists(st.binary(max_size=64), max_size=300))
def test_root_agrees_with_pymerkle(leaves: list[bytes]) -> None:
    tree = InmemoryTree(algorithm="sha256")
    for leaf in leaves:
        tree.append_entry(leaf)
    expected = tree.get_root() if leaves else hashlib.sha256(b"").digest()
    assert merkle.root(leaves) == expected


def test_large_roots_agree_across_thread_counts() -> None:
    leaves = [b"tx-%d" % i for i in range(20_001)]
    assert merkle.root(leaves, threads=1) == merkle.root(leaves, threads=2) == merkle.root(leaves)


@settings(max_examples=150, deadline=None)
@given(leaves=leaves_strategy, index_seed=st.integers(min_value=0), bit=st.integers(0, 255))
def test_inclusion_proofs_verify_and_any_flipped_bit_fails(
    leaves: list[bytes], index_seed: int, bit: int
) -> None:
    n = len(leaves)
    index = index_seed % n
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(leaves, index)
    leaf = leaves[index]
    assert merkle.verify_inclusion(leaf, index, n, proof, root)
    assert not merkle.verify_inclusion(leaf, index, n, proof, flip_bit(root, bit))
    assert not merkle.verify_inclusion(leaf + b"\x00", index, n, proof, root)
    if leaf:
        assert not merkle.verify_inclusion(flip_bit(leaf, bit), index, n, proof, root)
    for k in range(len(proof)):
        tampered = [*proof[:k], flip_bit(proof[k], bit), *proof[k + 1 :]]
        assert not merkle.verify_inclusion(leaf, index, n, tampered, root)
    other = (index + 1 + bit) % n
    if other != index and leaves[other] != leaf:
        assert not merkle.verify_inclusion(leaf, other, n, proof, root)


@settings(max_examples=150, deadline=None)
@given(leaves=leaves_strategy, old_seed=st.integers(min_value=0), bit=st.integers(0, 255))
def test_consistency_proofs_verify_and_any_flipped_bit_fails(
    leaves: list[bytes], old_seed: int, bit: int
) -> None:
    n = len(leaves)
    m = 1 + old_seed % n
    new_root, old_root = merkle.root(leaves), merkle.root(leaves[:m])
    proof = merkle.consistency_proof(leaves, m)
    assert merkle.verify_consistency(m, n, old_root, new_root, proof)
    assert not merkle.verify_consistency(m, n, flip_bit(old_root, bit), new_root, proof)
    assert not merkle.verify_consistency(m, n, old_root, flip_bit(new_root, bit), proof)
    for k in range(len(proof)):
        tampered = [*proof[:k], flip_bit(proof[k], bit), *proof[k + 1 :]]
        assert not merkle.verify_consistency(m, n, old_root, new_root, tampered)


@pytest.mark.parametrize(
    "proof",
    [[b"short"], [b"\x00" * 33], [b"\x00" * 32] * 65],
    ids=["short hash", "long hash", "too many hashes"],
)
def test_malformed_proofs_are_false_not_errors(proof: list[bytes]) -> None:
    leaves = [b"a", b"b", b"c"]
    root = merkle.root(leaves)
    assert merkle.verify_inclusion(b"a", 0, 3, proof, root) is False
    assert merkle.verify_consistency(1, 3, merkle.root(leaves[:1]), root, proof) is False


def test_malformed_roots_are_false_not_errors() -> None:
    leaves = [b"a", b"b"]
    proof = merkle.inclusion_proof(leaves, 0)
    assert merkle.verify_inclusion(b"a", 0, 2, proof, b"\x00" * 31) is False
    assert merkle.verify_consistency(1, 2, b"", merkle.root(leaves), proof) is False


def test_out_of_range_proof_requests_name_the_argument() -> None:
    with pytest.raises(InvalidArgument) as raised:
        merkle.inclusion_proof([b"a"], 1)
    assert raised.value.field == "index"
    with pytest.raises(InvalidArgument) as raised:
        merkle.consistency_proof([b"a", b"b"], 0)
    assert raised.value.field == "old_size"


def test_leaf_hash_is_domain_separated_from_interior_nodes() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.root([b"x"]) == merkle.leaf_hash(b"x")
