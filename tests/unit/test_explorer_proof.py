"""The explorer's transaction proof: the leaf-hash path check agrees with the Rust
RFC 9162 verifier on every leaf of trees of many sizes and refuses a wrong place or
size, and the format the explorer writes is the one the verifier reads."""

from __future__ import annotations

import pytest

from medledger import merkle
from medledger.client.tx_proof import FORMAT, root_from_path
from medledger.ops.explorer import PROOF_FORMAT, PageError, header_of, parse_hex, parse_number
from medledger.wire.v1 import envelope_pb2


def test_the_explorer_writes_the_format_the_verifier_reads() -> None:
    assert PROOF_FORMAT == FORMAT


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_root_from_path_agrees_with_rfc9162(size: int) -> None:
    leaves = [f"leaf {i}".encode() for i in range(size)]
    root = merkle.root(leaves)
    for index, leaf in enumerate(leaves):
        path = merkle.inclusion_proof(leaves, index)
        assert merkle.verify_inclusion(leaf, index, size, path, root)
        assert root_from_path(merkle.leaf_hash(leaf), index, size, path) == root
        # A wrong place or size: accepted exactly when the Rust verifier accepts it (a
        # path alone does not always fix the size; the header's tx_count does).
        for place, tree in ((index, size + 1), ((index + 1) % size, size), (index, size * 2)):
            ours = root_from_path(merkle.leaf_hash(leaf), place, tree, path) == root
            assert ours == merkle.verify_inclusion(leaf, place, tree, path, root)
    assert root_from_path(merkle.leaf_hash(leaves[0]), size, size, []) is None


def test_header_of_reads_the_header_alone() -> None:
    header = envelope_pb2.BlockHeader(chain_id="c", height=7, tx_count=2, time_unix_ms=5)
    block = envelope_pb2.Block(
        header=header, txs=[envelope_pb2.SignedTransaction(body=b"x" * 300)] * 2
    )
    assert header_of(block.SerializeToString(deterministic=True)) == header


@pytest.mark.parametrize("text", ["", "-1", "1.0", "1e3", " 1", "\u0661", "9" * 20, "0x10", "+1"])
def test_a_malformed_number_is_refused(text: str) -> None:
    with pytest.raises(PageError) as raised:
        parse_number(text, "height")
    assert raised.value.status == 400


@pytest.mark.parametrize("text", ["", "0" * 31, "0" * 33, " " + "0" * 31, "g" * 32, "0 " * 16])
def test_malformed_hex_is_refused(text: str) -> None:
    with pytest.raises(PageError) as raised:
        parse_hex(text, "transaction id", 16)
    assert raised.value.status == 400
