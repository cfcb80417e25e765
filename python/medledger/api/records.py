"""RecordService (queries of anchors, consents and access events) and VaultService (the
custodian's vault). Adapters: the application and the vault do the work."""

from __future__ import annotations

from typing import Any

import grpc

from medledger.api.reads import reading, requester_of
from medledger.api.status import abort, require_length
from medledger.app import queries
from medledger.errors import Rejected
from medledger.node.ledger_node import LedgerNode
from medledger.vault.service import Vault
from medledger.wire.v1 import records_pb2

__all__ = ["RecordServicer", "VaultServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class RecordServicer:
    """Anchors, consents and access events, each to a signed reader entitled to it."""

    def __init__(self, node: LedgerNode) -> None:
        self.node = node

    async def GetRecord(  # noqa: N802 - gRPC method name
        self, request: records_pb2.GetRecordRequest, context: Context
    ) -> records_pb2.GetRecordResponse:
        await require_length(context, "record_id", request.record_id, 16)
        requester = await requester_of(context, self.node, request, required=True)
        assert requester is not None
        with self.node.store.snapshot() as snapshot:
            record = queries.record(snapshot, request.record_id)
            try:
                # An unknown record and a forbidden one answer alike: an id reveals nothing.
                if record is None:
                    raise Rejected("NOT_FOUND", "record_id", "unknown record")
                reading(self.node, snapshot, requester).record(record)
            except Rejected as refused:
                if refused.status == "PERMISSION_DENIED":
                    refused = Rejected("NOT_FOUND", "record_id", "unknown record")
                await abort(context, refused)
            versions = queries.record_versions(snapshot, request.record_id)
        return records_pb2.GetRecordResponse(record=record, versions=versions)

    async def ListConsents(  # noqa: N802
        self, request: records_pb2.ListConsentsRequest, context: Context
    ) -> records_pb2.ListConsentsResponse:
        await require_length(context, "patient", request.patient, 32)
        requester = await requester_of(context, self.node, request, required=True)
        assert requester is not None
        with self.node.store.snapshot() as snapshot:
            try:
                consents = reading(self.node, snapshot, requester).consents(request.patient)
            except Rejected as refused:
                await abort(context, refused)
        return records_pb2.ListConsentsResponse(consents=consents)

    async def ListAccessEvents(  # noqa: N802
        self, request: records_pb2.ListAccessEventsRequest, context: Context
    ) -> records_pb2.ListAccessEventsResponse:
        await require_length(context, "patient", request.patient, 32)
        requester = await requester_of(context, self.node, request, required=True)
        assert requester is not None
        with self.node.store.snapshot() as snapshot:
            try:
                events = reading(self.node, snapshot, requester).access_events(request.patient)
            except Rejected as refused:
                await abort(context, refused)
        return records_pb2.ListAccessEventsResponse(events=events)


class VaultServicer:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    async def Put(  # noqa: N802
        self, request: records_pb2.PutRecordRequest, context: Context
    ) -> records_pb2.PutRecordResponse:
        try:
            stored = await self.vault.put(request)
        except Rejected as rejected:
            await abort(context, rejected)
        return records_pb2.PutRecordResponse(
            record_id=stored.record_id,
            version=stored.version,
            commitment=stored.commitment,
            tx_id=stored.tx_id,
            height=stored.height,
        )

    async def Fetch(  # noqa: N802
        self, request: records_pb2.FetchRequest, context: Context
    ) -> records_pb2.FetchResponse:
        try:
            return await self.vault.fetch(request)
        except Rejected as rejected:
            await abort(context, rejected)

    async def Erase(  # noqa: N802
        self, request: records_pb2.EraseRequest, context: Context
    ) -> records_pb2.EraseResponse:
        try:
            receipt = await self.vault.erase(request)
        except Rejected as rejected:
            await abort(context, rejected)
        return records_pb2.EraseResponse(tx_id=receipt.tx_id, height=receipt.height)

    async def ListReviews(  # noqa: N802
        self, request: records_pb2.ListReviewsRequest, context: Context
    ) -> records_pb2.ListReviewsResponse:
        try:
            return self.vault.reviews(request)
        except Rejected as rejected:
            await abort(context, rejected)
