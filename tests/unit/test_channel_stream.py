"""The payee's stream when its client goes away mid-update: an update accepted and being
written must still take effect in full once it is on disk. gRPC cancels the handler of a
stream whose client vanished (a hub SIGKILLed, say); that cancellation used to reach the
shared "durable" future, so a lock written to disk was never revealed and a routed
payment hung on both hops.

Real LMDB and the real servicer and payee; the ledger, which is not under test, is a
one-channel stand-in, and the store's write waits on a gate so the stream is cancelled
exactly while its update is being written."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from medledger.api.channels import ChannelServicer, Context
from medledger.channels.payee import Payee
from medledger.channels.rules import ChannelRuleError, LockedPayments, UpdateParts, next_state
from medledger.channels.signing import initial_state, sign_channel_request, sign_state
from medledger.channels.store import ChannelStore, Write
from medledger.client.channels import payment
from medledger.crypto import SigningKey, sha256
from medledger.wire.v1 import channels_pb2

CHAIN_ID = "medledger-stream-test"
CHANNEL_ID = bytes(range(16))
DEPOSIT = 1_000_000


class GatedStore(ChannelStore):
    """A real channel store whose writes, once armed, wait until the gate opens."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.armed = False
        self.writing = threading.Event()
        self.gate = threading.Event()

    def write(self, writes: list[Write]) -> None:
        if self.armed:
            self.writing.set()
            assert self.gate.wait(10), "the test never opened the gate"
        super().write(writes)


class OneChannel:
    """The ledger as the payee reads it: one open channel."""

    def __init__(self, payer: bytes, payee: bytes) -> None:
        self.record = channels_pb2.Channel(
            channel_id=CHANNEL_ID,
            payer=payer,
            payee=payee,
            deposit_micros=DEPOSIT,
            challenge_blocks=10,
            status=channels_pb2.CHANNEL_STATUS_OPEN,
        )

    async def channel(self, channel_id: bytes) -> channels_pb2.Channel | None:
        return self.record if channel_id == CHANNEL_ID else None

    def height(self) -> int:
        return 1


def locked_update(payer: SigningKey, lock_hash: bytes) -> channels_pb2.ChannelUpdate:
    batch = channels_pb2.PaymentBatch(payments=[payment(70, claim_id="CLM1")])
    lock = channels_pb2.HashLock(hash=lock_hash, amount_micros=70, expiry_height=100)
    state = next_state(
        initial_state(CHANNEL_ID, DEPOSIT),
        UpdateParts(
            batch=batch,
            batch_bytes=batch.SerializeToString(deterministic=True),
            deposit_micros=DEPOSIT,
            locks=[LockedPayments(lock, 1)],
        ),
    )
    encoded = state.SerializeToString(deterministic=True)
    return channels_pb2.ChannelUpdate(
        channel_id=CHANNEL_ID,
        batch=batch,
        state=encoded,
        payer_signature=sign_state(payer, CHAIN_ID, encoded),
        new_locks=[channels_pb2.NewLock(hash=lock_hash, payments=1)],
    )


async def one_update(
    update: channels_pb2.ChannelUpdate,
) -> AsyncIterator[channels_pb2.ChannelUpdate]:
    yield update
    await asyncio.Event().wait()  # the client keeps the stream open


def test_a_stream_cancelled_while_its_lock_is_written_still_reveals_the_lock(
    tmp_path: Path,
) -> None:
    payer, payee_key = SigningKey.generate(), SigningKey.generate()
    store = GatedStore(tmp_path / "channels")
    no_context = cast(Context, None)  # Stream does not use its context

    async def scenario() -> tuple[list[channels_pb2.ChannelEvent], list[channels_pb2.ChannelEvent]]:
        payee = Payee(
            payee_key, CHAIN_ID, store, OneChannel(payer.public_key, payee_key.public_key)
        )
        payee.start()
        servicer = ChannelServicer(payee)
        (lock_hash,) = await payee.invoices(
            sign_channel_request(
                channels_pb2.InvoiceRequest(channel_id=CHANNEL_ID, count=1), payer, CHAIN_ID
            )
        )
        update = locked_update(payer, lock_hash)

        store.armed = True
        stream: Any = servicer.Stream(one_update(update), no_context)
        answer = asyncio.get_running_loop().create_task(stream.__anext__())
        while not store.writing.is_set():  # the update is accepted and being written
            await asyncio.sleep(0.001)
        answer.cancel()  # the client went away: gRPC cancels the handler
        await asyncio.gather(answer, return_exceptions=True)
        await stream.aclose()
        store.armed = False
        store.gate.set()
        await payee.commit.commit([])  # after the gated group: that one is on disk

        # The channel's listeners hear the lock's outcome; a resend of the same update
        # on a new stream hears it too and is acknowledged, not left hanging on the
        # cancelled write.
        heard: list[channels_pb2.ChannelEvent] = []
        payee.listen(CHANNEL_ID, heard.append)
        again: Any = servicer.Stream(one_update(update), no_context)
        resent = [await asyncio.wait_for(again.__anext__(), 5) for _ in range(2)]
        await again.aclose()
        await payee.stop()
        return heard, resent

    heard, resent = asyncio.run(scenario())
    resolved = [event.resolved for event in heard if event.WhichOneof("event") == "resolved"]
    assert len(resolved) == 1
    assert sha256(resolved[0].preimage) == resolved[0].hash
    kinds = {event.WhichOneof("event"): event for event in resent}
    assert set(kinds) == {"resolved", "ack"}
    assert kinds["resolved"].resolved == resolved[0]
    assert kinds["ack"].ack.sequence == 1
    store.close()


def test_a_payee_refuses_a_channel_whose_window_is_shorter_than_it_needs(tmp_path: Path) -> None:
    """Issue 15, case 10: a payee needs enough blocks to answer a close with an old
    state; it serves no channel whose challenge window is shorter (real LMDB store)."""
    payer, payee_key = SigningKey.generate(), SigningKey.generate()
    ledger = OneChannel(payer.public_key, payee_key.public_key)  # a 10-block window
    store = ChannelStore(tmp_path / "channels")

    async def ask(minimum: int) -> list[bytes]:
        payee = Payee(payee_key, CHAIN_ID, store, ledger, min_challenge_blocks=minimum)
        payee.start()
        try:
            request = channels_pb2.InvoiceRequest(channel_id=CHANNEL_ID, count=1)
            return await asyncio.wait_for(
                payee.invoices(sign_channel_request(request, payer, CHAIN_ID)), 10
            )
        finally:
            await payee.stop()

    with pytest.raises(ChannelRuleError) as refused:
        asyncio.run(ask(20))
    assert (refused.value.status, refused.value.field) == ("FAILED_PRECONDITION", "channel_id")
    assert "shorter than the 20" in refused.value.reason
    assert len(asyncio.run(ask(10))) == 1
    store.close()
