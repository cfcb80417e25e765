"""Deterministic simulation of the node's real consensus replica.

N validators, each the real `medledger.node.replica.Replica` (engine, signing guard with
its lock record, wire codecs, compact-block rebuild, proposal validation, catch-up
policy) over a simulated ledger (the real Rust validator and the real application on
memory state), exchanging serialized `PeerMessage` bytes over a simulated network whose
delays, drops, duplicates, partitions, crashes, Byzantine validators and outsiders all
come from one seed.

Only the shell is simulated, as the node's asyncio shell is thin: `SimProcess` turns the
replica's effects into events (broadcasts, timers, block and proposal fetches, commits).
Time is simulated (milliseconds on an event queue); nothing reads a clock or touches a
socket, so a seed replays exactly.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from google.protobuf.message import DecodeError as ProtobufDecodeError

from medledger import merkle
from medledger._core import admit_batch
from medledger.app import Application
from medledger.app.state import MemoryState, genesis_writes
from medledger.block import ValidatorSet, block_hash, encode_block, validate_block
from medledger.chain import Head
from medledger.client import TxBuilder
from medledger.consensus import Proposal, Timeout, TimeoutConfig, Vote, VoteType
from medledger.consensus.guard import MemoryGuardStore, SigningGuard
from medledger.consensus.messages import sign_bytes, with_signature
from medledger.crypto import SigningKey
from medledger.errors import MedledgerError
from medledger.genesis import Allocation, Genesis, GenesisValidator
from medledger.node.ledger_node import TxEntry, block_entries
from medledger.node.mempool import PendingTx
from medledger.node.replica import (
    Broadcast,
    Commit,
    Effect,
    FetchBlocks,
    FetchProposal,
    Fired,
    NextHeight,
    Replica,
    Reported,
    Schedule,
    ToEngine,
    from_wire,
    to_wire,
)
from medledger.tx import sign_transaction
from medledger.wire.v1 import envelope_pb2, peer_pb2, tx_pb2

CHAIN_ID = "sim-1"
RESEND_MS = 250
NEXT_HEIGHT_PAUSE_MS = 10
FETCH_TIMEOUT_MS = 5_000  # as the node's CATCH_UP_IDLE_S and FETCH_PROPOSAL_TIMEOUT_S
FAULTS_END_MS = 4_000
LIVENESS_BOUND_MS = 60_000
TXS_PER_BLOCK = 2
TIMEOUTS = TimeoutConfig(
    propose_ms=300,
    propose_delta_ms=150,
    prevote_ms=200,
    prevote_delta_ms=100,
    precommit_ms=200,
    precommit_delta_ms=100,
)
Byzantine = Literal[
    "none",
    "equivocating_proposer",
    "double_voter",
    "shared_key",
    "lock_violator",
    "malformed_proposer",
]


@dataclass(frozen=True)
class Scenario:
    seed: int
    validators: int
    target_height: int
    delay_max_ms: int
    drop: float
    duplicate: float
    partition: tuple[int, int, frozenset[int]] | None  # start, end, one side
    crash: tuple[int, int, int] | None  # node, at, restart at
    crash_after_precommit: bool  # the crashing node dies right after its first precommit
    byzantine: Byzantine
    tamper: float  # chance that a proposal is also delivered with other bytes
    outsider: bool  # a stranger injects junk, unsigned and wrongly signed messages

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        validators = 4
        byzantine: Byzantine = rng.choice(
            [
                "none",
                "none",
                "equivocating_proposer",
                "double_voter",
                "shared_key",
                "lock_violator",
                "malformed_proposer",
            ]
        )
        partition = None
        if rng.random() < 0.4:
            start = rng.randrange(0, 2_000)
            side = frozenset(rng.sample(range(validators), rng.randint(1, 2)))
            partition = (start, start + rng.randrange(200, 2_000), side)
        crash = None
        crash_after_precommit = False
        # A lock-violating proposer is most dangerous beside a validator that restarts
        # after it locked (issue 15, case 1): that pairing is the common one.
        if rng.random() < (0.8 if byzantine == "lock_violator" else 0.4):
            # Never crash the Byzantine validator: then faults would exceed f.
            node = rng.randrange(1 if byzantine != "none" else 0, validators)
            at = rng.randrange(0, 2_500)
            crash = (node, at, at + rng.randrange(100, 1_500))
            crash_after_precommit = byzantine == "lock_violator" or rng.random() < 0.5
        return cls(
            seed=seed,
            validators=validators,
            target_height=3,
            delay_max_ms=rng.choice([5, 30, 80]),
            drop=rng.choice([0.0, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.1]),
            partition=partition,
            crash=crash,
            crash_after_precommit=crash_after_precommit,
            byzantine=byzantine,
            tamper=rng.choice([0.0, 0.0, 0.3]),
            outsider=rng.random() < 0.3,
        )


@dataclass(frozen=True)
class Committed:
    height: int
    block_hash: bytes
    app_hash: bytes  # after applying the block
    block: bytes
    commit: bytes
    time_ms: int  # the block's time


@dataclass
class Disk:
    """What survives a crash: the chain, the state and the signing guard's record."""

    chain: list[Committed] = field(default_factory=list)
    state: MemoryState | None = None
    guard: MemoryGuardStore = field(default_factory=MemoryGuardStore)
    committed_ids: set[bytes] = field(default_factory=set)


class SimLedger:
    """The replica's `Ledger` over a Disk: every transaction of the simulation counts as
    admitted (each validator's mempool holds them all) until it is committed."""

    def __init__(self, sim: Simulation, index: int, key: SigningKey, disk: Disk) -> None:
        self.chain_id = CHAIN_ID
        self.validators: ValidatorSet = sim.validator_set
        self.index = index
        self.key = key
        self.sim = sim
        self.disk = disk
        if disk.state is None:
            disk.state = MemoryState(genesis_writes(sim.genesis))
        self.app = Application(CHAIN_ID, expiry_horizon_blocks=10_000)

    @property
    def head(self) -> Head:
        chain = self.disk.chain
        if not chain:
            return Head(0, bytes(32), self.sim.genesis_hash, 0)
        return Head(chain[-1].height, chain[-1].block_hash, chain[-1].app_hash, 0)

    def validators_at(self, height: int) -> ValidatorSet:
        return self.validators  # the simulated set never changes

    def runs(self, height: int, public_key: bytes) -> str | None:
        return None  # the simulated network has no transport identities

    @property
    def head_time_ms(self) -> int:
        chain = self.disk.chain
        return chain[-1].time_ms if chain else self.sim.genesis.genesis_time_ms

    def admitted(self, tx_hash: bytes) -> PendingTx | None:
        pending = self.sim.pool.get(tx_hash)
        if pending is None or pending.tx_id in self.disk.committed_ids:
            return None
        if self.sim.now < self.sim.arrival[self.index][tx_hash]:
            return None  # its gossip has not reached this validator yet
        return pending

    def block_entries(self, block_bytes: bytes) -> list[TxEntry]:
        return block_entries(block_bytes, self.admitted)

    def any_committed(self, tx_ids: Sequence[bytes]) -> bool:
        return any(tx_id in self.disk.committed_ids for tx_id in tx_ids)

    def candidates(self, height: int, count_max: int, bytes_max: int) -> list[PendingTx]:
        fresh = [p for p in self.sim.pool.values() if self.admitted(p.tx_hash) is not None]
        return self.app.prepare_proposal(height, fresh[:count_max]).txs

    def commit(self, block_bytes: bytes, commit_bytes: bytes) -> Committed:
        """Rust validation with the commit certificate, then the application, then disk:
        the node's commit path, minus LMDB. Raises MedledgerError for a bad block."""
        head = self.head
        height = head.height + 1
        validated = validate_block(
            block_bytes,
            commit_bytes,
            chain_id=CHAIN_ID,
            height=height,
            parent_hash=head.block_hash,
            validators=self.validators,
            next_validators=self.validators,
            app_hash=head.app_hash,
        )
        entries = self.block_entries(block_bytes)
        state = self.disk.state
        assert state is not None
        result = self.app.finalize_block(
            height,
            head.app_hash,
            state,
            [(e.signer, e.body) for e in entries],
            time_ms=validated.time_unix_ms,
        )
        state.apply(result.writes)
        committed = Committed(
            height,
            validated.block_hash,
            result.app_hash,
            block_bytes,
            commit_bytes,
            validated.time_unix_ms,
        )
        self.disk.chain.append(committed)
        self.disk.committed_ids.update(e.tx_id for e in entries)
        return committed


# ---------------------------------------------------------------------- the network


@dataclass(frozen=True)
class BlocksRequest:
    from_height: int
    requester: int
    request: int


@dataclass(frozen=True)
class BlocksResponse:
    blocks: tuple[Committed, ...]
    request: int


@dataclass(frozen=True)
class ProposalRequest:
    proposal: Proposal  # the compact proposal, echoed back with the answer
    requester: int


@dataclass(frozen=True)
class ProposalResponse:
    proposal: Proposal
    block: bytes | None


Message = bytes | BlocksRequest | BlocksResponse | ProposalRequest | ProposalResponse


@dataclass(frozen=True)
class Deliver:
    node: SimProcess
    epoch: int
    message: Message


@dataclass(frozen=True)
class Fire:
    node: SimProcess
    epoch: int
    timeout: Timeout


@dataclass(frozen=True)
class Next:
    node: SimProcess
    epoch: int
    after: int


@dataclass(frozen=True)
class FetchExpired:
    node: SimProcess
    epoch: int
    request: int | Proposal  # a blocks request's number, or the proposal fetched


@dataclass(frozen=True)
class Resend:
    node: SimProcess


@dataclass(frozen=True)
class Crash:
    index: int


@dataclass(frozen=True)
class Restart:
    index: int


@dataclass(frozen=True)
class Intrude:
    pass


Event = Deliver | Fire | Next | FetchExpired | Resend | Crash | Restart | Intrude


class SimProcess:
    """One validator process: the real replica, its ledger, and a shell that does with
    its effects what the node's asyncio shell does with sockets and timers."""

    def __init__(
        self, sim: Simulation, index: int, key: SigningKey, disk: Disk, honest: bool
    ) -> None:
        self.sim = sim
        self.index = index
        self.key = key
        self.disk = disk
        self.honest = honest
        self.alive = True
        self.epoch = 0
        self.ledger = SimLedger(sim, index, key, disk)
        self.replica = Replica(
            self.ledger,
            SigningGuard(disk.guard),
            TIMEOUTS,
            block_txs_max=TXS_PER_BLOCK,
            block_tx_bytes_max=1 << 30,
        )
        self._requests = itertools.count()
        self._blocks_request: int | None = None
        self._proposal_fetches: set[bytes] = set()

    def start(self) -> None:
        self.execute(self.replica.start(self.sim.now))

    # -- effects ---------------------------------------------------------------

    def execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            if not self.alive:
                return  # crashed in the middle (right after a precommit)
            if isinstance(effect, Broadcast):
                self.broadcast(effect.message)
            elif isinstance(effect, Schedule):
                self.sim.schedule(effect.delay_ms, Fire(self, self.epoch, effect.timeout))
            elif isinstance(effect, Commit):
                committed = self.ledger.commit(effect.block, effect.commit)
                self.sim.record_decision(self, committed)
                self.sim.schedule(NEXT_HEIGHT_PAUSE_MS, Next(self, self.epoch, effect.height))
            elif isinstance(effect, ToEngine):
                self.execute(self.replica.step(effect.message, self.sim.now))
            elif isinstance(effect, FetchProposal):
                self._proposal_fetches.add(effect.proposal.value_id)
                self.sim.send(
                    self, effect.proposal.proposer, ProposalRequest(effect.proposal, self.index)
                )
                self.sim.schedule(FETCH_TIMEOUT_MS, FetchExpired(self, self.epoch, effect.proposal))
            elif isinstance(effect, FetchBlocks):
                self._blocks_request = next(self._requests)
                self.sim.send(
                    self,
                    self.sim.index_of(effect.peer),
                    BlocksRequest(effect.from_height, self.index, self._blocks_request),
                )
                self.sim.schedule(
                    FETCH_TIMEOUT_MS, FetchExpired(self, self.epoch, self._blocks_request)
                )
            elif isinstance(effect, Reported):
                self.sim.evidence.append(effect.equivocation)

    def broadcast(self, message: peer_pb2.PeerMessage) -> None:
        message.sender = self.index
        message.committed_height = self.ledger.head.height
        if self.honest:
            self.sim.check_lock(self.index, message)
        if self.honest or not self.sim.misbehave(self, message):
            self.sim.broadcast(self, message.SerializeToString())
        if (
            self.sim.scenario.crash_after_precommit
            and self.sim.pending_crash == self.index
            and message.WhichOneof("body") == "vote"
            and message.vote.type == envelope_pb2.VOTE_TYPE_PRECOMMIT
            and message.vote.block_hash
        ):
            self.sim.crash(self.index)  # SIGKILL right after the precommit left

    # -- inputs ----------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        now = self.sim.now
        if isinstance(message, bytes):
            try:
                decoded = peer_pb2.PeerMessage.FromString(message)
            except ProtobufDecodeError:
                return  # the node's gRPC layer refuses it the same way
            self.execute(self.replica.receive(decoded, now))
        elif isinstance(message, BlocksRequest):
            blocks = tuple(c for c in self.disk.chain if c.height >= message.from_height)
            self.sim.send(self, message.requester, BlocksResponse(blocks, message.request))
        elif isinstance(message, BlocksResponse):
            if message.request != self._blocks_request:
                return  # an answer that came after its deadline
            self._blocks_request = None
            committed = self.commit_fetched(message.blocks)
            self.execute(self.replica.blocks_fetched(committed, now, now))
        elif isinstance(message, ProposalRequest):
            block = self.replica.held_block(message.proposal.height, message.proposal.value_id)
            self.sim.send(self, message.requester, ProposalResponse(message.proposal, block))
        else:
            if message.proposal.value_id not in self._proposal_fetches:
                return
            self._proposal_fetches.discard(message.proposal.value_id)
            self.execute(self.replica.proposal_fetched(message.proposal, message.block))

    def commit_fetched(self, blocks: tuple[Committed, ...]) -> int:
        """As the node's shell: commits what extends the chain, validated with its
        certificate; a block that does not validate ends the batch."""
        committed = 0
        for item in blocks:
            if item.height != len(self.disk.chain) + 1:
                continue
            try:
                self.sim.record_decision(self, self.ledger.commit(item.block, item.commit))
            except MedledgerError:
                break
            committed += 1
        return committed

    def expired(self, request: int | Proposal) -> None:
        if isinstance(request, Proposal):
            if request.value_id in self._proposal_fetches:
                self._proposal_fetches.discard(request.value_id)
                self.execute(self.replica.proposal_fetched(request, None))
        elif request == self._blocks_request:
            self._blocks_request = None
            self.execute(self.replica.blocks_fetched(0, self.sim.now, self.sim.now))


class Simulation:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.now = 0
        self._queue: list[tuple[int, int, Event]] = []
        self._seq = itertools.count()
        self.keys = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(scenario.validators)]
        clients = [SigningKey.from_seed(bytes([100 + i]) * 32) for i in range(2)]
        self.clients = clients
        self.genesis = Genesis(
            CHAIN_ID,
            0,
            tuple(GenesisValidator(f"v{i}", k.public_key, 1) for i, k in enumerate(self.keys)),
            tuple(Allocation(c.public_key, 1_000_000) for c in clients),
        )
        self.validator_set: ValidatorSet = self.genesis.validator_set()
        self.genesis_hash = self.genesis.hash()
        builders = [TxBuilder(c, CHAIN_ID) for c in clients]
        txs = [
            builders[n % 2].transfer(
                to=clients[(n + 1) % 2].public_key,
                amount_micros=n + 1,
                expiry_height=10_000,
                tx_id=n.to_bytes(16, "big"),
            )
            for n in range(scenario.target_height * TXS_PER_BLOCK + 4)
        ]
        self.pool: dict[bytes, PendingTx] = {}
        prepared = admit_batch(
            CHAIN_ID,
            [tx.body for tx in txs],
            [tx.public_key for tx in txs],
            [tx.signature for tx in txs],
        )
        for tx, (encoded, tx_hash, body_hash, valid) in zip(txs, prepared, strict=True):
            assert valid
            body = tx_pb2.TransactionBody.FromString(tx.body)
            self.pool[tx_hash] = PendingTx(tx, body, encoded, tx_hash, body_hash)
        # When each transaction's gossip reaches each validator (the first ones, at once).
        self.arrival = [
            {
                h: 0 if n < TXS_PER_BLOCK else self.rng.randrange(0, 1_500)
                for n, h in enumerate(self.pool)
            }
            for _ in range(scenario.validators)
        ]
        self.byzantine_index = 0 if scenario.byzantine != "none" else None
        self.disks = [Disk() for _ in self.keys]
        self.nodes: list[SimProcess] = [
            SimProcess(self, i, key, self.disks[i], honest=i != self.byzantine_index)
            for i, key in enumerate(self.keys)
        ]
        if scenario.byzantine == "shared_key":
            # A second process signing with validator 0's key: its own guard cannot know.
            self.nodes.append(SimProcess(self, 0, self.keys[0], Disk(), honest=False))
        self.decisions: dict[int, dict[int, Committed]] = {}  # height -> node -> committed
        self.evidence: list[object] = []
        self.prevotes: dict[tuple[int, int, bytes], set[int]] = {}
        self.locks: dict[int, list[tuple[int, int, bytes]]] = {}  # honest precommits
        self.pending_crash: int | None = None

    # -- the event queue ------------------------------------------------------

    def index_of(self, public_key: bytes) -> int:
        """The simulated validator with this key."""
        return [key.public_key for key in self.keys].index(public_key)

    def schedule(self, delay_ms: int, event: Event) -> None:
        heapq.heappush(self._queue, (self.now + delay_ms, next(self._seq), event))

    def faults_active(self) -> bool:
        return self.now < FAULTS_END_MS

    def partitioned(self, a: int, b: int) -> bool:
        partition = self.scenario.partition
        if partition is None or not partition[0] <= self.now < partition[1]:
            return False
        return (a in partition[2]) != (b in partition[2])

    def send(self, sender: SimProcess | None, to: int, message: Message) -> None:
        for node in self.nodes:
            if node.index != to or node is sender:
                continue
            if (
                self.faults_active()
                and sender is not None
                and (self.rng.random() < self.scenario.drop or self.partitioned(sender.index, to))
            ):
                continue
            copies = (
                2 if self.faults_active() and self.rng.random() < self.scenario.duplicate else 1
            )
            for _ in range(copies):
                delay = self.rng.randint(1, self.scenario.delay_max_ms)
                self.schedule(delay, Deliver(node, node.epoch, message))
                if isinstance(message, bytes) and self.rng.random() < self.scenario.tamper:
                    tampered = self.tampered(message)
                    if tampered is not None:
                        self.schedule(delay, Deliver(node, node.epoch, tampered))

    def broadcast(self, sender: SimProcess | None, message: bytes) -> None:
        if sender is not None:
            self.record_prevote(message)
        for index in range(self.scenario.validators):
            self.send(sender, index, message)

    # -- adversaries -------------------------------------------------------------

    def tampered(self, message: bytes) -> bytes | None:
        """Anyone who sees a signed proposal can resend it with other bytes: the
        signature covers the id only. The copy carries another block (or junk)."""
        try:
            wire = peer_pb2.PeerMessage.FromString(message)
        except ProtobufDecodeError:
            return None
        if wire.WhichOneof("body") != "proposal":
            return None
        copy = peer_pb2.PeerMessage()
        copy.CopyFrom(wire)
        others = [c.block for d in self.disks for c in d.chain]
        choice = self.rng.random()
        if choice < 0.4 and others:
            copy.proposal.block = self.rng.choice(others)  # a real block, another id
        elif choice < 0.7 and copy.proposal.tx_hashes:
            del copy.proposal.tx_hashes[-1]  # the compact form, a transaction short
        else:
            copy.proposal.block = self.rng.randbytes(self.rng.randint(0, 200))
        return copy.SerializeToString()

    def intrude(self) -> None:
        """A stranger on the port: junk bytes, unsigned messages naming validators,
        messages signed by a key outside the set, far-future heights."""
        stranger = SigningKey.from_seed(b"\xee" * 32)
        victim = self.rng.randrange(self.scenario.validators)
        named = self.rng.randrange(self.scenario.validators)
        height = self.rng.choice([1, 2, 2**63 - 1])
        kind = self.rng.randrange(5)
        if kind == 0:
            message = self.rng.randbytes(self.rng.randint(1, 64))
        elif kind == 4:
            # Decodable, out of range: a valid_round below -1, a 7-byte block hash.
            wire = peer_pb2.PeerMessage(sender=named)
            if self.rng.random() < 0.5:
                wire.proposal.height = height
                wire.proposal.valid_round = -5
                wire.proposal.block_hash = self.rng.randbytes(32)
                wire.proposal.proposer = named
            else:
                wire.vote.type = envelope_pb2.VOTE_TYPE_PREVOTE
                wire.vote.height = height
                wire.vote.block_hash = self.rng.randbytes(7)
                wire.vote.validator = named
            message = wire.SerializeToString()
        else:
            vote: Proposal | Vote = Vote(
                VoteType.PRECOMMIT, height, 0, self.rng.randbytes(32), named
            )
            if kind == 2:
                vote = with_signature(vote, stranger.sign(sign_bytes(CHAIN_ID, vote)))
            elif kind == 3:
                junk = self.rng.randbytes(40)
                proposal = Proposal(height, 0, self.rng.randbytes(32), junk, -1, named)
                signed = with_signature(proposal, stranger.sign(sign_bytes(CHAIN_ID, proposal)))
                wire = to_wire(signed)
                wire.committed_height = 2**63 - 1
                self.send(None, victim, wire.SerializeToString())
                return
            wire = to_wire(vote)
            wire.sender = named
            wire.committed_height = 2**63 - 1
            message = wire.SerializeToString()
        self.send(None, victim, message)

    def misbehave(self, node: SimProcess, message: peer_pb2.PeerMessage) -> bool:
        """The Byzantine validator's lies, each signed with its real key (its own guard
        is not consulted: it is the one lying). Returns whether it took over sending."""
        kind = self.scenario.byzantine
        signed = from_wire(message)
        if signed is None:
            return False
        if isinstance(signed, Proposal):
            block = self.block_of(node, signed)
            if block is None:
                return False
            if kind == "equivocating_proposer":
                other = self.fresh_proposal(node, signed, block, time_shift=1)
                self.split(node, message.SerializeToString(), other)
                return True
            if kind == "lock_violator" and signed.round > 0:
                # Ignores its lock and valid value: a fresh value in every later round.
                self.broadcast(
                    node, self.fresh_proposal(node, signed, block, time_shift=signed.round)
                )
                return True
            if kind == "malformed_proposer":
                self.broadcast(node, self.malformed_proposal(node, signed, block))
                return True
            return False
        if kind == "double_voter":
            seen = self.round_value(node, signed.round)
            flipped = None if signed.value_id is not None else seen
            other_vote = Vote(signed.type, signed.height, signed.round, flipped, node.index)
            self.split(node, message.SerializeToString(), self.signed_wire(node, other_vote))
            return True
        if kind == "lock_violator" and signed.value_id is None:
            seen = self.round_value(node, signed.round)
            if seen is not None:  # votes for whatever is proposed, lock or not
                vote = Vote(signed.type, signed.height, signed.round, seen, node.index)
                self.broadcast(node, self.signed_wire(node, vote))
                return True
        return False

    def split(self, node: SimProcess, first: bytes, second: bytes) -> None:
        """Each peer gets one of two conflicting messages, both signed by `node`."""
        recorded: set[bytes] = set()
        for index in range(self.scenario.validators):
            chosen = first if self.rng.random() < 0.5 else second
            if chosen not in recorded:
                recorded.add(chosen)
                self.record_prevote(chosen)
            self.send(node, index, chosen)

    def block_of(self, node: SimProcess, proposal: Proposal) -> bytes | None:
        return proposal.value or node.replica.held_block(proposal.height, proposal.value_id)

    def round_value(self, node: SimProcess, round_: int) -> bytes | None:
        state = node.replica.engine.rounds.get(round_)
        return state.proposal.value_id if state and state.proposal else None

    def signed_wire(self, node: SimProcess, message: Proposal | Vote) -> bytes:
        signed = with_signature(message, node.key.sign(sign_bytes(CHAIN_ID, message)))
        wire = to_wire(signed)
        wire.sender = node.index
        return wire.SerializeToString()

    def fresh_proposal(
        self, node: SimProcess, proposal: Proposal, block_bytes: bytes, *, time_shift: int
    ) -> bytes:
        block = envelope_pb2.Block.FromString(block_bytes)
        block.header.time_unix_ms += time_shift  # a different block for the same slot
        header = block.header.SerializeToString(deterministic=True)
        value = encode_block(header, [tx.SerializeToString(deterministic=True) for tx in block.txs])
        fresh = Proposal(proposal.height, proposal.round, block_hash(header), value, -1, node.index)
        return self.signed_wire(node, fresh)

    def malformed_proposal(self, node: SimProcess, proposal: Proposal, block_bytes: bytes) -> bytes:
        """Its block carries a correctly signed transaction with an empty tx id."""
        block = envelope_pb2.Block.FromString(block_bytes)
        body = tx_pb2.TransactionBody(
            chain_id=CHAIN_ID,
            tx_id=b"",
            expiry_height=10_000,
            transfer=tx_pb2.Transfer(to=self.clients[1].public_key, amount_micros=1),
        )
        block.txs.append(
            sign_transaction(self.clients[0], CHAIN_ID, body.SerializeToString(deterministic=True))
        )
        leaves = [tx.SerializeToString(deterministic=True) for tx in block.txs]
        block.header.tx_count = len(leaves)
        block.header.tx_root = merkle.root(leaves)
        header = block.header.SerializeToString(deterministic=True)
        value = encode_block(header, leaves)
        bad = Proposal(proposal.height, proposal.round, block_hash(header), value, -1, node.index)
        return self.signed_wire(node, bad)

    # -- faults and checks ---------------------------------------------------------

    def crash(self, index: int) -> None:
        node = self.nodes[index]
        node.alive = False
        node.epoch += 1
        self.pending_crash = None

    def record_prevote(self, message: bytes) -> None:
        """Every prevote a validator signed and sent to anyone: a superset of what any
        one validator could have seen (for `check_lock`)."""
        wire = peer_pb2.PeerMessage.FromString(message)
        if wire.WhichOneof("body") == "vote" and wire.vote.type == envelope_pb2.VOTE_TYPE_PREVOTE:
            vote = wire.vote
            if vote.block_hash:
                key = (vote.height, vote.round, vote.block_hash)
                self.prevotes.setdefault(key, set()).add(vote.validator)

    def check_lock(self, index: int, message: peer_pb2.PeerMessage) -> None:
        """Algorithm 1's locking rule, across crashes: after an honest validator
        precommits X in round r of a height, it prevotes another value V in a later round
        only with a proof of lock change, a quorum of prevotes for V in a round from r on
        (line 28). Checked against every prevote anyone sent, a superset of what it saw:
        a prevote that fails this check violated its lock whatever it heard."""
        if message.WhichOneof("body") != "vote" or not message.vote.block_hash:
            return
        vote = message.vote
        if vote.validator != index:
            return  # another validator's prevote, relayed as evidence
        locks = self.locks.setdefault(index, [])
        if vote.type == envelope_pb2.VOTE_TYPE_PRECOMMIT:
            locks.append((vote.height, vote.round, vote.block_hash))
            return
        quorum = 2 * self.scenario.validators // 3 + 1
        for height, locked_round, locked_id in locks:
            if height != vote.height or locked_round >= vote.round or locked_id == vote.block_hash:
                continue
            released = any(
                len(self.prevotes.get((height, r, vote.block_hash), ())) >= quorum
                for r in range(locked_round, vote.round)
            )
            assert released, (
                f"LOCK: validator {index} prevoted {vote.block_hash.hex()[:8]} at height "
                f"{height} round {vote.round} against its lock from round {locked_round}"
            )

    def record_decision(self, node: SimProcess, committed: Committed) -> None:
        at_height = self.decisions.setdefault(committed.height, {})
        if node.honest:
            for other in at_height.values():
                assert other.block_hash == committed.block_hash, (
                    f"SAFETY: honest validators decided different blocks at {committed.height}"
                )
                assert other.app_hash == committed.app_hash, (
                    f"honest app hashes differ after height {committed.height}"
                )
            at_height[node.index] = committed

    # -- running ---------------------------------------------------------------

    def honest_nodes(self) -> list[SimProcess]:
        return [n for n in self.nodes if n.honest]

    def done(self) -> bool:
        return all(len(n.disk.chain) >= self.scenario.target_height for n in self.honest_nodes())

    def run(self) -> None:
        for node in self.nodes:
            node.start()
            self.schedule(RESEND_MS, Resend(node))
        if self.scenario.crash is not None:
            index, at, restart_at = self.scenario.crash
            if self.scenario.crash_after_precommit:
                self.pending_crash = index  # dies after its first precommit for a value
            else:
                self.schedule(at, Crash(index))
            self.schedule(restart_at, Restart(index))
        if self.scenario.outsider:
            self.schedule(self.rng.randrange(1, 50), Intrude())
        deadline = FAULTS_END_MS + LIVENESS_BOUND_MS
        while self._queue and not self.done():
            self.now, _, event = heapq.heappop(self._queue)
            if self.now > deadline:
                break
            self._dispatch(event)
        heights = {n.index: len(n.disk.chain) for n in self.honest_nodes()}
        assert self.done(), (
            f"LIVENESS: honest validators at heights {heights} "
            f"{LIVENESS_BOUND_MS} ms after faults stopped"
        )

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Deliver | Fire | Next | FetchExpired):
            node = event.node
            if not node.alive or node.epoch != event.epoch:
                return  # a crashed process's sockets and timers die with it
            if isinstance(event, Deliver):
                node.deliver(event.message)
            elif isinstance(event, Fire):
                node.execute(node.replica.step(Fired(event.timeout), self.now))
            elif isinstance(event, Next):
                node.execute(node.replica.step(NextHeight(event.after), self.now))
            else:
                node.expired(event.request)
        elif isinstance(event, Resend):
            if event.node.alive:  # a crashed process's loop dies with it
                event.node.execute(event.node.replica.resend())
                self.schedule(RESEND_MS, Resend(event.node))
        elif isinstance(event, Crash):
            if self.nodes[event.index].alive:
                self.crash(event.index)
        elif isinstance(event, Intrude):
            self.intrude()
            if self.faults_active():
                self.schedule(self.rng.randrange(1, 50), Intrude())
        else:
            old = self.nodes[event.index]
            if old.alive:
                # The precommit that would have killed it never came: it dies now.
                self.crash(event.index)
            fresh = SimProcess(self, event.index, old.key, old.disk, honest=old.honest)
            fresh.epoch = old.epoch + 1
            self.nodes[event.index] = fresh
            fresh.start()
            self.schedule(RESEND_MS, Resend(fresh))
