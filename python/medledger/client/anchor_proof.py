"""A record anchor's proof as a file an auditor checks offline: the anchoring transaction,
its RFC 9162 inclusion proof, the block header and the commit certificate. Verification
needs only the genesis (its validator set and chain id): no node is involved."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from medledger.client.proofs import ProofError, verify_transaction_proof
from medledger.crypto import tx_signing_message, verify
from medledger.genesis import Genesis
from medledger.wire.v1 import ledger_pb2, tx_pb2

__all__ = ["AnchorProof", "anchor_proof_document", "verify_anchor_proof"]

FORMAT = "medledger-anchor-proof/v1"


@dataclass(frozen=True)
class AnchorProof:
    record_id: bytes
    version: int
    commitment: bytes
    custodian: bytes
    patient: bytes
    height: int
    block_hash: bytes


def anchor_proof_document(response: ledger_pb2.GetTransactionResponse) -> dict[str, Any]:
    """The file's content for an anchoring transaction fetched with its proof."""
    body = tx_pb2.TransactionBody.FromString(response.tx.body)
    anchor = body.anchor_record
    return {
        "format": FORMAT,
        "record_id": anchor.record_id.hex(),
        "version": anchor.version,
        "commitment": anchor.commitment.hex(),
        "transaction_with_proof": base64.b64encode(response.SerializeToString()).decode(),
    }


def verify_anchor_proof(document: dict[str, Any], genesis: Genesis) -> AnchorProof:
    """Checks the document against `genesis`; raises `ProofError` naming what failed."""
    if document.get("format") != FORMAT:
        raise ProofError(f"format: expected {FORMAT!r}")
    try:
        raw = base64.b64decode(document["transaction_with_proof"], validate=True)
        response = ledger_pb2.GetTransactionResponse.FromString(raw)
        body = tx_pb2.TransactionBody.FromString(response.tx.body)
    except (KeyError, ValueError, DecodeError) as error:
        raise ProofError(
            f"transaction_with_proof: not a transaction with proof ({error})"
        ) from None
    block_hash = verify_transaction_proof(response, genesis.validator_set(), genesis.chain_id)
    tx = response.tx
    if not verify(tx.public_key, tx_signing_message(genesis.chain_id, tx.body), tx.signature):
        raise ProofError("transaction.signature: not the custodian's signature on this chain")
    if body.WhichOneof("kind") != "anchor_record":
        raise ProofError("transaction: not a record anchor")
    anchor = body.anchor_record
    claimed = (document.get("record_id"), document.get("version"), document.get("commitment"))
    if claimed != (anchor.record_id.hex(), anchor.version, anchor.commitment.hex()):
        raise ProofError("record_id, version, commitment: differ from the anchored ones")
    return AnchorProof(
        anchor.record_id,
        anchor.version,
        anchor.commitment,
        tx.public_key,
        anchor.patient,
        response.header.height,
        block_hash,
    )


def load(path_text: str) -> dict[str, Any]:
    with open(path_text, encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document
