"""Runs the Tendermint engine for a validator node.

One task feeds the engine one input at a time (peer messages, timeouts, "start the next
height", "catch up"), so the engine needs no locks. Outgoing proposals and votes are
signed only after the signing guard has made the permission durable; a node's own signed
messages are fed back into its engine like anyone else's; its latest messages are re-sent
periodically because the algorithm assumes gossip. Decided blocks are committed through
the node's single commit path (Rust validation with the certificate, the application,
one LMDB write transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from medledger import merkle
from medledger.app.application import check_body
from medledger.block import assemble_block, block_hash, block_id, encode_block, validate_block
from medledger.client.sync import channel_options
from medledger.config import NodeConfig
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
from medledger.consensus.guard import SigningGuard
from medledger.consensus.messages import guard_step, sign_bytes, signer, with_signature
from medledger.crypto import sha256, verify
from medledger.errors import MedledgerError, Rejected
from medledger.node.ledger_node import LedgerNode, TxEntry, rejected_receipt
from medledger.node.mempool import FRAMING_BYTES
from medledger.node.peers import PeerLink
from medledger.wire.v1 import envelope_pb2, peer_pb2, peer_pb2_grpc

__all__ = ["ConsensusDriver"]

log = logging.getLogger(__name__)

INPUTS_MAX = 50_000
GOSSIP_INTERVAL_S = 0.02
GOSSIP_INLINE_TXS_MAX = 512
GOSSIP_INLINE_BYTES_MAX = 1024 * 1024
"""Gossip batches up to this size are verified on the event loop; larger ones (that
would stall it for tens of milliseconds) in a thread."""
CATCH_UP_BLOCKS_MAX = 100
CATCH_UP_BYTES_MAX = 64 * 1024 * 1024
CATCH_UP_TIMEOUT_S = 30.0
CATCH_UP_RETRY_S = 2.0
"""A peer is asked again for blocks at most this often, whatever it signs."""
CATCH_UP_IDLE_S = 5.0
"""A fetch ends when its next block takes longer than this."""
CATCH_UP_EVIDENCE_S = 10.0
"""How long a signed message for a later height keeps its sender a candidate to ask."""
FETCH_PROPOSAL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Inbound:
    message: Proposal | Vote


@dataclass(frozen=True)
class Fired:
    timeout: Timeout


@dataclass(frozen=True)
class NextHeight:
    after: int  # the height just committed


@dataclass(frozen=True)
class Fetched:
    """Committed blocks (with their certificates) a peer sent, for the loop to commit."""

    peer: int
    blocks: list[peer_pb2.BlockWithCommit]


Input = Inbound | Fired | NextHeight | Fetched


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
    kind = message.WhichOneof("body")
    if kind == "proposal":
        p = message.proposal
        return Proposal(
            p.height, p.round, p.block_hash, p.block, p.valid_round, p.proposer, p.signature
        )
    if kind == "vote":
        v = message.vote
        if int(v.type) not in (int(VoteType.PREVOTE), int(VoteType.PRECOMMIT)):
            return None
        return Vote(
            VoteType(v.type), v.height, v.round, v.block_hash or None, v.validator, v.signature
        )
    return None


class ConsensusDriver:
    def __init__(self, node: LedgerNode, config: NodeConfig, guard: SigningGuard) -> None:
        self.node = node
        self.config = config
        self.guard = guard
        self.chain_id = node.chain_id
        members = node.validators.members()
        self.public_keys = [key for key, _ in members]
        if len(config.validator_addresses) != len(members):
            raise ValueError("config.validator_addresses must list every validator's address")
        self.peers = {
            i: PeerLink(i, address, config.peer_queue_max)
            for i, address in enumerate(config.validator_addresses)
            if i != node.index
        }
        timeouts = TimeoutConfig(
            propose_ms=config.timeout_propose_ms,
            propose_delta_ms=config.timeout_propose_delta_ms,
            prevote_ms=config.timeout_vote_ms,
            prevote_delta_ms=config.timeout_vote_delta_ms,
            precommit_ms=config.timeout_vote_ms,
            precommit_delta_ms=config.timeout_vote_delta_ms,
        )
        self.engine = Engine(
            [power for _, power in members], node.index, self, timeouts, node.head.height + 1
        )
        last = guard.last
        if last is not None and last.lock is not None:
            self.engine.restore(last.lock)
        # This validator's last vote, if it was for the height it resumes at: peers that
        # missed it before the crash hear it again (it may complete their quorum).
        self._resume = last.vote if last is not None and last.height == self.engine.height else None
        self.inputs: asyncio.Queue[Input] = asyncio.Queue(INPUTS_MAX)
        self.sent: list[peer_pb2.PeerMessage] = []  # our signed messages of this height
        # Proposals of this height by block hash: the transactions as decoded (only for
        # blocks this node proposed or validated), the whole block (served to peers that
        # received it compact), and, for its own proposals, the compact form.
        self._entries: dict[bytes, list[TxEntry]] = {}
        self._blocks: dict[bytes, bytes] = {}
        self._compact: dict[bytes, tuple[bytes, list[bytes]]] = {}
        self._fetching: set[bytes] = set()
        self._gossip: list[envelope_pb2.SignedTransaction] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._fetching_blocks: asyncio.Task[None] | None = None
        self._asked_at: dict[int, float] = {}  # peer -> when it was last asked for blocks
        self._ahead: dict[int, float] = {}  # peer -> when it last signed a later height
        self.unbound_proposals = 0  # dropped: bytes that are not the block the id names
        self.dropped_gossip = 0  # gossip batches over the count limit
        node.on_admitted = self._queue_gossip

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        loop_tasks = {
            "consensus": self._run(),
            "consensus-resend": self._resend(),
            "tx-gossip": self._flush_gossip(),
        }
        self._tasks = [asyncio.create_task(c, name=name) for name, c in loop_tasks.items()]
        self._tasks += [
            asyncio.create_task(link.run(), name=f"peer-link-{index}")
            for index, link in self.peers.items()
        ]

    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-lived tasks: the consensus loop, resends, gossip, one per peer link."""
        return list(self._tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # A task that failed has been reported by the supervisor already.
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ inbound

    def _queue_gossip(self, txs: list[envelope_pb2.SignedTransaction]) -> None:
        self._gossip.extend(txs)

    async def receive_from_stream(self, message: peer_pb2.PeerMessage) -> None:
        """A message from a peer's Push stream, in stream order (a compact proposal comes
        after the gossip of its transactions). A large gossip batch is verified off the
        event loop; one over `submit_batch_txs_max` transactions is dropped whole: gossip
        comes from anyone who reaches the port until transport authentication (issue 17)."""
        if message.WhichOneof("body") != "txs":
            self.receive(message)
            return
        txs = list(message.txs.txs)
        if not txs or len(txs) > self.config.submit_batch_txs_max:
            self.dropped_gossip += 1
            return
        if len(txs) <= GOSSIP_INLINE_TXS_MAX and message.ByteSize() <= GOSSIP_INLINE_BYTES_MAX:
            # The usual flush (about 20 ms of transactions): a thread hand-off would cost
            # more than it frees (10% of committed tx/s in `bench cluster`).
            prepared = self.node.prepare(txs)
        else:
            prepared = await asyncio.to_thread(self.node.prepare, txs)
        self.node.admit_prepared(prepared, gossip=False)

    def receive(self, message: peer_pb2.PeerMessage) -> None:
        """A message from a peer: transactions are admitted; consensus messages are
        checked for a valid signature and queued for the engine."""
        if message.WhichOneof("body") == "txs":
            if len(message.txs.txs) <= self.config.submit_batch_txs_max:
                self.node.submit(message.txs.txs, gossip=False)
            return
        decoded = from_wire(message)
        if decoded is None:
            return
        sender = signer(decoded)
        if sender >= len(self.public_keys) or sender == self.node.index:
            return
        signed = sign_bytes(self.chain_id, decoded)
        if not verify(self.public_keys[sender], signed, decoded.signature):
            return
        if decoded.height > self.node.head.height + 1:
            # Signed evidence that `sender` is past the next height, so it committed
            # blocks this node lacks. The unsigned `committed_height` of a message is
            # never trusted: anyone can write any number there.
            self._catch_up_from(sender)
        if isinstance(decoded, Proposal) and not decoded.value:
            if decoded.height <= self.node.head.height:
                return  # decided already
            rebuilt = self._resolve_compact(message.proposal)
            if rebuilt is None:
                self._fetch_proposal(decoded)
                return
            value, bound = rebuilt
            self._offer_bound(dataclasses.replace(decoded, value=value), bound=bound)
        elif isinstance(decoded, Proposal):
            self._offer_bound(decoded)
        else:
            self._offer(Inbound(decoded))

    def _offer_bound(self, proposal: Proposal, *, bound: bool | None = None) -> None:
        """Hands a proposal to the engine only if its bytes are the block its signed id
        names (canonical bytes, header hash, and transactions matching the header's root):
        the signature covers only the id, so anyone who saw it could attach other bytes.
        `bound` is the verdict when the caller already checked it (a compact proposal)."""
        if bound is None:
            try:
                bound = block_id(proposal.value) == proposal.value_id
            except MedledgerError:
                bound = False
        if not bound:
            self.unbound_proposals += 1
            log.debug("dropped a proposal whose bytes are not the block its id names")
            return
        self._offer(Inbound(proposal))

    def _resolve_compact(self, proposal: peer_pb2.ConsensusProposal) -> tuple[bytes, bool] | None:
        """The block of a compact proposal, rebuilt from this node's mempool, and whether
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
            pending = self.node.mempool.by_hash(tx_hash)
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

    def _fetch_proposal(self, proposal: Proposal) -> None:
        """Asks the proposer for the whole block of a compact proposal (once at a time per
        block) and hands the proposal to the engine when it arrives."""
        if proposal.value_id in self._fetching:
            return
        self._fetching.add(proposal.value_id)

        async def fetch() -> None:
            try:
                address = self.config.validator_addresses[proposal.proposer]
                async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
                    response = await peer_pb2_grpc.PeerServiceStub(channel).GetProposal(
                        peer_pb2.GetProposalRequest(
                            height=proposal.height, block_hash=proposal.value_id
                        ),
                        timeout=FETCH_PROPOSAL_TIMEOUT_S,
                    )
                log.info(
                    "fetched the whole block of proposal %s from validator %d",
                    proposal.value_id.hex(),
                    proposal.proposer,
                )
                self._offer_bound(dataclasses.replace(proposal, value=response.block))
            except grpc.RpcError as error:
                log.info("fetching proposal %s failed: %s", proposal.value_id.hex(), error)
            finally:
                self._fetching.discard(proposal.value_id)

        self._spawn(fetch())

    def held_block(self, height: int, block_hash: bytes) -> bytes | None:
        """A block of the current height this node proposed or validated."""
        if height != self.engine.height:
            return None
        return self._blocks.get(block_hash)

    def _offer(self, item: Input) -> None:
        try:
            self.inputs.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("consensus input queue full; dropping %s", type(item).__name__)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        await self._handle(self.engine.start())
        if self._resume is not None:
            await self._handle([SendVote(self._resume)])
            self._resume = None
        while True:
            item = await self.inputs.get()
            if isinstance(item, Inbound):
                message = item.message
                if isinstance(message, Proposal):
                    outputs = self.engine.on_proposal(message)
                else:
                    outputs = self.engine.on_vote(message)
            elif isinstance(item, Fired):
                outputs = self.engine.on_timeout(item.timeout)
            elif isinstance(item, NextHeight):
                if not (self.engine.decided and self.engine.height == item.after):
                    continue  # catch-up already moved the engine on
                self.sent = []
                self._forget_proposals()
                outputs = self.engine.advance()
            else:
                outputs = await self._commit_fetched(item)
            await self._handle(outputs)

    async def _handle(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, SendProposal | SendVote):
                message = output.proposal if isinstance(output, SendProposal) else output.vote
                signed = self._sign(message)
                if signed is None:
                    continue
                wire = self._to_wire(signed)
                if isinstance(signed, Proposal):
                    # Gossip first: peers then hold every transaction of a compact proposal
                    # by the time it arrives on the same stream.
                    self._send_gossip()
                self.sent.append(wire)
                self._broadcast(wire)
                if isinstance(signed, Proposal):
                    await self._handle(self.engine.on_proposal(signed))
                else:
                    await self._handle(self.engine.on_vote(signed))
            elif isinstance(output, ScheduleTimeout):
                asyncio.get_running_loop().call_later(
                    output.delay_ms / 1000, self._offer, Fired(output.timeout)
                )
            elif isinstance(output, Decide):
                await self._commit(output)
            elif isinstance(output, Equivocation):
                log.warning("equivocation: %s then %s", output.first, output.second)

    def _to_wire(self, message: Proposal | Vote) -> peer_pb2.PeerMessage:
        if isinstance(message, Proposal):
            return to_wire(message, self._compact.get(message.value_id))
        return to_wire(message)

    def _forget_proposals(self) -> None:
        self._entries.clear()
        self._blocks.clear()
        self._compact.clear()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _sign(self, message: Proposal | Vote) -> Proposal | Vote | None:
        to_sign = sign_bytes(self.chain_id, message)
        step = guard_step(message)
        # The lock state goes to disk with the permission, before the signature exists:
        # a validator restarted after this vote resumes bound by the same lock.
        lock = self.engine.lock_state()
        vote = dataclasses.replace(message, signature=b"") if isinstance(message, Vote) else None
        if not self.guard.permit(
            message.height, message.round, step, to_sign, lock=lock, vote=vote
        ):
            log.warning("signing guard refused %s", message)
            return None
        return with_signature(message, self.node.key.sign(to_sign))

    def _broadcast(self, message: peer_pb2.PeerMessage) -> None:
        message.sender = self.node.index
        message.committed_height = self.node.head.height
        encoded = message.SerializeToString()  # once, whatever the number of peers
        for link in self.peers.values():
            link.offer(encoded)

    async def _commit(self, decision: Decide) -> None:
        commit = envelope_pb2.CommitCertificate(
            height=decision.height,
            round=decision.round,
            block_hash=decision.value_id,
            signatures=[
                envelope_pb2.CommitSignature(validator_index=v.validator, signature=v.signature)
                for v in sorted(decision.precommits, key=lambda v: v.validator)
            ],
        )
        entries = self._entries.get(decision.value_id)
        await self.node.commit_block(decision.value, commit.SerializeToString(), entries)
        self._spawn(self._next_height_after_pause(decision.height))

    async def _next_height_after_pause(self, height: int) -> None:
        """Lets the next block fill for one interval; with nothing to do, waits for the
        first transaction or the empty-block interval, whichever comes first."""
        await asyncio.sleep(self.config.block_interval_ms / 1000)
        if len(self.node.mempool) == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.node.mempool.not_empty.wait(), self.config.empty_block_interval_ms / 1000
                )
        self._offer(NextHeight(height))

    # -------------------------------------------------------------- value source

    def get_value(self, height: int) -> tuple[bytes, bytes]:
        head = self.node.head
        pending = []
        for candidate in self.node.mempool.peek(
            self.config.block_txs_max, self.config.block_tx_bytes_max
        ):
            if candidate.body.expiry_height < height:
                self.node.mempool.remove(candidate.tx_id)
                reason = (
                    f"expired: {candidate.body.expiry_height} is below the block height {height}"
                )
                rejected = Rejected("FAILED_PRECONDITION", "body.expiry_height", reason)
                candidate.resolve(rejected_receipt(rejected, candidate.tx_id, candidate.tx_hash))
            else:
                pending.append(candidate)
        block = assemble_block(
            chain_id=self.chain_id,
            height=height,
            parent_hash=head.block_hash,
            txs=[p.tx for p in pending],
            proposer=self.node.key.public_key,
            validators=self.node.validators,
            app_hash=head.app_hash,
            time_unix_ms=int(time.time() * 1000),
            leaves=[p.encoded for p in pending],
        )
        header = block.header.SerializeToString()
        value_id = block_hash(header)
        # The canonical encodings, not the transactions as clients sent them (which may
        # carry unknown fields): validation accepts only a canonical block.
        value = encode_block(header, [p.encoded for p in pending])
        self._entries[value_id] = [TxEntry.of(p) for p in pending]
        self._blocks[value_id] = value
        self._compact[value_id] = (header, [p.tx_hash for p in pending])
        return value_id, value

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

    def _well_formed(self, height: int, value_id: bytes, value: bytes) -> list[TxEntry] | None:
        """The proposal's transactions, if each is well formed (stateless checks only: no
        storage read yet); None otherwise."""
        entries = self._entries.get(value_id) if self._blocks.get(value_id) == value else None
        if entries is None:
            try:
                entries = self.node.block_entries(value)
            except (MedledgerError, ProtobufDecodeError):
                return None
        for index, entry in enumerate(entries):
            if self.node.mempool.by_hash(entry.tx_hash) is not None:
                continue  # admitted here: check_tx ran these checks already
            try:
                check_body(entry.body, self.chain_id, entry.signer)
            except Rejected as error:
                log.info("invalid proposal at height %d: txs[%d]: %s", height, index, error)
                return None
        return entries

    def _valid(self, height: int, value_id: bytes, value: bytes) -> bool:
        head = self.node.head
        if height != head.height + 1:
            return False
        entries = self._well_formed(height, value_id, value)
        if entries is None or not self._all_new([e.tx_id for e in entries]):
            return False
        try:
            validated = validate_block(
                value,
                None,
                chain_id=self.chain_id,
                height=height,
                parent_hash=head.block_hash,
                validators=self.node.validators,
                app_hash=head.app_hash,
                verified_tx_hashes=[
                    e.tx_hash for e in entries if self.node.known(e.tx_id, e.tx_hash)
                ],
            )
        except MedledgerError as error:
            log.info("invalid proposal at height %d: %s", height, error)
            return False
        if validated.block_hash != value_id:
            return False
        self._entries[value_id] = entries
        self._blocks[value_id] = value
        return True

    def _all_new(self, tx_ids: list[bytes]) -> bool:
        """No transaction id twice, and none committed before."""
        if len(set(tx_ids)) != len(tx_ids):
            return False
        with self.node.store.snapshot() as snapshot:
            return all(snapshot.get("txs", tx_id) is None for tx_id in tx_ids)

    # --------------------------------------------------------------- background

    async def _resend(self) -> None:
        while True:
            await asyncio.sleep(self.config.resend_interval_ms / 1000)
            for message in list(self.sent):
                self._broadcast(message)
            for vote in self.engine.evidence():  # others' signed prevotes, relayed
                self._broadcast(to_wire(vote))

    async def _flush_gossip(self) -> None:
        while True:
            await asyncio.sleep(GOSSIP_INTERVAL_S)
            self._send_gossip()

    def _send_gossip(self) -> None:
        if self._gossip:
            batch, self._gossip = self._gossip, []
            for start in range(0, len(batch), self.config.submit_batch_txs_max):
                chunk = batch[start : start + self.config.submit_batch_txs_max]
                self._broadcast(peer_pb2.PeerMessage(txs=peer_pb2.TxGossip(txs=chunk)))

    def _catch_up_from(self, peer: int) -> None:
        """`peer` signed a message for a height past ours: fetch the blocks this node
        misses, beside the consensus loop (which goes on voting meanwhile)."""
        if peer in self.peers:
            self._ahead[peer] = time.monotonic()
            self._next_fetch()

    def _next_fetch(self) -> None:
        """One fetch at a time, from the peer seen ahead (within CATCH_UP_EVIDENCE_S) that
        was asked longest ago, none more often than every CATCH_UP_RETRY_S: a Byzantine
        validator that signs far ahead and never answers cannot keep the honest ones from
        being asked."""
        if self._fetching_blocks is not None and not self._fetching_blocks.done():
            return
        now = time.monotonic()
        candidates = [
            peer
            for peer, seen in self._ahead.items()
            if now - seen < CATCH_UP_EVIDENCE_S
            and now - self._asked_at.get(peer, -CATCH_UP_RETRY_S) >= CATCH_UP_RETRY_S
        ]
        if not candidates:
            return
        peer = min(candidates, key=lambda p: (self._asked_at.get(p, -math.inf), p))
        self._asked_at[peer] = now
        self._fetching_blocks = asyncio.get_running_loop().create_task(self._fetch_blocks(peer))

    async def _fetch_blocks(self, peer: int) -> None:
        start = self.node.head.height
        blocks: list[peer_pb2.BlockWithCommit] = []
        size = 0
        try:
            address = self.config.validator_addresses[peer]
            async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
                stub = peer_pb2_grpc.PeerServiceStub(channel)
                request = peer_pb2.GetBlocksRequest(
                    from_height=start + 1, count_max=CATCH_UP_BLOCKS_MAX
                )
                call = stub.GetBlocks(request, timeout=CATCH_UP_TIMEOUT_S)
                # Each block must come within CATCH_UP_IDLE_S, and no more than asked.
                while len(blocks) < CATCH_UP_BLOCKS_MAX and size <= CATCH_UP_BYTES_MAX:
                    item = await asyncio.wait_for(call.read(), CATCH_UP_IDLE_S)
                    if not isinstance(item, peer_pb2.BlockWithCommit):
                        break  # grpc.aio.EOF: the peer sent all it has
                    blocks.append(item)
                    size += item.ByteSize() + FRAMING_BYTES
                call.cancel()
        except (grpc.RpcError, TimeoutError) as error:
            log.warning("fetching blocks from peer %d failed: %r", peer, error)
        if blocks:
            self._offer(Fetched(peer, blocks))
        else:
            # Nothing from this one: another peer seen ahead is asked next, at once.
            asyncio.get_running_loop().call_soon(self._next_fetch)

    async def _commit_fetched(self, fetched: Fetched) -> list[Output]:
        """Commits fetched blocks that extend this node's chain (each validated with its
        certificate against the genesis validators), then moves the engine on."""
        start = self.node.head.height
        for item in fetched.blocks:
            try:
                height = envelope_pb2.CommitCertificate.FromString(item.commit).height
                if height <= self.node.head.height:
                    continue  # committed meanwhile by consensus
                await self.node.commit_block(item.block, item.commit)
            except (MedledgerError, ProtobufDecodeError) as error:
                log.warning("a block from peer %d does not commit: %s", fetched.peer, error)
                break
        self._next_fetch()  # more to fetch if peers are still seen ahead
        if self.node.head.height == start:
            return []
        log.info("caught up from height %d to %d", start, self.node.head.height)
        self.sent = []
        self._forget_proposals()
        return self.engine.skip_to(self.node.head.height + 1)
