"""A routed lock that expires: the provider goes silent holding the hub's lock, so the
hub gives the payer's lock up once its own has expired, and a preimage the provider
reveals afterwards is paid on neither hop.

The hub is a real `medledger hub start` process and the ledger a real node. The provider
runs here: the real `Payee` over its own LMDB behind a real ChannelService on a fixed
port, stopped and started again as a restarted process would be. Its first incarnation
loses the announcement of the preimage (as a provider killed between storing the lock
and telling the hub would); the one after the restart repeats it, as every provider does
for the locks it holds when a payer reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from medledger.api.server import serve_channels
from medledger.channels.hub import HOUSEKEEPING_S
from medledger.channels.payee import Payee
from medledger.channels.payer import ChannelRefused
from medledger.channels.store import ChannelStore
from medledger.client.channels import ChannelWallet, RemoteChannelLedger, payment
from medledger.config import NodeConfig
from medledger.crypto import SigningKey
from medledger.keys import save_key
from medledger.node.launcher import start_hub
from medledger.wire.v1 import channels_pb2
from tests.integration.conftest import CHAIN_ID, RunningNode, launch
from tests.integration.test_channels import DEPOSIT, advance, fund, new_wallet
from tests.integration.test_hub import held_state, wait_for

PRICE = 7
LINES = 3


class ForgetfulPayee(Payee):
    """A provider that stores a paid lock but never gets to announce its preimage."""

    def reveal(self, channel_id: bytes, lock_hash: bytes, preimage: bytes) -> None:
        del channel_id, lock_hash, preimage


class Provider:
    """A provider's ChannelService on a fixed address, over the same LMDB each time."""

    def __init__(self, key: SigningKey, root: Path, node: RunningNode) -> None:
        self.key, self.root, self.node = key, root, node
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{probe.getsockname()[1]}"

    async def start(self, payee_type: type[Payee] = Payee) -> None:
        self.store = ChannelStore(self.root)
        self.ledger = RemoteChannelLedger(self.node.client())
        self.payee = payee_type(self.key, CHAIN_ID, self.store, self.ledger)
        self.payee.start()
        self.server, _ = await serve_channels(
            self.payee, self.address, NodeConfig().message_bytes_max
        )
        self.follower = asyncio.get_running_loop().create_task(self.ledger.follow())

    async def stop(self) -> None:
        await self.server.stop(0)
        self.follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.follower
        await self.payee.stop()
        self.store.close()

    def state(self, channel_id: bytes) -> channels_pb2.ChannelState:
        local = self.payee.latest(channel_id)
        assert local is not None
        return channels_pb2.ChannelState.FromString(local.latest.state)


def test_a_lock_the_provider_holds_past_its_expiry_is_paid_on_neither_hop(
    tmp_path: Path,
) -> None:
    node = launch(tmp_path / "node")
    provider_key, hub_key = SigningKey.generate(), SigningKey.generate()
    fund(node, provider_key)
    fund(node, hub_key)
    provider = Provider(provider_key, tmp_path / "provider", node)
    hub_wallet = ChannelWallet(hub_key, node.client(), tmp_path / "hub")
    to_provider = hub_wallet.open(
        payee=provider_key.public_key, deposit_micros=DEPOSIT, address=provider.address
    ).channel_id
    hub_wallet.close_store()
    save_key(hub_key, tmp_path / "hub.key")
    payer = new_wallet(node, tmp_path / "payer")
    amount = LINES * PRICE
    hub = None
    try:

        async def scenario() -> None:
            nonlocal hub
            await provider.start(ForgetfulPayee)
            hub = start_hub(tmp_path / "hub", tmp_path / "hub.key", node.address)
            to_hub = payer.open(
                payee=hub_key.public_key, deposit_micros=DEPOSIT, address=hub.address
            ).channel_id
            async with payer.session(to_hub) as session:
                (invoice,) = await session.invoices(1, provider_key.public_key)
                height = node.client().status().height
                # The shortest lock the hub routes: the provider's expires 20 blocks sooner.
                lock = channels_pb2.HashLock(
                    hash=invoice, amount_micros=amount, expiry_height=height + 32
                )
                batch = [
                    payment(PRICE, claim_id="CLM-X", procedure_code="99213", units=1)
                    for _ in range(LINES)
                ]
                await (await session.send(batch, lock=lock, destination=provider_key.public_key))
                outcome = session.resolution(invoice)
                # The provider stores the hub's lock and acknowledges it, then goes away
                # without having told the hub the preimage.
                await wait_for(lambda: invoice in provider.payee.pending_locks(to_provider))
                await provider.payee.commit.commit([])
                await provider.stop()
                # The ledger moves past the provider's lock: it can no longer be claimed,
                # so the hub gives the payer's lock up, and the payer takes it back.
                while node.client().status().height <= lock.expiry_height - 20:
                    await asyncio.to_thread(advance, node, 1)
                with pytest.raises(ChannelRefused, match="expired"):
                    await asyncio.wait_for(outcome, 15)
                await wait_for(lambda: not session.pending_locks())
            # The provider comes back and, as on every reconnect, repeats the preimage of
            # the lock it holds. The hub does not pay it: it takes its expired lock back.
            await provider.start()
            await wait_for(lambda: not provider.state(to_provider).locks, 30)
            out = provider.state(to_provider)
            assert (out.payee_micros, out.payer_micros) == (0, DEPOSIT)
            paid = [u.update for u in provider.store.updates(to_provider) if u.update.preimages]
            assert paid == []
            assert held_state(hub.address, to_hub).payee_micros == 0
            mine = channels_pb2.ChannelState.FromString(payer.local(to_hub).latest.state)
            assert (mine.payer_micros, mine.payee_micros, list(mine.locks)) == (DEPOSIT, 0, [])
            await asyncio.sleep(3 * HOUSEKEEPING_S)  # the hub's next rounds of housekeeping
            await provider.stop()

        asyncio.run(scenario())
        # Neither hop holds the lock any more, so the hub forgot the failed route.
        assert hub is not None
        assert hub.stop() == 0
        store = ChannelStore(tmp_path / "hub")
        try:
            assert list(store.routes()) == []
        finally:
            store.close()
    finally:
        payer.close_store()
        if hub is not None:
            hub.stop()
        node.process.stop()
