"""The generated wire code matches proto/, and Python and Rust agree on the bytes."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from medledger import block as blocks
from medledger.wire.v1 import envelope_pb2
from tests.conftest import REPO


def load_generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "tools" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_wire_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    generator = load_generator()
    generated = generator.generate(tmp_path)  # type: ignore[attr-defined]
    committed_root = REPO / "python"
    committed = sorted(
        p.relative_to(committed_root)
        for p in (committed_root / "medledger" / "wire").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert committed == generated, "run `make proto`: the set of generated files changed"
    stale = [
        str(path)
        for path in generated
        if (tmp_path / path).read_bytes() != (committed_root / path).read_bytes()
    ]
    assert stale == [], f"run `make proto`: generated code drifted from proto/: {stale}"


hashes = st.binary(min_size=32, max_size=32)


@settings(max_examples=100, deadline=None)
@given(
    chain_id=st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=20),
    height=st.integers(0, 2**64 - 1),
    time_unix_ms=st.integers(0, 2**64 - 1),
    tx_count=st.integers(0, 2**32 - 1),
    parent=hashes,
    root=hashes,
)
def test_python_and_rust_hash_the_same_header_bytes(
    chain_id: str, height: int, time_unix_ms: int, tx_count: int, parent: bytes, root: bytes
) -> None:
    header = envelope_pb2.BlockHeader(
        chain_id=chain_id,
        height=height,
        parent_hash=parent,
        time_unix_ms=time_unix_ms,
        tx_root=root,
        tx_count=tx_count,
    )
    encoded = header.SerializeToString(deterministic=True)
    assert blocks.block_hash(encoded) == hashlib.sha256(encoded).digest()
    assert envelope_pb2.BlockHeader.FromString(encoded) == header


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), key=hashes, signature=st.binary(min_size=64, max_size=64))
def test_python_and_rust_hash_the_same_transaction_bytes(
    body: bytes, key: bytes, signature: bytes
) -> None:
    tx = envelope_pb2.SignedTransaction(body=body, public_key=key, signature=signature)
    encoded = tx.SerializeToString(deterministic=True)
    assert blocks.tx_hash(encoded) == hashlib.sha256(encoded).digest()
