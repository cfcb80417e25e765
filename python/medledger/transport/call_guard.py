"""Runs a check around every call of a server, whatever the method's shape.

gRPC Python's server interceptors see a method's name, not its caller; the caller (the
connection's address, its TLS session) is known only to the handler, through its
context. `GuardInterceptor` therefore wraps each method handler so that `guard(context)`,
an async context manager, surrounds the whole call: entered before the service sees a
byte of the request (it refuses by aborting the call), left when the call ends, however
it ends (streams included)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["Context", "Guard", "GuardInterceptor", "Shares"]

Context = grpc.aio.ServicerContext[Any, Any]
Guard = Callable[[Context], contextlib.AbstractAsyncContextManager[None]]


class Shares:
    """Calls open now per key (a client address, a member organisation), each key
    allowed at most the limit its caller gives."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def held(self, key: str) -> int:
        return self.open.get(key, 0)

    def take(self, key: str, limit: int) -> bool:
        """Counts one more call for `key`, unless it already holds `limit`."""
        held = self.open.get(key, 0)
        if held >= limit:
            return False
        self.open[key] = held + 1
        return True

    def give_back(self, key: str) -> None:
        left = self.open[key] - 1
        if left:
            self.open[key] = left
        else:
            del self.open[key]

    @contextlib.asynccontextmanager
    async def holding(
        self, context: Context, key: str, limit: int, refusal: str
    ) -> AsyncIterator[None]:
        """One call of `key` for as long as the block runs; a call over `limit` is
        refused (RESOURCE_EXHAUSTED, `refusal`) instead."""
        if not self.take(key, limit):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        try:
            yield
        finally:
            self.give_back(key)


def _unary_response(behaviour: Callable[[Any, Context], Any], guard: Guard) -> Any:
    async def guarded(request: Any, context: Context) -> Any:
        async with guard(context):
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

    return guarded


def _streamed_response(behaviour: Callable[[Any, Context], Any], guard: Guard) -> Any:
    if inspect.isasyncgenfunction(behaviour):

        async def guarded_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with guard(context):
                async for response in behaviour(request, context):
                    yield response

        return guarded_stream
    # A handler that writes with context.write: the call lasts as long as it runs.
    return _unary_response(behaviour, guard)


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every method handler of a server with `guard` (`guard_for` the method)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def guard_for(self, method: str) -> Guard:
        """The guard of calls to `method` ("/package.Service/Method"): `guard` unless a
        subclass needs the method's name."""
        return self.guard

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
        guard = self.guard_for(handler_call_details.method)
        decode, encode = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary_response(handler.unary_unary, guard), decode, encode
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary_response(handler.stream_unary, guard), decode, encode
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streamed_response(handler.unary_stream, guard), decode, encode
            )
        return grpc.stream_stream_rpc_method_handler(
            _streamed_response(handler.stream_stream, guard), decode, encode
        )
