"""ChannelService: the payee's end of payment channels over gRPC. The rules live in
`medledger.channels.payee`; this module only moves messages between gRPC and them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from medledger.api.status import abort
from medledger.channels.payee import Payee, Verdict
from medledger.channels.rules import ChannelRuleError
from medledger.errors import Rejected
from medledger.limits import STREAM_PENDING_MAX
from medledger.wire.v1 import channels_pb2

__all__ = ["ChannelServicer"]

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


class ChannelServicer:
    def __init__(self, payee: Payee) -> None:
        self.payee = payee

    async def Stream(  # noqa: N802
        self, updates: AsyncIterator[channels_pb2.ChannelUpdate], context: Context
    ) -> AsyncIterator[channels_pb2.ChannelEvent]:
        outbound: asyncio.Queue[Verdict | None] = asyncio.Queue(STREAM_PENDING_MAX)
        unsubscribes = {}

        def deliver(event: channels_pb2.ChannelEvent) -> None:
            outbound.put_nowait(Verdict(event))

        async def read() -> None:
            try:
                await read_updates()
            except Exception:
                # Whatever failed, the stream ends (the payer's session reconnects and
                # resends) rather than waiting forever for a verdict that never comes.
                log.exception("channel stream: reading updates failed; ending the stream")
            await outbound.put(None)

        async def read_updates() -> None:
            async for update in updates:
                verdict = await self.payee.accept(update)
                # A stream hears a channel's events (preimages, refund offers) only once
                # it carried an update the payer signed: knowing a channel id is not
                # enough. Subscribed before the ack is queued, so outcomes pending from
                # earlier streams arrive first, and with nothing awaited in between.
                accepted = verdict.event.WhichOneof("event") == "ack"
                if accepted and update.channel_id not in unsubscribes:
                    unsubscribes[update.channel_id] = self.payee.listen(update.channel_id, deliver)
                await outbound.put(verdict)

        reader = asyncio.create_task(read())
        try:
            while (verdict := await outbound.get()) is not None:
                if verdict.durable is not None:
                    # Acknowledge only what is on disk. Shielded: gRPC cancels this
                    # handler when the client goes away, and the commit is shared (it
                    # reveals a lock's preimage, answers a resend); the write goes on.
                    await asyncio.shield(verdict.durable)
                yield verdict.event
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            for unsubscribe in unsubscribes.values():
                unsubscribe()

    async def GetChannelState(  # noqa: N802
        self, request: channels_pb2.GetChannelStateRequest, context: Context
    ) -> channels_pb2.GetChannelStateResponse:
        local = self.payee.latest(request.channel_id)
        if local is None:
            await abort(context, Rejected("NOT_FOUND", "channel_id", "no channel to this payee"))
        try:
            self.payee.check_party(local, request)  # balances are the parties' business
        except ChannelRuleError as error:
            await abort(context, Rejected(error.status, error.field, error.reason))
        return channels_pb2.GetChannelStateResponse(
            state=local.latest, pending_refunds=self.payee.pending_offers(request.channel_id)
        )

    async def OfferRefund(  # noqa: N802
        self, request: channels_pb2.RefundOffer, context: Context
    ) -> channels_pb2.OfferRefundResponse:
        try:
            await self.payee.offer_refund(request)
        except ChannelRuleError as error:
            await abort(context, Rejected(error.status, error.field, error.reason))
        return channels_pb2.OfferRefundResponse()

    async def Invoices(  # noqa: N802
        self, request: channels_pb2.InvoiceRequest, context: Context
    ) -> channels_pb2.InvoiceResponse:
        try:
            hashes = await self.payee.invoices(request)
        except ChannelRuleError as error:
            await abort(context, Rejected(error.status, error.field, error.reason))
        return channels_pb2.InvoiceResponse(hashes=hashes)
