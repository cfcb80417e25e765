"""LedgerService: the client API. Rules live in the node and the application; this
module only translates between gRPC and them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc

from medledger import merkle
from medledger.api.reads import reading, requester_of
from medledger.api.status import abort, require_length
from medledger.app import queries
from medledger.channels.rules import ChannelRuleError, check_channel_id
from medledger.errors import Rejected
from medledger.node.ledger_node import Admitted, LedgerNode, committed_receipt
from medledger.transport.grpc_common import STATUS_BY_CODE
from medledger.wire.v1 import envelope_pb2, ledger_pb2, ledger_pb2_grpc, tx_pb2

__all__ = ["LedgerServicer"]

WAIT_FOR_COMMIT_S = 30.0
"""Longest a submit waits for a commit when the client set no deadline."""
STREAM_BATCHES_IN_FLIGHT_MAX = 64
"""Batches one SubmitStream may have admitted but not yet answered (back-pressure)."""


def wait_budget_s(context: grpc.aio.ServicerContext[Any, Any]) -> float:
    remaining = context.time_remaining()
    return WAIT_FOR_COMMIT_S if remaining is None else max(0.0, remaining)


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, node: LedgerNode) -> None:
        self.node = node

    async def Submit(  # noqa: N802 - gRPC method name
        self,
        request: ledger_pb2.SubmitRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.SubmitRequest, ledger_pb2.SubmitResponse],
    ) -> ledger_pb2.SubmitResponse:
        if not request.HasField("tx"):
            await abort(context, Rejected("INVALID_ARGUMENT", "tx", "is required"))
        (answer,) = self.node.submit([request.tx])
        if answer.receipt is not None and answer.receipt.status == tx_pb2.TX_STATUS_REJECTED:
            await context.abort(STATUS_BY_CODE[answer.receipt.error_code], answer.receipt.message)
        if not request.wait_for_commit:
            return ledger_pb2.SubmitResponse(receipt=answer.pending_receipt())
        try:
            receipt = await answer.result(wait_budget_s(context))
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "not committed before the deadline"
            )
        return ledger_pb2.SubmitResponse(receipt=receipt)

    async def SubmitStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[ledger_pb2.SubmitBatch],
        context: grpc.aio.ServicerContext[ledger_pb2.SubmitBatch, ledger_pb2.SubmitBatchResult],
    ) -> AsyncIterator[ledger_pb2.SubmitBatchResult]:
        answers: asyncio.Queue[tuple[int, list[Admitted]] | Rejected | None] = asyncio.Queue(
            STREAM_BATCHES_IN_FLIGHT_MAX
        )
        batch_txs_max = self.node.config.submit_batch_txs_max

        async def admit_batches() -> None:
            try:
                async for batch in request_iterator:
                    if len(batch.txs) > batch_txs_max:
                        reason = f"{len(batch.txs)} exceeds SUBMIT_BATCH_TXS_MAX {batch_txs_max}"
                        await answers.put(Rejected("RESOURCE_EXHAUSTED", "txs", reason))
                        return
                    await answers.put((batch.batch_id, self.node.submit(batch.txs)))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(admit_batches())
        try:
            while (item := await answers.get()) is not None:
                if isinstance(item, Rejected):
                    await abort(context, item)
                    return
                batch_id, admitted = item
                waiting = [
                    a.pending for a in admitted if a.pending is not None and not a.pending.done()
                ]
                if waiting:
                    # One wait for the whole batch, not one timer per transaction.
                    _, late = await asyncio.wait(waiting, timeout=wait_budget_s(context))
                    if late:
                        await context.abort(
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"batch {batch_id}: {len(late)} transactions not committed in time",
                        )
                receipts: list[tx_pb2.Receipt] = []
                for answer in admitted:
                    receipt = answer.receipt if answer.pending is None else answer.pending.result()
                    assert receipt is not None, "an answer has a receipt or a pending one"
                    receipts.append(receipt)
                yield ledger_pb2.SubmitBatchResult(batch_id=batch_id, receipts=receipts)
        finally:
            reader.cancel()

    async def GetTransaction(  # noqa: N802
        self,
        request: ledger_pb2.GetTransactionRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.GetTransactionRequest, ledger_pb2.GetTransactionResponse
        ],
    ) -> ledger_pb2.GetTransactionResponse:
        store = self.node.store
        tx_id = request.tx_id
        if not tx_id and request.tx_hash:
            tx_id = store.tx_id_for_hash(request.tx_hash) or b""
        if not tx_id:
            field = "tx_hash" if request.tx_hash else "tx_id"
            if not request.tx_hash and not request.tx_id:
                await abort(
                    context, Rejected("INVALID_ARGUMENT", "tx_id", "tx_id or tx_hash is required")
                )
            await abort(context, Rejected("NOT_FOUND", field, "no such transaction"))
        requester = await requester_of(context, self.node, request, required=False)
        record = store.tx_record(tx_id)
        if record is None:
            pending = self.node.pending_receipt(tx_id)
            if pending is None:
                await abort(context, Rejected("NOT_FOUND", "tx_id", "no such transaction"))
            return ledger_pb2.GetTransactionResponse(receipt=pending)
        block = envelope_pb2.Block.FromString(store.block(record.height) or b"")
        commit = envelope_pb2.CommitCertificate.FromString(store.commit(record.height) or b"")
        tx = block.txs[record.index]
        if requester is None:
            entitled = False
        else:
            with store.snapshot() as snapshot:
                entitled = reading(self.node, snapshot, requester).transaction(tx.public_key)
        if not entitled:
            # The receipt is no health metadata; the body may be (a consent, an anchor).
            return ledger_pb2.GetTransactionResponse(
                receipt=committed_receipt(tx_id, record), header=block.header, commit=commit
            )
        leaves = [tx.SerializeToString(deterministic=True) for tx in block.txs]
        proof = ledger_pb2.InclusionProof(
            leaf_index=record.index,
            tree_size=len(leaves),
            hashes=merkle.inclusion_proof(leaves, record.index),
        )
        return ledger_pb2.GetTransactionResponse(
            receipt=committed_receipt(tx_id, record),
            tx=tx,
            proof=proof,
            header=block.header,
            commit=commit,
            transitions=self._transitions(record.height),
        )

    def _transitions(self, height: int) -> list[ledger_pb2.ValidatorTransition]:
        """Each validator-set change up to `height`: the last block before it (header and
        certificate, by the set then in force) and the new set."""
        store = self.node.store
        transitions = []
        for change in self.node.schedule.changes(height):
            before = change.effective_height - 1
            block = envelope_pb2.Block.FromString(store.block(before) or b"")
            transitions.append(
                ledger_pb2.ValidatorTransition(
                    header=block.header,
                    commit=envelope_pb2.CommitCertificate.FromString(store.commit(before) or b""),
                    validators=[
                        ledger_pb2.ValidatorPower(public_key=v.public_key, power=v.power)
                        for v in change.validators
                    ],
                )
            )
        return transitions

    async def GetBlock(  # noqa: N802
        self,
        request: ledger_pb2.GetBlockRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.GetBlockRequest, ledger_pb2.GetBlockResponse],
    ) -> ledger_pb2.GetBlockResponse:
        requester = await requester_of(context, self.node, request, required=False)
        height = request.height or self.node.head.height
        response = self._block(height, self._entitled_to_blocks(requester))
        if response is None:
            await abort(context, Rejected("NOT_FOUND", "height", f"no block at height {height}"))
        assert response is not None
        return response

    async def GetAccount(  # noqa: N802
        self,
        request: ledger_pb2.GetAccountRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.GetAccountRequest, ledger_pb2.GetAccountResponse
        ],
    ) -> ledger_pb2.GetAccountResponse:
        await require_length(context, "owner", request.owner, 32)
        account = self.node.store.account(request.owner)
        if account is None:
            await abort(context, Rejected("NOT_FOUND", "owner", "no account for this key"))
        return ledger_pb2.GetAccountResponse(account=account)

    async def GetMember(  # noqa: N802
        self,
        request: ledger_pb2.GetMemberRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.GetMemberRequest, ledger_pb2.GetMemberResponse
        ],
    ) -> ledger_pb2.GetMemberResponse:
        await require_length(context, "public_key", request.public_key, 32)
        requester = await requester_of(context, self.node, request, required=True)
        assert requester is not None
        with self.node.store.snapshot() as snapshot:
            try:
                reading(self.node, snapshot, requester).member(request.public_key)
            except Rejected as refused:
                await abort(context, refused)
            member = queries.member(snapshot, request.public_key)
            if member is None:
                await abort(
                    context,
                    Rejected("NOT_FOUND", "public_key", "no member organisation enrolled it"),
                )
            organisation = queries.organisation(snapshot, member.organisation)
            roles = queries.roles(snapshot, request.public_key, int(time.time() * 1000))
        return ledger_pb2.GetMemberResponse(
            member=member,
            organisation=organisation,
            active_roles=sorted(roles),  # type: ignore[arg-type]
        )

    async def GetChannel(  # noqa: N802
        self,
        request: ledger_pb2.GetChannelRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.GetChannelRequest, ledger_pb2.GetChannelResponse
        ],
    ) -> ledger_pb2.GetChannelResponse:
        try:
            check_channel_id(request.channel_id)
        except ChannelRuleError as error:
            await abort(context, error)
        with self.node.store.snapshot() as snapshot:
            channel = queries.channel(snapshot, request.channel_id)
            height = self.node.head.height
        if channel is None:
            await abort(context, Rejected("NOT_FOUND", "channel_id", "no such channel"))
        return ledger_pb2.GetChannelResponse(channel=channel, height=height)

    async def StreamBlocks(  # noqa: N802
        self,
        request: ledger_pb2.StreamBlocksRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.StreamBlocksRequest, ledger_pb2.GetBlockResponse
        ],
    ) -> AsyncIterator[ledger_pb2.GetBlockResponse]:
        requester = await requester_of(context, self.node, request, required=False)
        height = max(1, request.from_height)
        while True:
            while height <= self.node.head.height:
                # Asked again for every block: an auditor dismissed (or a validator
                # removed) mid-stream gets headers from then on.
                response = self._block(height, self._entitled_to_blocks(requester))
                assert response is not None, "every height up to the head is stored"
                yield response
                height += 1
            async with self.node.new_block:
                await self.node.new_block.wait_for(partial(self._reached, height))

    async def GetStatus(  # noqa: N802
        self,
        request: ledger_pb2.GetStatusRequest,
        context: grpc.aio.ServicerContext[
            ledger_pb2.GetStatusRequest, ledger_pb2.GetStatusResponse
        ],
    ) -> ledger_pb2.GetStatusResponse:
        return self.node.status()

    def _reached(self, height: int) -> bool:
        return self.node.head.height >= height

    def _entitled_to_blocks(self, requester: bytes | None) -> bool:
        """Blocks carry every anchor, consent and access event: whole only to a full
        reader (an auditor, a validator); to anyone else, headers and certificates."""
        if requester is None:
            return False
        with self.node.store.snapshot() as snapshot:
            return reading(self.node, snapshot, requester).full

    def _block(self, height: int, whole: bool) -> ledger_pb2.GetBlockResponse | None:
        raw = self.node.store.block(height)
        if raw is None:
            return None
        block = envelope_pb2.Block.FromString(raw)
        if not whole:
            del block.txs[:]
        commit = envelope_pb2.CommitCertificate.FromString(self.node.store.commit(height) or b"")
        return ledger_pb2.GetBlockResponse(
            block=block, commit=commit, block_hash=commit.block_hash, redacted=not whole
        )
