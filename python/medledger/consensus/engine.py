"""The Tendermint consensus algorithm (Buchman, Kwon, Milosevic, "The latest gossip on
BFT consensus", arXiv 1807.04938, Algorithm 1) as a pure state machine.

Inputs are proposals, votes and timeout events; outputs are messages to sign and send,
timeouts to schedule, decisions and evidence of equivocation. Nothing here reads a clock,
touches a socket or a disk, or draws a random number: the same inputs give the same
outputs, which is what makes deterministic simulation possible.

"2f + 1" in the paper is "more than 2/3 of the voting power" here and "f + 1" is "more
than 1/3", so validators may have different weights. The runtime checks signatures
before it feeds a message in, signs what comes out through its signing guard, and feeds
its own signed messages back in as if they had arrived from the network.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

__all__ = [
    "HEIGHTS_AHEAD_MAX",
    "ROUNDS_AHEAD_MAX",
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

ROUNDS_AHEAD_MAX = 32
"""Messages for rounds further ahead of ours than this are dropped (bounded memory)."""
BYTES_PER_VALUE_MAX = 4
"""Distinct byte strings under one value id validated per height; more are invalid."""
HEIGHTS_AHEAD_MAX = 4
"""Messages for heights further ahead than this are dropped; catch-up handles the rest."""
PROPOSALS_PER_ROUND_MAX = 4
"""Distinct values an equivocating proposer can make a validator hold in one round."""
BUFFERED_MESSAGES_MAX = 4096
BUFFERED_BYTES_PER_VALIDATOR = 32 * 1024 * 1024
"""What one validator's messages for future heights may hold (a proposal carries its
whole block): a Byzantine validator cannot make the others buffer more."""
VOTE_BYTES = 256
"""What a buffered vote is counted as against its validator's budget."""
"""Most messages kept for future heights."""


class Step(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class VoteType(IntEnum):
    # The values of medledger.wire.v1.VoteType.
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class Proposal:
    height: int
    round: int
    value_id: bytes
    value: bytes
    valid_round: int  # -1 when the proposer has no valid value from an earlier round
    proposer: int  # validator index
    signature: bytes = b""


@dataclass(frozen=True)
class LockState:
    """What a validator's next votes at `height` depend on: Algorithm 1's lockedValue and
    lockedRound (safety: never prevote against the lock) and validValue and validRound
    (what it re-proposes), with the signed prevotes that made the value valid (the
    others need them to accept its re-proposal). The runtime makes it durable before any
    vote leaves, so a restarted validator resumes with it instead of forgetting its lock."""

    height: int
    round: int
    locked_round: int  # -1: not locked
    locked_id: bytes  # empty when not locked
    valid_round: int  # -1: no valid value
    valid_value: tuple[bytes, bytes] | None  # (id, bytes)
    evidence: tuple[Vote, ...] = ()  # prevotes for the valid value in the valid round


@dataclass(frozen=True, slots=True)
class Vote:
    type: VoteType
    height: int
    round: int
    value_id: bytes | None  # None is a vote for nil
    validator: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Timeout:
    step: Step
    height: int
    round: int


@dataclass(frozen=True, slots=True)
class SendProposal:
    proposal: Proposal


@dataclass(frozen=True, slots=True)
class SendVote:
    vote: Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    timeout: Timeout
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Decide:
    height: int
    round: int
    value_id: bytes
    value: bytes
    precommits: tuple[Vote, ...]  # the commit certificate


@dataclass(frozen=True, slots=True)
class Equivocation:
    first: Vote | Proposal
    second: Vote | Proposal


Output = SendProposal | SendVote | ScheduleTimeout | Decide | Equivocation


@dataclass(frozen=True)
class TimeoutConfig:
    """Timeouts grow linearly with the round, so some round is eventually long enough."""

    propose_ms: int = 1_000
    propose_delta_ms: int = 500
    prevote_ms: int = 500
    prevote_delta_ms: int = 250
    precommit_ms: int = 500
    precommit_delta_ms: int = 250

    def delay_ms(self, step: Step, round_: int) -> int:
        base, delta = {
            Step.PROPOSE: (self.propose_ms, self.propose_delta_ms),
            Step.PREVOTE: (self.prevote_ms, self.prevote_delta_ms),
            Step.PRECOMMIT: (self.precommit_ms, self.precommit_delta_ms),
        }[step]
        return base + round_ * delta


PROPOSER_SCHEDULE_MAX = 100_000


def proposer_schedule(powers: Sequence[int]) -> list[int]:
    """One cycle of smooth weighted round-robin over the powers reduced by their gcd:
    each validator appears in proportion to its power, spread out rather than in runs,
    so a validator that is down costs a round only once per cycle."""
    divisor = math.gcd(*powers)
    weights = [power // divisor for power in powers]
    total = sum(weights)
    if total > PROPOSER_SCHEDULE_MAX:
        # Powers with no useful common divisor: approximate them on a coarser scale.
        scale = total / PROPOSER_SCHEDULE_MAX
        weights = [max(1, round(w / scale)) for w in weights]
        total = sum(weights)
    current = [0] * len(weights)
    schedule = []
    for _ in range(total):
        for i, weight in enumerate(weights):
            current[i] += weight
        chosen = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[chosen] -= total
        schedule.append(chosen)
    return schedule


class ValueSource(Protocol):
    """The application side of consensus: what to propose, and what is acceptable."""

    def get_value(self, height: int) -> tuple[bytes, bytes]:
        """A new value (id, bytes) to propose at `height`."""
        ...

    def valid(self, height: int, value_id: bytes, value: bytes) -> bool:
        """Whether `value` may be decided at `height` and is identified by `value_id`."""
        ...

    def timely(self, height: int, value_id: bytes) -> bool:
        """Whether a value proposed fresh (valid round -1) was made recently enough to
        prevote for it, asked after `valid` (as proposer-based timestamps do: a value
        re-proposed from an earlier round is judged by `valid` alone, so a slow round
        never makes a locked value unacceptable)."""
        ...


class Tally:
    """Votes of one type in one round, weighted by voting power.

    A validator that votes for two values (it equivocates) is counted once in
    `power_any` but towards each value it signed: a quorum is a set of signed votes, and
    the algorithm's safety does not depend on a Byzantine validator voting once (any two
    quorums share an honest validator, who never votes twice). Counting only its first
    vote would let an equivocator keep the honest ones from ever seeing a quorum that
    exists, such as the one another validator is locked on."""

    def __init__(self) -> None:
        self.votes: dict[tuple[int, bytes | None], Vote] = {}
        self.first: dict[int, Vote] = {}  # each validator's first vote here
        self.stray: set[int] = set()  # validators with one vote kept for an unknown value
        self.power_for: dict[bytes | None, int] = {}
        self.power_any = 0

    def add(
        self, vote: Vote, power: int, known: Callable[[bytes | None], bool] = lambda _: True
    ) -> tuple[bool, Vote | None]:
        """Counts `vote`. Returns whether it was new, and the validator's earlier vote
        for another value if it equivocates. An equivocator's further votes are kept
        only for values `known` (nil, a proposal of this height, our lock) and one more
        as proof: it cannot make the tally grow with votes for values nobody proposed."""
        key = (vote.validator, vote.value_id)
        if key in self.votes:
            return False, None  # a duplicate
        earlier = self.first.get(vote.validator)
        if earlier is not None and not known(vote.value_id):
            if vote.validator in self.stray:
                return False, None
            self.stray.add(vote.validator)
        self.votes[key] = vote
        self.power_for[vote.value_id] = self.power_for.get(vote.value_id, 0) + power
        if earlier is None:
            self.first[vote.validator] = vote
            self.power_any += power
        return True, earlier

    def for_value(self, value_id: bytes | None) -> list[Vote]:
        return [vote for (_, voted), vote in self.votes.items() if voted == value_id]


@dataclass
class RoundState:
    proposal: Proposal | None = None  # the first: what this validator prevotes on
    # Every proposal of the round by value id: an equivocating proposer may sign several,
    # and a quorum of precommits (or prevotes) for any of them counts (lines 36 and 49).
    proposals: dict[bytes, Proposal] = field(default_factory=dict)
    prevotes: Tally = field(default_factory=Tally)
    precommits: Tally = field(default_factory=Tally)
    senders: set[int] = field(default_factory=set)
    sender_power: int = 0
    prevote_timeout_scheduled: bool = False  # line 34 fires once per round
    precommit_timeout_scheduled: bool = False  # line 47 fires once per round
    prevote_quorum_seen: bool = False  # line 36 fires once per round


class Engine:
    """One validator's (or an observer's) view of consensus, one height at a time."""

    def __init__(
        self,
        powers: Sequence[int],
        me: int | None,
        values: ValueSource,
        timeouts: TimeoutConfig | None = None,
        height: int = 1,
    ) -> None:
        self.set_validators(powers, me)
        self.values = values
        self.timeouts = timeouts or TimeoutConfig()
        self.height = height
        self._buffer: list[Proposal | Vote] = []
        self._buffered_bytes: dict[int, int] = {}  # validator -> bytes of its buffered
        self._reset_height()

    def set_validators(self, powers: Sequence[int], me: int | None) -> None:
        """The validator set of the current height (and this validator's index in it, or
        None when it does not vote there). Called by the runtime before `advance` or
        `skip_to` when the next height has another set: votes and proposals name
        validators by index in the set of their height."""
        if not powers or any(p <= 0 for p in powers):
            raise ValueError("validator powers must be positive")
        self.powers = list(powers)
        self.total_power = sum(self.powers)
        self._schedule_slots = proposer_schedule(self.powers)
        self.me = me

    # ---------------------------------------------------------------- thresholds

    def _quorum(self, power: int) -> bool:
        return 3 * power > 2 * self.total_power

    def _one_honest(self, power: int) -> bool:
        return 3 * power > self.total_power

    def proposer(self, height: int, round_: int) -> int:
        """Deterministic, weighted rotation: each validator proposes in proportion to its
        power, interleaved, over consecutive (height, round) slots."""
        return self._schedule_slots[(height + round_) % len(self._schedule_slots)]

    # --------------------------------------------------------------------- state

    def _reset_height(self) -> None:
        self.round = 0
        self.step = Step.PROPOSE
        self.locked_value: tuple[bytes, bytes] | None = None
        self.locked_round = -1
        self.valid_value: tuple[bytes, bytes] | None = None
        self.valid_round = -1
        self.rounds: dict[int, RoundState] = {}
        self.decided = False
        # Keyed by a digest of the value's bytes as well as its id: a proposal's signature
        # covers only the id, so other bytes under a known id must be judged on their own.
        self._validity: dict[tuple[bytes, bytes], bool] = {}
        self._judged: dict[bytes, int] = {}  # value id -> distinct byte strings judged
        self._proposed: set[bytes] = set()  # ids of the proposals accepted at this height

    def _assert_rounds(self) -> None:
        """The invariant between the rounds, checked wherever one of them changes:
        `-1 <= locked_round <= round`, `-1 <= valid_round <= round`, and
        `locked_round <= valid_round` unless `valid_round == -1`. Not simply
        `locked_round <= valid_round`: a validator restored from a guard file whose valid
        value's bytes were lost keeps its lock (safety) without a valid value. A round of
        -1 means exactly that its value is None."""
        assert -1 <= self.locked_round <= self.round, (
            f"height {self.height}: locked_round {self.locked_round} not in -1..{self.round}"
        )
        assert -1 <= self.valid_round <= self.round, (
            f"height {self.height}: valid_round {self.valid_round} not in -1..{self.round}"
        )
        assert self.valid_round == -1 or self.locked_round <= self.valid_round, (
            f"height {self.height}: locked_round {self.locked_round} after valid_round "
            f"{self.valid_round}"
        )
        assert (self.locked_round == -1) == (self.locked_value is None), (
            f"height {self.height}: locked_round {self.locked_round} without a locked value"
        )
        assert (self.valid_round == -1) == (self.valid_value is None), (
            f"height {self.height}: valid_round {self.valid_round} without a valid value"
        )

    def _round(self, round_: int) -> RoundState:
        state = self.rounds.get(round_)
        if state is None:
            state = self.rounds[round_] = RoundState()
        return state

    def _valid(self, proposal: Proposal) -> bool:
        key = (proposal.value_id, hashlib.sha256(proposal.value).digest())
        known = self._validity.get(key)
        if known is None:
            judged = self._judged.get(proposal.value_id, 0)
            if judged >= BYTES_PER_VALUE_MAX:
                # Anyone who saw a signed proposal can attach other bytes to it: after a
                # few, more are not worth validating (nor remembering) at this height.
                return False
            self._judged[proposal.value_id] = judged + 1
            known = self._validity[key] = self.values.valid(
                proposal.height, proposal.value_id, proposal.value
            )
        return known

    # -------------------------------------------------------------------- inputs

    def lock_state(self) -> LockState:
        return LockState(
            self.height,
            self.round,
            self.locked_round,
            self.locked_value[0] if self.locked_value is not None else b"",
            self.valid_round,
            self.valid_value,
            tuple(self.evidence()),
        )

    def evidence(self) -> list[Vote]:
        """The prevotes that made the valid value valid: more than 2/3 of the power for
        it in the valid round. The runtime relays them with its own messages. Algorithm 1
        assumes every message a correct validator received reaches the others; without
        the relay, a validator locked on a value whose quorum others never saw (an
        equivocating validator sent them another vote) re-proposes it in vain forever."""
        if self.valid_value is None or self.valid_round < 0:
            return []
        state = self.rounds.get(self.valid_round)
        if state is None:
            return []
        value_id = self.valid_value[0]
        return state.prevotes.for_value(value_id)

    def restore(self, state: LockState) -> None:
        """Resumes, before `start`, from the state a validator made durable before it
        last signed (after a crash). A state of another height is ignored: the height
        was decided meanwhile, and its lock no longer binds."""
        if state.height != self.height:
            return
        self.round = state.round
        self.locked_round = state.locked_round
        # Only the id of the locked value matters for voting; its bytes are the valid
        # value's when the validator re-proposes.
        self.locked_value = (state.locked_id, b"") if state.locked_round >= 0 else None
        if state.valid_value is not None and state.valid_round >= 0:
            self.valid_value, self.valid_round = state.valid_value, state.valid_round
        for vote in state.evidence:
            if vote.height == self.height and 0 <= vote.validator < len(self.powers):
                self._round(vote.round).prevotes.add(vote, self.powers[vote.validator])
        self._assert_rounds()

    def start(self) -> list[Output]:
        """Starts the current round of the current height (0, or the round a restored
        validator had reached)."""
        outputs: list[Output] = []
        self._start_round(self.round, outputs)
        self._evaluate(outputs)
        return outputs

    def on_proposal(self, proposal: Proposal) -> list[Output]:
        outputs: list[Output] = []
        if self._accept(proposal, outputs):
            self._evaluate(outputs)
        return outputs

    def on_vote(self, vote: Vote) -> list[Output]:
        outputs: list[Output] = []
        if self._accept(vote, outputs):
            self._evaluate(outputs)
        return outputs

    def on_timeout(self, timeout: Timeout) -> list[Output]:
        outputs: list[Output] = []
        if timeout.height != self.height or timeout.round != self.round or self.decided:
            return outputs
        if timeout.step == Step.PROPOSE and self.step == Step.PROPOSE:  # line 57
            self._vote(VoteType.PREVOTE, None, outputs)
            self.step = Step.PREVOTE
        elif timeout.step == Step.PREVOTE and self.step == Step.PREVOTE:  # line 61
            self._vote(VoteType.PRECOMMIT, None, outputs)
            self.step = Step.PRECOMMIT
        elif timeout.step == Step.PRECOMMIT:  # line 65
            self._start_round(self.round + 1, outputs)
        self._evaluate(outputs)
        return outputs

    def _accept(self, message: Proposal | Vote, outputs: list[Output]) -> bool:
        """Stores a message for this height (or buffers one for a future height).
        Returns whether anything changed."""
        sender = message.proposer if isinstance(message, Proposal) else message.validator
        if not 0 <= sender < len(self.powers) or message.round < 0:
            return False
        if message.height > self.height:
            self._buffer_for_later(message, sender)
            return False
        if message.height < self.height or message.round > self.round + ROUNDS_AHEAD_MAX:
            return False
        state = self._round(message.round)
        if isinstance(message, Proposal):
            changed = self._accept_proposal(state, message, outputs)
        else:
            changed = self._accept_vote(state, message, outputs)
        if changed and sender not in state.senders:
            state.senders.add(sender)
            state.sender_power += self.powers[sender]
        return changed

    def _buffer_for_later(self, message: Proposal | Vote, sender: int) -> None:
        """Keeps a message of a near future height for when this validator gets there:
        only a proposal from that slot's proposer, within the rounds it would accept,
        and within the sender's share of the buffer (count and bytes)."""
        if message.height - self.height > HEIGHTS_AHEAD_MAX or message.round > ROUNDS_AHEAD_MAX:
            return
        if isinstance(message, Proposal):
            if sender != self.proposer(message.height, message.round):
                return
            size = len(message.value) + VOTE_BYTES
        else:
            size = VOTE_BYTES
        used = self._buffered_bytes.get(sender, 0)
        share = BUFFERED_MESSAGES_MAX // len(self.powers) * VOTE_BYTES
        if (
            len(self._buffer) >= BUFFERED_MESSAGES_MAX
            or used + size > BUFFERED_BYTES_PER_VALIDATOR
            or (not isinstance(message, Proposal) and used + size > share)
        ):
            return
        self._buffered_bytes[sender] = used + size
        self._buffer.append(message)

    def _accept_proposal(
        self, state: RoundState, proposal: Proposal, outputs: list[Output]
    ) -> bool:
        if proposal.proposer != self.proposer(proposal.height, proposal.round):
            return False
        if not -1 <= proposal.valid_round < proposal.round:
            return False
        held = state.proposals.get(proposal.value_id)
        if held is not None:
            if held.value == proposal.value or self._valid(held):
                return False
            # Other bytes under the same id, and those held first are not a valid value
            # (a copy with tampered bytes arrived first): judge these on their own, so a
            # tampered copy cannot make the genuine value undecidable.
        elif state.proposal is not None:
            outputs.append(Equivocation(state.proposal, proposal))
            if len(state.proposals) >= PROPOSALS_PER_ROUND_MAX:
                return False
        state.proposals[proposal.value_id] = proposal
        self._proposed.add(proposal.value_id)
        if state.proposal is None or state.proposal.value_id == proposal.value_id:
            state.proposal = proposal
        return True

    def _accept_vote(self, state: RoundState, vote: Vote, outputs: list[Output]) -> bool:
        tally = state.prevotes if vote.type == VoteType.PREVOTE else state.precommits
        added, earlier = tally.add(vote, self.powers[vote.validator], self._known)
        if earlier is not None:
            outputs.append(Equivocation(earlier, vote))
        return added

    # --------------------------------------------------------------- the rules

    def _start_round(self, round_: int, outputs: list[Output]) -> None:  # line 11
        self.round = round_
        self.step = Step.PROPOSE
        self._assert_rounds()
        if self.me is not None and self.proposer(self.height, round_) == self.me:
            if self.valid_value is not None:
                value_id, value = self.valid_value
            else:
                value_id, value = self.values.get_value(self.height)
            outputs.append(
                SendProposal(
                    Proposal(self.height, round_, value_id, value, self.valid_round, self.me)
                )
            )
        else:
            self._schedule(Step.PROPOSE, outputs)

    def _vote(self, vote_type: VoteType, value_id: bytes | None, outputs: list[Output]) -> None:
        if self.me is not None:
            outputs.append(SendVote(Vote(vote_type, self.height, self.round, value_id, self.me)))

    def _schedule(self, step: Step, outputs: list[Output]) -> None:
        timeout = Timeout(step, self.height, self.round)
        outputs.append(ScheduleTimeout(timeout, self.timeouts.delay_ms(step, self.round)))

    def _evaluate(self, outputs: list[Output]) -> None:
        """Fires every rule whose condition holds, until none does."""
        rules = (
            self._line_49_decide,
            self._line_55_skip_round,
            self._line_22_28_prevote,
            self._line_34_prevote_timeout,
            self._line_36_lock,
            self._line_44_precommit_nil,
            self._line_47_precommit_timeout,
        )
        while not self.decided and any(rule(outputs) for rule in rules):
            pass

    def _prevote_power(self, round_: int, value_id: bytes | None) -> int:
        state = self.rounds.get(round_)
        return 0 if state is None else state.prevotes.power_for.get(value_id, 0)

    def _known(self, value_id: bytes | None) -> bool:
        """Nil, a value proposed at this height, or the one this validator holds."""
        return (
            value_id is None
            or value_id in self._proposed
            or (self.valid_value is not None and self.valid_value[0] == value_id)
            or (self.locked_value is not None and self.locked_value[0] == value_id)
        )

    def _locked_on(self, value_id: bytes) -> bool:
        return self.locked_value is not None and self.locked_value[0] == value_id

    def _line_49_decide(self, outputs: list[Output]) -> bool:
        """A proposal with a precommit quorum, in any round of this height, is decided."""
        for round_, state in sorted(self.rounds.items()):
            for proposal in state.proposals.values():
                if self._quorum(
                    state.precommits.power_for.get(proposal.value_id, 0)
                ) and self._valid(proposal):
                    self._decide(round_, proposal, outputs)
                    return True
        return False

    def _line_55_skip_round(self, outputs: list[Output]) -> bool:
        """More than 1/3 of the power is in a later round: at least one honest validator
        is there, so move to it."""
        later = [
            r for r, s in self.rounds.items() if r > self.round and self._one_honest(s.sender_power)
        ]
        if not later:
            return False
        self._start_round(max(later), outputs)
        return True

    def _line_22_28_prevote(self, outputs: list[Output]) -> bool:
        proposal = self._round(self.round).proposal
        if self.step != Step.PROPOSE or proposal is None:
            return False
        if proposal.valid_round == -1:  # line 22: a fresh value
            acceptable = (
                self._valid(proposal)
                and self.values.timely(proposal.height, proposal.value_id)
                and (self.locked_round == -1 or self._locked_on(proposal.value_id))
            )
        elif self._quorum(self._prevote_power(proposal.valid_round, proposal.value_id)):
            # Line 28: a value that had a prevote quorum in an earlier round.
            acceptable = self._valid(proposal) and (
                self.locked_round <= proposal.valid_round or self._locked_on(proposal.value_id)
            )
        else:
            return False
        self._vote(VoteType.PREVOTE, proposal.value_id if acceptable else None, outputs)
        self.step = Step.PREVOTE
        return True

    def _line_34_prevote_timeout(self, outputs: list[Output]) -> bool:
        current = self._round(self.round)
        if (
            self.step != Step.PREVOTE
            or current.prevote_timeout_scheduled
            or not self._quorum(current.prevotes.power_any)
        ):
            return False
        current.prevote_timeout_scheduled = True
        self._schedule(Step.PREVOTE, outputs)
        return True

    def _line_36_lock(self, outputs: list[Output]) -> bool:
        current = self._round(self.round)
        if self.step < Step.PREVOTE or current.prevote_quorum_seen:
            return False
        proposal = next(
            (
                p
                for p in current.proposals.values()
                if self._quorum(current.prevotes.power_for.get(p.value_id, 0)) and self._valid(p)
            ),
            None,
        )
        if proposal is None:
            return False
        current.prevote_quorum_seen = True
        if self.step == Step.PREVOTE:
            self.locked_value = (proposal.value_id, proposal.value)
            self.locked_round = self.round
            self._vote(VoteType.PRECOMMIT, proposal.value_id, outputs)
            self.step = Step.PRECOMMIT
        self.valid_value = (proposal.value_id, proposal.value)
        self.valid_round = self.round
        self._assert_rounds()
        return True

    def _line_44_precommit_nil(self, outputs: list[Output]) -> bool:
        if self.step != Step.PREVOTE or not self._quorum(self._prevote_power(self.round, None)):
            return False
        self._vote(VoteType.PRECOMMIT, None, outputs)
        self.step = Step.PRECOMMIT
        return True

    def _line_47_precommit_timeout(self, outputs: list[Output]) -> bool:
        current = self._round(self.round)
        if current.precommit_timeout_scheduled or not self._quorum(current.precommits.power_any):
            return False
        current.precommit_timeout_scheduled = True
        self._schedule(Step.PRECOMMIT, outputs)
        return True

    def _decide(self, round_: int, proposal: Proposal, outputs: list[Output]) -> None:
        precommits = tuple(
            sorted(
                self.rounds[round_].precommits.for_value(proposal.value_id),
                key=lambda vote: vote.validator,
            )
        )
        outputs.append(Decide(self.height, round_, proposal.value_id, proposal.value, precommits))
        self.decided = True

    def advance(self) -> list[Output]:
        """Moves to the next height once the runtime has committed the decided block, then
        replays the messages buffered for it and starts round 0."""
        assert self.decided, "advance only after a decision"
        self.height += 1
        self._reset_height()
        buffered, self._buffer = self._buffer, []
        self._buffered_bytes = {}
        outputs: list[Output] = []
        for message in buffered:
            self._accept(message, outputs)
        self._start_round(0, outputs)
        self._evaluate(outputs)
        return outputs

    def skip_to(self, height: int) -> list[Output]:
        """Jumps to `height` after the runtime caught up on blocks it fetched from peers."""
        self.height = height - 1
        self.decided = True
        return self.advance()
