"""The bytes validators sign for consensus messages (domain-separated, chain-bound)."""

from __future__ import annotations

import struct

from medledger.consensus.engine import Proposal, Vote
from medledger.crypto import signing_message, vote_signing_message

__all__ = ["proposal_sign_bytes", "vote_sign_bytes"]


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
