"""A stranger on a validator's port, with real processes on 127.0.0.1: unsigned peer
messages change nothing (issue 15, case 4)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from medledger.client import LedgerClient
from medledger.network import free_base_port, init_network, network_homes
from medledger.node.launcher import NodeProcess, start_node
from medledger.wire.v1 import peer_pb2, peer_pb2_grpc
from tests.integration.conftest import stop_all

CHAIN_ID = "outsiders-1"
VALIDATORS = 4


def height(address: str) -> int:
    with LedgerClient(address, timeout_s=10) as client:
        return int(client.status().height)


def test_an_unsigned_claim_to_be_far_ahead_starts_no_catch_up(tmp_path: Path) -> None:
    """An outsider names validator 3 as the sender of messages claiming a committed height
    of 2^63. Validator 3 is frozen (SIGSTOP), so a catch-up from it would hang until its
    deadline, and without validator 0 the other two cannot commit. The chain goes on."""
    init_network(tmp_path, CHAIN_ID, VALIDATORS, free_base_port(VALIDATORS), 10**12)
    homes = network_homes(tmp_path, VALIDATORS)
    nodes: list[NodeProcess] = []
    try:
        for home in homes:
            nodes.append(start_node(home.root, home.load_config().listen))
        os.kill(nodes[3].process.pid, signal.SIGSTOP)
        try:
            start = height(nodes[1].address)

            def lies() -> Iterator[peer_pb2.PeerMessage]:
                for _ in range(200):
                    yield peer_pb2.PeerMessage(sender=3, committed_height=2**63)
                    yield peer_pb2.PeerMessage(
                        sender=3, committed_height=2**63, txs=peer_pb2.TxGossip()
                    )

            with grpc.insecure_channel(nodes[0].address) as channel:
                peer_pb2_grpc.PeerServiceStub(channel).Push(lies(), timeout=10)
            time.sleep(6)  # empty blocks come every second; a stall would show
            assert height(nodes[1].address) >= start + 3
            assert height(nodes[0].address) >= start + 3
        finally:
            os.kill(nodes[3].process.pid, signal.SIGCONT)
    finally:
        stop_all(*nodes)
