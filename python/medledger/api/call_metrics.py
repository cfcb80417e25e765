"""Counts and times every gRPC call a server answers: `medledger_grpc_requests_total` by
service, method and status code, `medledger_grpc_request_duration_seconds` by service
and method (a stream is timed to its end)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from medledger.metrics import GRPC_REQUEST_SECONDS, GRPC_REQUESTS
from medledger.transport.call_guard import Context, Guard, GuardInterceptor

__all__ = ["CallMetrics", "method_labels"]


def method_labels(method: str) -> tuple[str, str]:
    """("package.Service", "Method") of "/package.Service/Method"."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _code_of(context: Context, default: str) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else default


class CallMetrics(GuardInterceptor):
    """The outermost interceptor of a server: it sees every call, refusals included."""

    def __init__(self) -> None:
        super().__init__(self._unnamed)
        self._guards: dict[str, Guard] = {}  # by method: its series, looked up once

    @staticmethod
    def _unnamed(context: Context) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def guard_for(self, method: str) -> Guard:
        guard = self._guards.get(method)
        if guard is None:
            guard = self._guards[method] = self._measure(method)
        return guard

    @staticmethod
    def _measure(method: str) -> Guard:
        service, name = method_labels(method)
        requests = {
            code: GRPC_REQUESTS.labels(service=service, method=name, code=code.name)
            for code in grpc.StatusCode
        }
        seconds = GRPC_REQUEST_SECONDS.labels(service=service, method=name)

        @contextlib.asynccontextmanager
        async def measured(context: Context) -> AsyncIterator[None]:
            started = time.perf_counter()
            code = "OK"
            try:
                yield
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = _code_of(context, "UNKNOWN")  # an abort sets its code first
                raise
            else:
                code = _code_of(context, "OK")
            finally:
                requests[grpc.StatusCode[code]].inc()
                seconds.observe(time.perf_counter() - started)

        return measured
