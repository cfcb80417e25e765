"""One validator's consensus, without I/O: the sans-I/O replica.

The replica holds the Tendermint engine, the signing guard (whose store makes each
permission durable), the proposals of the current height, the wire codecs, the rebuild of
compact proposals, proposal validation and the catch-up policy. Input goes in (a peer's
wire message, a timeout that fired, "the next height may start", "fetched blocks were
committed"), with the time passed in; effects come out (broadcast this, schedule that,
commit this block, fetch that proposal or those blocks). It reads the ledger through the
narrow `Ledger` protocol and never touches a socket, a clock or a task.

Two shells drive the same replica: the node's asyncio/gRPC shell
(`medledger.node.consensus_driver`) and the deterministic simulation (`tests/sim`), so the
code the simulation attacks is the code validators run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import DecodeError as ProtobufDecodeError

from medledger import merkle
from medledger.app.application import Application
from medledger.block import (
    ValidatorSet,
    block_hash,
    block_id,
    encode_block,
    validate_block,
)
from medledger.chain import Head
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
    VoteType,
)
from medledger.consensus.engine import ROUNDS_AHEAD_MAX
from medledger.consensus.guard import SigningGuard
from medledger.consensus.messages import guard_step, sign_bytes, signer, with_signature
from medledger.crypto import SigningKey, sha256, verify
from medledger.errors import MedledgerError
from medledger.limits import PROPOSAL_FETCHES_MAX
from medledger.node.ledger_node import TxEntry
from medledger.node.mempool import PendingTx
from medledger.node.proposal import propose_block
from medledger.wire.v1 import envelope_pb2, peer_pb2

__all__ = [
    "PROPOSAL_FETCHES_MAX",
    "Broadcast",
    "Commit",
    "Effect",
    "FetchBlocks",
    "FetchProposal",
    "Ledger",
    "Replica",
    "Schedule",
    "ToEngine",
    "from_wire",
    "to_wire",
]

log = logging.getLogger(__name__)

HASH_BYTES = 32
CATCH_UP_RETRY_MS = 2_000
"""A peer is asked again for blocks at most this often, whatever it signs."""
FOLLOW_STALL_MS = 10_000
"""A validator whose head has not moved for this long polls for blocks like a follower."""
CATCH_UP_EVIDENCE_MS = 10_000
"""How long a signed message for a later height keeps its sender a candidate to ask."""
BLOCK_TIME_AHEAD_MAX_MS = 10_000
"""How far ahead of this node's clock a proposed block's time may be. Block time is what
credentials expire against and break-glass windows are bounded by, so it is checked: it
must pass the parent's and not run ahead of the validators' clocks..."""
BLOCK_TIME_BEHIND_MAX_MS = 10_000
"""... and a value proposed fresh must not be older than this by this node's clock, so a
Byzantine proposer cannot stamp its block long ago (where expired roles still count)."""


class Ledger(Protocol):
    """What the replica reads of the ledger beside it (the node's LMDB store and mempool,
    or the simulation's memory)."""

    chain_id: str
    key: SigningKey
    app: Application

    @property
    def head(self) -> Head: ...

    def validators_at(self, height: int) -> ValidatorSet:
        """The set that validates the block at `height`: known up to head + 2, for a set
        change committed at H takes effect at H + 2."""
        ...

    def runs(self, height: int, public_key: bytes) -> str | None:
        """The organisation that runs validator `public_key` at `height`."""
        ...

    @property
    def head_time_ms(self) -> int:
        """The head block's time (the genesis time at height 0)."""
        ...

    def admitted(self, tx_hash: bytes) -> PendingTx | None:
        """A transaction this node admitted (verified, application-checked), by hash."""
        ...

    def block_entries(self, block_bytes: bytes) -> list[TxEntry]:
        """A block's transactions; raises MedledgerError when the block does not decode."""
        ...

    def any_committed(self, tx_ids: Sequence[bytes]) -> bool: ...

    def candidates(self, height: int, count_max: int, bytes_max: int) -> list[PendingTx]:
        """Admitted transactions for this node's next proposal at `height`, oldest first,
        as `Application.prepare_proposal` keeps them."""
        ...


# ---------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send to every peer. A proposal is sent after the transactions gossiped so far."""

    message: peer_pb2.PeerMessage


@dataclass(frozen=True, slots=True)
class Schedule:
    delay_ms: int
    timeout: Timeout


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit this decided block (with its certificate) durably, then call `next_height`."""

    height: int
    block: bytes
    commit: bytes
    entries: list[TxEntry] | None  # decoded already, when this node built or validated it


@dataclass(frozen=True, slots=True)
class FetchProposal:
    """Ask the proposer for the whole block of a compact proposal; answer with
    `proposal_fetched`."""

    proposal: Proposal


@dataclass(frozen=True, slots=True)
class FetchBlocks:
    """Ask `peer` (a validator's public key) for committed blocks from `from_height`;
    commit what extends the chain, then call `blocks_fetched`."""

    peer: bytes
    from_height: int


@dataclass(frozen=True, slots=True)
class ToEngine:
    """A verified message, for `step` (the node queues it for its consensus task)."""

    message: Proposal | Vote


@dataclass(frozen=True, slots=True)
class Reported:
    equivocation: Equivocation


Effect = Broadcast | Schedule | Commit | FetchProposal | FetchBlocks | ToEngine | Reported


# ---------------------------------------------------------------------- inputs to step


@dataclass(frozen=True, slots=True)
class Fired:
    timeout: Timeout


@dataclass(frozen=True, slots=True)
class NextHeight:
    after: int  # the height just committed


StepInput = Proposal | Vote | Fired | NextHeight


# ---------------------------------------------------------------------- wire codecs


def to_wire(
    message: Proposal | Vote, compact: tuple[bytes, list[bytes]] | None = None
) -> peer_pb2.PeerMessage:
    """`compact` (header, transaction hashes) sends a proposal without its block."""
    if isinstance(message, Proposal):
        header, tx_hashes = compact or (b"", [])
        return peer_pb2.PeerMessage(
            proposal=peer_pb2.ConsensusProposal(
                height=message.height,
                round=message.round,
                valid_round=message.valid_round,
                proposer=message.proposer,
                block=b"" if compact else message.value,
                block_hash=message.value_id,
                signature=message.signature,
                header=header,
                tx_hashes=tx_hashes,
            )
        )
    return peer_pb2.PeerMessage(
        vote=peer_pb2.ConsensusVote(
            type=int(message.type),  # type: ignore[arg-type]
            height=message.height,
            round=message.round,
            block_hash=message.value_id or b"",
            validator=message.validator,
            signature=message.signature,
        )
    )


def from_wire(message: peer_pb2.PeerMessage) -> Proposal | Vote | None:
    """The consensus message a peer sent, or None when it is not one or a field is out of
    range (these are checked before anything, the signature included, looks at them)."""
    kind = message.WhichOneof("body")
    if kind == "proposal":
        p = message.proposal
        if p.valid_round < -1 or len(p.block_hash) != HASH_BYTES:
            return None
        return Proposal(
            p.height, p.round, p.block_hash, p.block, p.valid_round, p.proposer, p.signature
        )
    if kind == "vote":
        v = message.vote
        if int(v.type) not in (int(VoteType.PREVOTE), int(VoteType.PRECOMMIT)):
            return None
        if len(v.block_hash) not in (0, HASH_BYTES):
            return None
        return Vote(
            VoteType(v.type), v.height, v.round, v.block_hash or None, v.validator, v.signature
        )
    return None


def commit_certificate(decision: Decide) -> bytes:
    return envelope_pb2.CommitCertificate(
        height=decision.height,
        round=decision.round,
        block_hash=decision.value_id,
        signatures=[
            envelope_pb2.CommitSignature(validator_index=v.validator, signature=v.signature)
            for v in sorted(decision.precommits, key=lambda v: v.validator)
        ],
    ).SerializeToString()


# ---------------------------------------------------------------------- the replica


class Replica:
    def __init__(
        self,
        ledger: Ledger,
        guard: SigningGuard,
        timeouts: TimeoutConfig,
        *,
        block_txs_max: int,
        block_tx_bytes_max: int,
    ) -> None:
        self.ledger = ledger
        self.guard = guard
        self.chain_id = ledger.chain_id
        self.block_txs_max = block_txs_max
        self.block_tx_bytes_max = block_tx_bytes_max
        height = ledger.head.height + 1
        powers, self.index = self._members(height)
        self.engine = Engine(powers, self.index, self, timeouts, height)
        last = guard.last
        if last is not None and last.lock is not None:
            self.engine.restore(last.lock)
        # This validator's last vote, if it was for the height it resumes at: peers that
        # missed it before the crash hear it again (it may complete their quorum).
        self._resume = last.vote if last is not None and last.height == self.engine.height else None
        self.now_ms = 0  # the time of the input being handled (block timestamps)
        self.sent: list[peer_pb2.PeerMessage] = []  # our signed messages of this height
        # Proposals of this height by block hash: the transactions as decoded (only for
        # blocks this node proposed or validated), the whole block (served to peers that
        # received it compact), and, for its own proposals, the compact form.
        self._entries: dict[bytes, list[TxEntry]] = {}
        self._blocks: dict[bytes, bytes] = {}
        self._block_times: dict[bytes, int] = {}  # block time of each value validated
        self._compact: dict[bytes, tuple[bytes, list[bytes]]] = {}
        self._fetching: set[bytes] = set()
        self._fetching_blocks = False
        # By validator key: indices change with the set.
        self._asked_at: dict[bytes, int] = {}  # peer -> when it was last asked for blocks
        # peer -> the latest height it signed past head + 1, and when (catch-up, readiness)
        self._signed_ahead: dict[bytes, tuple[int, int]] = {}
        self._followed = 0  # the turn of the next peer `follow` asks (round robin)
        self._head_seen = (-1, 0)  # the head `follow` last saw, and since when
        self.unbound_proposals = 0  # dropped: bytes that are not the block the id names
        self.foreign_messages = 0  # dropped: a validator's message on another's connection
        self.refused_by_guard = 0

    def _members(self, height: int) -> tuple[list[int], int | None]:
        """The set of `height`: its powers, and this validator's index (None when this
        node does not vote there: it follows the chain and signs nothing)."""
        members = self.ledger.validators_at(height).members()
        self.public_keys = [key for key, _ in members]
        key = self.ledger.key.public_key
        index = self.public_keys.index(key) if key in self.public_keys else None
        return [power for _, power in members], index

    def _enter(self, height: int) -> None:
        """Before the engine moves to `height`: that height's validator set."""
        powers, self.index = self._members(height)
        self.engine.set_validators(powers, self.index)

    @property
    def voting(self) -> bool:
        """Whether this node is a validator at the current height."""
        return self.index is not None

    # ------------------------------------------------------------------ inputs

    def start(self, now_ms: int) -> list[Effect]:
        self.now_ms = now_ms
        effects = self._process(self.engine.start())
        if self._resume is not None:
            effects += self._process([SendVote(self._resume)])
            self._resume = None
        return effects

    def receive(
        self, message: peer_pb2.PeerMessage, monotonic_ms: int, *, via: str | None = None
    ) -> list[Effect]:
        """A consensus message from the network, hostile until verified: it must decode,
        be for this height or a later one, name a validator other than this one, and carry
        that validator's signature; a proposal's bytes must be the block its signed id
        names. What passes comes out as `ToEngine`; nothing else from an unverified
        message changes any state. `monotonic_ms` paces catch-up (a monotonic clock: a
        wall clock stepped back would stall it)."""
        decoded = from_wire(message)
        if decoded is None or decoded.height < self.engine.height:
            return []  # unusable, or replayed from a decided height: not worth a verify
        head = self.ledger.head.height
        sender = self._verified_sender(decoded, head, via)
        if sender is None:
            return []
        effects: list[Effect] = []
        if decoded.height > head + 1:
            # Signed evidence that `sender` is past the next height, so it committed
            # blocks this node lacks. The unsigned `committed_height` of a message is
            # never trusted: anyone can write any number there.
            self._signed_ahead[sender] = (decoded.height, monotonic_ms)
            effects += self._next_fetch(monotonic_ms)
        if decoded.height > head + 2:
            return effects  # from a set this node cannot know yet: evidence only
        if isinstance(decoded, Proposal) and not decoded.value:
            if decoded.height <= head:
                return effects  # decided already
            rebuilt = self._resolve_compact(message.proposal)
            if rebuilt is None:
                if self._worth_fetching(decoded):
                    self._fetching.add(decoded.value_id)
                    effects.append(FetchProposal(decoded))
                return effects
            value, bound = rebuilt
            effects += self._bound(dataclasses.replace(decoded, value=value), bound=bound)
        elif isinstance(decoded, Proposal):
            effects += self._bound(decoded)
        else:
            effects.append(ToEngine(decoded))
        return effects

    def _verified_sender(
        self, decoded: Proposal | Vote, head: int, via: str | None
    ) -> bytes | None:
        """The key of the validator that signed `decoded`, if its signature verifies, it
        is not this node and (over mutual TLS) it came over a connection of the
        organisation that runs it. Indices name validators of the message's height; sets
        are known up to head + 2, and a message beyond is judged by the latest known
        set."""
        known = min(decoded.height, head + 2)
        keys = self.public_keys if known == self.engine.height else self._keys_at(known)
        sender = signer(decoded)
        if not 0 <= sender < len(keys) or keys[sender] == self.ledger.key.public_key:
            return None
        if not verify(keys[sender], sign_bytes(self.chain_id, decoded), decoded.signature):
            return None
        relayable = isinstance(decoded, Vote) and decoded.type == VoteType.PREVOTE
        if via is not None and not relayable and self.ledger.runs(known, keys[sender]) != via:
            # Its signature holds, but it came over another organisation's connection: a
            # member replaying a validator it does not run. Prevotes are exempt: every
            # validator relays those behind its valid value (`resend`, Algorithm 1's
            # gossip), and a signed prevote says the same whoever carries it.
            self.foreign_messages += 1
            return None
        return keys[sender]

    def _worth_fetching(self, proposal: Proposal) -> bool:
        """A compact proposal's block is fetched only for the current height, from that
        slot's proposer, within the rounds the engine would accept, and a few at a time:
        a validator signing compact proposals with unknown transactions must not make
        this node open connection after connection."""
        engine = self.engine
        return (
            proposal.value_id not in self._fetching
            and len(self._fetching) < PROPOSAL_FETCHES_MAX
            and proposal.height == engine.height
            and proposal.round <= engine.round + ROUNDS_AHEAD_MAX
            and proposal.proposer == engine.proposer(proposal.height, proposal.round)
        )

    def proposal_fetched(self, proposal: Proposal, block: bytes | None) -> list[Effect]:
        """The proposer's answer to a `FetchProposal` (None: it failed)."""
        self._fetching.discard(proposal.value_id)
        if block is None or proposal.height != self.engine.height:
            return []
        return self._bound(dataclasses.replace(proposal, value=block))

    def step(self, item: StepInput, now_ms: int) -> list[Effect]:
        """One input for the engine: a verified message, a timeout, or the next height.
        `now_ms` is wall-clock time (a block this node proposes carries it)."""
        self.now_ms = now_ms
        if isinstance(item, Proposal):
            return self._process(self.engine.on_proposal(item))
        if isinstance(item, Vote):
            return self._process(self.engine.on_vote(item))
        if isinstance(item, Fired):
            return self._process(self.engine.on_timeout(item.timeout))
        if not (self.engine.decided and self.engine.height == item.after):
            return []  # catch-up already moved the engine on
        self._new_height()
        self._enter(item.after + 1)
        return self._process(self.engine.advance())

    def blocks_fetched(self, committed: int, monotonic_ms: int, now_ms: int) -> list[Effect]:
        """After the shell committed `committed` blocks of what a `FetchBlocks` brought
        (perhaps none): the next fetch is chosen, and the engine jumps to the height after
        the new head."""
        self.now_ms = now_ms
        self._fetching_blocks = False
        effects = self._next_fetch(monotonic_ms)  # more to fetch if peers are seen ahead
        if committed:
            self._new_height()
            self._enter(self.ledger.head.height + 1)
            effects += self._process(self.engine.skip_to(self.ledger.head.height + 1))
        return effects

    def follow(self, monotonic_ms: int, peers: Sequence[bytes]) -> list[Effect]:
        """Asks `peers` (validator keys the shell can reach, preferred first) for blocks
        in turn, one fetch at a time, each at most every CATCH_UP_RETRY_MS, when this node
        cannot count on signed evidence: validators send to the validators of the next
        two heights, so a node in neither (one joining, or one removed) hears nothing,
        and one that stalled for FOLLOW_STALL_MS may have been left behind (removed while
        lagging, or cut off while the others moved on)."""
        head = self.ledger.head.height
        if self._head_seen[0] != head:
            self._head_seen = (head, monotonic_ms)
        key = self.ledger.key.public_key
        listened_to = self.voting and key in self._keys_at(head + 2)
        stalled = monotonic_ms - self._head_seen[1] >= FOLLOW_STALL_MS
        candidates = [peer for peer in peers if peer != key]
        if (listened_to and not stalled) or self._fetching_blocks or not candidates:
            return []
        for _ in candidates:
            peer = candidates[self._followed % len(candidates)]
            self._followed += 1
            if monotonic_ms - self._asked_at.get(peer, -CATCH_UP_RETRY_MS) >= CATCH_UP_RETRY_MS:
                self._asked_at[peer] = monotonic_ms
                self._fetching_blocks = True
                return [FetchBlocks(peer, head + 1)]
        return []

    def _keys_at(self, height: int) -> list[bytes]:
        return [key for key, _ in self.ledger.validators_at(height).members()]

    def resend(self) -> list[Effect]:
        """Our signed messages of this height again, and others' prevotes that made our
        valid value valid: the algorithm assumes gossip, the network drops."""
        effects: list[Effect] = [Broadcast(message) for message in self.sent]
        effects += [Broadcast(to_wire(vote)) for vote in self.engine.evidence()]
        return effects

    def blocks_behind(self, monotonic_ms: int) -> int:
        """How many blocks this node lacks by signed evidence of the last
        CATCH_UP_EVIDENCE_MS: a validator that signed a message of height h has
        committed h - 1. A height counts only once validators with more than a third of
        the power signed it or beyond, so at least one honest validator did: one
        Byzantine validator signing far ahead cannot make every node report itself
        behind. Unsigned claims (`committed_height`) are never counted."""
        head = self.ledger.head.height
        powers = dict(self.ledger.validators_at(head + 1).members())
        total = sum(powers.values())
        recent = sorted(
            (
                (height, powers.get(peer, 0))
                for peer, (height, seen) in self._signed_ahead.items()
                if monotonic_ms - seen < CATCH_UP_EVIDENCE_MS
            ),
            reverse=True,
        )
        vouched = 0
        for height, power in recent:
            vouched += power
            if 3 * vouched > total:
                return max(0, height - 1 - head)
        return 0

    def held_block(self, height: int, value_id: bytes) -> bytes | None:
        """A block of the current height this node proposed or validated."""
        if height != self.engine.height:
            return None
        return self._blocks.get(value_id)

    # ------------------------------------------------------------------ engine outputs

    def _process(self, outputs: list[Output]) -> list[Effect]:
        effects: list[Effect] = []
        pending = list(outputs)
        while pending:
            output = pending.pop(0)
            if isinstance(output, SendProposal | SendVote):
                message = output.proposal if isinstance(output, SendProposal) else output.vote
                signed = self._sign(message)
                if signed is None:
                    continue
                wire = self._to_wire(signed)
                self.sent.append(wire)
                effects.append(Broadcast(wire))
                # Our own message counts like anyone's.
                if isinstance(signed, Proposal):
                    pending[0:0] = self.engine.on_proposal(signed)
                else:
                    pending[0:0] = self.engine.on_vote(signed)
            elif isinstance(output, ScheduleTimeout):
                effects.append(Schedule(output.delay_ms, output.timeout))
            elif isinstance(output, Decide):
                effects.append(
                    Commit(
                        output.height,
                        output.value,
                        commit_certificate(output),
                        self._entries.get(output.value_id),
                    )
                )
            else:
                effects.append(Reported(output))
        return effects

    def _sign(self, message: Proposal | Vote) -> Proposal | Vote | None:
        to_sign = sign_bytes(self.chain_id, message)
        # The lock state goes to disk with the permission, before the signature exists:
        # a validator restarted after this vote resumes bound by the same lock.
        lock = self.engine.lock_state()
        vote = dataclasses.replace(message, signature=b"") if isinstance(message, Vote) else None
        if not self.guard.permit(
            message.height, message.round, guard_step(message), to_sign, lock=lock, vote=vote
        ):
            self.refused_by_guard += 1
            log.warning(
                "signing guard refused a %s at height %d round %d: this validator signed "
                "something else there already",
                type(message).__name__.lower(),
                message.height,
                message.round,
            )
            return None
        return with_signature(message, self.ledger.key.sign(to_sign))

    def _to_wire(self, message: Proposal | Vote) -> peer_pb2.PeerMessage:
        if isinstance(message, Proposal):
            return to_wire(message, self._compact.get(message.value_id))
        return to_wire(message)

    def _new_height(self) -> None:
        self.sent = []
        self._fetching.clear()  # an answer that comes after is dropped: no longer needed
        self._entries.clear()
        self._blocks.clear()
        self._block_times.clear()
        self._compact.clear()

    # ------------------------------------------------------------------ proposals

    def _bound(self, proposal: Proposal, *, bound: bool | None = None) -> list[Effect]:
        """The proposal for the engine only if its bytes are the block its signed id names
        (canonical bytes, header hash, and transactions matching the header's root): the
        signature covers only the id, so anyone who saw it could attach other bytes.
        `bound` is the verdict when the caller already checked it (a compact proposal)."""
        if bound is None:
            try:
                bound = block_id(proposal.value) == proposal.value_id
            except MedledgerError:
                bound = False
        if not bound:
            self.unbound_proposals += 1
            log.debug("dropped a proposal whose bytes are not the block its id names")
            return []
        return [ToEngine(proposal)]

    def _resolve_compact(self, proposal: peer_pb2.ConsensusProposal) -> tuple[bytes, bool] | None:
        """The block of a compact proposal, rebuilt from admitted transactions, and whether
        it is the block the signed id names; None when a transaction is missing. The
        transactions are this node's own canonical encodings, so binding needs only the
        header (its raw bytes must hash to the id: canonical, and the signed header) and
        the Merkle root of the encodings (the header's `tx_root`): cheaper than decoding
        the rebuilt block again."""
        held = self._blocks.get(proposal.block_hash)
        if held is not None:
            return held, True
        encoded = []
        for tx_hash in proposal.tx_hashes:
            pending = self.ledger.admitted(tx_hash)
            if pending is None:
                return None
            encoded.append(pending.encoded)
        header = proposal.header
        try:
            bound = (
                sha256(header) == proposal.block_hash
                and block_hash(header) == proposal.block_hash
                and merkle.root(encoded) == envelope_pb2.BlockHeader.FromString(header).tx_root
            )
        except (MedledgerError, ProtobufDecodeError):
            bound = False
        return encode_block(header, encoded), bound

    # ------------------------------------------------------------------ value source

    def get_value(self, height: int) -> tuple[bytes, bytes]:
        pending = self.ledger.candidates(height, self.block_txs_max, self.block_tx_bytes_max)
        proposed = propose_block(self.ledger, height, pending, self.now_ms)
        value_id = proposed.value_id
        self._entries[value_id] = list(pending)
        self._blocks[value_id] = proposed.value
        self._block_times[value_id] = proposed.time_ms
        self._compact[value_id] = (proposed.header, [p.tx_hash for p in pending])
        return value_id, proposed.value

    def valid(self, height: int, value_id: bytes, value: bytes) -> bool:
        """A proposal is valid if every transaction in it is well formed (shape checks
        before any storage read), none was committed before or appears twice, and Rust
        validation passes on it as the next block (signatures verified once per node:
        those already admitted here are skipped). Validation is total: whatever a
        Byzantine proposer puts in the bytes, the answer is a verdict, never an error
        escaping into the engine."""
        try:
            return self._valid(height, value_id, value)
        except Exception:  # a bug in validation must cost a nil prevote, not the node
            log.exception("validating a proposal at height %d failed; prevoting nil", height)
            return False

    def timely(self, height: int, value_id: bytes) -> bool:
        """A fresh proposal's block time is at most BLOCK_TIME_BEHIND_MAX_MS old (the
        engine asks after `valid`, which recorded the time)."""
        time_ms = self._block_times.get(value_id)
        if time_ms is not None and time_ms >= self.now_ms - BLOCK_TIME_BEHIND_MAX_MS:
            return True
        log.info(
            "untimely proposal at height %d: block time %s, clock %d", height, time_ms, self.now_ms
        )
        return False

    def _well_formed(
        self, height: int, value_id: bytes, value: bytes
    ) -> tuple[list[TxEntry], list[bytes]] | None:
        """The proposal's transactions, if each is well formed (stateless checks only: no
        storage read yet), and the ids of those this node has not admitted; None when
        one is malformed."""
        entries = self._entries.get(value_id) if self._blocks.get(value_id) == value else None
        if entries is None:
            try:
                entries = self.ledger.block_entries(value)
            except (MedledgerError, ProtobufDecodeError):
                return None
        invalid = self.ledger.app.process_proposal(height, entries)
        if invalid is not None:
            log.info("invalid proposal at height %d: %s", height, invalid)
            return None
        unadmitted = [e.tx_id for e in entries if self.ledger.admitted(e.tx_hash) is None]
        return entries, unadmitted

    def _valid(self, height: int, value_id: bytes, value: bytes) -> bool:
        head = self.ledger.head
        if height != head.height + 1:
            return False
        checked = self._well_formed(height, value_id, value)
        if checked is None:
            return False
        entries, unadmitted = checked
        # An admitted transaction is not committed (admission looked, and a commit takes
        # its transactions out of the mempool before the next proposal is judged): only
        # the others need a storage read.
        if self.ledger.any_committed(unadmitted):
            return False
        try:
            validated = validate_block(
                value,
                None,
                chain_id=self.chain_id,
                height=height,
                parent_hash=head.block_hash,
                validators=self.ledger.validators_at(height),
                next_validators=self.ledger.validators_at(height + 1),
                app_hash=head.app_hash,
                verified_tx_hashes=[e.tx_hash for e in entries if e.checked],
            )
        except MedledgerError as error:
            log.info("invalid proposal at height %d: %s", height, error)
            return False
        if validated.block_hash != value_id or not self._timely(height, validated.time_unix_ms):
            return False
        self._entries[value_id] = entries
        self._blocks[value_id] = value
        self._block_times[value_id] = validated.time_unix_ms
        return True

    def _timely(self, height: int, time_ms: int) -> bool:
        """A block's time must pass its parent's and not run ahead of this clock."""
        if self.ledger.head_time_ms < time_ms <= self.now_ms + BLOCK_TIME_AHEAD_MAX_MS:
            return True
        log.info(
            "invalid proposal at height %d: time %d is not after the parent's %d or runs "
            "ahead of this clock (%d)",
            height,
            time_ms,
            self.ledger.head_time_ms,
            self.now_ms,
        )
        return False

    # ------------------------------------------------------------------ catch-up

    def _next_fetch(self, now_ms: int) -> list[Effect]:
        """One fetch at a time, from the peer seen ahead (within CATCH_UP_EVIDENCE_MS)
        that was asked longest ago, none more often than every CATCH_UP_RETRY_MS: a
        Byzantine validator that signs far ahead and never answers cannot keep the honest
        ones from being asked."""
        if self._fetching_blocks:
            return []
        candidates = [
            peer
            for peer, (_, seen) in self._signed_ahead.items()
            if now_ms - seen < CATCH_UP_EVIDENCE_MS
            and now_ms - self._asked_at.get(peer, -CATCH_UP_RETRY_MS) >= CATCH_UP_RETRY_MS
        ]
        if not candidates:
            return []
        peer = min(candidates, key=lambda p: (self._asked_at.get(p, -math.inf), p))
        self._asked_at[peer] = now_ms
        self._fetching_blocks = True
        return [FetchBlocks(peer, self.ledger.head.height + 1)]
