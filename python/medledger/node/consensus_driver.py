"""The asyncio/gRPC shell around a validator's consensus replica.

The replica (`medledger.node.replica`) holds everything consensus decides; this shell
does what it cannot: sockets (peer links, block and proposal fetches), timers, the
durable commit through the node's single commit path, and tx gossip. One task feeds the
replica its engine inputs one at a time (verified peer messages, timeouts, "start the next
height", fetched blocks), so it needs no locks; peer messages are decoded and verified
before they are queued, so an outsider's junk never takes a queue slot. The node's latest
messages are re-sent periodically because the algorithm assumes gossip.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from medledger.config import NodeConfig
from medledger.consensus import Engine, Proposal, TimeoutConfig
from medledger.consensus.guard import SigningGuard
from medledger.errors import MedledgerError
from medledger.limits import (
    CATCH_UP_BLOCKS_MAX,
    CATCH_UP_BYTES_MAX,
    FRAMING_BYTES,
    GOSSIP_INLINE_BYTES_MAX,
    GOSSIP_INLINE_TXS_MAX,
    INPUTS_MAX,
    TX_BYTES_MAX,
)
from medledger.metrics import CATCH_UP_RUNS, EQUIVOCATIONS
from medledger.node.ledger_node import LedgerNode
from medledger.node.peers import PeerLink
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
    StepInput,
    ToEngine,
    to_wire,
)
from medledger.transport.credentials import ClientTls, PeerTrust, aio_channel
from medledger.transport.grpc_common import channel_options
from medledger.wire.v1 import envelope_pb2, peer_pb2, peer_pb2_grpc

__all__ = ["ConsensusDriver", "gossip_chunks", "to_wire"]

log = logging.getLogger(__name__)

# The maxima (INPUTS_MAX, GOSSIP_INLINE_*, CATCH_UP_*) are in medledger.limits.
GOSSIP_INTERVAL_S = 0.02
CATCH_UP_TIMEOUT_S = 30.0
CATCH_UP_IDLE_S = 5.0
"""A fetch ends when its next block takes longer than this."""
FETCH_PROPOSAL_TIMEOUT_S = 5.0
FOLLOW_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Fetched:
    """Committed blocks (with their certificates) a peer sent, for the loop to commit."""

    peer: bytes
    blocks: list[peer_pb2.BlockWithCommit]


@dataclass(frozen=True)
class ProposalArrived:
    """The proposer's answer to a compact proposal's fetch (None: the fetch failed)."""

    proposal: Proposal
    block: bytes | None


Input = StepInput | Fetched | ProposalArrived


def gossip_chunks(
    txs: Sequence[envelope_pb2.SignedTransaction], count_max: int, bytes_max: int
) -> Iterator[Sequence[envelope_pb2.SignedTransaction]]:
    """`txs` in order, in gossip messages of at most `count_max` transactions (what a
    peer verifies in one batch) and `bytes_max` bytes of them, framed (a block's worth:
    with its headroom the message fits the peers' message limit, which a count alone
    does not ensure: 4,096 transactions of TX_BYTES_MAX are 256 MiB)."""
    for start in range(0, len(txs), count_max):
        chunk = txs[start : start + count_max]
        if len(chunk) * (TX_BYTES_MAX + FRAMING_BYTES) <= bytes_max:
            yield chunk  # fits whatever the sizes (at most TX_BYTES_MAX each)
            continue
        sizes = list(map(envelope_pb2.SignedTransaction.ByteSize, chunk))  # ~0.6 µs each
        if sum(sizes) + len(chunk) * FRAMING_BYTES <= bytes_max:
            yield chunk
            continue
        first, size = 0, 0
        for i, tx_bytes in enumerate(sizes):
            if i > first and size + tx_bytes + FRAMING_BYTES > bytes_max:
                yield chunk[first:i]
                first, size = i, 0
            size += tx_bytes + FRAMING_BYTES
        yield chunk[first:]


def now_ms() -> int:
    """Wall-clock time: what a proposed block carries."""
    return int(time.time() * 1000)


def monotonic_ms() -> int:
    """What paces catch-up: a wall clock stepped back must not stall it."""
    return int(time.monotonic() * 1000)


class Inputs:
    """The consensus task's inputs in two lanes. Peer messages (verified, but a validator
    can send many, and anyone can replay them) are bounded and dropped when full; this
    node's own inputs (timeouts, the next height, fetch results: a handful at a time by
    construction) are never dropped, for losing one would stall consensus or catch-up."""

    def __init__(self, peer_messages_max: int) -> None:
        self._own: collections.deque[Input] = collections.deque()
        self._peers: collections.deque[Input] = collections.deque()
        self._peers_max = peer_messages_max
        self._ready = asyncio.Event()

    def offer_peer(self, item: Input) -> bool:
        if len(self._peers) >= self._peers_max:
            return False
        self._peers.append(item)
        self._ready.set()
        return True

    def offer_own(self, item: Input) -> None:
        self._own.append(item)
        self._ready.set()

    def qsize(self) -> int:
        return len(self._own) + len(self._peers)

    def empty(self) -> bool:
        return self.qsize() == 0

    async def get(self) -> Input:
        while self.empty():
            self._ready.clear()
            await self._ready.wait()
        return self._own.popleft() if self._own else self._peers.popleft()


class ConsensusDriver:
    def __init__(
        self,
        node: LedgerNode,
        config: NodeConfig,
        guard: SigningGuard,
        trust: PeerTrust | None = None,
    ) -> None:
        """`trust`: this node's certificate and the member CAs, for mutual TLS with its
        peers (None: clear text)."""
        self.node = node
        self.config = config
        self.guard = guard
        self.trust = trust
        if len(config.validator_addresses) != len(node.genesis.validators):
            raise ValueError(
                "config.validator_addresses must list every genesis validator's address"
            )
        # Genesis validators' addresses come from the config; validators added later
        # bring theirs with the governance change that adds them.
        self._genesis_addresses = {
            v.public_key: address
            for v, address in zip(node.genesis.validators, config.validator_addresses, strict=True)
        }
        self.peers: dict[bytes, PeerLink] = {}  # by validator key
        self._peers_changed = asyncio.Event()
        timeouts = TimeoutConfig(
            propose_ms=config.timeout_propose_ms,
            propose_delta_ms=config.timeout_propose_delta_ms,
            prevote_ms=config.timeout_vote_ms,
            prevote_delta_ms=config.timeout_vote_delta_ms,
            precommit_ms=config.timeout_vote_ms,
            precommit_delta_ms=config.timeout_vote_delta_ms,
        )
        self.replica = Replica(
            node,
            guard,
            timeouts,
            block_txs_max=config.block_txs_max,
            block_tx_bytes_max=config.block_tx_bytes_max,
        )
        self.inputs = Inputs(INPUTS_MAX)
        self._gossip: list[envelope_pb2.SignedTransaction] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped_gossip = 0  # gossip batches over the count limit
        node.on_admitted = self._queue_gossip

    @property
    def engine(self) -> Engine:
        return self.replica.engine

    @property
    def unbound_proposals(self) -> int:
        return self.replica.unbound_proposals

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._relink()  # before the first message is broadcast
        loop_tasks = {
            "consensus": self._run(),
            "consensus-resend": self._resend(),
            "tx-gossip": self._flush_gossip(),
            "peer-links": self._keep_links(),
            "follow": self._follow(),
        }
        self._tasks = [asyncio.create_task(c, name=name) for name, c in loop_tasks.items()]

    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-lived tasks: the consensus loop, resends, gossip, the peer links,
        following the chain while this node is no validator."""
        return list(self._tasks)

    @property
    def public_keys(self) -> list[bytes]:
        """The validators of the current height, by index."""
        return self.replica.public_keys

    def reachable_power(self) -> tuple[int, int]:
        """(voting power this node reaches, total) at the next height: its own, if it
        votes, and that of each validator whose peer link is connected now."""
        members = self.node.validators_at(self.node.head.height + 1).members()
        me = self.node.key.public_key
        reached = {key for key, link in self.peers.items() if link.reachable}
        power = sum(p for key, p in members if key == me or key in reached)
        return power, sum(p for _, p in members)

    def blocks_behind(self) -> int:
        return self.replica.blocks_behind(monotonic_ms())

    def client_tls(self) -> ClientTls | None:
        return None if self.trust is None else self.trust.client()

    def address_of(self, public_key: bytes) -> str | None:
        return self.node.schedule.addresses().get(public_key) or self._genesis_addresses.get(
            public_key
        )

    def _wanted_peers(self) -> dict[bytes, str]:
        """The validators of the next two heights (what a committed block decided), but
        this node: those that vote on what this node proposes or relays."""
        head = self.node.head.height
        wanted: dict[bytes, str] = {}
        for height in (head + 1, head + 2):
            for key, _ in self.node.validators_at(height).members():
                address = self.address_of(key)
                if key != self.node.key.public_key and address is not None:
                    wanted[key] = address
        return wanted

    def _relink(self) -> None:
        """`peers` becomes one link per peer in `_wanted_peers`: links to validators that
        joined are made, links to those that left are dropped. Messages offered to a new
        link wait in its queue until its task connects."""
        wanted = self._wanted_peers()
        for key in [k for k, link in self.peers.items() if wanted.get(k) != link.address]:
            del self.peers[key]
        for key, address in wanted.items():
            if key not in self.peers:
                self.peers[key] = PeerLink(
                    key.hex()[:16], address, self.config.peer_queue_max, self.client_tls
                )

    async def _keep_links(self) -> None:
        """Runs each link of `peers`, relinking after each block that may change the sets
        (a dropped link's task is cancelled). A link that ends on its own ends this task
        (and the node, loudly)."""
        running: dict[PeerLink, asyncio.Task[None]] = {}
        try:
            while True:
                self._peers_changed.clear()
                self._relink()
                current = set(self.peers.values())
                for link in [link for link in running if link not in current]:
                    running.pop(link).cancel()
                for link in current - running.keys():
                    running[link] = asyncio.create_task(link.run(), name=f"peer-link-{link.name}")
                changed = asyncio.create_task(self._peers_changed.wait())
                done, _ = await asyncio.wait(
                    [changed, *running.values()], return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                for task in done:
                    if task is not changed:
                        raise RuntimeError(f"{task.get_name()} ended") from task.exception()
        finally:
            for task in running.values():
                task.cancel()

    async def _follow(self) -> None:
        """Asks validators for blocks when this node hears no signed evidence (see
        `Replica.follow`): those of the next height first, then every other validator
        the chain has named with an address."""
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            self._start_io(self.replica.follow(monotonic_ms(), self._follow_peers()))

    def _follow_peers(self) -> list[bytes]:
        current = [key for key, _ in self.node.validators_at(self.node.head.height + 1).members()]
        known = [*self._genesis_addresses, *self.node.schedule.addresses()]
        me = self.node.key.public_key
        peers = [key for key in current if key != me and self.address_of(key) is not None]
        return peers + [key for key in dict.fromkeys(known) if key not in peers and key != me]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # A task that failed has been reported by the supervisor already.
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ inbound

    def _queue_gossip(self, txs: list[envelope_pb2.SignedTransaction]) -> None:
        self._gossip.extend(txs)

    async def receive_from_stream(
        self, message: peer_pb2.PeerMessage, *, via: str | None = None
    ) -> None:
        """A message from a peer's Push stream, in stream order (a compact proposal comes
        after the gossip of its transactions), over a connection of member organisation
        `via` (None: clear text). A large gossip batch is verified off the event loop; one
        over `submit_batch_txs_max` transactions is dropped whole."""
        if message.WhichOneof("body") != "txs":
            self.receive(message, via=via)
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

    def receive(self, message: peer_pb2.PeerMessage, *, via: str | None = None) -> None:
        """A message from a peer: transactions are admitted; consensus messages go to the
        replica, which verifies them (and, with `via`, that the connection's
        organisation runs their signer) before anything is queued for the engine."""
        if message.WhichOneof("body") == "txs":
            if len(message.txs.txs) <= self.config.submit_batch_txs_max:
                self.node.submit(message.txs.txs, gossip=False)
            return
        self._start_io(self.replica.receive(message, monotonic_ms(), via=via))

    def held_block(self, height: int, block_hash: bytes) -> bytes | None:
        """A block of the current height this node proposed or validated."""
        return self.replica.held_block(height, block_hash)

    def _offer(self, item: Input) -> None:
        """This node's own input (a timeout, the next height, a fetch's result)."""
        self.inputs.offer_own(item)

    def _offer_peer_message(self, item: Input) -> None:
        if not self.inputs.offer_peer(item):
            log.warning("consensus input queue full; dropping a peer's %s", type(item).__name__)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        await self._execute(self.replica.start(now_ms()))
        while True:
            item = await self.inputs.get()
            if isinstance(item, Fetched):
                committed = await self._commit_fetched(item)
                effects = self.replica.blocks_fetched(committed, monotonic_ms(), now_ms())
            elif isinstance(item, ProposalArrived):
                effects = self.replica.proposal_fetched(item.proposal, item.block)
            else:
                effects = self.replica.step(item, now_ms())
            await self._execute(effects)

    async def _execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Broadcast):
                if effect.message.WhichOneof("body") == "proposal":
                    # Gossip first: peers then hold every transaction of a compact proposal
                    # by the time it arrives on the same stream.
                    self._send_gossip()
                self._broadcast(effect.message)
            elif isinstance(effect, Schedule):
                asyncio.get_running_loop().call_later(
                    effect.delay_ms / 1000, self._offer, Fired(effect.timeout)
                )
            elif isinstance(effect, Commit):
                await self.node.commit_block(effect.block, effect.commit, effect.entries)
                self._peers_changed.set()
                self._spawn(self._next_height_after_pause(effect.height))
            elif isinstance(effect, Reported):
                EQUIVOCATIONS.inc()
                first = effect.equivocation.first
                log.warning(
                    "equivocation by validator %d at height %d round %d (a %s)",
                    first.proposer if isinstance(first, Proposal) else first.validator,
                    first.height,
                    first.round,
                    type(first).__name__.lower(),
                )
            else:
                self._start_io([effect])

    def _start_io(self, effects: list[Effect]) -> None:
        """Effects of a peer message, handled where it arrived (not in the loop)."""
        for effect in effects:
            if isinstance(effect, ToEngine):
                self._offer_peer_message(effect.message)
            elif isinstance(effect, FetchProposal):
                self._spawn(self._fetch_proposal(effect.proposal))
            elif isinstance(effect, FetchBlocks):
                self._spawn(self._fetch_blocks(effect.peer, effect.from_height))
            else:
                raise AssertionError(f"a peer message cannot cause {effect}")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _broadcast(self, message: peer_pb2.PeerMessage) -> None:
        message.sender = self.replica.index if self.replica.index is not None else 0
        message.committed_height = self.node.head.height
        encoded = message.SerializeToString()  # once, whatever the number of peers
        for link in self.peers.values():
            link.offer(encoded)

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

    # --------------------------------------------------------------- fetches

    async def _fetch_proposal(self, proposal: Proposal) -> None:
        """Asks the proposer for the whole block of a compact proposal."""
        block = None
        try:
            address = self.address_of(self.public_keys[proposal.proposer])
            if address is None:
                raise LookupError(f"no address for validator {proposal.proposer}")
            async with aio_channel(address, self.client_tls(), channel_options()) as channel:
                response = await peer_pb2_grpc.PeerServiceStub(channel).GetProposal(
                    peer_pb2.GetProposalRequest(
                        height=proposal.height, block_hash=proposal.value_id
                    ),
                    timeout=FETCH_PROPOSAL_TIMEOUT_S,
                )
            block = response.block
            log.info(
                "fetched the whole block of proposal %s from validator %d",
                proposal.value_id.hex(),
                proposal.proposer,
            )
        except (grpc.RpcError, LookupError, IndexError) as error:
            log.info("fetching proposal %s failed: %s", proposal.value_id.hex(), error)
        self._offer(ProposalArrived(proposal, block))

    async def _fetch_blocks(self, peer: bytes, from_height: int) -> None:
        CATCH_UP_RUNS.inc()
        blocks: list[peer_pb2.BlockWithCommit] = []
        size = 0
        try:
            address = self.address_of(peer)
            if address is None:
                raise LookupError(f"no address for validator {peer.hex()}")
            async with aio_channel(address, self.client_tls(), channel_options()) as channel:
                stub = peer_pb2_grpc.PeerServiceStub(channel)
                request = peer_pb2.GetBlocksRequest(
                    from_height=from_height, count_max=CATCH_UP_BLOCKS_MAX
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
        except (grpc.RpcError, TimeoutError, LookupError) as error:
            log.warning("fetching blocks from peer %s failed: %r", peer.hex()[:16], error)
        # Even with nothing: the replica then asks another peer seen ahead, at once.
        self._offer(Fetched(peer, blocks))

    async def _commit_fetched(self, fetched: Fetched) -> int:
        """Commits fetched blocks that extend this node's chain (each validated with its
        certificate against the validators of its height); returns how many."""
        start = self.node.head.height
        for item in fetched.blocks:
            try:
                height = envelope_pb2.CommitCertificate.FromString(item.commit).height
                if height <= self.node.head.height:
                    continue  # committed meanwhile by consensus
                await self.node.commit_block(item.block, item.commit)
            except (MedledgerError, ProtobufDecodeError) as error:
                log.warning(
                    "a block from peer %s does not commit: %s", fetched.peer.hex()[:16], error
                )
                break
        committed = self.node.head.height - start
        if committed:
            self._peers_changed.set()
            log.info("caught up from height %d to %d", start, self.node.head.height)
        return committed

    # --------------------------------------------------------------- background

    async def _resend(self) -> None:
        while True:
            await asyncio.sleep(self.config.resend_interval_ms / 1000)
            for effect in self.replica.resend():
                if isinstance(effect, Broadcast):
                    self._broadcast(effect.message)

    async def _flush_gossip(self) -> None:
        while True:
            await asyncio.sleep(GOSSIP_INTERVAL_S)
            self._send_gossip()

    def _send_gossip(self) -> None:
        if self._gossip:
            batch, self._gossip = self._gossip, []
            count_max, bytes_max = self.config.submit_batch_txs_max, self.config.block_tx_bytes_max
            for chunk in gossip_chunks(batch, count_max, bytes_max):
                self._broadcast(peer_pb2.PeerMessage(txs=peer_pb2.TxGossip(txs=chunk)))
