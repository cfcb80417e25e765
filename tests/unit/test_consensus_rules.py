"""Algorithm 1 of "The latest gossip on BFT consensus", rule by rule, driving the engine
by hand. Four validators of power 1 unless a test says otherwise: a quorum (more than 2/3)
is 3, "f + 1" (more than 1/3) is 2."""

from __future__ import annotations

import pytest

from medledger.consensus import (
    Decide,
    Engine,
    Equivocation,
    Output,
    Proposal,
    ScheduleTimeout,
    SendProposal,
    SendVote,
    Step,
    Timeout,
    TimeoutConfig,
    Vote,
    VoteType,
)
from medledger.consensus.engine import (
    BUFFERED_BYTES_PER_VALIDATOR,
    BUFFERED_MESSAGES_MAX,
    HEIGHTS_AHEAD_MAX,
    PROPOSALS_PER_ROUND_MAX,
    ROUNDS_AHEAD_MAX,
)

A, B, BAD = b"value-A", b"value-B", b"value-bad"


class Values:
    """The application's side: fresh values to propose, and which values are valid."""

    def __init__(self) -> None:
        self.proposed = 0

    def get_value(self, height: int) -> tuple[bytes, bytes]:
        self.proposed += 1
        return b"fresh-%d" % height, b"fresh-bytes-%d" % height

    def timely(self, height: int, value_id: bytes) -> bool:
        return True

    def valid(self, height: int, value_id: bytes, value: bytes) -> bool:
        return value_id != BAD


def engine(me: int | None, powers: tuple[int, ...] = (1, 1, 1, 1)) -> Engine:
    return Engine(list(powers), me, Values(), TimeoutConfig())


def not_proposer(e: Engine, height: int = 1, round_: int = 0) -> int:
    """A validator index that is not the proposer of (height, round)."""
    return next(i for i in range(len(e.powers)) if i != e.proposer(height, round_))


def proposal(
    e: Engine, value: bytes, round_: int = 0, valid_round: int = -1, height: int = 1
) -> Proposal:
    return Proposal(
        height, round_, value, value + b"-bytes", valid_round, e.proposer(height, round_)
    )


def prevote(validator: int, value: bytes | None, round_: int = 0, height: int = 1) -> Vote:
    return Vote(VoteType.PREVOTE, height, round_, value, validator)


def precommit(validator: int, value: bytes | None, round_: int = 0, height: int = 1) -> Vote:
    return Vote(VoteType.PRECOMMIT, height, round_, value, validator)


def votes_sent(outputs: list[Output]) -> list[tuple[VoteType, bytes | None]]:
    return [(o.vote.type, o.vote.value_id) for o in outputs if isinstance(o, SendVote)]


def timeouts(outputs: list[Output]) -> list[tuple[Step, int]]:
    return [(o.timeout.step, o.timeout.round) for o in outputs if isinstance(o, ScheduleTimeout)]


def feed(e: Engine, *messages: Proposal | Vote) -> list[Output]:
    outputs: list[Output] = []
    for message in messages:
        outputs += e.on_proposal(message) if isinstance(message, Proposal) else e.on_vote(message)
    return outputs


def others(e: Engine) -> list[int]:
    return [i for i in range(len(e.powers)) if i != e.me]


def test_line_11_the_proposer_proposes_a_fresh_value() -> None:
    probe = engine(None)
    e = engine(probe.proposer(1, 0))
    outputs = e.start()
    sent = [o.proposal for o in outputs if isinstance(o, SendProposal)]
    assert [(p.height, p.round, p.value_id, p.valid_round) for p in sent] == [
        (1, 0, b"fresh-1", -1)
    ]
    assert timeouts(outputs) == []


def test_line_11_a_non_proposer_schedules_the_propose_timeout() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    outputs = e.start()
    assert timeouts(outputs) == [(Step.PROPOSE, 0)]
    assert not any(isinstance(o, SendProposal) for o in outputs)


def test_line_11_a_proposer_reproposes_its_valid_value() -> None:
    me = engine(None).proposer(1, 1)
    e = engine(me)
    e.start()
    feed(e, proposal(e, A), *(prevote(v, A) for v in range(4)))
    assert e.valid_value is not None
    assert (e.valid_value[0], e.valid_round) == (A, 0)
    feed(e, *(precommit(v, None) for v in others(e)))
    outputs = e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    sent = [o.proposal for o in outputs if isinstance(o, SendProposal)]
    assert [(p.round, p.value_id, p.valid_round) for p in sent] == [(1, A, 0)]


def test_line_22_a_valid_fresh_proposal_gets_a_prevote() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    assert votes_sent(feed(e, proposal(e, A))) == [(VoteType.PREVOTE, A)]
    assert e.step == Step.PREVOTE


def test_line_22_an_invalid_proposal_gets_a_nil_prevote() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    assert votes_sent(feed(e, proposal(e, BAD))) == [(VoteType.PREVOTE, None)]


class Stale(Values):
    """Every value is valid, and every value was stamped too long ago to be fresh."""

    def timely(self, height: int, value_id: bytes) -> bool:
        return False


def test_line_22_an_untimely_fresh_proposal_gets_a_nil_prevote_but_a_reproposal_does_not() -> None:
    e = engine(None)
    me = not_proposer(e, 1, 1)
    e = Engine([1, 1, 1, 1], me, Stale(), TimeoutConfig())
    e.start()
    assert votes_sent(feed(e, proposal(e, A))) == [(VoteType.PREVOTE, None)]
    # Round 1 re-proposes A, which had a prevote quorum in round 0: judged by `valid`
    # alone, or a slow round would make a locked value unacceptable for ever.
    feed(e, *(prevote(v, A) for v in others(e)))
    feed(e, *(precommit(v, None) for v in range(4)))
    e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    assert e.round == 1
    assert votes_sent(feed(e, proposal(e, A, round_=1, valid_round=0))) == [(VoteType.PREVOTE, A)]


def test_line_22_a_validator_locked_on_another_value_prevotes_nil() -> None:
    e = engine(None)
    e = engine(not_proposer(e, 1, 1))
    e.start()
    # Lock on A in round 0.
    feed(e, proposal(e, A), *(prevote(v, A) for v in range(4)))
    assert (e.locked_value or (b"",))[0] == A
    assert e.locked_round == 0
    feed(e, *(precommit(v, None) for v in range(4)))
    e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    assert e.round == 1
    # Round 1 proposes B as a fresh value: refused while locked on A.
    assert votes_sent(feed(e, proposal(e, B, round_=1))) == [(VoteType.PREVOTE, None)]


def test_line_28_a_proposal_with_an_earlier_prevote_quorum_overrides_an_older_lock() -> None:
    e = engine(None)
    me = not_proposer(e, 1, 2)
    e = engine(me)
    e.start()
    # Locked on A in round 0.
    feed(e, proposal(e, A), *(prevote(v, A) for v in range(4)))
    feed(e, *(precommit(v, None) for v in range(4)))
    e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    # Round 1: B gets a prevote quorum from the others, but we precommit nil on timeout.
    feed(e, *(prevote(v, B, round_=1) for v in others(e)))
    feed(e, *(precommit(v, None, round_=1) for v in range(4)))
    e.on_timeout(Timeout(Step.PRECOMMIT, 1, 1))
    assert e.round == 2
    # Round 2 re-proposes B with valid_round 1: its quorum in round 1 beats our lock at 0.
    assert votes_sent(feed(e, proposal(e, B, round_=2, valid_round=1))) == [(VoteType.PREVOTE, B)]


def test_line_28_without_the_earlier_quorum_the_proposal_waits() -> None:
    e = engine(None)
    e = engine(not_proposer(e, 1, 1))
    e.start()
    feed(e, *(precommit(v, None) for v in range(3)))
    e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    assert votes_sent(feed(e, proposal(e, B, round_=1, valid_round=0))) == []
    assert e.step == Step.PROPOSE


def test_line_34_any_prevote_quorum_schedules_the_prevote_timeout_once() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    feed(e, proposal(e, A))
    outputs = feed(e, prevote(0, A), prevote(1, None), prevote(2, B))
    assert timeouts(outputs).count((Step.PREVOTE, 0)) == 1
    assert timeouts(feed(e, prevote(3, None))) == []


def test_line_36_a_prevote_quorum_locks_and_precommits() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    feed(e, proposal(e, A))
    outputs = feed(e, *(prevote(v, A) for v in range(3)))
    assert (VoteType.PRECOMMIT, A) in votes_sent(outputs)
    assert (e.locked_round, e.valid_round, e.step) == (0, 0, Step.PRECOMMIT)


def test_line_36_after_precommitting_nil_only_the_valid_value_moves() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    feed(e, proposal(e, A))
    e.on_timeout(Timeout(Step.PREVOTE, 1, 0))  # line 61: precommit nil
    assert e.step == Step.PRECOMMIT
    outputs = feed(e, *(prevote(v, A) for v in range(3)))
    assert votes_sent(outputs) == []
    assert (e.locked_round, e.valid_round) == (-1, 0)


def test_line_44_a_nil_prevote_quorum_precommits_nil() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    e.on_timeout(Timeout(Step.PROPOSE, 1, 0))
    outputs = feed(e, *(prevote(v, None) for v in range(3)))
    assert (VoteType.PRECOMMIT, None) in votes_sent(outputs)


def test_line_47_any_precommit_quorum_schedules_the_precommit_timeout_once() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    outputs = feed(e, precommit(0, None), precommit(1, A), precommit(2, B))
    assert timeouts(outputs).count((Step.PRECOMMIT, 0)) == 1
    assert timeouts(feed(e, precommit(3, None))) == []


def test_line_49_a_precommit_quorum_decides() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    outputs = feed(e, proposal(e, A), *(precommit(v, A) for v in range(3)))
    decisions = [o for o in outputs if isinstance(o, Decide)]
    assert [(d.height, d.round, d.value_id) for d in decisions] == [(1, 0, A)]
    assert len(decisions[0].precommits) == 3


def test_line_49_a_decision_can_come_from_an_earlier_round() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    feed(e, proposal(e, A))
    feed(e, prevote(0, None, round_=1), prevote(1, None, round_=1))  # line 55 moves us on
    assert e.round == 1
    # Late precommits for A in round 0 arrive: messages of this height are kept.
    outputs = feed(e, precommit(0, A), precommit(1, A), precommit(2, A))
    assert [(d.round, d.value_id) for d in outputs if isinstance(d, Decide)] == [(0, A)]


def test_line_49_an_invalid_value_is_never_decided() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    outputs = feed(e, proposal(e, BAD), *(precommit(v, BAD) for v in range(4)))
    assert not any(isinstance(o, Decide) for o in outputs)


def test_line_55_more_than_a_third_in_a_later_round_skips_to_it() -> None:
    e = engine(None)
    e = engine(not_proposer(e, 1, 5))
    e.start()
    feed(e, prevote(0, None, round_=5))
    assert e.round == 0  # one of four is not more than 1/3
    feed(e, precommit(1, None, round_=5))
    assert e.round == 5


def test_line_57_the_propose_timeout_prevotes_nil() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    assert votes_sent(e.on_timeout(Timeout(Step.PROPOSE, 1, 0))) == [(VoteType.PREVOTE, None)]


def test_line_61_the_prevote_timeout_precommits_nil() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    e.on_timeout(Timeout(Step.PROPOSE, 1, 0))
    assert votes_sent(e.on_timeout(Timeout(Step.PREVOTE, 1, 0))) == [(VoteType.PRECOMMIT, None)]


def test_line_65_the_precommit_timeout_starts_the_next_round() -> None:
    e = engine(None)
    e = engine(not_proposer(e, 1, 1))
    e.start()
    outputs = e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    assert (e.round, e.step) == (1, Step.PROPOSE)
    assert timeouts(outputs) == [(Step.PROPOSE, 1)]


def test_stale_timeouts_change_nothing() -> None:
    e = engine(None)
    e = engine(not_proposer(e, 1, 1))
    e.start()
    e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    assert e.on_timeout(Timeout(Step.PROPOSE, 1, 0)) == []
    assert e.on_timeout(Timeout(Step.PRECOMMIT, 0, 1)) == []
    assert (e.round, e.step) == (1, Step.PROPOSE)


def test_timeouts_grow_with_the_round() -> None:
    config = TimeoutConfig(propose_ms=100, propose_delta_ms=50)
    assert [config.delay_ms(Step.PROPOSE, r) for r in range(3)] == [100, 150, 200]


def test_voting_power_is_weighted() -> None:
    # Powers 5, 1, 1, 1: validator 0 alone holds 5/8, not more than 2/3; with one more, 6/8.
    e = engine(None, powers=(5, 1, 1, 1))
    e = Engine([5, 1, 1, 1], 3 if e.proposer(1, 0) != 3 else 2, Values())
    e.start()
    feed(e, proposal(e, A))
    assert not any(isinstance(o, Decide) for o in feed(e, precommit(0, A)))
    assert any(isinstance(o, Decide) for o in feed(e, precommit(1, A)))


def test_proposers_rotate_deterministically_in_proportion_to_power() -> None:
    e = engine(None, powers=(3, 1))
    picks = [e.proposer(h, 0) for h in range(1, 41)]
    assert picks.count(0) == 30
    assert picks.count(1) == 10
    assert picks == [engine(None, powers=(3, 1)).proposer(h, 0) for h in range(1, 41)]


def test_a_double_vote_is_reported_counted_once_in_all_and_towards_each_value() -> None:
    """A quorum is a set of signed votes: an equivocator's vote for A still counts
    towards a quorum for A that exists, though it also voted for B."""
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    feed(e, proposal(e, A))
    feed(e, prevote(0, A))
    outputs = feed(e, prevote(0, B))
    assert [type(o) for o in outputs] == [Equivocation]
    assert e.rounds[0].prevotes.power_any == 1
    assert e.rounds[0].prevotes.power_for == {A: 1, B: 1}
    assert feed(e, prevote(0, B)) == []  # the same vote again: a duplicate


def test_a_proposal_from_anyone_but_the_proposer_is_ignored() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    impostor = Proposal(1, 0, A, b"a", -1, not_proposer(e))
    assert feed(e, impostor) == []
    assert e.rounds[0].proposal is None


def test_messages_for_the_next_heights_are_buffered_and_replayed() -> None:
    e = engine(None)
    e = engine(not_proposer(e))
    e.start()
    early = [precommit(v, B, height=2) for v in range(4)]
    assert feed(e, *early, proposal(e, B, height=2)) == []
    outputs = feed(e, proposal(e, A), *(precommit(v, A) for v in range(3)))
    assert any(isinstance(o, Decide) for o in outputs)
    outputs = e.advance()
    assert [(d.height, d.value_id) for d in outputs if isinstance(d, Decide)] == [(2, B)]


@pytest.mark.parametrize("far", ["height", "round"])
def test_messages_too_far_ahead_are_dropped(far: str) -> None:
    e = engine(None)
    e.start()
    if far == "height":
        feed(e, prevote(0, A, height=2 + HEIGHTS_AHEAD_MAX))
        assert e._buffer == []
    else:
        feed(e, prevote(0, A, round_=ROUNDS_AHEAD_MAX + 1))
        assert ROUNDS_AHEAD_MAX + 1 not in e.rounds


class BytesBound(Values):
    """Validity judged on the bytes, as the node's driver does: only `id + b"-bytes"`
    is the value a proposal's id names."""

    def valid(self, height: int, value_id: bytes, value: bytes) -> bool:
        return value == value_id + b"-bytes"


def bytes_bound(me: int) -> Engine:
    return Engine([1, 1, 1, 1], me, BytesBound(), TimeoutConfig())


def test_other_bytes_under_a_validated_id_are_judged_on_their_own() -> None:
    """A proposal's signature covers only its id: a re-proposal of a value validated in
    an earlier round, carrying other bytes, gets a nil prevote (issue 15, cases 3, 9a)."""
    me = not_proposer(engine(None), 1, 1)
    e = bytes_bound(me)
    e.start()
    feed(e, proposal(e, A), *(prevote(v, A) for v in others(e)))  # valid; quorum for A
    feed(e, *(precommit(v, None) for v in range(4)))
    e.on_timeout(Timeout(Step.PRECOMMIT, 1, 0))
    assert e.round == 1
    tampered = Proposal(1, 1, A, b"other bytes", 0, e.proposer(1, 1))
    assert votes_sent(feed(e, tampered)) == [(VoteType.PREVOTE, None)]


def test_a_tampered_copy_arriving_first_does_not_make_the_value_undecidable() -> None:
    e = bytes_bound(not_proposer(engine(None)))
    e.start()
    tampered = Proposal(1, 0, A, b"other bytes", -1, e.proposer(1, 0))
    assert votes_sent(feed(e, tampered)) == [(VoteType.PREVOTE, None)]
    outputs = feed(e, proposal(e, A), *(precommit(v, A) for v in others(e)))
    decisions = [o for o in outputs if isinstance(o, Decide)]
    assert [(d.value_id, d.value) for d in decisions] == [(A, A + b"-bytes")]


def test_the_genuine_value_held_first_is_not_replaced_by_other_bytes() -> None:
    e = bytes_bound(not_proposer(engine(None)))
    e.start()
    feed(e, proposal(e, A))
    feed(e, Proposal(1, 0, A, b"other bytes", -1, e.proposer(1, 0)))
    outputs = feed(e, *(precommit(v, A) for v in others(e)))
    assert [o.value for o in outputs if isinstance(o, Decide)] == [A + b"-bytes"]


def test_other_bytes_under_one_id_are_validated_a_bounded_number_of_times() -> None:
    """Anyone who saw a signed proposal can attach other bytes to it; each copy must not
    cost a validation and a cache entry."""

    class Counting(BytesBound):
        calls = 0

        def valid(self, height: int, value_id: bytes, value: bytes) -> bool:
            Counting.calls += 1
            return super().valid(height, value_id, value)

    e = Engine([1, 1, 1, 1], not_proposer(engine(None)), Counting(), TimeoutConfig())
    e.start()
    proposer = e.proposer(1, 0)
    for n in range(100):
        feed(e, Proposal(1, 0, A, b"junk %d" % n, -1, proposer))
    assert Counting.calls <= 4


def test_future_proposals_are_buffered_only_from_their_proposer_and_within_a_budget() -> None:
    """Issue 15, case 5: 200 proposals of 1 MiB for the next height from a validator
    that is not its proposer raised a node's memory by 200 MiB."""
    e = engine(None)
    e.start()
    block = b"x" * (1024 * 1024)
    proposer = e.proposer(2, 0)
    intruder = next(v for v in range(4) if v != proposer)
    for round_ in range(ROUNDS_AHEAD_MAX + 1):
        if e.proposer(2, round_) != intruder:  # not its slot
            feed(e, Proposal(2, round_, b"id-%d" % round_, block, -1, intruder))
    assert e._buffer == []
    for n in range(200):  # the proposer itself, over and over
        feed(e, Proposal(2, 0, b"id-%d" % n, block, -1, proposer))
    buffered = sum(len(m.value) for m in e._buffer if isinstance(m, Proposal))
    assert buffered <= BUFFERED_BYTES_PER_VALIDATOR


def test_one_validator_cannot_fill_the_future_buffer_with_votes() -> None:
    e = engine(None)
    e.start()
    for round_ in range(ROUNDS_AHEAD_MAX + 1):
        for height in range(2, 2 + HEIGHTS_AHEAD_MAX):
            feed(e, prevote(0, A, round_=round_, height=height), precommit(0, A, round_, height))
    mine = [m for m in e._buffer if isinstance(m, Vote) and m.validator == 0]
    assert 0 < len(mine) <= BUFFERED_MESSAGES_MAX // 4
    # Another validator's votes for the next height still find room.
    feed(e, prevote(1, A, height=2))
    assert any(isinstance(m, Vote) and m.validator == 1 for m in e._buffer)


def test_a_quorum_for_an_equivocating_proposers_second_value_decides_it() -> None:
    """Issue 15, case 9b: line 49 decides any proposal of the round with a precommit
    quorum; keeping only the first proposal left the second undecidable."""
    e = engine(not_proposer(engine(None)))
    e.start()
    proposer = e.proposer(1, 0)
    first, second = proposal(e, A), Proposal(1, 0, B, B + b"-bytes", -1, proposer)
    outputs = feed(e, first, second)
    assert [type(o) for o in outputs if isinstance(o, Equivocation)] == [Equivocation]
    outputs = feed(e, *(precommit(v, B) for v in others(e)))
    assert [(d.value_id, d.value) for d in outputs if isinstance(d, Decide)] == [(B, B + b"-bytes")]


def test_an_equivocating_proposer_is_held_to_a_few_values_per_round() -> None:
    e = engine(not_proposer(engine(None)))
    e.start()
    proposer = e.proposer(1, 0)
    for n in range(50):
        feed(e, Proposal(1, 0, b"v%d" % n, b"v%d-bytes" % n, -1, proposer))
    assert len(e.rounds[0].proposals) == PROPOSALS_PER_ROUND_MAX


def test_an_equivocator_cannot_grow_a_tally_with_votes_for_values_nobody_proposed() -> None:
    """Each of its votes for another value used to be kept (found by the review: 200,000
    signed junk prevotes, 58 MiB). Beyond its first vote it keeps, per round and type,
    votes for nil and for values proposed at this height, and one more as proof."""
    e = engine(not_proposer(engine(None)))
    e.start()
    feed(e, proposal(e, A))
    outputs = feed(e, *(prevote(0, b"junk-%d" % n) for n in range(2_000)))
    assert len(e.rounds[0].prevotes.votes) == 2  # the first, and one as proof
    assert sum(isinstance(o, Equivocation) for o in outputs) == 1
    feed(e, prevote(0, A), prevote(0, None))  # a proposed value and nil still count
    assert e.rounds[0].prevotes.power_for[A] == 1
    assert e.rounds[0].prevotes.power_for[None] == 1
