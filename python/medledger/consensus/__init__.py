"""Tendermint consensus as a pure state machine (no clock, no sockets, no disk).

The engine takes proposals, votes and timeout events in and hands out messages to sign
and send, timeouts to schedule and decisions. The runtime owns the clock, the network,
the signing guard and the store; the deterministic simulation drives the same engine.
"""

from medledger.consensus.engine import (
    Decide,
    Engine,
    Equivocation,
    LockState,
    Output,
    Proposal,
    ScheduleTimeout,
    SendProposal,
    SendVote,
    Step,
    Timeout,
    TimeoutConfig,
    ValueSource,
    Vote,
    VoteType,
)

__all__ = [
    "Decide",
    "Engine",
    "Equivocation",
    "LockState",
    "Output",
    "Proposal",
    "ScheduleTimeout",
    "SendProposal",
    "SendVote",
    "Step",
    "Timeout",
    "TimeoutConfig",
    "ValueSource",
    "Vote",
    "VoteType",
]
