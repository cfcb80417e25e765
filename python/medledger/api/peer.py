"""PeerService: what validators send each other. An adapter: the consensus driver and
the store do the work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from medledger.node.consensus_driver import ConsensusDriver
from medledger.wire.v1 import peer_pb2, peer_pb2_grpc

__all__ = ["PeerServicer"]

BLOCKS_PER_REQUEST_MAX = 100


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, driver: ConsensusDriver) -> None:
        self.driver = driver

    async def Push(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[peer_pb2.PeerMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> peer_pb2.PushAck:
        async for message in request_iterator:
            await self.driver.receive_from_stream(message)
        return peer_pb2.PushAck()

    async def GetProposal(  # noqa: N802
        self, request: peer_pb2.GetProposalRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.GetProposalResponse:
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
        store = self.driver.node.store
        count = min(request.count_max or BLOCKS_PER_REQUEST_MAX, BLOCKS_PER_REQUEST_MAX)
        last = min(store.head.height, request.from_height + count - 1)
        for height in range(max(1, request.from_height), last + 1):
            block, commit = store.block(height), store.commit(height)
            assert block is not None, "every height up to the head is stored"
            assert commit is not None, "every stored block has its certificate"
            yield peer_pb2.BlockWithCommit(block=block, commit=commit)
