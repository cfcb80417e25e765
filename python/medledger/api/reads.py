"""Signed reads: who asks for health metadata, checked before anything is read.

A read request carries `requester`, `time_ms` and `signature` (domain "read-request",
`medledger.signed_requests`). The rules of who sees what are `app.readers.Reading`'s."""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf.message import Message

from medledger import signed_requests
from medledger.api.status import abort
from medledger.app.readers import Reading
from medledger.chain import Snapshot
from medledger.errors import Rejected
from medledger.node.ledger_node import LedgerNode

__all__ = ["reading", "requester_of"]


async def requester_of(
    context: grpc.aio.ServicerContext[Any, Any],
    node: LedgerNode,
    request: Message,
    *,
    required: bool,
) -> bytes | None:
    """The verified requester of a read; None for an unsigned request where one is not
    `required`. UNAUTHENTICATED for a bad signature or a missing one that is required."""
    requester: bytes = request.requester  # type: ignore[attr-defined]
    if not requester and not request.signature:  # type: ignore[attr-defined]
        if required:
            await abort(
                context,
                Rejected("UNAUTHENTICATED", "requester", "reads of health metadata must be signed"),
            )
        return None
    try:
        signed_requests.check_request(
            request, requester, node.chain_id, int(time.time() * 1000), "read-request"
        )
    except Rejected as rejected:
        await abort(context, rejected)
    return requester


def reading(node: LedgerNode, snapshot: Snapshot, requester: bytes) -> Reading:
    validators = [public_key for public_key, _ in node.validators.members()]
    return Reading(snapshot, requester, int(time.time() * 1000), validators)
