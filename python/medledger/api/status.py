"""Ending a call with a `Rejected`: its gRPC status and a message naming the field."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from medledger.errors import Rejected

__all__ = ["abort", "require_length"]


async def abort(context: grpc.aio.ServicerContext[Any, Any], rejected: Rejected) -> NoReturn:
    """Ends the call with `rejected`'s status and "field: reason" message."""
    await context.abort(grpc.StatusCode[rejected.status], str(rejected))
    raise AssertionError("context.abort raises")  # pragma: no cover


async def require_length(
    context: grpc.aio.ServicerContext[Any, Any], field: str, value: bytes, length: int
) -> None:
    """INVALID_ARGUMENT naming `field` unless `value` is `length` bytes (a key, an id)."""
    if len(value) != length:
        await abort(
            context,
            Rejected("INVALID_ARGUMENT", field, f"must be {length} bytes, got {len(value)}"),
        )
