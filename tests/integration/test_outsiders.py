"""A stranger on a validator's port, with real processes on 127.0.0.1: unsigned peer
messages change nothing (issue 15, case 4), oversized gossip is dropped (case 6), and a
Byzantine validator cannot starve a lagging one's catch-up."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from medledger.client import LedgerClient, TxBuilder
from medledger.config import Home
from medledger.consensus import Vote, VoteType
from medledger.consensus.messages import sign_bytes
from medledger.errors import Rejected
from medledger.keys import load_key
from medledger.node.consensus_driver import to_wire
from medledger.run.homes import free_base_port, init_home, init_network, network_homes
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.certs import load_identity, make_ca, make_node_certificate
from medledger.transport.credentials import TLS_CA_ENV, ClientTls, aio_channel, sync_channel
from medledger.wire.v1 import envelope_pb2, peer_pb2, peer_pb2_grpc, tx_pb2
from tests.integration.conftest import member_tls, peer_credentials, stop_all

CHAIN_ID = "outsiders-1"
VALIDATORS = 4


def height(address: str) -> int:
    with LedgerClient(address, timeout_s=10) as client:
        return int(client.status().height)


@contextlib.contextmanager
def validators(root: Path) -> Iterator[tuple[list[Home], list[NodeProcess | None]]]:
    """Four validator processes of a new network; whatever the list holds at the end
    is stopped (a test may stop or replace one). Clients trust its CAs."""
    init_network(root, CHAIN_ID, VALIDATORS, free_base_port(2 * VALIDATORS), 10**12)
    patch = pytest.MonkeyPatch()
    patch.setenv(TLS_CA_ENV, str(root / "consortium-ca.pem"))
    homes = network_homes(root, VALIDATORS)
    nodes: list[NodeProcess | None] = []
    try:
        for home in homes:
            nodes.append(start_node(home.root, home.load_config().listen))
        yield homes, nodes
    finally:
        patch.undo()
        stop_all(*nodes)


def running(nodes: list[NodeProcess | None], index: int) -> NodeProcess:
    node = nodes[index]
    assert node is not None
    return node


def test_an_unsigned_claim_to_be_far_ahead_starts_no_catch_up(tmp_path: Path) -> None:
    """A member (organisation 3's certificate: an outsider cannot even connect) names
    validator 3 as the sender of messages claiming a committed height of 2^63. Validator 3
    is frozen (SIGSTOP), so a catch-up from it would hang until its deadline, and without
    validator 0 the other two cannot commit. The chain goes on."""
    with validators(tmp_path) as (homes, nodes):
        first, second, frozen = running(nodes, 0), running(nodes, 1), running(nodes, 3)
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            start = height(second.address)

            def lies() -> Iterator[peer_pb2.PeerMessage]:
                for _ in range(200):
                    yield peer_pb2.PeerMessage(sender=3, committed_height=2**63)
                    yield peer_pb2.PeerMessage(
                        sender=3, committed_height=2**63, txs=peer_pb2.TxGossip()
                    )

            peer_port = homes[0].load_config().peer_listen
            with sync_channel(peer_port, member_tls(homes[3])) as channel:
                peer_pb2_grpc.PeerServiceStub(channel).Push(lies(), timeout=10)
            time.sleep(6)  # empty blocks come every second; a stall would show
            assert height(second.address) >= start + 3
            assert height(first.address) >= start + 3
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)


def test_a_gossip_batch_over_the_limit_is_dropped_whole(tmp_path: Path) -> None:
    """Issue 15, case 6: a member's gossip is capped before anything is decoded or
    verified (a Byzantine member may send any batch)."""
    with validators(tmp_path) as (homes, nodes):
        address = running(nodes, 0).address
        payer = load_key(homes[0].keys_dir / "client.json")
        builder = TxBuilder(payer, CHAIN_ID)
        limit = homes[0].load_config().submit_batch_txs_max
        with LedgerClient(address) as client:
            expiry = client.status().height + 500
        txs = [
            builder.transfer(to=payer.public_key, amount_micros=1, expiry_height=expiry)
            for _ in range(limit + 1)
        ]

        def gossip(batch: list[envelope_pb2.SignedTransaction]) -> Iterator[peer_pb2.PeerMessage]:
            yield peer_pb2.PeerMessage(sender=1, txs=peer_pb2.TxGossip(txs=batch))

        peer_port = homes[0].load_config().peer_listen
        with sync_channel(peer_port, member_tls(homes[1])) as channel:
            push = peer_pb2_grpc.PeerServiceStub(channel).Push
            push(gossip(txs), timeout=30)  # one over the limit: dropped whole
            with LedgerClient(address) as client:
                assert client.status().mempool_txs == 0
                push(gossip(txs[:10]), timeout=30)  # within it: admitted, then committed
                receipt = client.wait_for_commit(
                    tx_pb2.TransactionBody.FromString(txs[0].body).tx_id, timeout_s=30
                )
                assert receipt.status == tx_pb2.TX_STATUS_COMMITTED


class SilentValidator(peer_pb2_grpc.PeerServiceServicer):
    """A Byzantine validator's PeerService: takes everything, answers no block."""

    async def Push(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        async for _ in request_iterator:
            pass
        return peer_pb2.PushAck()

    async def GetBlocks(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        await asyncio.sleep(3600)
        yield peer_pb2.BlockWithCommit()

    async def GetProposal(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        await context.abort(grpc.StatusCode.NOT_FOUND, "block_hash: not held")


def test_a_validator_that_signs_far_ahead_and_serves_no_block_cannot_starve_catch_up(
    tmp_path: Path,
) -> None:
    """Validator 3 turns Byzantine: it signs votes for a height far ahead, so a validator
    that fell behind asks it for blocks, and it never answers. The one behind must still
    catch up from the honest ones, and the chain go on (found by the review)."""
    with validators(tmp_path) as (homes, nodes):
        addresses = [running(nodes, i).address for i in range(VALIDATORS)]
        peers = [home.load_config().peer_listen for home in homes]
        running(nodes, 0).stop()  # validator 0 falls behind while the others go on
        start = height(addresses[1])
        deadline = time.monotonic() + 60
        while height(addresses[1]) < start + 4:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        running(nodes, 3).kill()  # validator 3 becomes the silent Byzantine one
        frozen = height(addresses[1])
        byzantine_key = load_key(homes[3].validator_key)

        async def scenario() -> int:
            server = grpc.aio.server()
            peer_pb2_grpc.add_PeerServiceServicer_to_server(SilentValidator(), server)
            server.add_secure_port(peers[3], peer_credentials(homes[3]))
            await server.start()
            nodes[0] = await asyncio.to_thread(start_node, homes[0].root, addresses[0])

            async def far_ahead() -> AsyncIterator[peer_pb2.PeerMessage]:
                for n in range(600):
                    vote = Vote(VoteType.PREVOTE, 10**9 + n, 0, None, 3)
                    signature = byzantine_key.sign(sign_bytes(CHAIN_ID, vote))
                    yield to_wire(dataclasses.replace(vote, signature=signature))
                    await asyncio.sleep(0.05)

            async with aio_channel(peers[0], member_tls(homes[3])) as channel:
                push = peer_pb2_grpc.PeerServiceStub(channel).Push(far_ahead(), timeout=40)
                caught_up = 0
                for _ in range(300):  # up to 30 s
                    caught_up = await asyncio.to_thread(height, addresses[0])
                    if caught_up >= frozen:
                        break
                    await asyncio.sleep(0.1)
                push.cancel()
            await server.stop(0)
            return caught_up

        assert asyncio.run(scenario()) >= frozen
        # With validator 0 back, 0, 1 and 2 are a quorum again: the chain goes on.
        deadline = time.monotonic() + 60
        while height(addresses[1]) < frozen + 2:
            assert time.monotonic() < deadline, "the chain did not resume"
            time.sleep(0.2)


def _blocks(address: str, tls: ClientTls | None) -> str:
    """GetBlocks on a peer port: how many came, or the refusal's code."""
    with sync_channel(address, tls) as channel:
        try:
            stream = peer_pb2_grpc.PeerServiceStub(channel).GetBlocks(
                peer_pb2.GetBlocksRequest(from_height=1, count_max=2), timeout=5
            )
            return f"{len(list(stream))} blocks"
        except grpc.RpcError as error:
            return str(error.code().name)


def test_only_members_reach_the_peer_port_and_nobody_speaks_clear_text(tmp_path: Path) -> None:
    """Issue 17: the peer port admits only a certificate from a member organisation's
    CA, still valid; the client port speaks TLS only."""
    with validators(tmp_path) as (homes, nodes):
        peer_port = homes[0].load_config().peer_listen
        bundle = homes[0].consortium_ca.read_bytes()
        organisation = load_identity(homes[1].ca_key, homes[1].ca_certificate)
        stranger = make_node_certificate(make_ca("stranger"), "x", ["127.0.0.1:1"])
        expired = make_node_certificate(
            organisation,
            "old",
            ["127.0.0.1:1"],
            days=30,
            issued_at=datetime.now(UTC) - timedelta(days=60),
        )
        deadline = time.monotonic() + 30
        while height(running(nodes, 0).address) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert _blocks(peer_port, member_tls(homes[1])) == "2 blocks"
        for tls in (
            None,  # clear text
            ClientTls(bundle),  # no client certificate
            ClientTls(bundle, stranger),  # a CA no member holds
            ClientTls(bundle, expired),  # a member's, expired
        ):
            assert _blocks(peer_port, tls) == "UNAVAILABLE"
        with (
            LedgerClient(running(nodes, 0).address, timeout_s=5, tls=None) as plain,
            pytest.raises(Rejected) as refused,
        ):
            plain.status()
        assert refused.value.status == "UNAVAILABLE"


def test_a_node_run_insecure_speaks_clear_text(tmp_path: Path) -> None:
    """Clear text only where the operator says so (`--insecure`), with a warning."""
    home = Home(tmp_path / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0", insecure=True)
    node = start_node(home.root)
    try:
        with LedgerClient(node.address, timeout_s=10, tls=None) as client:
            assert client.status().chain_id == CHAIN_ID
    finally:
        node.stop()
    assert "clear text: --insecure" in (home.root / "node.log").read_text()
