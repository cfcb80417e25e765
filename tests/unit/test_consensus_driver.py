"""The consensus driver's proposal validation, on a real LedgerNode over real LMDB: what a
Byzantine proposer can put in a block's bytes gets a verdict, never an error that would
end the consensus task (issue 15, case 2)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medledger.block import assemble_block, block_hash
from medledger.config import Home
from medledger.consensus import Proposal, SendVote, Step, Timeout, Vote, VoteType
from medledger.consensus.guard import FileGuardStore, SigningGuard
from medledger.consensus.messages import sign_bytes
from medledger.crypto import SigningKey
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.consensus_driver import ConsensusDriver, Inputs, to_wire
from medledger.node.ledger_node import LedgerNode
from medledger.node.replica import (
    BLOCK_TIME_AHEAD_MAX_MS,
    CATCH_UP_EVIDENCE_MS,
    CATCH_UP_RETRY_MS,
    FOLLOW_STALL_MS,
    PROPOSAL_FETCHES_MAX,
    Effect,
    FetchBlocks,
    FetchProposal,
    Fired,
    ToEngine,
)
from medledger.run.homes import init_network, join_network, network_homes
from medledger.tx import sign_transaction
from medledger.wire.v1 import envelope_pb2, state_pb2, tx_pb2

CHAIN_ID = "driver-unit"
FUNDS = 10**12


def now() -> int:
    """Wall-clock time: a block must not run ahead of the validators' clocks."""
    return int(time.time() * 1000)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    init_network(tmp_path, CHAIN_ID, 4, 30_000, FUNDS)
    return network_homes(tmp_path, 4)[0]


@pytest.fixture
def driver(home: Home) -> Iterator[ConsensusDriver]:
    config = home.load_config()
    node = LedgerNode(home, config, Genesis.load(home.genesis), load_key(home.validator_key))
    driver = ConsensusDriver(node, config, SigningGuard(FileGuardStore(home.signer_state)))
    driver.replica.now_ms = int(time.time() * 1000)  # what `start` would set
    yield driver
    node.store.close()


@pytest.fixture
def key(home: Home) -> SigningKey:
    """A client key of the genesis (any signer will do: validity is about shape)."""
    return load_key(home.keys_dir / "client.json")


def transfer_body(tx_id: bytes, *, chain_id: str = CHAIN_ID) -> bytes:
    body = tx_pb2.TransactionBody(
        chain_id=chain_id,
        tx_id=tx_id,
        expiry_height=50,
        transfer=tx_pb2.Transfer(to=b"\x01" * 32, amount_micros=5),
    )
    return body.SerializeToString(deterministic=True)


def proposal(
    driver: ConsensusDriver,
    txs: list[envelope_pb2.SignedTransaction],
    *,
    time_ms: int | None = None,
) -> tuple[bytes, bytes]:
    """A block for the next height as validator 1 would propose it: (value id, bytes)."""
    head = driver.node.head
    head_time = driver.node.head_time_ms
    block = assemble_block(
        chain_id=CHAIN_ID,
        height=head.height + 1,
        parent_hash=head.block_hash,
        txs=txs,
        proposer=driver.public_keys[1],
        validators=driver.node.validators,
        next_validators=driver.node.validators,
        app_hash=head.app_hash,
        time_unix_ms=time_ms if time_ms is not None else max(now(), head_time + 1),
    )
    return block_hash(block.header.SerializeToString()), block.SerializeToString()


def test_a_well_formed_block_is_valid(driver: ConsensusDriver, key: SigningKey) -> None:
    value_id, value = proposal(
        driver, [sign_transaction(key, CHAIN_ID, transfer_body(b"\x07" * 16))]
    )
    assert driver.replica.valid(1, value_id, value)


def test_a_fresh_proposal_stamped_long_ago_is_valid_but_untimely(
    driver: ConsensusDriver, key: SigningKey
) -> None:
    """A Byzantine proposer stamps its block just after the parent's time, an hour later,
    where roles that have since expired would still count: validators prevote nil for it
    as a fresh value (a value re-proposed from an earlier round is judged by `valid`)."""
    txs = [sign_transaction(key, CHAIN_ID, transfer_body(b"\x07" * 16))]
    driver.replica.now_ms = driver.node.head_time_ms + 3_600_000
    stale_id, stale = proposal(driver, txs, time_ms=driver.node.head_time_ms + 1)
    assert driver.replica.valid(1, stale_id, stale)
    assert not driver.replica.timely(1, stale_id)
    fresh_id, fresh = proposal(driver, txs, time_ms=driver.replica.now_ms - 1_000)
    assert driver.replica.valid(1, fresh_id, fresh)
    assert driver.replica.timely(1, fresh_id)


def test_a_block_time_must_pass_the_parents_and_not_run_ahead_of_this_clock(
    driver: ConsensusDriver, key: SigningKey
) -> None:
    """Credentials expire and break-glass windows end against block time: a Byzantine
    proposer may not wind it back to revive an expired role, nor forward to end them."""
    txs = [sign_transaction(key, CHAIN_ID, transfer_body(b"\x07" * 16))]
    parent = driver.node.head_time_ms
    now = driver.replica.now_ms
    for time_ms, valid in (
        (parent, False),
        (parent - 60_000, False),
        (now + BLOCK_TIME_AHEAD_MAX_MS + 1, False),
        (now + BLOCK_TIME_AHEAD_MAX_MS, True),
        (parent + 1, True),
    ):
        value_id, value = proposal(driver, txs, time_ms=time_ms)
        assert driver.replica.valid(1, value_id, value) is valid, time_ms


MALFORMED = {
    "empty tx_id": transfer_body(b""),
    "600-byte tx_id, over LMDB's key limit": transfer_body(b"\x07" * 600),
    "15-byte tx_id": transfer_body(b"\x07" * 15),
    "another chain's body": transfer_body(b"\x07" * 16, chain_id="other-chain"),
    "a body that does not decode": b"\xff\xff\xff",
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_correctly_signed_but_malformed_transaction_makes_the_proposal_invalid(
    driver: ConsensusDriver, key: SigningKey, what: str
) -> None:
    body = MALFORMED[what]
    good = sign_transaction(key, CHAIN_ID, transfer_body(b"\x08" * 16))
    value_id, value = proposal(driver, [good, sign_transaction(key, CHAIN_ID, body)])
    assert driver.replica.valid(1, value_id, value) is False, what
    # The driver is still whole: the next, well-formed proposal is judged valid.
    value_id, value = proposal(driver, [good])
    assert driver.replica.valid(1, value_id, value)


def test_other_bytes_under_the_id_of_a_validated_block_are_invalid(
    driver: ConsensusDriver, key: SigningKey
) -> None:
    first = sign_transaction(key, CHAIN_ID, transfer_body(b"\x09" * 16))
    value_id, value = proposal(driver, [first])
    assert driver.replica.valid(1, value_id, value)
    block = envelope_pb2.Block.FromString(value)
    block.txs[0].CopyFrom(sign_transaction(key, CHAIN_ID, transfer_body(b"\x0a" * 16)))
    assert driver.replica.valid(1, value_id, block.SerializeToString()) is False


def test_garbage_bytes_are_invalid(driver: ConsensusDriver) -> None:
    assert driver.replica.valid(1, b"\x00" * 32, b"\x0a\xff\xff\xff\xff") is False


def test_a_signed_proposal_reaches_the_engine_only_with_the_bytes_its_id_names(
    home: Home, driver: ConsensusDriver, key: SigningKey
) -> None:
    """The proposal signature covers the id, not the bytes: anyone who saw a signed
    proposal could send it again with other bytes (issue 15, case 3)."""
    proposer_key = load_key(network_homes(home.root.parent, 4)[1].validator_key)
    value_id, value = proposal(
        driver, [sign_transaction(key, CHAIN_ID, transfer_body(b"\x0b" * 16))]
    )
    unsigned = Proposal(1, 0, value_id, value, -1, 1)
    signed = dataclasses.replace(
        unsigned, signature=proposer_key.sign(sign_bytes(CHAIN_ID, unsigned))
    )
    block = envelope_pb2.Block.FromString(value)
    block.txs[0].CopyFrom(sign_transaction(key, CHAIN_ID, transfer_body(b"\x0c" * 16)))
    padded = value + b"\xfa\x3e\x04junk"  # an unknown field: the same parts, the same hashes
    for other in (block.SerializeToString(), padded, b"\x0a\xff\xff", b""):
        driver.receive(to_wire(dataclasses.replace(signed, value=other)))
    assert driver.inputs.empty()
    assert driver.unbound_proposals == 4  # the empty one rebuilds, compact, to no block
    driver.receive(to_wire(signed))
    assert driver.inputs.qsize() == 1


def test_a_restarted_validator_keeps_its_lock_and_prevotes_nil_for_a_conflicting_value(
    home: Home, key: SigningKey
) -> None:
    """Issue 15, case 1, through the node's real restart path: the lock state is written
    with the signing guard's record (a real file, fsynced) before the precommit is
    signed; a new LedgerNode and driver over the same home resume locked, so a fresh
    conflicting proposal in a later round gets a nil prevote instead of a fork."""
    validator_keys = [load_key(h.validator_key) for h in network_homes(home.root.parent, 4)]
    config = home.load_config()

    def boot() -> ConsensusDriver:
        node = LedgerNode(home, config, Genesis.load(home.genesis), validator_keys[0])
        return ConsensusDriver(node, config, SigningGuard(FileGuardStore(home.signer_state)))

    def signed_prevote(validator: int, value_id: bytes) -> Vote:
        vote = Vote(VoteType.PREVOTE, 1, 0, value_id, validator)
        signature = validator_keys[validator].sign(sign_bytes(CHAIN_ID, vote))
        return dataclasses.replace(vote, signature=signature)

    async def before_the_crash() -> bytes:
        driver = boot()
        engine = driver.engine
        proposer = engine.proposer(1, 0)
        assert proposer != 0
        x_id, x = proposal(driver, [sign_transaction(key, CHAIN_ID, transfer_body(b"\x0d" * 16))])
        await driver._execute(driver.replica.step(Proposal(1, 0, x_id, x, -1, proposer), now()))
        for validator in [*[v for v in range(1, 4) if v != proposer][:1], proposer]:
            await driver._execute(driver.replica.step(signed_prevote(validator, x_id), now()))
        assert (engine.locked_round, engine.locked_value and engine.locked_value[0]) == (0, x_id)
        assert driver.guard.last is not None
        assert driver.guard.last.step == 2
        driver.node.store.close()  # the process dies here: only the files remain
        return x_id

    async def after_the_restart(x_id: bytes) -> list[tuple[VoteType, bytes | None]]:
        driver = boot()
        engine = driver.engine
        assert (engine.locked_round, engine.locked_value and engine.locked_value[0]) == (0, x_id)
        assert {v.validator for v in engine.evidence()} >= {0}  # the quorum it locked on
        assert len(engine.evidence()) == 3
        # Its last vote, the precommit for X, is signed again (to the same bytes: the
        # guard allows only that) and sent again, for peers that missed it.
        assert driver.replica._resume == Vote(VoteType.PRECOMMIT, 1, 0, x_id, 0)
        await driver._execute(driver.replica.start(now()))
        assert [
            (m.vote.type, m.vote.block_hash) for m in driver.replica.sent if m.HasField("vote")
        ] == [(envelope_pb2.VOTE_TYPE_PRECOMMIT, x_id)]
        await driver._execute(driver.replica.step(Fired(Timeout(Step.PRECOMMIT, 1, 0)), now()))
        assert engine.round == 1
        y_id, y = proposal(driver, [sign_transaction(key, CHAIN_ID, transfer_body(b"\x0e" * 16))])
        outputs = engine.on_proposal(Proposal(1, 1, y_id, y, -1, engine.proposer(1, 1)))
        driver.node.store.close()
        return [(o.vote.type, o.vote.value_id) for o in outputs if isinstance(o, SendVote)]

    x_id = asyncio.run(before_the_crash())
    assert asyncio.run(after_the_restart(x_id)) == [(VoteType.PREVOTE, None)]


def signed_compact(proposer_key: SigningKey, proposer: int, height: int, round_: int) -> Proposal:
    """A validator's signed compact proposal naming a transaction nobody has."""
    unsigned = Proposal(height, round_, bytes([height, round_]) * 16, b"", -1, proposer)
    return dataclasses.replace(
        unsigned, signature=proposer_key.sign(sign_bytes(CHAIN_ID, unsigned))
    )


def test_a_validator_cannot_make_this_node_fetch_block_after_block(
    home: Home, driver: ConsensusDriver
) -> None:
    """A compact proposal naming unknown transactions makes this node fetch the whole
    block from its proposer: only for the current height, from that slot's proposer, and
    a few at a time (found by the review: 1,000 signed compact proposals made 1,000
    fetches)."""
    keys = [load_key(h.validator_key) for h in network_homes(home.root.parent, 4)]
    replica = driver.replica
    height = replica.engine.height

    def fetches(proposal: Proposal) -> int:
        wire = to_wire(proposal, (b"\x08\x01", [b"\x99" * 32]))
        return sum(isinstance(e, FetchProposal) for e in replica.receive(wire, 0))

    slot = [(r, replica.engine.proposer(height, r)) for r in range(12)]
    others = [(r, p) for r, p in slot if p != 0]
    wrong = [(r, (p + 1) % 4 or 1) for r, p in others]
    assert sum(fetches(signed_compact(keys[p], p, height, r)) for r, p in wrong if p != 0) == 0
    assert fetches(signed_compact(keys[others[0][1]], others[0][1], height + 2, 0)) == 0
    made = sum(fetches(signed_compact(keys[p], p, height, r)) for r, p in others)
    assert made == PROPOSAL_FETCHES_MAX


@pytest.mark.parametrize("field", ["valid_round", "vote block_hash", "proposal block_hash"])
def test_decodable_but_out_of_range_fields_are_dropped_before_anything_reads_them(
    driver: ConsensusDriver, field: str
) -> None:
    """Found by the review: a valid_round below -1 or a block hash of another length made
    the signature check raise on an unsigned message."""
    if field == "valid_round":
        wire = to_wire(Proposal(1, 0, b"\x01" * 32, b"x", -5, 1, b"\x00" * 64))
    elif field == "vote block_hash":
        wire = to_wire(Vote(VoteType.PREVOTE, 1, 0, b"\x01" * 7, 1, b"\x00" * 64))
    else:
        wire = to_wire(Proposal(1, 0, b"\x01" * 7, b"x", -1, 1, b"\x00" * 64))
    assert driver.replica.receive(wire, 0) == []


def test_own_inputs_are_never_dropped_when_peers_fill_the_queue() -> None:
    """Found by the review: a full queue dropped a fetch's result, and catch-up waited
    for it forever. Peer messages are bounded; timeouts and fetch results are not."""

    async def scenario() -> list[object]:
        inputs = Inputs(peer_messages_max=2)
        votes = [Vote(VoteType.PREVOTE, 1, 0, None, v) for v in (1, 2, 3)]
        assert inputs.offer_peer(votes[0])
        assert inputs.offer_peer(votes[1])
        assert not inputs.offer_peer(votes[2])
        inputs.offer_own(Fired(Timeout(Step.PROPOSE, 1, 0)))
        return [await inputs.get() for _ in range(3)]

    got = asyncio.run(scenario())
    assert got == [
        Fired(Timeout(Step.PROPOSE, 1, 0)),
        Vote(VoteType.PREVOTE, 1, 0, None, 1),
        Vote(VoteType.PREVOTE, 1, 0, None, 2),
    ]


def signed_vote(key: SigningKey, validator: int, height: int) -> Vote:
    vote = Vote(VoteType.PREVOTE, height, 0, None, validator)
    return dataclasses.replace(vote, signature=key.sign(sign_bytes(CHAIN_ID, vote)))


def test_catch_up_starts_on_signed_evidence_one_fetch_at_a_time_and_moves_on(
    home: Home, driver: ConsensusDriver
) -> None:
    """The replica's catch-up policy, with time passed in: a validator's signed message
    for a later height starts one fetch; more evidence meanwhile starts none; a fetch
    that brought nothing moves on to another peer seen ahead, at once; the first peer is
    asked again only after CATCH_UP_RETRY_MS. An unsigned claim starts nothing."""
    keys = [load_key(h.validator_key) for h in network_homes(home.root.parent, 4)]
    replica = driver.replica
    ahead = replica.engine.height + 5

    def fetches(effects: list[Effect]) -> list[FetchBlocks]:
        return [e for e in effects if isinstance(e, FetchBlocks)]

    unsigned = to_wire(Vote(VoteType.PREVOTE, ahead, 0, None, 1))
    assert fetches(replica.receive(unsigned, 1_000)) == []
    first = fetches(replica.receive(to_wire(signed_vote(keys[1], 1, ahead)), 1_000))
    assert first == [FetchBlocks(keys[1].public_key, replica.engine.height)]
    assert fetches(replica.receive(to_wire(signed_vote(keys[2], 2, ahead)), 1_001)) == []
    # Peer 1 had nothing: peer 2, seen ahead too, is asked at once; not peer 1 again.
    assert fetches(replica.blocks_fetched(0, 1_002, now())) == [
        FetchBlocks(keys[2].public_key, replica.engine.height)
    ]
    assert fetches(replica.blocks_fetched(0, 1_003, now())) == []
    replica.receive(to_wire(signed_vote(keys[1], 1, ahead)), 1_000 + CATCH_UP_RETRY_MS)
    assert replica._fetching_blocks  # peer 1 asked again, once its pause was over


def test_one_byzantine_validator_signing_far_ahead_cannot_make_this_node_behind(
    home: Home, driver: ConsensusDriver
) -> None:
    """Readiness counts a height as reached only when validators with more than a third
    of the power signed at or past it (so one honest one did). Of four equal validators,
    one signing 1,000 heights ahead moves nothing; a second signing 5 ahead makes the
    node 4 behind (their lower height is the one vouched for); evidence expires."""
    keys = [load_key(h.validator_key) for h in network_homes(home.root.parent, 4)]
    replica = driver.replica
    head = replica.ledger.head.height
    replica.receive(to_wire(signed_vote(keys[1], 1, head + 1_000)), 1_000)
    assert replica.blocks_behind(1_000) == 0
    replica.receive(to_wire(signed_vote(keys[2], 2, head + 5)), 1_000)
    assert replica.blocks_behind(1_000) == 4
    assert replica.blocks_behind(1_000 + CATCH_UP_EVIDENCE_MS) == 0


def test_votes_are_judged_by_the_validator_set_of_their_height(
    home: Home, driver: ConsensusDriver
) -> None:
    """A change committed at H takes effect at H+2: a validator removed there is no
    longer heard from H+2 on (its old index now names another key), while its votes for
    H+1 still count; the newcomer's votes count from H+2, under its new index."""
    keys = [load_key(h.validator_key) for h in network_homes(home.root.parent, 4)]
    newcomer = SigningKey.from_seed(b"n" * 32)
    replica = driver.replica
    now_height = replica.engine.height  # head + 1
    changed = now_height + 1  # head + 2: what a change committed at the head names
    driver.node.schedule.add(
        state_pb2.ValidatorSetRecord(
            effective_height=changed,
            validators=[
                *(state_pb2.ValidatorEntry(public_key=k.public_key, power=10) for k in keys[:3]),
                state_pb2.ValidatorEntry(
                    public_key=newcomer.public_key, power=10, address="127.0.0.1:1"
                ),
            ],
        )
    )

    def to_engine(vote: Vote) -> bool:
        effects = replica.receive(to_wire(vote), 1_000)
        return any(isinstance(e, ToEngine) for e in effects)

    assert to_engine(signed_vote(keys[3], 3, now_height))  # still a validator at H+1
    assert not to_engine(signed_vote(keys[3], 3, changed))  # index 3 is the newcomer's
    assert to_engine(signed_vote(newcomer, 3, changed))
    assert not to_engine(signed_vote(newcomer, 3, now_height))  # not yet a validator
    # Past what any commit decided, a message is evidence for catch-up, not a vote.
    later = replica.receive(to_wire(signed_vote(newcomer, 3, changed + 1)), 5_000)
    assert not any(isinstance(e, ToEngine) for e in later)
    # The driver links to the validators of both known heights (not itself), by key.
    assert set(driver._wanted_peers()) == {k.public_key for k in keys[1:]} | {newcomer.public_key}
    assert driver._wanted_peers()[newcomer.public_key] == "127.0.0.1:1"
    # A validator of the next heights hears signed evidence: it polls only once stalled.
    replica.blocks_fetched(0, 5_001, now())  # the evidence's fetches brought nothing
    replica.blocks_fetched(0, 5_002, now())
    peers = driver._follow_peers()
    assert peers[:3] == [k.public_key for k in keys[1:]]  # the next height's set first
    assert replica.follow(10_000, peers) == []
    assert replica.follow(10_000 + FOLLOW_STALL_MS - 1, peers) == []
    assert replica.follow(10_000 + FOLLOW_STALL_MS, peers) == [FetchBlocks(peers[0], now_height)]


def test_a_validator_leaving_the_set_polls_for_blocks(home: Home, driver: ConsensusDriver) -> None:
    """Removed at head + 2, a validator is no longer sent the others' messages from then
    on: if it lags behind it can only learn the chain by asking."""
    keys = [load_key(h.validator_key) for h in network_homes(home.root.parent, 4)]
    newcomer = SigningKey.from_seed(b"n" * 32)
    replica = driver.replica
    driver.node.schedule.add(
        state_pb2.ValidatorSetRecord(
            effective_height=replica.engine.height + 1,
            validators=[
                *(state_pb2.ValidatorEntry(public_key=k.public_key, power=10) for k in keys[1:]),
                state_pb2.ValidatorEntry(
                    public_key=newcomer.public_key, power=10, address="127.0.0.1:1"
                ),
            ],
        )
    )
    assert replica.voting  # at head + 1 still
    fetches = replica.follow(10_000, driver._follow_peers())
    assert fetches == [FetchBlocks(keys[1].public_key, replica.engine.height)]


def test_a_node_in_no_validator_set_follows_by_asking_validators_in_turn(
    tmp_path: Path,
) -> None:
    """A joining node signs nothing and hears no consensus messages: it polls the
    validators for blocks, one fetch at a time, each at most every CATCH_UP_RETRY_MS."""
    init_network(tmp_path / "net", CHAIN_ID, 4, 30_000, FUNDS)
    genesis_home = network_homes(tmp_path / "net", 4)[0]
    genesis = Genesis.load(genesis_home.genesis)
    joiner = Home(tmp_path / "joiner")
    peers = [f"127.0.0.1:{30_000 + i}" for i in range(4)]
    key = join_network(
        joiner, genesis, peers, listen="x:1", peer_listen="x:2", organisation_ca=None
    )
    config = joiner.load_config()
    node = LedgerNode(joiner, config, genesis, key)
    try:
        driver = ConsensusDriver(node, config, SigningGuard(FileGuardStore(joiner.signer_state)))
        replica = driver.replica
        assert not replica.voting
        assert replica.engine.me is None
        asked = []
        for step in range(8):
            for effect in replica.follow(10_000 + step * 100, driver._follow_peers()):
                assert isinstance(effect, FetchBlocks)
                asked.append(effect.peer)
                replica.blocks_fetched(0, 10_000 + step * 100, now())
        validators = {v.public_key for v in genesis.validators}
        assert len(asked) == 4  # each once: then each waits out its retry pause
        assert set(asked) == validators
        assert replica.follow(10_000 + CATCH_UP_RETRY_MS + 800, driver._follow_peers()) != []
    finally:
        node.store.close()


def test_a_validators_message_counts_only_over_its_own_organisations_connection(
    home: Home, driver: ConsensusDriver
) -> None:
    """Over mutual TLS each Push stream belongs to the member organisation whose CA
    signed the caller's certificate: organisation 2 replaying validator 1's signed
    precommit is dropped and counted, however valid the signature."""
    keys = [load_key(h.validator_key) for h in network_homes(home.root.parent, 4)]
    replica = driver.replica
    height = replica.engine.height
    precommit = Vote(VoteType.PRECOMMIT, height, 0, None, 1)
    signed = dataclasses.replace(precommit, signature=keys[1].sign(sign_bytes(CHAIN_ID, precommit)))
    vote = to_wire(signed)
    assert replica.receive(vote, 1_000, via="org-2") == []
    assert replica.foreign_messages == 1
    assert any(isinstance(e, ToEngine) for e in replica.receive(vote, 1_000, via="org-1"))
    assert any(isinstance(e, ToEngine) for e in replica.receive(vote, 1_000))  # clear text
    # A prevote is relayed by whoever holds it as evidence (Algorithm 1's gossip).
    relayed = to_wire(signed_vote(keys[1], 1, height))
    assert any(isinstance(e, ToEngine) for e in replica.receive(relayed, 1_000, via="org-2"))
    assert replica.foreign_messages == 1
