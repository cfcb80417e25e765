"""A provider that goes silent holding the hub's lock, without telling the hub the
preimage. If it stays silent until the lock expires, the hub gives the payer's lock up,
and a preimage the provider reveals afterwards is paid on neither hop. If it claims the
lock on the ledger instead, the hub reads the preimage there and the payer pays it: both
hops complete.

The hub is a real `medledger hub start` process and the ledger a real node. The provider
runs here: the real `Payee` over its own LMDB behind a real ChannelService on a fixed
port, stopped and started again as a restarted process would be. Its first incarnation
loses the announcement of the preimage (as a provider killed between storing the lock
and telling the hub would); the one after the restart repeats it, as every provider does
for the locks it holds when a payer reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from medledger.api.server import serve_channels
from medledger.channels.hub import HOUSEKEEPING_S
from medledger.channels.payee import Payee, Verdict
from medledger.channels.payer import ChannelRefused, PayerSession
from medledger.channels.store import ChannelStore
from medledger.client.channels import ChannelWallet, RemoteChannelLedger, payment
from medledger.config import NodeConfig
from medledger.crypto import SigningKey
from medledger.keys import save_key
from medledger.run.launcher import NodeProcess, start_hub
from medledger.transport.credentials import TLS_CA_ENV
from medledger.tx import TxBuilder
from medledger.wire.v1 import channels_pb2, tx_pb2
from tests.integration.conftest import (
    CHAIN_ID,
    RunningNode,
    hub_tls_args,
    issue_tls,
    launch,
    stop_all,
)
from tests.integration.test_channels import DEPOSIT, advance, fund, new_wallet
from tests.integration.test_hub import held_state, wait_for

PRICE = 7
LINES = 3


class ForgetfulPayee(Payee):
    """A provider that stores a paid lock but never gets to announce its preimage."""

    def reveal(self, channel_id: bytes, lock_hash: bytes, preimage: bytes) -> None:
        del channel_id, lock_hash, preimage


class RenegingPayee(ForgetfulPayee):
    """A provider that gives the hub's lock up, then refuses to let the hub take it back
    (so that it can still claim it on the ledger)."""

    refusals = 0

    async def accept(self, update: channels_pb2.ChannelUpdate) -> Verdict:
        if update.released_locks:
            RenegingPayee.refusals += 1
            sequence = channels_pb2.ChannelState.FromString(update.state).sequence
            refusal = channels_pb2.ChannelRefusal(
                channel_id=update.channel_id,
                sequence=sequence,
                code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                field="released_locks[0]",
                message="not today",
            )
            return Verdict(channels_pb2.ChannelEvent(refusal=refusal))
        return await super().accept(update)


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
            self.payee,
            self.address,
            NodeConfig().message_bytes_max,
            issue_tls(self.node.home, "provider", self.root.parent),
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


@dataclass
class Route:
    """Payer -> hub process -> provider, with one routed lock the provider holds but whose
    preimage the hub never heard of."""

    node: RunningNode
    provider: Provider
    hub_key: SigningKey
    hub_store: Path
    to_provider: bytes
    payer: ChannelWallet
    hub: NodeProcess | None = None
    to_hub: bytes = b""
    invoice: bytes = b""
    lock: channels_pb2.HashLock = field(default_factory=channels_pb2.HashLock)

    async def hold_lock(self, session: PayerSession) -> asyncio.Future[bytes]:
        """Routes the lock until the provider has it on disk (and, losing its
        announcement, tells the hub nothing); returns the payer's wait for its outcome."""
        (self.invoice,) = await session.invoices(1, self.provider.key.public_key)
        height = self.node.client().status().height
        # The shortest lock the hub routes: the provider's expires 20 blocks sooner.
        self.lock = channels_pb2.HashLock(
            hash=self.invoice, amount_micros=LINES * PRICE, expiry_height=height + 32
        )
        batch = [
            payment(PRICE, claim_id="CLM-X", procedure_code="99213", units=1) for _ in range(LINES)
        ]
        destination = self.provider.key.public_key
        await (await session.send(batch, lock=self.lock, destination=destination))
        outcome = session.resolution(self.invoice)
        await wait_for(lambda: self.invoice in self.provider.payee.pending_locks(self.to_provider))
        await self.provider.payee.commit.commit([])
        return outcome

    def claim_on_ledger(self) -> bytes:
        """The provider closes the hub's channel with the latest state both signed and the
        lock's preimage (as its node would to claim it); returns the preimage."""
        store = ChannelStore(self.provider.root)
        try:
            local = store.channel(self.to_provider)
            assert local is not None
            preimage = store.invoices()[self.invoice].preimage
        finally:
            store.close()
        client = self.node.client()
        claim = TxBuilder(self.provider.key, CHAIN_ID).force_close_channel(
            channel_id=self.to_provider,
            state=local.latest,
            preimages=[preimage],
            expiry_height=client.status().height + 20,
        )
        assert client.submit(claim).code == tx_pb2.RESULT_CODE_OK
        return preimage

    def payer_state(self) -> channels_pb2.ChannelState:
        return channels_pb2.ChannelState.FromString(self.payer.local(self.to_hub).latest.state)


@contextlib.contextmanager
def routed(root: Path, provider_challenge_blocks: int = 100) -> Iterator[Route]:
    node = launch(root / "node")
    route: Route | None = None
    patch = pytest.MonkeyPatch()
    patch.setenv(TLS_CA_ENV, str(node.home.consortium_ca))  # held_state asks the hub
    try:
        provider_key, hub_key = SigningKey.generate(), SigningKey.generate()
        fund(node, provider_key)
        fund(node, hub_key)
        provider = Provider(provider_key, root / "provider", node)
        hub_wallet = ChannelWallet(hub_key, node.client(), root / "hub")
        to_provider = hub_wallet.open(
            payee=provider_key.public_key,
            deposit_micros=DEPOSIT,
            address=provider.address,
            challenge_blocks=provider_challenge_blocks,
        ).channel_id
        hub_wallet.close_store()
        save_key(hub_key, root / "hub.key")
        route = Route(
            node, provider, hub_key, root / "hub", to_provider, new_wallet(node, root / "payer")
        )
        try:
            yield route
        finally:
            route.payer.close_store()
    finally:
        patch.undo()
        stop_all(route.hub if route else None, node.process)


async def start_route(route: Route, provider: type[Payee] = ForgetfulPayee) -> None:
    """The provider (losing its first announcement) and the hub start; the payer opens a
    channel to the hub."""
    await route.provider.start(provider)
    # In a thread: the hub announces itself once it tried to reach the provider, which
    # this event loop serves meanwhile.
    route.hub = await asyncio.to_thread(
        functools.partial(
            start_hub,
            route.hub_store,
            route.hub_store.parent / "hub.key",
            route.node.address,
            tls=hub_tls_args(route.node.home, route.hub_store.parent),
        )
    )
    route.to_hub = route.payer.open(
        payee=route.hub_key.public_key, deposit_micros=DEPOSIT, address=route.hub.address
    ).channel_id


def test_a_lock_the_provider_holds_past_its_expiry_is_paid_on_neither_hop(
    tmp_path: Path,
) -> None:
    with routed(tmp_path) as route:

        async def scenario() -> None:
            await start_route(route)
            async with route.payer.session(route.to_hub) as session:
                outcome = await route.hold_lock(session)
                await route.provider.stop()  # silent until the lock has expired
                # The ledger moves past the provider's lock: it can no longer be claimed,
                # so the hub gives the payer's lock up, and the payer takes it back.
                while route.node.client().status().height <= route.lock.expiry_height - 20:
                    await asyncio.to_thread(advance, route.node, 1)
                with pytest.raises(ChannelRefused, match="expired"):
                    await asyncio.wait_for(outcome, 15)
                await wait_for(lambda: not session.pending_locks())
            # The provider comes back and, as on every reconnect, repeats the preimage of
            # the lock it holds. The hub does not pay it: it takes its expired lock back.
            provider = route.provider
            await provider.start()
            await wait_for(lambda: not provider.state(route.to_provider).locks, 30)
            out = provider.state(route.to_provider)
            assert (out.payee_micros, out.payer_micros) == (0, DEPOSIT)
            updates = provider.store.updates(route.to_provider)
            assert [u.update for u in updates if u.update.preimages] == []
            assert route.hub is not None
            assert held_state(route.hub.address, route.to_hub, route.hub_key).payee_micros == 0
            mine = route.payer_state()
            assert (mine.payer_micros, mine.payee_micros, list(mine.locks)) == (DEPOSIT, 0, [])
            await asyncio.sleep(3 * HOUSEKEEPING_S)  # the hub's next rounds of housekeeping
            await provider.stop()

        asyncio.run(scenario())
        # Neither hop holds the lock any more, so the hub forgot the failed route.
        assert route.hub is not None
        assert route.hub.stop() == 0
        store = ChannelStore(route.hub_store)
        try:
            assert list(store.routes()) == []
        finally:
            store.close()


def test_a_lock_the_provider_claims_on_the_ledger_is_claimed_from_the_payer(
    tmp_path: Path,
) -> None:
    """The provider, never having told the hub, claims the hub's lock on the ledger with
    its preimage. The hub reads the preimage there and the payer pays it: both hops."""
    with routed(tmp_path, provider_challenge_blocks=3) as route:
        amount = LINES * PRICE
        client = route.node.client()

        async def scenario() -> None:
            await start_route(route)
            async with route.payer.session(route.to_hub) as session:
                outcome = await route.hold_lock(session)
                await route.provider.stop()
                preimage = route.claim_on_ledger()
                # The hub hears it from the ledger and passes the preimage back; the
                # payer's session pays the lock in its next update.
                assert await asyncio.wait_for(outcome, 15) == preimage
                await wait_for(lambda: not session.pending_locks())
            mine = route.payer_state()
            assert (mine.payer_micros, mine.payee_micros) == (DEPOSIT - amount, amount)
            assert route.hub is not None
            assert held_state(route.hub.address, route.to_hub, route.hub_key).payee_micros == amount

        asyncio.run(scenario())
        # The provider's claim settles on the ledger after its window.
        for _ in range(5):
            advance(route.node, 1)
        settle = TxBuilder(route.provider.key, CHAIN_ID).settle_channel(
            channel_id=route.to_provider, expiry_height=client.status().height + 20
        )
        assert client.submit(settle).code == tx_pb2.RESULT_CODE_OK
        paid = client.get_channel(route.to_provider).channel
        assert (paid.payee_paid_micros, paid.payer_paid_micros) == (amount, DEPOSIT - amount)


def test_a_lock_the_provider_gives_up_stays_locked_upstream_until_the_hub_got_it_back(
    tmp_path: Path,
) -> None:
    """The provider says it gave the lock up but never lets the hub take it back, and then
    claims it on the ledger. The hub had not given the payer's lock up (the provider could
    still claim its own), so it claims the payer's with the preimage: both hops."""
    with routed(tmp_path, provider_challenge_blocks=3) as route:

        async def scenario() -> None:
            await start_route(route, RenegingPayee)
            async with route.payer.session(route.to_hub) as session:
                outcome = await route.hold_lock(session)
                await route.provider.payee.fail_lock(route.to_provider, route.invoice, "gone")
                await asyncio.sleep(3 * HOUSEKEEPING_S)
                assert not outcome.done()  # the payer's lock stays while the hub's does
                # The hub asked for its lock back, again and again but ever more slowly
                # (each refusal doubles the wait), not hundreds of times a second.
                assert 1 <= RenegingPayee.refusals <= 12
                await route.provider.stop()
                preimage = route.claim_on_ledger()
                assert await asyncio.wait_for(outcome, 15) == preimage
                await wait_for(lambda: not session.pending_locks())
            assert route.payer_state().payee_micros == LINES * PRICE

        asyncio.run(scenario())
