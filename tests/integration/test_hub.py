"""A processor hub routing payer -> hub -> provider on one hash lock, with real processes:
the provider is a node (its organisation key), the hub a `medledger hub start` process
with its own key and LMDB, the payer this test. Routes complete on both hops or on
neither: when the provider refuses, and when the hub is SIGKILLed mid-stream."""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from medledger.channels.payer import ChannelRefused, PayerSession
from medledger.channels.rules import LockedPayments
from medledger.channels.signing import initial_state, sign_channel_request
from medledger.channels.store import ChannelStore
from medledger.client.channels import ChannelWallet, payment, routed_lock
from medledger.crypto import SigningKey, sha256
from medledger.keys import save_key
from medledger.run.launcher import NodeProcess, start_hub, start_node
from medledger.transport.credentials import FROM_ENVIRONMENT, sync_channel
from medledger.wire.v1 import channels_pb2, channels_pb2_grpc
from tests.integration.conftest import (
    CHAIN_ID,
    RunningNode,
    hub_tls_args,
    launch,
    stop_all,
    trust,
)
from tests.integration.test_channels import (
    DEPOSIT,
    RawStream,
    advance,
    fund,
    new_wallet,
    signed_update,
)

PRICE = 7


@dataclass
class Network:
    node: RunningNode  # the provider
    hub_key: SigningKey
    hub_store: Path
    hub_key_file: Path
    hub: NodeProcess
    to_provider: bytes  # the hub's channel to the provider
    payer: ChannelWallet
    to_hub: bytes  # the payer's channel to the hub

    @property
    def provider(self) -> bytes:
        return self.node.payer.public_key

    def restart_hub(self) -> None:
        self.hub.stop()  # if it still runs
        self.hub = start_hub(
            self.hub_store,
            self.hub_key_file,
            self.node.address,
            tls=hub_tls_args(self.node.home, self.hub_store.parent),
        )
        self.payer.set_address(self.to_hub, self.hub.address)

    def hops(self) -> tuple[channels_pb2.ChannelState, channels_pb2.ChannelState]:
        """The states both signed on each hop: the payer's channel as the hub holds it,
        and the hub's channel as the provider holds it."""
        return held_state(self.hub.address, self.to_hub, self.hub_key), held_state(
            self.node.address, self.to_provider, self.node.payer
        )

    def shutdown(self) -> None:
        """Closes the payer's store and stops the hub and the node, whatever fails."""
        try:
            self.payer.close_store()
        finally:
            stop_all(self.hub, self.node.process)


def build(root: Path, challenge_blocks: int = 100) -> Network:
    node = launch(root / "provider")
    hub: NodeProcess | None = None
    try:
        hub_key = SigningKey.generate()
        fund(node, hub_key)
        hub_key_file = root / "hub.key"
        save_key(hub_key, hub_key_file)
        hub_store = root / "hub"
        hub_wallet = ChannelWallet(hub_key, node.client(), hub_store)
        to_provider = hub_wallet.open(
            payee=node.payer.public_key, deposit_micros=DEPOSIT, address=node.address
        ).channel_id
        hub_wallet.close_store()
        hub = start_hub(hub_store, hub_key_file, node.address, tls=hub_tls_args(node.home, root))
        payer = new_wallet(node, root / "payer")
        to_hub = payer.open(
            payee=hub_key.public_key,
            deposit_micros=DEPOSIT,
            address=hub.address,
            challenge_blocks=challenge_blocks,
        ).channel_id
    except BaseException:
        stop_all(hub, node.process)
        raise
    return Network(node, hub_key, hub_store, hub_key_file, hub, to_provider, payer, to_hub)


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Network]:
    network = build(tmp_path)
    trust(monkeypatch, network.node.home.consortium_ca)
    try:
        yield network
    finally:
        network.shutdown()


def held_state(address: str, channel_id: bytes, payee: SigningKey) -> channels_pb2.ChannelState:
    """The latest state both signed, as the payee at `address` holds it (asked with its
    own key: only a party of the channel may read it)."""
    request = sign_channel_request(
        channels_pb2.GetChannelStateRequest(channel_id=channel_id), payee, CHAIN_ID
    )
    with sync_channel(address, FROM_ENVIRONMENT) as channel:
        response = channels_pb2_grpc.ChannelServiceStub(channel).GetChannelState(
            request, timeout=10
        )
    if not response.state.state:
        return channels_pb2.ChannelState(channel_id=channel_id)
    return channels_pb2.ChannelState.FromString(response.state.state)


async def wait_for(condition: object, timeout_s: float = 15.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def invoice_once_reachable(session: PayerSession, net: Network) -> bytes:
    """One lock hash from the provider through the hub, once the hub has its link to the
    provider back: until then the hub answers UNAVAILABLE, which a client retries (the
    hub reconnects with back-off, so being done with old routes does not mean linked)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            (fresh,) = await session.invoices(1, net.provider)
        except ChannelRefused as refused:
            if refused.status != "UNAVAILABLE":
                raise
            assert asyncio.get_running_loop().time() < deadline, "the hub never reconnected"
            await asyncio.sleep(0.1)
        else:
            return fresh


def lines(count: int, claim: str) -> list[channels_pb2.Payment]:
    return [
        payment(PRICE, claim_id=claim, procedure_code="99213", units=1, service_date="2026-11-25")
        for _ in range(count)
    ]


async def send_routed(
    session: PayerSession, net: Network, lock_hash: bytes, batch: list[channels_pb2.Payment]
) -> asyncio.Future[bytes]:
    height = net.node.client().status().height
    lock = routed_lock(lock_hash, batch, height)
    acked = await session.send(batch, lock=lock, destination=net.provider)
    outcome = session.resolution(lock_hash)
    await acked  # durable at the hub
    return outcome


def test_routed_payments_complete_on_both_hops_and_settle(net: Network) -> None:
    batches, per_batch = 20, 25

    async def route() -> None:
        async with net.payer.session(net.to_hub) as session:
            hashes = await session.invoices(batches, net.provider)
            assert len(set(hashes)) == batches
            outcomes = [
                await send_routed(session, net, h, lines(per_batch, f"CLM{i}"))
                for i, h in enumerate(hashes)
            ]
            preimages = await asyncio.wait_for(asyncio.gather(*outcomes), 30)
            # Each preimage opens its lock: the provider's proof that it was paid.
            assert [sha256(p) for p in preimages] == hashes
        # Leaving the session paid the hub what the revealed locks owed.

    asyncio.run(route())
    total = batches * per_batch * PRICE

    async def settled_on_both_hops() -> None:
        def done() -> bool:
            incoming, outgoing = net.hops()
            return (incoming.payee_micros, outgoing.payee_micros) == (total, total) and not (
                incoming.locks or outgoing.locks
            )

        await wait_for(done)

    asyncio.run(settled_on_both_hops())
    # The hub's operations port counts its routes; the provider's node the lines it took.
    routes = scrape(net.hub.ops_address)
    assert routes[("medledger_hub_routes_total", (("outcome", "accepted"),))] >= batches
    assert routes[("medledger_hub_routes_total", (("outcome", "settled"),))] >= batches
    assert routes[("medledger_hub_routes_total", (("outcome", "failed"),))] == 0
    provider = scrape(net.node.process.ops_address)
    assert provider[("medledger_channel_payments_total", ())] >= batches * per_batch
    # The payer's own record agrees with the hub's.
    mine = channels_pb2.ChannelState.FromString(net.payer.local(net.to_hub).latest.state)
    assert (mine.payee_micros, mine.payer_micros, list(mine.locks)) == (total, DEPOSIT - total, [])

    settle_both_hops(net, total)


def scrape(ops: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A process's metrics by (sample name, sorted labels)."""
    with urllib.request.urlopen(f"http://{ops}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def settle_both_hops(net: Network, total: int) -> None:
    """Closes both channels cooperatively: each settles on the ledger at `total`."""
    net.payer.close(net.to_hub)
    paid_in = net.payer.on_chain(net.to_hub).channel
    assert (paid_in.payee_paid_micros, paid_in.payer_paid_micros) == (total, DEPOSIT - total)
    net.hub.stop()  # the hub's own wallet closes its channel to the provider
    hub_wallet = ChannelWallet(net.hub_key, net.node.client(), net.hub_store)
    try:
        hub_wallet.close(net.to_provider)
        paid_out = hub_wallet.on_chain(net.to_provider).channel
    finally:
        hub_wallet.close_store()
    assert (paid_out.payee_paid_micros, paid_out.payer_paid_micros) == (total, DEPOSIT - total)


def test_a_route_the_provider_refuses_completes_on_neither_hop(net: Network) -> None:
    async def route() -> None:
        async with net.payer.session(net.to_hub) as session:
            # A destination the hub has no channel to is refused before anything moves.
            height = net.node.client().status().height
            nowhere = routed_lock(sha256(b"a"), lines(1, "CLM0"), height)
            refused = await session.send(
                lines(1, "CLM0"), lock=nowhere, destination=SigningKey.generate().public_key
            )
            with pytest.raises(ChannelRefused) as unknown:
                await refused
            assert (unknown.value.status, unknown.value.field) == (
                "FAILED_PRECONDITION",
                "destination",
            )
            # A hash the provider never invoiced: the hub accepts the lock and forwards
            # it, the provider refuses it, so the hub gives the incoming lock up.
            outcome = await send_routed(session, net, secrets.token_bytes(32), lines(4, "CLM1"))
            with pytest.raises(ChannelRefused) as failed:
                await asyncio.wait_for(outcome, 15)
            assert failed.value.status == "ABORTED"
            assert "new_locks[0].hash" in failed.value.reason
            # The payer takes the lock back in its next update; a good route still works.
            (good,) = await session.invoices(1, net.provider)
            delivered = await send_routed(session, net, good, lines(2, "CLM2"))
            assert sha256(await asyncio.wait_for(delivered, 15)) == good

    asyncio.run(route())

    async def both_hops_agree() -> None:
        def done() -> bool:
            incoming, outgoing = net.hops()
            return (incoming.payee_micros, outgoing.payee_micros) == (
                2 * PRICE,
                2 * PRICE,
            ) and not (incoming.locks or outgoing.locks)

        await wait_for(done)

    asyncio.run(both_hops_agree())
    mine = channels_pb2.ChannelState.FromString(net.payer.local(net.to_hub).latest.state)
    assert (mine.payer_micros, list(mine.locks)) == (DEPOSIT - 2 * PRICE, [])


def forwarded_locks(net: Network) -> list[list[bytes]]:
    """The new locks of each update the hub stored on its channel to the provider (it
    stores only acknowledged ones), read from its LMDB once it has stopped."""
    assert net.hub.stop() == 0
    store = ChannelStore(net.hub_store)
    try:
        updates = [stored.update for stored in store.updates(net.to_provider)]
    finally:
        store.close()
    net.restart_hub()
    return [[new.hash for new in u.new_locks] for u in updates if u.new_locks]


def test_routes_accepted_together_go_on_in_one_update_and_a_refused_one_fails_alone(
    net: Network,
) -> None:
    """One payer update adds four locks: the hub accepts them in one commit and forwards
    them to the provider in one update. The provider refuses it for the lock whose hash
    it never invoiced; the hub then forwards each route alone, so that one fails and the
    other three are delivered."""
    groups = [2, 3, 1, 4]

    async def route() -> None:
        async with net.payer.session(net.to_hub) as session:
            good = await session.invoices(3, net.provider)
            hashes = [good[0], secrets.token_bytes(32), good[1], good[2]]
            height = net.node.client().status().height
            batch = [line for i, n in enumerate(groups) for line in lines(n, f"CLM{i}")]
            locks, start = [], 0
            for lock_hash, n in zip(hashes, groups, strict=True):
                part = batch[start : start + n]
                locks.append(LockedPayments(routed_lock(lock_hash, part, height), n))
                start += n
            await (await session.send(batch, locks=locks, destination=net.provider))
            outcomes = [session.resolution(h) for h in hashes]
            for lock_hash, outcome in zip(hashes, outcomes, strict=True):
                if lock_hash in good:
                    assert sha256(await asyncio.wait_for(outcome, 15)) == lock_hash
            with pytest.raises(ChannelRefused) as failed:
                await asyncio.wait_for(outcomes[1], 15)
            assert "no invoice of this channel has this hash" in failed.value.reason
            # Pay the three revealed locks and take the failed one back.
            await wait_for(lambda: not session.pending_locks())

    asyncio.run(route())
    delivered = (groups[0] + groups[2] + groups[3]) * PRICE

    async def both_hops_settled() -> None:
        def done() -> bool:
            incoming, outgoing = net.hops()
            return (incoming.payee_micros, outgoing.payee_micros) == (
                delivered,
                delivered,
            ) and not (incoming.locks or outgoing.locks)

        await wait_for(done)

    asyncio.run(both_hops_settled())
    # The provider refused the update with all four: the hub did not store it. The good
    # routes went on without the bad one (the first alone; the others, sent after the
    # refused one and so refused with it, together).
    assert sorted(map(len, forwarded_locks(net))) == [1, 2]


def test_routes_accepted_in_one_commit_share_one_forwarded_update(net: Network) -> None:
    hashes: list[bytes] = []

    async def route() -> None:
        async with net.payer.session(net.to_hub) as session:
            hashes.extend(await session.invoices(5, net.provider))
            height = net.node.client().status().height
            batch = lines(10, "CLM-G")
            locks = [
                LockedPayments(routed_lock(h, batch[2 * i : 2 * i + 2], height), 2)
                for i, h in enumerate(hashes)
            ]
            await (await session.send(batch, locks=locks, destination=net.provider))
            for lock_hash in hashes:
                preimage = await asyncio.wait_for(session.resolution(lock_hash), 15)
                assert sha256(preimage) == lock_hash

    asyncio.run(route())
    assert forwarded_locks(net) == [hashes]


def test_sigkill_of_the_hub_mid_stream_completes_each_route_on_both_hops_or_neither(
    net: Network,
) -> None:
    delivered: list[bytes] = []
    broken: list[ChannelRefused] = []

    def record_delivery(outcome: asyncio.Future[bytes]) -> None:
        if outcome.exception() is None:
            delivered.append(sha256(outcome.result()))

    async def stream_until_killed() -> None:
        async with net.payer.session(net.to_hub) as session:
            hashes = await session.invoices(400, net.provider)
            height = net.node.client().status().height
            for i, lock_hash in enumerate(hashes):
                batch = lines(10, f"CLM{i}")
                try:
                    await session.send(
                        batch, lock=routed_lock(lock_hash, batch, height), destination=net.provider
                    )
                except ChannelRefused as error:
                    broken.append(error)  # the stream broke under us
                    break
                session.resolution(lock_hash).add_done_callback(record_delivery)
                if len(delivered) >= 20 and net.hub.process.poll() is None:
                    net.hub.kill()
                await asyncio.sleep(0)

    asyncio.run(stream_until_killed())
    assert broken
    assert broken[0].status == "UNAVAILABLE"
    assert len(delivered) >= 20

    net.restart_hub()

    async def resume() -> None:
        # Reconnecting repeats every pending lock's outcome; leaving pays or releases it.
        async with net.payer.session(net.to_hub) as session:
            await wait_for(lambda: not session.pending_locks(), 20)
            # The stream goes on: a new route is delivered through the restarted hub.
            fresh = await invoice_once_reachable(session, net)
            outcome = await send_routed(session, net, fresh, lines(10, "CLM-after"))
            assert sha256(await asyncio.wait_for(outcome, 15)) == fresh
            delivered.append(fresh)

    asyncio.run(resume())

    async def both_hops_agree() -> tuple[channels_pb2.ChannelState, channels_pb2.ChannelState]:
        def settled() -> bool:
            incoming, outgoing = net.hops()
            return not incoming.locks and not outgoing.locks

        await wait_for(settled, 20)
        return net.hops()

    incoming, outgoing = asyncio.run(both_hops_agree())
    # Every route the payer saw delivered is paid on both hops, and the hub paid the
    # provider exactly what the payer paid the hub: no route completed on one hop only.
    assert incoming.payee_micros == outgoing.payee_micros
    assert incoming.payee_micros >= len(delivered) * 10 * PRICE
    mine = channels_pb2.ChannelState.FromString(net.payer.local(net.to_hub).latest.state)
    assert mine.payee_micros == incoming.payee_micros
    # On the ledger both hops settle at those balances.
    settle_both_hops(net, incoming.payee_micros)


def test_sigkill_of_the_provider_mid_route_leaves_no_route_complete_on_one_hop_only(
    net: Network,
) -> None:
    delivered: list[bytes] = []
    address = net.node.address

    def record_delivery(outcome: asyncio.Future[bytes]) -> None:
        if not outcome.cancelled() and outcome.exception() is None:
            delivered.append(sha256(outcome.result()))

    async def stream_until_killed() -> None:
        async with net.payer.session(net.to_hub) as session:
            hashes = await session.invoices(300, net.provider)
            height = net.node.client().status().height
            for i, lock_hash in enumerate(hashes):
                batch = lines(10, f"CLM{i}")
                lock = routed_lock(lock_hash, batch, height)
                acked = await session.send(batch, lock=lock, destination=net.provider)
                acked.add_done_callback(lambda done: done.cancelled() or done.exception())
                session.resolution(lock_hash).add_done_callback(record_delivery)
                if len(delivered) >= 20 and net.node.process.process.poll() is None:
                    net.node.process.kill()  # the provider, with routes in flight
                await asyncio.sleep(0)
            # Whatever the hub could not forward it gave up; those locks come back.
            await wait_for(lambda: net.node.process.process.poll() is not None)

    asyncio.run(stream_until_killed())
    assert len(delivered) >= 20
    # The provider comes back where the hub expects it; the hub reconnects by itself.
    net.node.process = start_node(net.node.home.root, listen=address)

    async def resume() -> None:
        async with net.payer.session(net.to_hub) as session:
            # Routes the provider held are resolved, the others failed: nothing pending.
            await wait_for(lambda: not session.pending_locks(), 30)
            fresh = await invoice_once_reachable(session, net)
            outcome = await send_routed(session, net, fresh, lines(10, "CLM-after"))
            assert sha256(await asyncio.wait_for(outcome, 15)) == fresh

    asyncio.run(resume())

    async def settled() -> tuple[channels_pb2.ChannelState, channels_pb2.ChannelState]:
        await wait_for(lambda: not any(s.locks for s in net.hops()), 20)
        return net.hops()

    incoming, outgoing = asyncio.run(settled())
    # The hub paid the provider exactly what the payer paid the hub, and every delivery
    # the payer saw before the kill is among them.
    assert incoming.payee_micros == outgoing.payee_micros
    assert incoming.payee_micros >= (len(delivered) + 1) * 10 * PRICE
    settle_both_hops(net, incoming.payee_micros)


def test_a_payer_withholding_a_delivered_payment_is_claimed_on_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = build(tmp_path, challenge_blocks=3)
    trust(monkeypatch, net.node.home.consortium_ca)
    amount = 5 * PRICE
    try:

        async def deliver_then_go_silent() -> None:
            async with RawStream(net.hub.address) as stream:
                (invoice,) = await stream.invoices(net.payer.key, net.to_hub, 1, net.provider)
                height = net.node.client().status().height
                lock = channels_pb2.HashLock(
                    hash=invoice, amount_micros=amount, expiry_height=height + 35
                )
                start = initial_state(net.to_hub, 0)
                update, _ = signed_update(net.payer.key, start, lines(5, "CLM-W"), lock=lock)
                update.destination = net.provider
                assert (await stream.answer(update)).ack.sequence == 1
                resolved = (await stream.next_event()).resolved
                assert sha256(resolved.preimage) == invoice
            # The payer never sends the update that pays the hub for the delivered lock.

        asyncio.run(deliver_then_go_silent())
        client = net.node.client()

        def on_chain() -> channels_pb2.Channel:
            return client.get_channel(net.to_hub).channel

        # As the lock nears its expiry the hub closes the channel on the ledger with the
        # preimage, and settles it after the challenge window.
        for _ in range(120):
            if on_chain().status == channels_pb2.CHANNEL_STATUS_SETTLED:
                break
            advance(net.node, 1)
            time.sleep(0.25)  # blocks a few times faster than a real network makes them
        settled = on_chain()
        assert settled.status == channels_pb2.CHANNEL_STATUS_SETTLED
        assert settled.closed_by == net.hub_key.public_key
        assert (settled.payee_paid_micros, settled.payer_paid_micros) == (amount, DEPOSIT - amount)
        # The provider was paid on its hop as well.
        assert held_state(net.node.address, net.to_provider, net.node.payer).payee_micros == amount
    finally:
        net.shutdown()


def test_a_hub_announced_ready_routes_at_once(net: Network) -> None:
    """The ready line comes once the hub has tried its providers: a payer that asks for
    invoices the moment it is announced is not told the provider is unreachable."""
    net.hub.stop()
    net.restart_hub()
    assert "providers 1 connected 1" in "".join(net.hub.output)

    async def ask() -> list[bytes]:
        async with net.payer.session(net.to_hub) as session:
            return await session.invoices(3, net.provider)

    assert len(set(asyncio.run(ask()))) == 3
