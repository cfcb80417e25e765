"""A payer closes its channel with an old state and floods the ledger around it with
100,000 transactions, so that the provider's challenge would wait behind them past the
10-block window (issue 15, case 10). Fresh keys can no longer submit at all (permissioned
submission), so the flood comes from five keys a member organisation enrolled, as much
as its quota lets it hold. The node's mempool keeps a reserved lane for challenges and
settlements: the provider is paid in full. A real node process on 127.0.0.1, its watcher
and the payer's real channel wallet."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from medledger.client import LedgerClient, TxBuilder
from medledger.config import Home
from medledger.keys import load_key
from medledger.run.homes import init_home
from medledger.run.launcher import start_node
from medledger.wire.v1 import channels_pb2, envelope_pb2, tx_pb2
from tests.integration.conftest import CHAIN_ID, RunningNode
from tests.integration.test_channels import DEPOSIT, new_wallet, open_channel, pay, wait_for

FLOOD = 100_000
FLOODERS = 5
BATCH = 4_000
WINDOW = 10


def flood_txs(node: RunningNode, height: int) -> list[list[envelope_pb2.SignedTransaction]]:
    """Account openings from enrolled keys (all but the first committed as ACCOUNT_EXISTS:
    block space all the same)."""
    flooders = [TxBuilder(node.member(), CHAIN_ID) for _ in range(FLOODERS)]
    txs = [flooders[i % FLOODERS].create_account(expiry_height=height + 500) for i in range(FLOOD)]
    return [txs[i : i + BATCH] for i in range(0, FLOOD, BATCH)]


def slow_node(root: Path) -> RunningNode:
    """A validator that commits at most 2,000 transactions every 200 ms (10,000/s), as a
    network of several validators does: a flood then queues faster than it commits."""
    home = Home(root)
    genesis = init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    config = replace(home.load_config(), block_txs_max=2_000, block_interval_ms=200)
    home.config.write_text(config.to_json())
    process = start_node(home.root)
    return RunningNode(home, genesis, process, load_key(home.keys_dir / "client.json"))


@pytest.mark.timeout(900)  # its waits' deadlines add up to more than the default 300 s
def test_a_flood_does_not_push_the_providers_challenge_past_the_window(tmp_path: Path) -> None:
    node = slow_node(tmp_path / "provider")
    try:
        wallet = new_wallet(node, tmp_path / "payer")
        channel_id = open_channel(node, wallet, challenge_blocks=WINDOW)
        asyncio.run(pay(wallet, channel_id, updates=1, per_update=1))
        old = channels_pb2.SignedChannelState()
        old.CopyFrom(wallet.local(channel_id).latest)  # 7 paid
        asyncio.run(pay(wallet, channel_id, updates=5, per_update=10))  # 357 paid
        owed = 357

        client = node.client()
        batches = flood_txs(node, client.status().height)
        cheat = wallet.builder.force_close_channel(
            channel_id=channel_id, state=old, expiry_height=client.status().height + 50
        )

        def flood() -> None:
            with LedgerClient(node.address, timeout_s=300, tls=node.tls) as flooder:
                for _ in flooder.submit_batches(batches, timeout_s=300):
                    pass

        flooding = threading.Thread(target=flood)
        flooding.start()
        try:
            # The old state goes in amid the flood: by the time it commits and the
            # watcher answers, the rest of the flood waits in the mempool before it.
            wait_for(lambda: client.status().mempool_txs >= FLOOD // 3, timeout_s=120)
            client.submit(cheat, wait=False)
            cheat_id = tx_pb2.TransactionBody.FromString(cheat.body).tx_id
            closing_at = client.wait_for_commit(cheat_id, timeout_s=120).height
            wait_for(
                lambda: (
                    wallet.on_chain(channel_id).channel.status
                    == channels_pb2.CHANNEL_STATUS_SETTLED
                ),
                timeout_s=480,  # a deadline, not a measure: a slow machine may need it
            )
        finally:
            flooding.join(timeout=480)
        settled = wallet.on_chain(channel_id).channel
        assert settled.challenge_end_height == closing_at + WINDOW
        assert settled.pending_state.sequence == 6  # the watcher's challenge, in time
        assert settled.payee_paid_micros == owed
        assert settled.payer_paid_micros == DEPOSIT - owed
        # The flood was real: it filled blocks around the window.
        assert client.status().committed_txs >= FLOOD
        wallet.close_store()
    finally:
        node.process.stop()
