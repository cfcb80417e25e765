"""Running a channel hub as a process: `medledger hub start`.

The hub keeps its channels in its own LMDB (`--store`): the channels payers opened to
it, and the channels it opened to providers (`medledger channel open --store` with the
hub's key). It serves ChannelService to payers, keeps a stream open to each provider,
and reads the ledger through a node's LedgerService.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from medledger.api.server import serve_channels
from medledger.channels.hub import Hub
from medledger.channels.store import ChannelStore
from medledger.client import LedgerClient
from medledger.client.channels import RemoteChannelLedger
from medledger.config import DEFAULT_OPS_LISTEN, NodeConfig
from medledger.crypto import SigningKey
from medledger.ops.server import serve_ops
from medledger.transport.credentials import ClientTls, ServerTls

__all__ = ["run_hub"]

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 2.0
PROVIDERS_WAIT_S = 15.0
"""How long start-up waits for the first connection to each provider before it announces
the hub (a provider that is down is retried in the background)."""


async def run_hub(  # noqa: PLR0917 - what `medledger hub start` takes
    key: SigningKey,
    store_root: Path,
    node: str,
    listen: str,
    client_tls: ClientTls | None = None,
    server_tls: ServerTls | None = None,
    ops_listen: str = DEFAULT_OPS_LISTEN,
) -> None:
    """`client_tls`: the CA bundle to verify the node and the providers against;
    `server_tls`: the hub's own certificate for its listener (None: clear text)."""
    if server_tls is None or client_tls is None:
        log.warning("clear text: --insecure; payments cross the network unencrypted")
    client = LedgerClient(node, tls=client_tls)
    ledger = RemoteChannelLedger(client)
    chain_id = client.status().chain_id
    store = ChannelStore(store_root)
    hub = Hub(key, chain_id, store, ledger, tls=client_tls)
    server, port = await serve_channels(
        hub.payee, listen, NodeConfig().message_bytes_max, server_tls
    )
    hub.start()
    # Ready while it runs: its links to the providers reconnect on their own.
    ops = await serve_ops(ops_listen, list)
    connected = await hub.first_connections(PROVIDERS_WAIT_S)
    follower = asyncio.get_running_loop().create_task(ledger.follow())
    host = listen.rsplit(":", 1)[0]
    # Tests and scripts wait for this line; keep its shape.
    print(
        f"medledger hub listening on {host}:{port} chain {chain_id} "
        f"key {key.public_key.hex()} providers {len(hub.destinations())} connected {connected} "
        f"ops {ops_listen.rsplit(':', 1)[0]}:{ops.port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    await ops.stop()
    await server.stop(SHUTDOWN_GRACE_S)
    follower.cancel()
    await hub.stop()
    store.close()
    client.close()
