"""The payer's SDK for payment channels: open and fund a channel on the ledger, stream
payments to the payee, close cooperatively or unilaterally.

    wallet = ChannelWallet(key, ledger, Path("payer-channels"))
    local = wallet.open(payee=provider_key, deposit_micros=10_000_000, address="host:7070")
    async with wallet.session(local.channel_id) as session:
        acked = await session.send([payment(...), ...])
        await acked
    wallet.close(local.channel_id)  # asks the payee for a final state, then settles
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from medledger.channels.payer import (
    ACK_TIMEOUT_S,
    UPDATES_IN_FLIGHT_MAX,
    PayerSession,
    new_payment_id,
)
from medledger.channels.rules import ChannelRuleError
from medledger.channels.store import ChannelStore
from medledger.client.sync import LedgerClient
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.tx import TxBuilder
from medledger.wire.v1 import channels_pb2, envelope_pb2, ledger_pb2, tx_pb2

__all__ = [
    "DEFAULT_CHALLENGE_BLOCKS",
    "ROUTED_LOCK_BLOCKS",
    "ChannelWallet",
    "RemoteChannelLedger",
    "payment",
    "routed_lock",
]

DEFAULT_CHALLENGE_BLOCKS = 100
EXPIRY_BLOCKS = 100
HEIGHT_POLL_S = 1.0
ROUTED_LOCK_BLOCKS = 100
"""How long a routed payment's lock lasts: the hub needs its own margin behind it."""


def payment(
    amount_micros: int,
    *,
    claim_id: str = "",
    procedure_code: str = "",
    units: int = 0,
    patient_ref: bytes = b"",
    service_date: str = "",
    payment_id: bytes | None = None,
) -> channels_pb2.Payment:
    """One payment line; the billing fields are optional."""
    return channels_pb2.Payment(
        payment_id=payment_id or new_payment_id(),
        amount_micros=amount_micros,
        line=channels_pb2.BillingLine(
            claim_id=claim_id,
            procedure_code=procedure_code,
            units=units,
            patient_ref=patient_ref,
            service_date=service_date,
        ),
    )


def routed_lock(
    lock_hash: bytes, payments: Sequence[channels_pb2.Payment], height: int
) -> channels_pb2.HashLock:
    """The lock a routed batch of `payments` is conditional on (an invoice's hash)."""
    return channels_pb2.HashLock(
        hash=lock_hash,
        amount_micros=sum(p.amount_micros for p in payments),
        expiry_height=height + ROUTED_LOCK_BLOCKS,
    )


def _committed(receipt: tx_pb2.Receipt, what: str) -> tx_pb2.Receipt:
    if receipt.status != tx_pb2.TX_STATUS_COMMITTED or receipt.code != tx_pb2.RESULT_CODE_OK:
        reason = receipt.message or tx_pb2.ResultCode.Name(receipt.code)
        raise Rejected("FAILED_PRECONDITION", what, reason)
    return receipt


class ChannelWallet:
    """A payer's channels, kept in its own LMDB at `root`."""

    def __init__(self, key: SigningKey, ledger: LedgerClient, root: Path) -> None:
        self.key = key
        self.ledger = ledger
        self.chain_id = ledger.status().chain_id
        self.builder = TxBuilder(key, self.chain_id)
        self.store = ChannelStore(root)

    def close_store(self) -> None:
        self.store.close()

    def _expiry(self) -> int:
        return int(self.ledger.status().height) + EXPIRY_BLOCKS

    def on_chain(self, channel_id: bytes) -> ledger_pb2.GetChannelResponse:
        return self.ledger.get_channel(channel_id)

    def local(self, channel_id: bytes) -> channels_pb2.LocalChannel:
        local = self.store.channel(channel_id)
        if local is None:
            raise Rejected("NOT_FOUND", "channel_id", "this wallet has no such channel")
        return local

    def open(
        self,
        *,
        payee: bytes,
        deposit_micros: int,
        address: str,
        challenge_blocks: int = DEFAULT_CHALLENGE_BLOCKS,
        channel_id: bytes | None = None,
    ) -> channels_pb2.LocalChannel:
        """Opens a channel on the ledger (waiting for the commit) and remembers where the
        payee's ChannelService listens."""
        tx = self.builder.open_channel(
            payee=payee,
            deposit_micros=deposit_micros,
            challenge_blocks=challenge_blocks,
            expiry_height=self._expiry(),
            channel_id=channel_id,
        )
        opened = tx_pb2.TransactionBody.FromString(tx.body).open_channel
        _committed(self.ledger.submit(tx), "open_channel")
        local = channels_pb2.LocalChannel(
            channel_id=opened.channel_id,
            payer=self.key.public_key,
            payee=payee,
            deposit_micros=deposit_micros,
            challenge_blocks=challenge_blocks,
            address=address,
        )
        self.store.write([self.store.channel_write(local)])
        return local

    def set_address(self, channel_id: bytes, address: str) -> None:
        """Where the payee's ChannelService listens now (it moved or restarted elsewhere)."""
        local = self.local(channel_id)
        local.address = address
        self.store.write([self.store.channel_write(local)])

    def top_up(self, channel_id: bytes, amount_micros: int) -> None:
        local = self.local(channel_id)
        tx = self.builder.top_up_channel(
            channel_id=channel_id, amount_micros=amount_micros, expiry_height=self._expiry()
        )
        _committed(self.ledger.submit(tx), "top_up_channel")
        local.deposit_micros += amount_micros
        self.store.write([self.store.channel_write(local)])

    def session(
        self,
        channel_id: bytes,
        *,
        in_flight_max: int = UPDATES_IN_FLIGHT_MAX,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> PayerSession:
        local = self.local(channel_id)
        return PayerSession(
            self.key,
            self.chain_id,
            self.store,
            local,
            local.address,
            in_flight_max=in_flight_max,
            ack_timeout_s=ack_timeout_s,
            tls=self.ledger.tls,  # payees are the consortium's nodes (or its hubs)
        )

    async def final_state(self, channel_id: bytes) -> channels_pb2.SignedChannelState:
        """Asks the payee to countersign a final state (no further payments)."""
        async with self.session(channel_id) as session:
            acked = await session.send([], final=True)
            return await acked

    def close(self, channel_id: bytes) -> tx_pb2.Receipt:
        """Cooperative close: a final state both signed settles at once."""
        final = asyncio.run(self.final_state(channel_id))
        tx = self.builder.close_channel(state=final, expiry_height=self._expiry())
        return _committed(self.ledger.submit(tx), "close_channel")

    def force_close(self, channel_id: bytes) -> tx_pb2.Receipt:
        """Unilateral close with the latest state both signed; settle after the window."""
        local = self.local(channel_id)
        state = local.latest if local.latest.state else None
        tx = self.builder.force_close_channel(
            channel_id=channel_id, state=state, expiry_height=self._expiry()
        )
        return _committed(self.ledger.submit(tx), "force_close_channel")

    def settle(self, channel_id: bytes) -> tx_pb2.Receipt:
        tx = self.builder.settle_channel(channel_id=channel_id, expiry_height=self._expiry())
        return _committed(self.ledger.submit(tx), "settle_channel")


class RemoteChannelLedger:
    """`ChannelLedger` over a node's LedgerService, for a channel runtime that runs beside
    a node rather than inside one (a hub). The height is polled by `follow()`."""

    def __init__(self, client: LedgerClient) -> None:
        self.client = client
        self._height = int(client.status().height)

    async def channel(self, channel_id: bytes) -> channels_pb2.Channel | None:
        try:
            response = await asyncio.to_thread(self.client.get_channel, channel_id)
        except Rejected as error:
            if error.status == "NOT_FOUND":
                return None
            raise ChannelRuleError("UNAVAILABLE", "channel_id", f"the ledger: {error}") from error
        self._height = max(self._height, int(response.height))
        return response.channel

    def height(self) -> int:
        return self._height

    async def submit(self, tx: envelope_pb2.SignedTransaction) -> tx_pb2.Receipt:
        """Submits `tx` and waits for its commit."""
        return await asyncio.to_thread(self.client.submit, tx)

    async def follow(self) -> None:
        """Keeps `height()` current; a ledger that is briefly unreachable is retried."""
        while True:
            await asyncio.sleep(HEIGHT_POLL_S)
            try:
                status = await asyncio.to_thread(self.client.status)
            except Rejected:
                continue
            self._height = max(self._height, int(status.height))
