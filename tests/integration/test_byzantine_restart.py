"""Issue 15, case 1, on four real processes: a validator SIGKILLed right after it
precommits, and restarted, keeps its lock while a Byzantine validator works to fork the
chain around it.

Validators 0 (A), 1 (B) and 2 (C) are real node processes; validator 3 (D), the
Byzantine one, is this test: a PeerService on D's configured address that hears every
honest message and answers with signed messages of its choosing. At height 3, D's slot:

- round 0: D proposes X to A and B only, and prevotes X to them; A and B prevote X, see
  three prevotes (A, B, D), lock on X and precommit it. C never sees X: it prevotes nil.
- A is frozen (SIGSTOP) as soon as its guard file records that precommit (it may have
  decided X: it cannot tell anyone now), and B is SIGKILLed as soon as its guard file
  records its own, then restarted on the same home.
- from then on D prevotes and precommits every value proposed, to everyone.

A B that forgot its lock proposes a fresh value in its round-2 slot, C and D prevote it,
and B and C decide a block that A (which may hold X) never will. A B that kept its lock
re-proposes X with its proof of lock, and the network decides X. Then A is thawed and
every honest validator must hold the same chain, none may have signed two votes for one
(height, round, step), and B may never have prevoted against its lock without a proof of
lock change (three prevotes for the other value in a round from its lock's on).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from medledger.block import assemble_block, block_hash
from medledger.client import LedgerClient
from medledger.consensus import Proposal, Vote, VoteType
from medledger.consensus.guard import STEP_PRECOMMIT, FileGuardStore, GuardFileError
from medledger.consensus.messages import sign_bytes, with_signature
from medledger.crypto import SigningKey
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.replica import from_wire, to_wire
from medledger.run.homes import free_base_port, init_network, network_homes
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.credentials import ClientTls, aio_channel
from medledger.wire.v1 import peer_pb2, peer_pb2_grpc
from tests.integration.conftest import member_tls, peer_credentials, stop_all, trust

CHAIN_ID = "byzantine-restart-1"
VALIDATORS = 4
A, B, C, D = 0, 1, 2, 3
HEIGHT = 3  # (HEIGHT + 0) % 4 == D: D proposes in round 0
TIMEOUT_S = 90.0
FAST_ROUNDS = {
    "timeout_propose_ms": 400,
    "timeout_propose_delta_ms": 100,
    "timeout_vote_ms": 200,
    "timeout_vote_delta_ms": 50,
    "resend_interval_ms": 200,
}


class ByzantineValidator(peer_pb2_grpc.PeerServiceServicer):
    """Validator D. Silent below HEIGHT (A, B and C decide alone); at HEIGHT it proposes
    X to A and B only in round 0 and prevotes it to them (see `round_zero` for the rest);
    in later rounds it votes nil, and then again for every value anyone proposes."""

    def __init__(
        self,
        key: SigningKey,
        genesis: Genesis,
        addresses: list[str],
        peers: list[str],
        tls: ClientTls,
    ) -> None:
        self.key = key
        self.genesis = genesis
        self.addresses = addresses  # client APIs
        self.peers = peers  # PeerServices, which D reaches with its organisation's certificate
        self.tls = tls
        self._channels: dict[int, grpc.aio.Channel] = {}
        self.pushes: set[asyncio.Task[None]] = set()
        self.x: tuple[bytes, bytes] | None = None  # (id, block)
        self.voted: set[tuple[int, bytes]] = set()  # (round, value) voted for
        self.heard: list[Vote] = []  # every honest signed vote
        self.told: dict[int, list[Vote]] = defaultdict(list)  # what D told each peer

    async def Push(  # noqa: N802
        self, request_iterator: AsyncIterator[peer_pb2.PeerMessage], context: Any
    ) -> peer_pb2.PushAck:
        async for message in request_iterator:
            decoded = from_wire(message)
            if decoded is None or decoded.height != HEIGHT:
                continue
            if isinstance(decoded, Vote):
                self.heard.append(decoded)
                if decoded.round == 0:
                    self.round_zero()
                else:
                    # Takes part in every later round (nil, then whatever is proposed):
                    # without it, two honest validators alone cannot move rounds on.
                    self.vote_for(decoded.round, b"", (A, B, C))
            elif decoded.round > 0:
                self.vote_for(decoded.round, decoded.value_id, (A, B, C))
        return peer_pb2.PushAck()

    async def GetProposal(  # noqa: N802
        self, request: peer_pb2.GetProposalRequest, context: Any
    ) -> peer_pb2.GetProposalResponse:
        if self.x is not None and request.block_hash == self.x[0]:
            return peer_pb2.GetProposalResponse(block=self.x[1])
        await context.abort(grpc.StatusCode.NOT_FOUND, "block_hash: not held")
        raise AssertionError("unreachable")

    async def GetBlocks(  # noqa: N802
        self, request: peer_pb2.GetBlocksRequest, context: Any
    ) -> AsyncIterator[peer_pb2.BlockWithCommit]:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "serves no block")
        yield peer_pb2.BlockWithCommit()

    async def propose_x(self) -> None:
        """Round 0 of HEIGHT: X, an empty block on C's head, to A and B only, sent as
        soon as A, B and C committed the height before (early messages wait in a buffer).
        Stamped then, X is fresh when they judge it: a proposal more than 10 s old is
        prevoted nil (`Replica.timely`), which a slow machine must not turn into a
        missed trap."""
        for index in (C, A, B):
            with LedgerClient(self.addresses[index], timeout_s=10) as client:
                while True:
                    status = await asyncio.to_thread(client.status)
                    if status.height >= HEIGHT - 1:
                        break
                    await asyncio.sleep(0.01)
            assert status.height == HEIGHT - 1, "D's slot passed before it could propose"
        block = assemble_block(
            chain_id=CHAIN_ID,
            height=HEIGHT,
            parent_hash=status.last_block_hash,
            txs=[],
            proposer=self.key.public_key,
            validators=self.genesis.validator_set(),
            next_validators=self.genesis.validator_set(),
            app_hash=status.app_hash,
            time_unix_ms=int(time.time() * 1000),
        )
        header = block.header.SerializeToString()
        value_id = block_hash(header)
        self.x = (value_id, block.SerializeToString())
        proposal = Proposal(HEIGHT, 0, value_id, self.x[1], -1, D)
        for peer in (A, B):
            self.send(peer, self.signed(proposal))
        self.vote_for(0, value_id, (A, B), precommit=False)

    def round_zero(self) -> None:
        """Round 0 as each peer must see it for the trap: A is told precommit X (with B's
        precommit it could decide X alone), B and C precommit nil, and C prevote nil."""
        if self.x is None or (0, b"round zero") in self.voted:
            return
        self.voted.add((0, b"round zero"))
        votes = [
            (A, Vote(VoteType.PRECOMMIT, HEIGHT, 0, self.x[0], D)),
            (B, Vote(VoteType.PRECOMMIT, HEIGHT, 0, None, D)),
            (C, Vote(VoteType.PREVOTE, HEIGHT, 0, None, D)),
            (C, Vote(VoteType.PRECOMMIT, HEIGHT, 0, None, D)),
        ]
        for peer, vote in votes:
            self.told[peer].append(vote)
            self.send(peer, self.signed(vote))

    def vote_for(
        self, round_: int, value_id: bytes, peers: tuple[int, ...], *, precommit: bool = True
    ) -> None:
        if (round_, value_id) in self.voted:
            return
        self.voted.add((round_, value_id))
        types = (VoteType.PREVOTE, VoteType.PRECOMMIT) if precommit else (VoteType.PREVOTE,)
        for peer in peers:
            for vote_type in types:
                vote = Vote(vote_type, HEIGHT, round_, value_id or None, D)
                self.told[peer].append(vote)
                self.send(peer, self.signed(vote))

    def signed(self, message: Proposal | Vote) -> bytes:
        signature = self.key.sign(sign_bytes(CHAIN_ID, message))
        wire = to_wire(with_signature(message, signature))
        wire.sender = D
        return wire.SerializeToString()

    def send(self, peer: int, message: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self.push(peer, message))
        self.pushes.add(task)
        task.add_done_callback(self.pushes.discard)

    async def push(self, peer: int, message: bytes) -> None:
        """One Push stream per message over one connection per peer (a TLS handshake per
        message would make X late), tried until it lands or D is done."""
        for _ in range(50):
            channel = self._channels.get(peer)
            if channel is None:
                channel = self._channels[peer] = aio_channel(self.peers[peer], self.tls)
            try:
                stub = peer_pb2_grpc.PeerServiceStub(channel)
                await stub.Push(iter([peer_pb2.PeerMessage.FromString(message)]), timeout=5)
                return
            except grpc.RpcError:
                del self._channels[peer]
                await channel.close()
                await asyncio.sleep(0.1)


def locked_precommit(signer_state: Path) -> bytes | None:
    """The value a validator's guard file says it precommitted, locked, at HEIGHT round 0."""
    try:
        record = FileGuardStore(signer_state).load()
    except GuardFileError:
        return None
    if record is None or record.position != (HEIGHT, 0, STEP_PRECOMMIT):
        return None
    if record.lock is None or record.lock.locked_round != 0:
        return None
    return record.lock.locked_id


def test_a_validator_killed_after_precommit_keeps_its_lock_against_a_byzantine_proposer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    genesis = init_network(tmp_path, CHAIN_ID, VALIDATORS, free_base_port(2 * VALIDATORS), 10**12)
    trust(monkeypatch, tmp_path / "consortium-ca.pem")
    homes = network_homes(tmp_path, VALIDATORS)
    for home in homes:
        # Short rounds: with A frozen and B restarting, rounds pass by timeout.
        config = json.loads(home.config.read_text())
        config.update(FAST_ROUNDS)
        home.config.write_text(json.dumps(config))
    addresses = [home.load_config().listen for home in homes]
    peers = [home.load_config().peer_listen for home in homes]
    byzantine = ByzantineValidator(
        load_key(homes[D].validator_key), genesis, addresses, peers, member_tls(homes[D])
    )
    nodes: list[NodeProcess | None] = [None] * 3
    faults: dict[str, bytes] = {}
    failure: list[BaseException] = []
    done = threading.Event()

    def saboteur() -> None:
        """Kills B the moment its guard file records its locked precommit (durable before
        the signature exists: it may or may not have left), and freezes A 20 ms after its
        own (time for its prevote, signed before, to leave: B's lock needs it; too soon
        for it to reach the next height). Then starts B again on the same home."""
        try:
            deadline = time.monotonic() + TIMEOUT_S
            a_locked_at: float | None = None
            a_value = b""
            while len(faults) < 2 and time.monotonic() < deadline and not done.is_set():
                b_node, a_node = nodes[B], nodes[A]
                if "B" not in faults and b_node is not None:
                    value = locked_precommit(homes[B].signer_state)
                    if value is not None:
                        os.kill(b_node.process.pid, signal.SIGKILL)
                        faults["B"] = value
                if "A" not in faults and a_node is not None:
                    if a_locked_at is None:
                        value = locked_precommit(homes[A].signer_state)
                        if value is not None:
                            a_locked_at, a_value = time.monotonic(), value
                    elif time.monotonic() - a_locked_at >= 0.02:
                        os.kill(a_node.process.pid, signal.SIGSTOP)
                        faults["A"] = a_value
                time.sleep(0.001)
            victim = nodes[B]
            if "B" in faults and victim is not None:
                victim.process.wait(timeout=10)
                time.sleep(0.5)
                nodes[B] = start_node(homes[B].root, addresses[B])
        except BaseException as error:  # reported by the test
            failure.append(error)

    def height_of(index: int) -> int:
        node = nodes[index]
        assert node is not None
        with LedgerClient(node.address, timeout_s=10) as client:
            return int(client.status().height)

    async def run() -> None:
        server = grpc.aio.server()
        peer_pb2_grpc.add_PeerServiceServicer_to_server(byzantine, server)
        server.add_secure_port(peers[D], peer_credentials(homes[D]))
        await server.start()
        try:
            for index in (A, B, C):
                nodes[index] = await asyncio.to_thread(
                    start_node, homes[index].root, addresses[index]
                )
            await byzantine.propose_x()
            sabotage = threading.Thread(target=saboteur)
            sabotage.start()
            await asyncio.to_thread(sabotage.join)
            assert not failure, failure
            assert set(faults) == {"A", "B"}, f"A and B never both locked at {HEIGHT}: {faults}"
            # B and C, with D's votes, must get past HEIGHT while A is frozen.
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                heights = await asyncio.to_thread(lambda: [height_of(B), height_of(C)])
                if min(heights) >= HEIGHT:
                    break
                await asyncio.sleep(0.2)
            frozen = nodes[A]
            assert frozen is not None
            os.kill(frozen.process.pid, signal.SIGCONT)
        finally:
            done.set()
            for task in list(byzantine.pushes):
                task.cancel()
            await server.stop(0)

    try:
        asyncio.run(run())
        # A thawed: every honest validator reaches one height past HEIGHT...
        target = HEIGHT + 2
        deadline = time.monotonic() + TIMEOUT_S
        while min(height_of(i) for i in (A, B, C)) < target and time.monotonic() < deadline:
            time.sleep(0.2)
        # ...holding one block per height (checked first: a fork also stalls the chain).
        reached = min(height_of(i) for i in (A, B, C))
        for height in range(1, reached + 1):
            hashes = set()
            for index in (A, B, C):
                node = nodes[index]
                assert node is not None
                with LedgerClient(node.address, timeout_s=10) as client:
                    hashes.add(client.get_block(height).block_hash)
            assert len(hashes) == 1, f"honest validators committed different blocks at {height}"
        assert_lock_respected(byzantine, faults["B"])
        assert reached >= target, f"honest validators stalled at height {reached}"
        assert byzantine.x is not None
        with LedgerClient(addresses[C], timeout_s=10) as client:
            assert client.get_block(HEIGHT).block_hash == byzantine.x[0]  # B's lock won
    finally:
        done.set()
        frozen = nodes[A]
        if frozen is not None and frozen.process.poll() is None:
            os.kill(frozen.process.pid, signal.SIGCONT)
        stop_all(*nodes)

    # No honest validator signed two different votes for one (height, round, step).
    signed: dict[tuple[int, int, int], set[bytes | None]] = defaultdict(set)
    for vote in byzantine.heard:
        signed[(vote.validator, vote.round, int(vote.type))].add(vote.value_id)
    assert all(len(values) == 1 for values in signed.values()), [
        (key, values) for key, values in signed.items() if len(values) > 1
    ]


def assert_lock_respected(byzantine: ByzantineValidator, locked_id: bytes) -> None:
    """B locked on `locked_id` in round 0 (its guard file said so when it was killed):
    each later prevote of B's for another value needs a proof of lock change, three
    prevotes for that value in one round from 0 on, before the prevote (line 28)."""
    prevotes: dict[tuple[int, bytes], set[int]] = defaultdict(set)
    for vote in [*byzantine.heard, *byzantine.told[B]]:
        if vote.type == VoteType.PREVOTE and vote.value_id is not None:
            prevotes[(vote.round, vote.value_id)].add(vote.validator)
    for vote in byzantine.heard:
        if (
            vote.validator == B
            and vote.type == VoteType.PREVOTE
            and vote.value_id not in (None, locked_id)
        ):
            released = any(len(prevotes[(r, vote.value_id)]) >= 3 for r in range(0, vote.round))
            assert released, f"B prevoted {vote} against its lock on {locked_id.hex()}"
