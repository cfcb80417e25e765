"""TLS 1.3 on every secure listener.

gRPC Python offers no minimum TLS version: its servers accept TLS 1.2 and 1.3. The
connection's negotiated version is in each call's auth context (`ssl_tls_version`), so
an interceptor refuses every call over anything older than TLS 1.3, before the service
sees a byte of its request: UNAUTHENTICATED, naming the version the client negotiated.
Health and reflection are refused too, so a scanner learns nothing over TLS 1.2.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["REQUIRED_TLS_VERSION", "RequireTls13"]

REQUIRED_TLS_VERSION = b"TLSv1.3"

Context = grpc.aio.ServicerContext[Any, Any]


async def _require(context: Context) -> None:
    versions = list(context.auth_context().get("ssl_tls_version") or [b"none"])
    if versions[0] != REQUIRED_TLS_VERSION:
        negotiated = versions[0].decode(errors="replace")
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"transport: TLS 1.3 is required; this connection negotiated {negotiated}",
        )


async def _answer(behaviour: Callable[[Any, Context], Any], request: Any, context: Context) -> Any:
    await _require(context)
    result = behaviour(request, context)
    return await result if inspect.isawaitable(result) else result


def _unary_response(behaviour: Callable[[Any, Context], Any]) -> Any:
    async def checked(request: Any, context: Context) -> Any:
        return await _answer(behaviour, request, context)

    return checked


def _streamed_response(behaviour: Callable[[Any, Context], Any]) -> Any:
    if inspect.isasyncgenfunction(behaviour):

        async def checked_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await _require(context)
            async for response in behaviour(request, context):
                yield response

        return checked_stream

    async def checked(request: Any, context: Context) -> Any:  # writes with context.write
        return await _answer(behaviour, request, context)

    return checked


class RequireTls13(grpc.aio.ServerInterceptor):
    """Wraps every method handler of a TLS server with the version check."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return handler
        decode, encode = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary_response(handler.unary_unary), decode, encode
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary_response(handler.stream_unary), decode, encode
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streamed_response(handler.unary_stream), decode, encode
            )
        return grpc.stream_stream_rpc_method_handler(
            _streamed_response(handler.stream_stream), decode, encode
        )
