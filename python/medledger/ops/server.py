"""The operations HTTP port: `/metrics` (Prometheus text format), `/livez` (the process
answers), `/readyz` (`Readiness`: 200 with "ready", or 503 with each reason, one per
line) and the read-only explorer under `/explorer/` (`ops.explorer`: only what an
unsigned gRPC caller sees). It takes no input but the path and query, and listens on
127.0.0.1 by default; put it behind the cluster's network policy like any exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from medledger.metrics import REGISTRY
from medledger.node.ledger_node import LedgerNode
from medledger.ops.explorer import add_explorer

__all__ = ["OpsServer", "serve_ops"]


HEADER_TIMEOUT_S = 5.0
OPS_CONNECTIONS_MAX = 128
"""Connections the operations port holds at once; past it a new one is closed at once."""
OPS_CONNECTIONS_PER_ADDRESS_MAX = 16
"""Of those, what one client address may hold: a scraper and a probe need a few."""


class _ConnectionGuard:
    """Bounds what clients of the operations port can hold: a connection past
    OPS_CONNECTIONS_MAX, or past OPS_CONNECTIONS_PER_ADDRESS_MAX from its address, is
    closed before it is served; one that completes no request within HEADER_TIMEOUT_S
    (half a request line, or idle between requests) is closed, unless a request of it is
    being answered. File descriptors are the node's, shared with its gRPC listeners."""

    def __init__(self) -> None:
        # Per connection: complete requests seen, and requests being answered now.
        self.seen: dict[asyncio.BaseTransport, list[int]] = {}
        self.register: Callable[[Any, asyncio.Transport], None] = lambda handler, transport: None
        self.unregister: Callable[[Any, BaseException | None], None] = lambda handler, exc: None

    def attach(self, server: web.Server) -> None:
        """Takes over aiohttp's hooks for each connection of `server`."""
        self.register = server.connection_made
        self.unregister = server.connection_lost
        server.connection_made = self.connection_made  # type: ignore[method-assign]
        server.connection_lost = self.connection_lost  # type: ignore[method-assign]

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        if handler.transport is not None:
            self.seen.pop(handler.transport, None)
        self.unregister(handler, exc)

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        host = _host(transport)
        from_host = sum(1 for t in self.seen if _host(t) == host)
        if len(self.seen) >= OPS_CONNECTIONS_MAX or from_host >= OPS_CONNECTIONS_PER_ADDRESS_MAX:
            transport.abort()
            return
        self.register(handler, transport)
        self.seen[transport] = [0, 0]
        asyncio.get_running_loop().call_later(HEADER_TIMEOUT_S, self._check, transport, 0)

    def _check(self, transport: asyncio.Transport, requests_before: int) -> None:
        counts = self.seen.get(transport)
        if counts is None or transport.is_closing():
            self.seen.pop(transport, None)
            return
        requests, answering = counts
        if requests == requests_before and not answering:
            transport.abort()
            del self.seen[transport]
            return
        asyncio.get_running_loop().call_later(HEADER_TIMEOUT_S, self._check, transport, requests)

    @web.middleware
    async def count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        counts = self.seen.get(request.transport) if request.transport is not None else None
        if counts is None:
            return await handler(request)
        counts[0] += 1
        counts[1] += 1
        try:
            return await handler(request)
        finally:
            counts[1] -= 1


def _host(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else ""


class OpsServer:
    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port

    async def stop(self) -> None:
        await self.runner.cleanup()


def _application(not_ready: Callable[[], list[str]], node: LedgerNode | None) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        # Rendering reads LMDB's map size and the mempool: small, done on the loop.
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="live\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = not_ready()
        if reasons:
            return web.Response(status=503, text="not ready\n" + "".join(f"{r}\n" for r in reasons))
        return web.Response(text="ready\n")

    application = web.Application(client_max_size=1024)
    application.add_routes(
        [web.get("/metrics", metrics), web.get("/livez", livez), web.get("/readyz", readyz)]
    )
    if node is not None:
        add_explorer(application, node)
    return application


async def serve_ops(
    listen: str, not_ready: Callable[[], list[str]], node: LedgerNode | None = None
) -> OpsServer:
    """Serves the operations port on `listen` (host:port; port 0 picks one). `/readyz`
    answers `not_ready()`, each reason the process is not ready (a node's
    `Readiness.reasons`); with `node`, the explorer reads its ledger."""
    host, _, port = listen.rpartition(":")
    application = _application(not_ready, node)
    guard = _ConnectionGuard()
    application.middlewares.insert(0, guard.count)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    assert runner.server is not None
    guard.attach(runner.server)
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    bound = runner.addresses[0][1]  # (host, port): the port that port 0 picked
    return OpsServer(runner, int(bound))
