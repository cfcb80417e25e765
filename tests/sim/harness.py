"""Deterministic simulation: N validators, each with the real Tendermint engine, the real
application and the Rust block validator, over a simulated network whose delays, drops,
duplicates, partitions, crashes and Byzantine behaviour all come from one seed.

Time is simulated (milliseconds on an event queue); nothing reads a clock or touches a
socket, so a seed replays exactly.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Literal

from medledger import merkle
from medledger.app import Application
from medledger.app.state import MemoryState, genesis_writes
from medledger.block import ValidatorSet, assemble_block, block_hash, validate_block
from medledger.client import TxBuilder
from medledger.consensus import (
    Decide,
    Engine,
    Equivocation,
    Output,
    Proposal,
    ScheduleTimeout,
    SendProposal,
    SendVote,
    Timeout,
    TimeoutConfig,
    Vote,
)
from medledger.consensus.guard import MemoryGuardStore, SigningGuard
from medledger.consensus.messages import guard_step, sign_bytes, signer, with_signature
from medledger.crypto import SigningKey, tx_signing_message, verify_batch
from medledger.genesis import Allocation, Genesis, GenesisValidator
from medledger.wire.v1 import envelope_pb2, tx_pb2

CHAIN_ID = "sim-1"
RESEND_MS = 250
SYNC_INTERVAL_MS = 100
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
Byzantine = Literal["none", "equivocating_proposer", "double_voter", "shared_key"]


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
    byzantine: Byzantine

    @classmethod
    def from_seed(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        validators = 4
        byzantine: Byzantine = rng.choice(
            ["none", "none", "equivocating_proposer", "double_voter", "shared_key"]
        )
        partition = None
        if rng.random() < 0.4:
            start = rng.randrange(0, 2_000)
            side = frozenset(rng.sample(range(validators), rng.randint(1, 2)))
            partition = (start, start + rng.randrange(200, 2_000), side)
        crash = None
        if rng.random() < 0.4:
            # Never crash the Byzantine validator: then faults would exceed f.
            node = rng.randrange(1 if byzantine != "none" else 0, validators)
            at = rng.randrange(0, 2_500)
            crash = (node, at, at + rng.randrange(100, 1_500))
        return cls(
            seed=seed,
            validators=validators,
            target_height=3,
            delay_max_ms=rng.choice([5, 30, 80]),
            drop=rng.choice([0.0, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.1]),
            partition=partition,
            crash=crash,
            byzantine=byzantine,
        )


@dataclass(frozen=True)
class Committed:
    height: int
    block_hash: bytes
    app_hash: bytes  # after applying the block
    block: bytes
    commit: bytes


@dataclass
class Disk:
    """What survives a crash: the chain, the state and the signing guard's record."""

    chain: list[Committed] = field(default_factory=list)
    state: MemoryState | None = None
    guard: MemoryGuardStore = field(default_factory=MemoryGuardStore)


@dataclass(frozen=True)
class SyncRequest:
    from_height: int
    requester: int


@dataclass(frozen=True)
class SyncResponse:
    blocks: tuple[Committed, ...]


Message = Proposal | Vote | SyncRequest | SyncResponse


@dataclass(frozen=True)
class Deliver:
    node: SimNode
    epoch: int
    message: Message


@dataclass(frozen=True)
class Fire:
    node: SimNode
    epoch: int
    timeout: Timeout


@dataclass(frozen=True)
class Resend:
    node: SimNode


@dataclass(frozen=True)
class Crash:
    index: int


@dataclass(frozen=True)
class Restart:
    index: int


Event = Deliver | Fire | Resend | Crash | Restart


class SimNode:
    """One process: the engine, the application, a guard, and the disk it keeps."""

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
        if disk.state is None:
            disk.state = MemoryState(genesis_writes(sim.genesis))
        self.app = Application(CHAIN_ID, expiry_horizon_blocks=10_000)
        self.guard = SigningGuard(disk.guard)
        self.engine = Engine(sim.powers, index, self, TIMEOUTS, height=len(disk.chain) + 1)
        if self.guard.last is not None and self.guard.last.lock is not None:
            self.engine.restore(self.guard.last.lock)  # as the node does after a crash
        self.sent: list[Proposal | Vote] = []  # signed messages of the current height
        self.last_sync_ms = -SYNC_INTERVAL_MS

    # -- the application side of consensus (ValueSource) ----------------------

    @property
    def tip_hash(self) -> bytes:
        return self.disk.chain[-1].block_hash if self.disk.chain else bytes(32)

    @property
    def app_hash(self) -> bytes:
        return self.disk.chain[-1].app_hash if self.disk.chain else self.sim.genesis.hash()

    def get_value(self, height: int) -> tuple[bytes, bytes]:
        committed = self.sim.committed_tx_ids(self)
        txs = [tx for tx_id, tx in self.sim.txs if tx_id not in committed][:TXS_PER_BLOCK]
        if not self.honest and self.sim.scenario.byzantine == "equivocating_proposer":
            txs = txs[:1]
        block = assemble_block(
            chain_id=CHAIN_ID,
            height=height,
            parent_hash=self.tip_hash,
            txs=txs,
            proposer=self.key.public_key,
            validators=self.sim.validator_set,
            app_hash=self.app_hash,
            time_unix_ms=height * 1_000,
        )
        return block_hash(block.header.SerializeToString()), block.SerializeToString()

    def valid(self, height: int, value_id: bytes, value: bytes) -> bool:
        try:
            block = envelope_pb2.Block.FromString(value)
        except Exception:
            return False
        header = block.header
        leaves = [tx.SerializeToString(deterministic=True) for tx in block.txs]
        if (
            header.height != height
            or header.parent_hash != self.tip_hash
            or header.app_hash != self.app_hash
            or header.validators_hash != self.sim.validator_set.hash
            or header.tx_count != len(block.txs)
            or header.tx_root != merkle.root(leaves)
            or block_hash(header.SerializeToString()) != value_id
        ):
            return False
        committed = self.sim.committed_tx_ids(self)
        ids = [tx_pb2.TransactionBody.FromString(tx.body).tx_id for tx in block.txs]
        if len(set(ids)) != len(ids) or any(tx_id in committed for tx_id in ids):
            return False
        return all(
            verify_batch(
                [tx.public_key for tx in block.txs],
                [tx_signing_message(CHAIN_ID, tx.body) for tx in block.txs],
                [tx.signature for tx in block.txs],
            )
        )

    # -- runtime ---------------------------------------------------------------

    def start(self) -> None:
        self.handle(self.engine.start())
        last = self.guard.last
        if last is not None and last.vote is not None and last.height == self.engine.height:
            self.handle([SendVote(last.vote)])  # as the node does after a crash

    def handle(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, SendProposal):
                self.sign_and_send(output.proposal)
            elif isinstance(output, SendVote):
                self.sign_and_send(output.vote)
            elif isinstance(output, ScheduleTimeout):
                self.sim.schedule(output.delay_ms, Fire(self, self.epoch, output.timeout))
            elif isinstance(output, Decide):
                self.commit(output)
            elif isinstance(output, Equivocation):
                self.sim.evidence.append(output)

    def sign_and_send(self, message: Proposal | Vote) -> None:
        to_sign = sign_bytes(CHAIN_ID, message)
        step = guard_step(message)
        lock = self.engine.lock_state()
        vote = dataclasses.replace(message, signature=b"") if isinstance(message, Vote) else None
        if self.honest and not self.guard.permit(
            message.height, message.round, step, to_sign, lock=lock, vote=vote
        ):
            self.sim.guard_refusals += 1
            return
        signed = with_signature(message, self.key.sign(to_sign))
        self.sent.append(signed)
        if not self.sim.misbehave(self, signed):
            self.sim.broadcast(self, signed)
        self.receive(signed)  # our own message counts like anyone's

    def receive(self, message: Message) -> None:
        if not self.alive:
            return
        if isinstance(message, SyncRequest):
            blocks = tuple(c for c in self.disk.chain if c.height >= message.from_height)
            if blocks:
                self.sim.send(self, message.requester, SyncResponse(blocks))
            return
        if isinstance(message, SyncResponse):
            self.catch_up(message.blocks)
            return
        if (
            message.height > self.engine.height
            and self.sim.now - self.last_sync_ms >= SYNC_INTERVAL_MS
        ):
            # Someone is ahead: fetch the blocks we miss, with their commit certificates.
            self.last_sync_ms = self.sim.now
            self.sim.send(self, signer(message), SyncRequest(self.engine.height, self.index))
        if isinstance(message, Proposal):
            self.handle(self.engine.on_proposal(message))
        else:
            self.handle(self.engine.on_vote(message))

    def commit(self, decision: Decide) -> None:
        commit = envelope_pb2.CommitCertificate(
            height=decision.height,
            round=decision.round,
            block_hash=decision.value_id,
            signatures=[
                envelope_pb2.CommitSignature(validator_index=v.validator, signature=v.signature)
                for v in sorted(decision.precommits, key=lambda v: v.validator)
            ],
        )
        assert decision.height == len(self.disk.chain) + 1, "decisions come in height order"
        self.apply(decision.value, commit.SerializeToString())
        self.sent = []
        self.handle(self.engine.advance())

    def apply(self, block_bytes: bytes, commit_bytes: bytes) -> None:
        """Rust validation with the commit certificate, then the application, then disk."""
        height = len(self.disk.chain) + 1
        validated = validate_block(
            block_bytes,
            commit_bytes,
            chain_id=CHAIN_ID,
            height=height,
            parent_hash=self.tip_hash,
            validators=self.sim.validator_set,
            app_hash=self.app_hash,
        )
        block = envelope_pb2.Block.FromString(block_bytes)
        txs = [(tx.public_key, tx_pb2.TransactionBody.FromString(tx.body)) for tx in block.txs]
        state = self.disk.state
        assert state is not None
        result = self.app.finalize_block(height, self.app_hash, state, txs)
        state.apply(result.writes)
        committed = Committed(
            height, validated.block_hash, result.app_hash, block_bytes, commit_bytes
        )
        self.disk.chain.append(committed)
        self.sim.record_decision(self, committed)

    def catch_up(self, blocks: tuple[Committed, ...]) -> None:
        applied = False
        for committed in blocks:
            if committed.height == len(self.disk.chain) + 1:
                self.apply(committed.block, committed.commit)
                applied = True
        if applied and len(self.disk.chain) + 1 > self.engine.height:
            self.sent = []
            self.handle(self.engine.skip_to(len(self.disk.chain) + 1))

    def resend(self) -> None:
        for message in self.sent:
            self.sim.broadcast(self, message)
        if self.honest:
            for vote in self.engine.evidence():  # others' signed prevotes, relayed
                self.sim.broadcast(self, vote)


class Simulation:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.now = 0
        self._queue: list[tuple[int, int, Event]] = []
        self._seq = itertools.count()
        keys = [SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(scenario.validators)]
        clients = [SigningKey.from_seed(bytes([100 + i]) * 32) for i in range(2)]
        self.powers = [1] * scenario.validators
        self.genesis = Genesis(
            CHAIN_ID,
            0,
            tuple(GenesisValidator(f"v{i}", k.public_key, 1) for i, k in enumerate(keys)),
            tuple(Allocation(c.public_key, 1_000_000) for c in clients),
        )
        self.validator_set: ValidatorSet = self.genesis.validator_set()
        builders = [TxBuilder(c, CHAIN_ID) for c in clients]
        self.txs = []
        for n in range(scenario.target_height * TXS_PER_BLOCK + 4):
            tx = builders[n % 2].transfer(
                to=clients[(n + 1) % 2].public_key,
                amount_micros=n + 1,
                expiry_height=10_000,
                tx_id=n.to_bytes(16, "big"),
            )
            self.txs.append((n.to_bytes(16, "big"), tx))
        self.byzantine_index = 0 if scenario.byzantine != "none" else None
        self.nodes: list[SimNode] = []
        self.disks = [Disk() for _ in keys]
        for i, key in enumerate(keys):
            self.nodes.append(
                SimNode(self, i, key, self.disks[i], honest=i != self.byzantine_index)
            )
        if scenario.byzantine == "shared_key":
            # A second process signing with validator 0's key: its own guard cannot know.
            self.nodes.append(SimNode(self, 0, keys[0], Disk(), honest=False))
            self.nodes[0].honest = False
        self.decisions: dict[int, dict[int, Committed]] = {}  # height -> node -> committed
        self.evidence: list[Equivocation] = []
        self.guard_refusals = 0

    # -- the event queue ------------------------------------------------------

    def schedule(self, delay_ms: int, event: Event) -> None:
        heapq.heappush(self._queue, (self.now + delay_ms, next(self._seq), event))

    def faults_active(self) -> bool:
        return self.now < FAULTS_END_MS

    def partitioned(self, a: int, b: int) -> bool:
        partition = self.scenario.partition
        if partition is None or not partition[0] <= self.now < partition[1]:
            return False
        return (a in partition[2]) != (b in partition[2])

    def send(self, sender: SimNode, to: int, message: Message) -> None:
        for node in self.nodes:
            if node.index != to or node is sender:
                continue
            if self.faults_active() and (
                self.rng.random() < self.scenario.drop or self.partitioned(sender.index, to)
            ):
                continue
            copies = (
                2 if self.faults_active() and self.rng.random() < self.scenario.duplicate else 1
            )
            for _ in range(copies):
                delay = self.rng.randint(1, self.scenario.delay_max_ms)
                self.schedule(delay, Deliver(node, node.epoch, message))

    def broadcast(self, sender: SimNode, message: Message) -> None:
        for index in range(self.scenario.validators):
            self.send(sender, index, message)

    def misbehave(self, node: SimNode, signed: Proposal | Vote) -> bool:
        """The Byzantine validator splits the network: each peer gets either its honest
        message or a conflicting one, both signed with its real key. Returns whether it
        took over sending `signed`."""
        if node.honest or node.index != self.byzantine_index:
            return False
        kind = self.scenario.byzantine
        if kind == "equivocating_proposer" and isinstance(signed, Proposal):
            block = envelope_pb2.Block.FromString(signed.value)
            block.header.time_unix_ms += 1  # a different block for the same slot
            other_id = block_hash(block.header.SerializeToString())
            conflicting: Proposal | Vote = Proposal(
                signed.height, signed.round, other_id, block.SerializeToString(), -1, node.index
            )
        elif kind == "double_voter" and isinstance(signed, Vote):
            proposal = node.engine.rounds.get(signed.round)
            seen = proposal.proposal.value_id if proposal and proposal.proposal else None
            flipped = None if signed.value_id is not None else seen
            conflicting = Vote(signed.type, signed.height, signed.round, flipped, node.index)
        else:
            return False
        other = with_signature(conflicting, node.key.sign(sign_bytes(CHAIN_ID, conflicting)))
        for index in range(self.scenario.validators):
            self.send(node, index, signed if self.rng.random() < 0.5 else other)
        return True

    def record_decision(self, node: SimNode, committed: Committed) -> None:
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

    def committed_tx_ids(self, node: SimNode) -> set[bytes]:
        ids: set[bytes] = set()
        for committed in node.disk.chain:
            block = envelope_pb2.Block.FromString(committed.block)
            ids.update(tx_pb2.TransactionBody.FromString(tx.body).tx_id for tx in block.txs)
        return ids

    # -- running ---------------------------------------------------------------

    def honest_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.honest]

    def done(self) -> bool:
        return all(len(n.disk.chain) >= self.scenario.target_height for n in self.honest_nodes())

    def run(self) -> None:
        for node in self.nodes:
            node.start()
            self.schedule(RESEND_MS, Resend(node))
        if self.scenario.crash is not None:
            index, at, restart_at = self.scenario.crash
            self.schedule(at, Crash(index))
            self.schedule(restart_at, Restart(index))
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
        if isinstance(event, Deliver):
            if event.node.alive and event.node.epoch == event.epoch:
                event.node.receive(event.message)
        elif isinstance(event, Fire):
            if event.node.alive and event.node.epoch == event.epoch:
                event.node.handle(event.node.engine.on_timeout(event.timeout))
        elif isinstance(event, Resend):
            if event.node.alive:  # a crashed process's loop dies with it
                event.node.resend()
                self.schedule(RESEND_MS, Resend(event.node))
        elif isinstance(event, Crash):
            node = self.nodes[event.index]
            node.alive = False
            node.epoch += 1
        else:
            old = self.nodes[event.index]
            fresh = SimNode(self, event.index, old.key, old.disk, honest=old.honest)
            fresh.epoch = old.epoch + 1
            self.nodes[event.index] = fresh
            fresh.start()
            self.schedule(RESEND_MS, Resend(fresh))
