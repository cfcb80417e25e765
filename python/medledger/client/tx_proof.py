"""A transaction's inclusion proof as anyone may download it (the explorer serves it):
the leaf hash of the signed transaction, its RFC 9162 inclusion path, the block header,
the commit certificate and the validator-set transitions since genesis. It carries no
transaction body, so it shows nothing a signed reader alone may see; it proves that a
transaction whose encoding hashes to `leaf_hash` is at `index` of the block at `height`,
certified by more than 2/3 of the validators the genesis leads to. Whoever holds the
signed transaction checks that it hashes to `leaf_hash` (`leaf_hash_of`)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from medledger import merkle
from medledger.client.proofs import ProofError, check_certificate, follow_transitions
from medledger.genesis import Genesis
from medledger.wire.v1 import envelope_pb2, ledger_pb2

__all__ = ["FORMAT", "TxInclusion", "leaf_hash_of", "root_from_path", "verify_tx_proof"]

FORMAT = "medledger-tx-inclusion-proof/v1"
HASH_BYTES = 32


@dataclass(frozen=True)
class TxInclusion:
    tx_id: bytes
    leaf_hash: bytes
    height: int
    index: int
    block_hash: bytes


def leaf_hash_of(tx: envelope_pb2.SignedTransaction) -> bytes:
    """The RFC 9162 leaf hash of a signed transaction, as a block's tx_root hashes it."""
    return merkle.leaf_hash(tx.SerializeToString(deterministic=True))


def root_from_path(leaf_hash: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The tree hash an RFC 9162 inclusion path leads to from a leaf hash (section
    2.1.3.2); None when the path cannot belong to a tree of `size` leaves."""
    if not 0 <= index < size or any(len(p) != HASH_BYTES for p in path):
        return None
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def _hex(document: dict[str, Any], field: str) -> bytes:
    try:
        return bytes.fromhex(str(document[field]))
    except (KeyError, ValueError):
        raise ProofError(f"{field}: missing or not hex") from None


def verify_tx_proof(document: dict[str, Any], genesis: Genesis) -> TxInclusion:
    """Checks the document against `genesis` alone; raises `ProofError` naming what
    failed. The leaf, its place and the block are proven; `tx_id` and the receipt fields
    (code, message) are the node's word, bound only through whoever holds the signed
    transaction (`leaf_hash_of`)."""
    if document.get("format") != FORMAT:
        raise ProofError(f"format: expected {FORMAT!r}")
    leaf_hash = _hex(document, "leaf_hash")
    try:
        raw = base64.b64decode(document["proof"], validate=True)
        response = ledger_pb2.GetTransactionResponse.FromString(raw)
    except (KeyError, ValueError, DecodeError) as error:
        raise ProofError(f"proof: not a header, certificate and inclusion path ({error})") from None
    header, proof = response.header, response.proof
    if len(leaf_hash) != HASH_BYTES:
        raise ProofError("leaf_hash: not 32 bytes")
    root = root_from_path(leaf_hash, proof.leaf_index, proof.tree_size, list(proof.hashes))
    if root is None or root != header.tx_root:
        raise ProofError("proof: the leaf hash is not in the header's tx_root")
    if header.chain_id != genesis.chain_id or header.tx_count != proof.tree_size:
        raise ProofError("header: another chain, or a tree size that disagrees with tx_count")
    trusted = follow_transitions(
        response.transitions, genesis.validator_set(), genesis.chain_id, header.height
    )
    if header.validators_hash != trusted.hash:
        raise ProofError(
            "header.validators_hash: not the validator set the trusted one leads to (a set "
            "change is missing from transitions)"
        )
    block_hash = check_certificate(header, response.commit, trusted, genesis.chain_id, "")
    if document.get("height") != header.height or document.get("index") != proof.leaf_index:
        raise ProofError("height, index: differ from the proven ones")
    return TxInclusion(
        _hex(document, "tx_id"), leaf_hash, header.height, proof.leaf_index, block_hash
    )
