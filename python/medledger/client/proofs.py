"""Checking a transaction's inclusion offline: Merkle proof, block header and commit
certificate against a validator set the verifier trusts (the genesis one)."""

from __future__ import annotations

from medledger import merkle
from medledger.block import ValidatorSet, block_hash
from medledger.crypto import verify_batch, vote_signing_message
from medledger.wire.v1 import envelope_pb2, ledger_pb2

__all__ = ["ProofError", "verify_transaction_proof"]


class ProofError(Exception):
    """A transaction proof that does not hold; the message says which part failed."""


def verify_transaction_proof(
    response: ledger_pb2.GetTransactionResponse, validators: ValidatorSet, chain_id: str
) -> bytes:
    """Checks that `response.tx` is in a block committed by more than 2/3 of `validators`.
    Returns the block hash; raises `ProofError` naming what failed."""
    header, commit, proof = response.header, response.commit, response.proof
    leaf = response.tx.SerializeToString(deterministic=True)
    if not merkle.verify_inclusion(
        leaf, proof.leaf_index, proof.tree_size, list(proof.hashes), header.tx_root
    ):
        raise ProofError("proof: the transaction is not in the header's tx_root")
    if header.chain_id != chain_id or header.tx_count != proof.tree_size:
        raise ProofError("header: another chain, or a tree size that disagrees with tx_count")
    if header.validators_hash != validators.hash:
        raise ProofError("header.validators_hash: not the trusted validator set")
    hash_ = block_hash(header.SerializeToString(deterministic=True))
    if commit.block_hash != hash_ or commit.height != header.height:
        raise ProofError("commit: certifies another block")
    members = validators.members()
    seen: set[int] = set()
    keys, signatures = [], []
    for signature in commit.signatures:
        index = signature.validator_index
        if index >= len(members) or index in seen:
            raise ProofError(f"commit.signatures: unknown or repeated validator {index}")
        seen.add(index)
        keys.append(members[index][0])
        signatures.append(signature.signature)
    message = vote_signing_message(
        chain_id, envelope_pb2.VOTE_TYPE_PRECOMMIT, commit.height, commit.round, hash_
    )
    if not all(verify_batch(keys, [message] * len(keys), signatures)):
        raise ProofError("commit.signatures: a signature does not verify")
    power = sum(members[i][1] for i in seen)
    if 3 * power <= 2 * validators.total_power:
        raise ProofError(f"commit: power {power} of {validators.total_power} is not more than 2/3")
    return hash_
