"""Turning gRPC errors into the SDK's exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from medledger.errors import Rejected

__all__ = ["from_rpc_error", "translated_errors"]


def from_rpc_error(error: grpc.RpcError) -> Rejected:
    """The node's refusal as `Rejected(status, field, reason)`; the node's messages read
    'field: reason'."""
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    field, sep, reason = details.partition(": ")
    if not sep or " " in field:
        field, reason = "", details
    return Rejected(code.name, field, reason)


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raises the node's gRPC refusals inside the block as `Rejected`."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
