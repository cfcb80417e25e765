"""Checking a transaction's inclusion offline: Merkle proof, block header and commit
certificate against a validator set the verifier trusts (the genesis one), carried across
validator-set changes by the transitions the node sends with the proof."""

from __future__ import annotations

from collections.abc import Sequence

from medledger import merkle
from medledger.block import ValidatorSet, block_hash
from medledger.crypto import verify_batch, vote_signing_message
from medledger.errors import MedledgerError
from medledger.wire.v1 import envelope_pb2, ledger_pb2

__all__ = ["ProofError", "check_certificate", "follow_transitions", "verify_transaction_proof"]


class ProofError(Exception):
    """A transaction proof that does not hold; the message says which part failed."""


def verify_transaction_proof(
    response: ledger_pb2.GetTransactionResponse, validators: ValidatorSet, chain_id: str
) -> bytes:
    """Checks that `response.tx` is in a block committed by more than 2/3 of the validator
    set of its height, trusting only `validators` (the genesis set): the response's
    transitions carry that trust, change by change, to the set that signed the block.
    Returns the block hash; raises `ProofError` naming what failed."""
    header, commit, proof = response.header, response.commit, response.proof
    leaf = response.tx.SerializeToString(deterministic=True)
    if not merkle.verify_inclusion(
        leaf, proof.leaf_index, proof.tree_size, list(proof.hashes), header.tx_root
    ):
        raise ProofError("proof: the transaction is not in the header's tx_root")
    if header.chain_id != chain_id or header.tx_count != proof.tree_size:
        raise ProofError("header: another chain, or a tree size that disagrees with tx_count")
    trusted = follow_transitions(response.transitions, validators, chain_id, header.height)
    if header.validators_hash != trusted.hash:
        raise ProofError(
            "header.validators_hash: not the validator set the trusted one leads to (a set "
            "change is missing from transitions)"
        )
    return check_certificate(header, commit, trusted, chain_id, "")


def follow_transitions(
    transitions: Sequence[ledger_pb2.ValidatorTransition],
    validators: ValidatorSet,
    chain_id: str,
    height: int,
) -> ValidatorSet:
    """The validator set in force at `height`, from the trusted `validators` and each
    change in order: the last header before a change, certified by the set trusted
    there, names the next set by hash (`next_validators_hash`). A change left out makes
    the set reached differ from the one the block names, so the proof fails; a change
    cannot be forged without more than 2/3 of the set trusted where it happens.

    What this cannot catch (as with any light client): validators that have left the
    set, and whose keys later leak or who collude, signing a fork of their own. A verifier
    that last trusted a set long ago should refresh its trusted set out of band."""
    current = validators
    last = 0
    for i, transition in enumerate(transitions):
        where = f"transitions[{i}]"
        header = transition.header
        if header.chain_id != chain_id or not last < header.height < height:
            raise ProofError(f"{where}.header: another chain, or a height out of order")
        if header.validators_hash != current.hash:
            raise ProofError(f"{where}.header.validators_hash: not the set trusted there")
        check_certificate(header, transition.commit, current, chain_id, f"{where}.")
        try:
            following = ValidatorSet([(v.public_key, v.power) for v in transition.validators])
        except MedledgerError as error:
            raise ProofError(f"{where}.validators: {error}") from None
        if header.next_validators_hash != following.hash:
            raise ProofError(f"{where}.validators: not the set its header names next")
        current, last = following, header.height
    return current


def check_certificate(
    header: envelope_pb2.BlockHeader,
    commit: envelope_pb2.CommitCertificate,
    validators: ValidatorSet,
    chain_id: str,
    where: str,
) -> bytes:
    """That more than 2/3 of `validators` precommitted `header`; returns its hash."""
    hash_ = block_hash(header.SerializeToString(deterministic=True))
    if commit.block_hash != hash_ or commit.height != header.height:
        raise ProofError(f"{where}commit: certifies another block")
    members = validators.members()
    seen: set[int] = set()
    keys, signatures = [], []
    for signature in commit.signatures:
        index = signature.validator_index
        if index >= len(members) or index in seen:
            raise ProofError(f"{where}commit.signatures: unknown or repeated validator {index}")
        seen.add(index)
        keys.append(members[index][0])
        signatures.append(signature.signature)
    message = vote_signing_message(
        chain_id, envelope_pb2.VOTE_TYPE_PRECOMMIT, commit.height, commit.round, hash_
    )
    if not all(verify_batch(keys, [message] * len(keys), signatures)):
        raise ProofError(f"{where}commit.signatures: a signature does not verify")
    power = sum(members[i][1] for i in seen)
    if 3 * power <= 2 * validators.total_power:
        raise ProofError(
            f"{where}commit: power {power} of {validators.total_power} is not more than 2/3"
        )
    return hash_
