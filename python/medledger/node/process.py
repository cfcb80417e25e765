"""Running a node as a process: load its home, serve gRPC, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from grpc_health.v1 import health_pb2

from medledger.api.server import HEALTH_SERVICES, serve
from medledger.channels.payee import Payee
from medledger.channels.store import ChannelStore
from medledger.config import Home
from medledger.consensus.guard import FileGuardStore, SigningGuard
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.channels import ChannelWatcher, NodeChannelLedger
from medledger.node.consensus_driver import ConsensusDriver
from medledger.node.ledger_node import LedgerNode
from medledger.node.supervisor import Supervisor
from medledger.vault.kek import FileKek
from medledger.vault.service import Vault
from medledger.vault.store import VaultStore

__all__ = ["run_node"]

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 2.0
FAILED_LINGER_S = 2.0
"""How long a failed node answers NOT_SERVING before it exits, so monitors see why."""
GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young-generation collections. A node allocates a few protobuf
messages and tuples per transaction, almost none in reference cycles; at the default
(700) the collector ran every few dozen transactions and cost about 6% of committed
throughput in `medledger bench cluster`. Cycles are still collected, just less often."""


def _tune_gc() -> None:
    """Moves what start-up allocated (modules, genesis, keys) out of the collector's
    view, and collects the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def run_node(home: Home, listen: str | None = None) -> str | None:
    """Serves until SIGINT or SIGTERM (returns None), or until a long-lived task ends
    (returns what ended, after health turned NOT_SERVING)."""
    config = home.load_config()
    genesis = Genesis.load(home.genesis)
    node = LedgerNode(home, config, genesis, load_key(home.validator_key))
    driver = None
    if not node.solo:
        driver = ConsensusDriver(node, config, SigningGuard(FileGuardStore(home.signer_state)))
    vault = payee = watcher = None
    organisation_key = home.keys_dir / "client.json"
    if organisation_key.exists():
        # The organisation's key signs as the custodian of the records this vault holds,
        # and as the payee of the channels paying it.
        key = load_key(organisation_key)
        kek = FileKek.load_or_create(home.keys_dir / "vault-kek.json")
        vault = Vault(node, key, VaultStore(home.root / "vault", kek))
        payee = Payee(
            key,
            node.chain_id,
            ChannelStore(home.root / "channels"),
            NodeChannelLedger(node),
            min_challenge_blocks=genesis.min_challenge_blocks,
        )
        watcher = ChannelWatcher(node, payee)
    server, port, health = await serve(node, listen or config.listen, driver, vault, payee)
    _tune_gc()
    stop = asyncio.Event()
    supervisor = Supervisor(stop)
    node.start()
    supervisor.watch(node.tasks())
    if payee is not None and watcher is not None:
        payee.start()
        watcher.start()
        supervisor.watch(payee.commit.tasks() + watcher.tasks())
    if driver is not None:
        driver.start()
        supervisor.watch(driver.tasks())
    host = (listen or config.listen).rsplit(":", 1)[0]
    # Tests and scripts wait for this line; keep its shape.
    print(
        f"medledger node listening on {host}:{port} chain {genesis.chain_id} "
        f"height {node.head.height}",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    supervisor.stopping = True
    if supervisor.failure is not None:
        for service in HEALTH_SERVICES:
            await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(FAILED_LINGER_S)
    log.info("stopping")
    await server.stop(SHUTDOWN_GRACE_S)
    if driver is not None:
        await driver.stop()
    await node.stop()
    if vault is not None:
        vault.store.close()
    if payee is not None and watcher is not None:
        await watcher.stop()
        await payee.stop()
        payee.store.close()
    return supervisor.failure
