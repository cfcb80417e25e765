"""TLS 1.3 on every secure listener.

gRPC Python offers no minimum TLS version: its servers accept TLS 1.2 and 1.3. The
connection's negotiated version is in each call's auth context (`ssl_tls_version`), so
an interceptor refuses every call over anything older than TLS 1.3, before the service
sees a byte of its request: UNAUTHENTICATED, naming the version the client negotiated.
Health and reflection are refused too, so a scanner learns nothing over TLS 1.2.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from medledger.transport.call_guard import Context, GuardInterceptor

__all__ = ["REQUIRED_TLS_VERSION", "RequireTls13"]

REQUIRED_TLS_VERSION = b"TLSv1.3"


@contextlib.asynccontextmanager
async def _tls13_only(context: Context) -> AsyncIterator[None]:
    versions = list(context.auth_context().get("ssl_tls_version") or [b"none"])
    if versions[0] != REQUIRED_TLS_VERSION:
        negotiated = versions[0].decode(errors="replace")
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"transport: TLS 1.3 is required; this connection negotiated {negotiated}",
        )
    yield


class RequireTls13(GuardInterceptor):
    """Wraps every method handler of a TLS server with the version check."""

    def __init__(self) -> None:
        super().__init__(_tls13_only)
