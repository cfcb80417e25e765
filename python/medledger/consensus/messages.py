"""The bytes validators sign for consensus messages (domain-separated, chain-bound)."""

from __future__ import annotations

import dataclasses
import struct

from medledger.consensus.engine import Proposal, Vote, VoteType
from medledger.consensus.guard import STEP_PRECOMMIT, STEP_PREVOTE, STEP_PROPOSAL
from medledger.crypto import signing_message, vote_signing_message

__all__ = [
    "guard_step",
    "proposal_sign_bytes",
    "sign_bytes",
    "signer",
    "vote_sign_bytes",
    "with_signature",
]


def proposal_sign_bytes(chain_id: str, proposal: Proposal) -> bytes:
    """height (u64 BE) || round (u32 BE) || valid_round + 1 (u32 BE) || value id."""
    payload = (
        struct.pack(">QII", proposal.height, proposal.round, proposal.valid_round + 1)
        + proposal.value_id
    )
    return signing_message("proposal", chain_id, payload)


def vote_sign_bytes(chain_id: str, vote: Vote) -> bytes:
    """The same bytes a commit certificate's precommit signatures cover."""
    return vote_signing_message(
        chain_id, int(vote.type), vote.height, vote.round, vote.value_id or b""
    )


def sign_bytes(chain_id: str, message: Proposal | Vote) -> bytes:
    """What the sender of `message` signs."""
    if isinstance(message, Proposal):
        return proposal_sign_bytes(chain_id, message)
    return vote_sign_bytes(chain_id, message)


def guard_step(message: Proposal | Vote) -> int:
    """The step the signing guard orders `message` by within its round."""
    if isinstance(message, Proposal):
        return STEP_PROPOSAL
    return STEP_PREVOTE if message.type == VoteType.PREVOTE else STEP_PRECOMMIT


def signer(message: Proposal | Vote) -> int:
    return message.proposer if isinstance(message, Proposal) else message.validator


def with_signature(message: Proposal | Vote, signature: bytes) -> Proposal | Vote:
    return dataclasses.replace(message, signature=signature)
