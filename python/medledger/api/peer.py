"""PeerService: what validators send each other. An adapter: the consensus driver and
the store do the work.

Over mutual TLS (`authenticated`), every call first names the member organisation whose
CA signed the caller's certificate; the handshake already refused certificates no
current member's CA signed, and a stream whose organisation leaves the consortium is cut
at its next message. A consensus message is then taken only from a validator that
organisation runs (`ConsensusDriver.receive_from_stream`, `via`).

One member cannot starve the others: it holds at most `peer_calls_per_organisation_max`
calls at once (the listener's budget is shared), and a Push stream that stays silent for
`peer_push_silence_ms` is closed, so a held stream must keep passing the membership
check that each message triggers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from medledger.limits import BLOCKS_PER_REQUEST_MAX
from medledger.node.consensus_driver import ConsensusDriver
from medledger.transport.call_guard import Shares
from medledger.wire.v1 import peer_pb2, peer_pb2_grpc

__all__ = ["PeerServicer"]


async def _refuse(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("abort raises")


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, driver: ConsensusDriver, *, authenticated: bool) -> None:
        self.driver = driver
        self.authenticated = authenticated
        self.calls = Shares()  # calls open now, per member organisation

    def _share(
        self, organisation: str | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The call counted against its organisation's share, refused past it. Over clear
        text nobody is known or limited."""
        if organisation is None:
            return contextlib.nullcontext()
        limit = self.driver.config.peer_calls_per_organisation_max
        refusal = (
            f"organisation {organisation}: already holds {limit} calls on this peer listener "
            "(peer_calls_per_organisation_max)"
        )
        return self.calls.holding(context, organisation, limit, refusal)

    async def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The caller's organisation (None over clear text, where nobody is known)."""
        if not self.authenticated:
            return None
        certificates = list(context.auth_context().get("x509_pem_cert") or [])
        membership = self.driver.node.membership
        organisation = membership.organisation_of(certificates[0]) if certificates else None
        if organisation is None:
            await _refuse(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "client certificate: not signed by a member organisation's CA",
            )
        return organisation

    async def Push(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[peer_pb2.PeerMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> peer_pb2.PushAck:
        organisation = await self._caller(context)
        certificates = list(context.auth_context().get("x509_pem_cert") or [])
        silence_s = self.driver.config.peer_push_silence_ms / 1000
        async with self._share(organisation, context):
            messages = aiter(request_iterator)
            while True:
                try:
                    message = await asyncio.wait_for(anext(messages), silence_s)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    await _refuse(
                        context,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no message for {silence_s:g} s (peer_push_silence_ms); reconnect",
                    )
                # Checked at every message, against the ledger's membership now: the
                # organisation may have been removed, or its CA rotated out, meanwhile.
                if organisation is not None and (
                    self.driver.node.membership.organisation_of(certificates[0]) != organisation
                ):
                    await _refuse(
                        context,
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"organisation {organisation}: no longer a member, or its "
                        "certificate's CA is no longer trusted",
                    )
                await self.driver.receive_from_stream(message, via=organisation)
        return peer_pb2.PushAck()

    async def GetProposal(  # noqa: N802
        self, request: peer_pb2.GetProposalRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.GetProposalResponse:
        organisation = await self._caller(context)
        async with self._share(organisation, context):
            block = self.driver.held_block(request.height, request.block_hash)
        if block is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                "block_hash: no proposal of this height with that hash is held here",
            )
        return peer_pb2.GetProposalResponse(block=block)

    async def GetBlocks(  # noqa: N802
        self, request: peer_pb2.GetBlocksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[peer_pb2.BlockWithCommit]:
        organisation = await self._caller(context)
        async with self._share(organisation, context):
            store = self.driver.node.store
            count = min(request.count_max or BLOCKS_PER_REQUEST_MAX, BLOCKS_PER_REQUEST_MAX)
            last = min(store.head.height, request.from_height + count - 1)
            for height in range(max(1, request.from_height), last + 1):
                block, commit = store.block(height), store.commit(height)
                assert block is not None, "every height up to the head is stored"
                assert commit is not None, "every stored block has its certificate"
                yield peer_pb2.BlockWithCommit(block=block, commit=commit)
