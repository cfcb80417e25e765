"""Payment channels against a real node process: the node is the payee (its
organisation key), a funded payer streams payments over ChannelService, and the ledger
opens, settles and disputes. Bad updates, an old-state close and a SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from medledger.channels.payer import ChannelRefused
from medledger.channels.rules import ChannelRuleError, LockedPayments, UpdateParts, next_state
from medledger.channels.signing import initial_state, sign_channel_request, sign_refund, sign_state
from medledger.client.channels import ChannelWallet, payment
from medledger.crypto import SigningKey, sha256
from medledger.transport.credentials import FROM_ENVIRONMENT, aio_channel
from medledger.transport.grpc_common import STATUS_BY_CODE
from medledger.wire.v1 import channels_pb2, channels_pb2_grpc, tx_pb2
from tests.integration.conftest import CHAIN_ID, RunningNode, launch

FUNDS = 10**10
DEPOSIT = 10**8


def fund(node: RunningNode, key: SigningKey, role: int = tx_pb2.ROLE_PAYER) -> None:
    """Enrols `key` in `role` (the node's organisation issues it), opens its account and
    funds it."""
    node.enrol({key: [role]})
    client = node.client()
    height = client.status().height
    create = node.builder(key).sign(
        tx_pb2.TransactionBody(create_account=tx_pb2.CreateAccount()), expiry_height=height + 50
    )
    assert client.submit(create).code == tx_pb2.RESULT_CODE_OK
    transfer = node.builder().transfer(
        to=key.public_key, amount_micros=FUNDS, expiry_height=height + 50
    )
    assert client.submit(transfer).code == tx_pb2.RESULT_CODE_OK


def new_wallet(node: RunningNode, root: Path) -> ChannelWallet:
    key = SigningKey.generate()
    fund(node, key)
    return ChannelWallet(key, node.client(), root)


def open_channel(node: RunningNode, wallet: ChannelWallet, challenge_blocks: int = 100) -> bytes:
    local = wallet.open(
        payee=node.payer.public_key,
        deposit_micros=DEPOSIT,
        address=node.address,
        challenge_blocks=challenge_blocks,
    )
    return local.channel_id


async def pay(wallet: ChannelWallet, channel_id: bytes, updates: int, per_update: int) -> None:
    async with wallet.session(channel_id) as session:
        pending = [
            await session.send(
                [payment(7, claim_id=f"CLM{u}", procedure_code="99213") for _ in range(per_update)]
            )
            for u in range(updates)
        ]
        await asyncio.gather(*pending)


def payee_state(
    node: RunningNode, channel_id: bytes, key: SigningKey | None = None
) -> channels_pb2.GetChannelStateResponse:
    """What the node holds of the channel, asked as `key` (by default the node, its
    payee: only a party of the channel may read it)."""
    request = sign_channel_request(
        channels_pb2.GetChannelStateRequest(channel_id=channel_id),
        key or node.payer,
        CHAIN_ID,
    )
    with node.channel() as channel:
        stub = channels_pb2_grpc.ChannelServiceStub(channel)
        return stub.GetChannelState(request, timeout=10)


@pytest.fixture
def wallet(node: RunningNode, tmp_path: Path) -> Iterator[ChannelWallet]:
    opened = new_wallet(node, tmp_path / "payer")
    yield opened
    opened.close_store()


def test_streamed_payments_are_acknowledged_durably_and_settle_cooperatively(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    channel_id = open_channel(node, wallet)
    payee_before = node.client().get_account(node.payer.public_key).balance_micros
    asyncio.run(pay(wallet, channel_id, updates=40, per_update=50))
    local = wallet.local(channel_id)
    state = channels_pb2.ChannelState.FromString(local.latest.state)
    assert (state.sequence, state.payee_micros) == (40, 40 * 50 * 7)
    # The payee holds exactly the state the payer holds, both signatures included.
    assert payee_state(node, channel_id).state == local.latest

    receipt = wallet.close(channel_id)
    assert receipt.code == tx_pb2.RESULT_CODE_OK
    settled = wallet.on_chain(channel_id).channel
    assert settled.status == channels_pb2.CHANNEL_STATUS_SETTLED
    assert (settled.payee_paid_micros, settled.payer_paid_micros) == (14_000, DEPOSIT - 14_000)
    payee_after = node.client().get_account(node.payer.public_key).balance_micros
    assert payee_after - payee_before == 14_000
    # After the final state the payee accepts nothing more.
    with pytest.raises(ChannelRuleError, match="final state"):
        asyncio.run(pay(wallet, channel_id, updates=1, per_update=1))


class RawStream:
    """One ChannelService stream driven by hand: send an update, read its answer."""

    def __init__(self, address: str) -> None:
        self.address = address  # over TLS, trusting $MEDLEDGER_TLS_CA
        self._outbound: asyncio.Queue[channels_pb2.ChannelUpdate | None] = asyncio.Queue()

    async def __aenter__(self) -> RawStream:
        self._channel = aio_channel(self.address, FROM_ENVIRONMENT)
        stub = channels_pb2_grpc.ChannelServiceStub(self._channel)
        self._call = stub.Stream(self._requests())
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._outbound.put(None)
        await self._channel.close()

    async def _requests(self) -> AsyncIterator[channels_pb2.ChannelUpdate]:
        while (update := await self._outbound.get()) is not None:
            yield update

    async def answer(self, update: channels_pb2.ChannelUpdate) -> channels_pb2.ChannelEvent:
        await self._outbound.put(update)
        event = await asyncio.wait_for(self._read(), 10)
        return event

    async def next_event(self) -> channels_pb2.ChannelEvent:
        """An event that follows an answer (a lock's outcome)."""
        return await asyncio.wait_for(self._read(), 10)

    async def invoices(
        self, key: SigningKey, channel_id: bytes, count: int, destination: bytes = b""
    ) -> list[bytes]:
        """Invoices for the channel, asked as `key` (the payer)."""
        stub = channels_pb2_grpc.ChannelServiceStub(self._channel)
        request = sign_channel_request(
            channels_pb2.InvoiceRequest(
                channel_id=channel_id, count=count, destination=destination
            ),
            key,
            CHAIN_ID,
        )
        response = await stub.Invoices(request, timeout=10)
        return list(response.hashes)

    async def _read(self) -> channels_pb2.ChannelEvent:
        event = await self._call.read()
        assert isinstance(event, channels_pb2.ChannelEvent), "the stream ended"
        return event


def signed_update(
    key: SigningKey,
    previous: channels_pb2.ChannelState,
    payments: list[channels_pb2.Payment],
    **parts: object,
) -> tuple[channels_pb2.ChannelUpdate, channels_pb2.ChannelState]:
    batch = channels_pb2.PaymentBatch(payments=payments)
    lock = parts.pop("lock", None)
    preimages = parts.pop("preimages", ())
    released = parts.pop("released", ())
    deposit = parts.pop("deposit_micros", DEPOSIT)
    assert not parts, parts
    assert isinstance(deposit, int)
    assert lock is None or isinstance(lock, channels_pb2.HashLock)
    assert isinstance(preimages, list | tuple)
    assert isinstance(released, list | tuple)
    state = next_state(
        previous,
        UpdateParts(
            batch=batch,
            batch_bytes=batch.SerializeToString(deterministic=True),
            deposit_micros=deposit,
            locks=[LockedPayments(lock, len(payments))] if lock is not None else [],
            preimages=preimages,
            released=released,
        ),
    )
    encoded = state.SerializeToString(deterministic=True)
    update = channels_pb2.ChannelUpdate(
        channel_id=state.channel_id,
        batch=batch,
        state=encoded,
        payer_signature=sign_state(key, CHAIN_ID, encoded),
        new_locks=[channels_pb2.NewLock(hash=lock.hash, payments=len(payments))]
        if lock is not None
        else [],
        preimages=preimages,
        released_locks=released,
    )
    return update, state


def test_bad_updates_are_refused_over_the_stream_and_change_nothing(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    """What needs the process: refusals arrive as events with their gRPC status and
    field, the payee reads the ledger (an unknown channel, a deposit beyond the known
    one) before deciding, and a durable lock's preimage comes back on the stream. Every
    rule case is in tests/unit/test_channel_session.py, against the pure core."""
    channel_id = open_channel(node, wallet)
    payer = wallet.key
    start = initial_state(channel_id, 0)

    async def scenario() -> None:
        async with RawStream(node.address) as stream:
            good, state1 = signed_update(payer, start, [payment(100)])
            assert (await stream.answer(good)).ack.sequence == 1
            # The same update again is answered the same way (idempotent resend).
            assert (await stream.answer(good)).ack.sequence == 1

            def refusal(event: channels_pb2.ChannelEvent) -> tuple[str, str]:
                assert event.WhichOneof("event") == "refusal", event
                return STATUS_BY_CODE[event.refusal.code].name, event.refusal.field

            forged, _ = signed_update(SigningKey.generate(), state1, [payment(5)])
            assert refusal(await stream.answer(forged)) == ("UNAUTHENTICATED", "payer_signature")

            beyond, _ = signed_update(payer, state1, [payment(5)], deposit_micros=DEPOSIT * 2)
            assert refusal(await stream.answer(beyond)) == (
                "FAILED_PRECONDITION",
                "state.deposit_micros",
            )

            stranger = channels_pb2.ChannelUpdate()
            stranger.CopyFrom(good)
            stranger.channel_id = bytes(16)
            assert refusal(await stream.answer(stranger)) == ("NOT_FOUND", "channel_id")

            height = node.client().status().height
            (invoiced,) = await stream.invoices(payer, channel_id, 1)
            lock = channels_pb2.HashLock(
                hash=invoiced, amount_micros=5, expiry_height=height + 1_000
            )
            locked, state2 = signed_update(payer, state1, [payment(5)], lock=lock)
            assert (await stream.answer(locked)).ack.sequence == 2
            # Once the lock is durable the payee reveals the preimage: proof of payment.
            resolved = (await stream.next_event()).resolved
            assert (resolved.hash, sha256(resolved.preimage)) == (invoiced, invoiced)
            right, state3 = signed_update(payer, state2, [], preimages=[resolved.preimage])
            assert state3.payee_micros == 105
            assert (await stream.answer(right)).ack.sequence == 3

    asyncio.run(scenario())
    # After every refusal the payee moved only with the good updates.
    held = channels_pb2.ChannelState.FromString(payee_state(node, channel_id).state.state)
    assert (held.sequence, held.payee_micros, list(held.locks)) == (3, 105, [])


def test_refunds_offered_by_the_payee_reach_the_payer_and_settle(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    channel_id = open_channel(node, wallet)
    asyncio.run(pay(wallet, channel_id, updates=1, per_update=10))  # 70 paid
    offer = channels_pb2.RefundOffer(
        channel_id=channel_id, payment=payment(30, claim_id="CLM0", procedure_code="99213")
    )
    sign_refund(node.payer, CHAIN_ID, offer)
    forged = channels_pb2.RefundOffer()
    forged.CopyFrom(offer)
    forged.payment.amount_micros = 60  # the signature covered 30
    with node.channel() as channel:
        stub = channels_pb2_grpc.ChannelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.OfferRefund(forged, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub.OfferRefund(offer, timeout=10)

    async def take_refund() -> channels_pb2.SignedChannelState:
        async with wallet.session(channel_id) as session:
            assert list(session.refund_offers) == [offer.payment.payment_id]
            return await (await session.send([payment(1)]))

    state = channels_pb2.ChannelState.FromString(asyncio.run(take_refund()).state)
    assert (state.payee_micros, state.payer_micros) == (70 + 1 - 30, DEPOSIT - 71 + 30)
    assert payee_state(node, channel_id).pending_refunds == []
    # The signed offer, replayed (by the payer, who saw it), is not a second refund; nor
    # after the node restarts.
    for restart in (False, True):
        if restart:
            node.restart()
            wallet.set_address(channel_id, node.address)
        with node.channel() as channel:
            stub = channels_pb2_grpc.ChannelServiceStub(channel)
            with pytest.raises(grpc.RpcError) as replayed:
                stub.OfferRefund(offer, timeout=10)
        assert replayed.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert (replayed.value.details() or "").startswith("payment.payment_id")
    assert payee_state(node, channel_id).pending_refunds == []


def advance(node: RunningNode, blocks: int) -> None:
    """Commits `blocks` blocks (a single node only makes blocks when there is work)."""
    client = node.client()
    for _ in range(blocks):
        height = client.status().height
        tx = node.builder().transfer(
            to=node.payer.public_key, amount_micros=1, expiry_height=height + 20
        )
        client.submit(tx)


def wait_for(predicate: object, timeout_s: float = 30.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_payer_closing_with_an_old_state_is_challenged_and_the_newer_state_settles(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    channel_id = open_channel(node, wallet, challenge_blocks=6)
    asyncio.run(pay(wallet, channel_id, updates=1, per_update=1))
    old = channels_pb2.SignedChannelState()
    old.CopyFrom(wallet.local(channel_id).latest)  # sequence 1: 7 paid
    asyncio.run(pay(wallet, channel_id, updates=5, per_update=10))  # sequence 6: 357 paid
    payee_before = node.client().get_account(node.payer.public_key).balance_micros

    cheat = wallet.builder.force_close_channel(
        channel_id=channel_id, state=old, expiry_height=node.client().status().height + 50
    )
    assert node.client().submit(cheat).code == tx_pb2.RESULT_CODE_OK

    def pending_sequence() -> int:
        return wallet.on_chain(channel_id).channel.pending_state.sequence

    wait_for(lambda: pending_sequence() == 6)  # the node's watcher challenged, unprompted
    advance(node, 8)  # past the window: the watcher settles too
    wait_for(
        lambda: wallet.on_chain(channel_id).channel.status == channels_pb2.CHANNEL_STATUS_SETTLED
    )
    settled = wallet.on_chain(channel_id).channel
    assert settled.payee_paid_micros == 357
    assert settled.payer_paid_micros == DEPOSIT - 357
    payee_after = node.client().get_account(node.payer.public_key).balance_micros
    assert payee_after - payee_before >= 357  # plus the 1-micro transfers that moved blocks


async def lock_and_withhold(
    node: RunningNode, wallet: ChannelWallet, channel_id: bytes, amount: int
) -> channels_pb2.SignedChannelState:
    """Locks `amount` on an invoice of the node's, hears the preimage, and never pays:
    returns the state both signed with the lock pending."""
    async with RawStream(node.address) as stream:
        (invoice,) = await stream.invoices(wallet.key, channel_id, 1)
        height = node.client().status().height
        lock = channels_pb2.HashLock(hash=invoice, amount_micros=amount, expiry_height=height + 40)
        update, _ = signed_update(
            wallet.key,
            initial_state(channel_id, 0),
            [payment(amount // 3) for _ in range(3)],
            lock=lock,
        )
        ack = (await stream.answer(update)).ack
        assert sha256((await stream.next_event()).resolved.preimage) == invoice
    return channels_pb2.SignedChannelState(
        state=update.state,
        payer_signature=update.payer_signature,
        payee_signature=ack.payee_signature,
    )


def test_a_payer_closing_without_paying_a_revealed_lock_is_made_to_pay_it_on_the_ledger(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    """The payer has the preimage (the service was delivered) and closes with the latest
    state, the lock still pending in it: the node's watcher reveals the preimage on the
    ledger within the window, and the lock settles to the payee."""
    channel_id = open_channel(node, wallet, challenge_blocks=6)
    amount = 3 * 7

    latest = asyncio.run(lock_and_withhold(node, wallet, channel_id, amount))
    close = wallet.builder.force_close_channel(
        channel_id=channel_id, state=latest, expiry_height=node.client().status().height + 50
    )
    assert node.client().submit(close).code == tx_pb2.RESULT_CODE_OK
    wait_for(lambda: len(wallet.on_chain(channel_id).channel.revealed_hashes) == 1)
    advance(node, 8)  # past the window: the watcher settles too
    wait_for(
        lambda: wallet.on_chain(channel_id).channel.status == channels_pb2.CHANNEL_STATUS_SETTLED
    )
    settled = wallet.on_chain(channel_id).channel
    assert (settled.payee_paid_micros, settled.payer_paid_micros) == (amount, DEPOSIT - amount)


def test_only_a_party_of_the_channel_reads_its_state_or_asks_for_invoices(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    channel_id = open_channel(node, wallet)
    asyncio.run(pay(wallet, channel_id, updates=1, per_update=1))
    # The payer and the payee may read the state both signed.
    assert payee_state(node, channel_id, wallet.key).state == wallet.local(channel_id).latest
    assert payee_state(node, channel_id).state == wallet.local(channel_id).latest

    def refused(request: channels_pb2.GetChannelStateRequest) -> tuple[str, str]:
        with node.channel() as channel:
            stub = channels_pb2_grpc.ChannelServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.GetChannelState(request, timeout=10)
        code, details = error.value.code(), error.value.details()
        return str(code.name), str(details).split(":")[0]

    def read(key: SigningKey, time_ms: int = 0) -> channels_pb2.GetChannelStateRequest:
        request = channels_pb2.GetChannelStateRequest(channel_id=channel_id, time_ms=time_ms)
        return sign_channel_request(request, key, CHAIN_ID)

    unsigned = channels_pb2.GetChannelStateRequest(channel_id=channel_id)
    assert refused(unsigned) == ("UNAUTHENTICATED", "signature")
    assert refused(read(SigningKey.generate())) == ("UNAUTHENTICATED", "signature")
    stale = read(wallet.key, time_ms=int(time.time() * 1000) - 10 * 60 * 1000)
    assert refused(stale) == ("INVALID_ARGUMENT", "time_ms")
    # A signature for another request (here another channel id) does not carry over.
    moved = read(wallet.key)
    moved.channel_id = open_channel(node, wallet)
    asyncio.run(pay(wallet, moved.channel_id, updates=1, per_update=1))
    assert refused(moved) == ("UNAUTHENTICATED", "signature")

    async def invoices_as(key: SigningKey) -> list[bytes]:
        async with RawStream(node.address) as stream:
            return await stream.invoices(key, channel_id, 2)

    assert len(asyncio.run(invoices_as(wallet.key))) == 2
    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        asyncio.run(invoices_as(SigningKey.generate()))
    assert stranger.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (stranger.value.details() or "").startswith("signature")


def test_a_stream_that_only_knows_the_channel_id_hears_none_of_its_events(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    """A payer's pending lock outcome (here a revealed preimage) is repeated to each new
    stream of the channel, but only to one whose update the payer signed."""
    channel_id = open_channel(node, wallet)
    asyncio.run(lock_and_withhold(node, wallet, channel_id, 3 * 5))
    latest = wallet.local(channel_id)  # the wallet did not see the locked update
    assert not latest.latest.state

    async def eavesdrop() -> None:
        async with RawStream(node.address) as stream:
            held = channels_pb2.ChannelState.FromString(payee_state(node, channel_id).state.state)
            forged, _ = signed_update(SigningKey.generate(), held, [payment(5)])
            answer = await stream.answer(forged)
            assert answer.WhichOneof("event") == "refusal"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stream.next_event(), 1.5)
        # The payer itself, resending the state both signed, hears the preimage again.
        async with RawStream(node.address) as stream:
            signed = payee_state(node, channel_id).state
            resend = channels_pb2.ChannelUpdate(
                channel_id=channel_id,
                state=signed.state,
                payer_signature=signed.payer_signature,
            )
            events = [await stream.answer(resend), await stream.next_event()]
            kinds = sorted(e.WhichOneof("event") or "" for e in events)
            assert kinds == ["ack", "resolved"]

    asyncio.run(eavesdrop())


def test_a_payer_withholding_a_revealed_lock_is_closed_on_the_ledger_before_it_expires(
    node: RunningNode, wallet: ChannelWallet
) -> None:
    channel_id = open_channel(node, wallet, challenge_blocks=3)
    amount = 3 * 11
    latest = asyncio.run(lock_and_withhold(node, wallet, channel_id, amount))
    expiry = channels_pb2.ChannelState.FromString(latest.state).locks[0].expiry_height

    def status() -> channels_pb2.Channel:
        return wallet.on_chain(channel_id).channel

    # Blocks pass; as the lock nears its expiry the node closes with the preimage.
    while status().status == channels_pb2.CHANNEL_STATUS_OPEN:
        assert node.client().status().height < expiry, "the lock expired unclaimed"
        advance(node, 1)
        time.sleep(0.05)  # the watcher runs after each block
    closing = status()
    assert closing.closed_by == node.payer.public_key
    assert list(closing.revealed_hashes) == [
        channels_pb2.ChannelState.FromString(latest.state).locks[0].hash
    ]
    advance(node, 5)  # past the window: the watcher settles too
    wait_for(lambda: status().status == channels_pb2.CHANNEL_STATUS_SETTLED)
    assert (status().payee_paid_micros, status().payer_paid_micros) == (amount, DEPOSIT - amount)


def test_sigkill_of_the_payee_mid_stream_loses_no_acknowledged_payment(tmp_path: Path) -> None:
    node = launch(tmp_path / "home")
    wallet = new_wallet(node, tmp_path / "payer")
    try:
        channel_id = open_channel(node, wallet)
        acked: list[int] = []
        broken: list[ChannelRefused] = []

        def record_ack(done: asyncio.Future[channels_pb2.SignedChannelState]) -> None:
            if done.exception() is None:
                acked.append(channels_pb2.ChannelState.FromString(done.result().state).sequence)

        async def stream_until_killed() -> None:
            async with wallet.session(channel_id) as session:
                for _ in range(10_000):
                    try:
                        pending = await session.send([payment(3) for _ in range(20)])
                    except ChannelRefused as error:
                        broken.append(error)  # the stream broke under us
                        break
                    pending.add_done_callback(record_ack)
                    if len(acked) >= 50 and node.process.process.poll() is None:
                        node.process.kill()
                    await asyncio.sleep(0)

        asyncio.run(stream_until_killed())
        assert broken, "the stream should break when the payee is killed"
        assert broken[0].status == "UNAVAILABLE"
        assert len(acked) >= 50
        last_acked = max(acked)

        node.restart()
        # The payer reopens its wallet; the node listens on a fresh port after the restart.
        wallet.close_store()
        wallet = ChannelWallet(wallet.key, node.client(), tmp_path / "payer")
        wallet.set_address(channel_id, node.address)
        held = channels_pb2.ChannelState.FromString(payee_state(node, channel_id).state.state)
        assert held.sequence >= last_acked  # every acknowledged update survived the kill

        async def resume() -> channels_pb2.ChannelState:
            async with wallet.session(channel_id) as session:
                # The session adopted the payee's durable state and builds on it.
                assert session.acked_state.sequence == held.sequence
                signed = await (await session.send([payment(3)]))
                return channels_pb2.ChannelState.FromString(signed.state)

        resumed = asyncio.run(resume())
        assert resumed.sequence == held.sequence + 1
        assert resumed.payee_micros == held.payee_micros + 3
        assert payee_state(node, channel_id).state == wallet.local(channel_id).latest

        wallet.close(channel_id)
        settled = wallet.on_chain(channel_id).channel
        assert settled.payee_paid_micros == resumed.payee_micros
        assert settled.payer_paid_micros == DEPOSIT - resumed.payee_micros
    finally:
        wallet.close_store()
        node.process.stop()


def test_a_payee_that_stops_answering_fails_the_stream_at_the_deadline(tmp_path: Path) -> None:
    """A payee that hangs with the connection open (here SIGSTOPped) gets no say in how
    long the payer waits: the update fails UNAVAILABLE at the acknowledgement deadline,
    and once the payee answers again a new session resumes on the state both hold."""
    node = launch(tmp_path / "home")
    wallet = new_wallet(node, tmp_path / "payer")
    try:
        channel_id = open_channel(node, wallet)

        async def stall() -> None:
            async with wallet.session(channel_id, ack_timeout_s=1.0) as session:
                await (await session.send([payment(7)]))
                node.process.process.send_signal(signal.SIGSTOP)
                try:
                    stalled = await session.send([payment(7), payment(7)])
                    with pytest.raises(ChannelRefused) as failed:
                        await asyncio.wait_for(stalled, 10)
                    assert (failed.value.status, failed.value.field) == ("UNAVAILABLE", "stream")
                    assert "no acknowledgement within 1 s" in failed.value.reason
                    await asyncio.wait_for(session.wait_closed(), 5)  # the stream is over
                    with pytest.raises(ChannelRefused):
                        await session.send([payment(7)])
                finally:
                    node.process.process.send_signal(signal.SIGCONT)

        asyncio.run(stall())
        asyncio.run(pay(wallet, channel_id, updates=1, per_update=1))
        # Whether or not the payee stored the stalled update when it woke, both sides
        # hold the same state, both signatures included.
        assert payee_state(node, channel_id).state == wallet.local(channel_id).latest
        state = channels_pb2.ChannelState.FromString(wallet.local(channel_id).latest.state)
        assert state.payee_micros in (2 * 7, 4 * 7)
    finally:
        wallet.close_store()
        node.process.stop()
