"""The operations HTTP port: `/metrics` (Prometheus text format), `/livez` (the process
answers), `/readyz` (`Readiness`: 200 with "ready", or 503 with each reason, one per
line) and the read-only explorer under `/explorer/` (`ops.explorer`: only what an
unsigned gRPC caller sees). It takes no input but the path and query, and listens on
127.0.0.1 by default; put it behind the cluster's network policy like any exporter."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from medledger.metrics import REGISTRY
from medledger.node.ledger_node import LedgerNode
from medledger.ops.explorer import add_explorer

__all__ = ["OpsServer", "serve_ops"]


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
    runner = web.AppRunner(_application(not_ready, node), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    bound = runner.addresses[0][1]  # (host, port): the port that port 0 picked
    return OpsServer(runner, int(bound))
