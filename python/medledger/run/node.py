"""Running a node as a process: load its home, serve gRPC, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import resource
import signal

import grpc
from grpc_health.v1 import health, health_pb2

from medledger._core import use_threads
from medledger.api.server import HEALTH_SERVICES, serve, serve_peers, served_methods
from medledger.channels.payee import Payee
from medledger.channels.store import ChannelStore
from medledger.config import Home
from medledger.consensus.guard import FileGuardStore, SigningGuard
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.metrics import REGISTRY
from medledger.node.channels import ChannelWatcher, NodeChannelLedger
from medledger.node.consensus_driver import ConsensusDriver
from medledger.node.ledger_node import LedgerNode
from medledger.node.supervisor import Supervisor
from medledger.ops.collector import NodeCollector, create_series
from medledger.ops.readiness import Readiness
from medledger.ops.server import OpsServer, serve_ops
from medledger.transport.certs import CertificateError, Identity
from medledger.transport.credentials import PeerTrust, ServerTls
from medledger.vault.kek import FileKek
from medledger.vault.service import Vault
from medledger.vault.store import VaultStore

__all__ = ["run_node"]

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 2.0
EXPIRY_WARNING = datetime.timedelta(days=7)
EXPIRY_CHECK_INTERVAL_S = 6 * 3600
FAILED_LINGER_S = 2.0
HEALTH_INTERVAL_S = 1.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
"""How long a failed node answers NOT_SERVING before it exits, so monitors see why."""
GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young-generation collections. A node allocates a few protobuf
messages and tuples per transaction, almost none in reference cycles; at the default
(700) the collector ran every few dozen transactions and cost about 6% of committed
throughput in `medledger bench cluster`. Cycles are still collected, just less often."""


def _raise_open_files_limit() -> None:
    """Lifts the soft limit on open files to the hard one: connections on three listeners
    and LMDB share it, and the usual soft default (1,024) is soon spent by clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tune_gc() -> None:
    """Moves what start-up allocated (modules, genesis, keys) out of the collector's
    view, and collects the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _transport(
    home: Home, node: LedgerNode, *, insecure: bool
) -> tuple[ServerTls | None, PeerTrust | None]:
    """The node's TLS identity and its peers' trust (member CAs from the ledger), or
    neither over clear text."""
    if insecure:
        log.warning(
            "clear text: --insecure; anyone on the network reads and writes this node's "
            "traffic, and anyone who reaches the peer port is taken for a member"
        )
        return None, None
    tls = ServerTls(home.tls_key, home.tls_certificate)
    _log_expiry(tls, node)
    if not node.solo and not node.membership.bundle:
        raise CertificateError(
            "the ledger names no member organisation's CA: peers cannot be authenticated "
            "(run with --insecure, or name the organisations' tls_ca in the genesis)"
        )
    return tls, PeerTrust(tls, lambda: node.membership.bundle)


def _log_expiry(tls: ServerTls, node: LedgerNode) -> None:
    """The certificate's expiry, in the log and in GetStatus; a warning within
    EXPIRY_WARNING of it."""
    expires = tls.identity.certificate.not_valid_after_utc
    node.tls_expires_ms = int(expires.timestamp() * 1000)
    left = expires - datetime.datetime.now(datetime.UTC)
    if left < EXPIRY_WARNING:
        log.warning("TLS certificate %s expires %s: renew it", tls.certificate_path, expires)
    else:
        log.info("TLS certificate %s valid until %s", tls.certificate_path, expires)


async def _check_expiry(tls: ServerTls, node: LedgerNode) -> None:
    """Says again, every EXPIRY_CHECK_INTERVAL_S, how long the certificate has left: a
    node that runs for months warns in the week before its certificate lapses."""
    while True:
        await asyncio.sleep(EXPIRY_CHECK_INTERVAL_S)
        _log_expiry(tls, node)


def _reload(tls: ServerTls, node: LedgerNode) -> None:
    """SIGHUP: new handshakes use the certificate on disk now; connections up keep theirs
    (consensus is not interrupted)."""
    current = tls.identity.certificate_pem

    def same_organisation(identity: Identity) -> None:
        refusal = node.membership.renewal_refusal(current, identity.certificate_pem)
        if refusal is not None:
            raise CertificateError(f"{tls.certificate_path}: {refusal}")

    try:
        tls.reload(same_organisation)
    except Exception as error:  # any bad file (the library raises more than ValueError)
        log.error("SIGHUP: keeping the current TLS certificate: %s", error)
        return
    _log_expiry(tls, node)


def _organisation_services(
    home: Home, node: LedgerNode, genesis: Genesis
) -> tuple[Vault | None, Payee | None, ChannelWatcher | None]:
    """With the organisation's key (`keys/client.json`): its vault, its payee (channels
    paying it) and the payee's watcher."""
    organisation_key = home.keys_dir / "client.json"
    if not organisation_key.exists():
        return None, None, None
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
    return vault, payee, ChannelWatcher(node, payee)


async def _shutdown(  # noqa: PLR0917 - each part the node stops, in order
    listeners: list[grpc.aio.Server | None],
    driver: ConsensusDriver | None,
    node: LedgerNode,
    vault: Vault | None,
    payee: Payee | None,
    watcher: ChannelWatcher | None,
) -> None:
    for listener in listeners:
        if listener is not None:
            await listener.stop(SHUTDOWN_GRACE_S)
    if driver is not None:
        await driver.stop()
    await node.stop()
    if vault is not None:
        vault.store.close()
    if payee is not None and watcher is not None:
        await watcher.stop()
        await payee.stop()
        payee.store.close()


def _start_tasks(
    supervisor: Supervisor,
    node: LedgerNode,
    driver: ConsensusDriver | None,
    payee: Payee | None,
    watcher: ChannelWatcher | None,
) -> None:
    """Starts the node's long-lived tasks, each watched by `supervisor`."""
    node.start()
    supervisor.watch(node.tasks())
    if payee is not None and watcher is not None:
        payee.start()
        watcher.start()
        supervisor.watch(payee.commit.tasks() + watcher.tasks())
    if driver is not None:
        driver.start()
        supervisor.watch(driver.tasks())


async def _serve_operations(
    node: LedgerNode, driver: ConsensusDriver | None, readiness: Readiness
) -> tuple[OpsServer, NodeCollector]:
    """Metrics (every series made now, so each exists from the start), and the
    operations port that serves them with the probes."""
    create_series(node, served_methods(peers=driver is not None))
    collector = NodeCollector(node, driver, readiness)
    REGISTRY.register(collector)
    return await serve_ops(node.config.ops_listen, readiness.reasons, node), collector


async def _report_health(health_service: health.aio.HealthServicer, readiness: Readiness) -> None:
    """The gRPC health service says what /readyz says, checked every
    HEALTH_INTERVAL_S: SERVING when ready, NOT_SERVING otherwise."""
    serving: bool | None = None
    while True:
        ready = not readiness.reasons()
        if ready != serving:
            status = SERVING if ready else NOT_SERVING
            for service in HEALTH_SERVICES:
                await health_service.set(service, status)
            if serving is not None or not ready:
                log.info("readiness: %s", "ready" if ready else "; ".join(readiness.reasons()))
            serving = ready
        await asyncio.sleep(HEALTH_INTERVAL_S)


async def run_node(home: Home, listen: str | None = None, *, insecure: bool = False) -> str | None:
    """Serves until SIGINT or SIGTERM (returns None), or until a long-lived task ends
    (returns what ended, after health turned NOT_SERVING). `insecure` (or the config's)
    serves clear text."""
    config = home.load_config()
    _raise_open_files_limit()
    if config.rust_threads:
        use_threads(config.rust_threads)  # before anything runs on the pool
    genesis = Genesis.load(home.genesis)
    node = LedgerNode(home, config, genesis, load_key(home.validator_key))
    tls, trust = _transport(home, node, insecure=insecure or config.insecure)
    driver = None
    if not node.solo:
        guard = SigningGuard(FileGuardStore(home.signer_state))
        driver = ConsensusDriver(node, config, guard, trust)
    vault, payee, watcher = _organisation_services(home, node, genesis)
    server, port, health = await serve(
        node, listen or config.listen, vault=vault, payee=payee, tls=tls
    )
    peer_server = None
    peer_address = ""
    if driver is not None:
        peer_server, peer_port = await serve_peers(driver, config.peer_listen, trust)
        peer_address = f"{config.peer_listen.rsplit(':', 1)[0]}:{peer_port}"
    _tune_gc()
    stop = asyncio.Event()
    supervisor = Supervisor(stop)
    readiness = Readiness(node, driver, supervisor)
    ops, collector = await _serve_operations(node, driver, readiness)
    _start_tasks(supervisor, node, driver, payee, watcher)
    host = (listen or config.listen).rsplit(":", 1)[0]
    # Tests and scripts wait for this line; keep its shape.
    print(
        f"medledger node listening on {host}:{port} chain {genesis.chain_id} "
        f"height {node.head.height}"
        + (f" peers {peer_address}" if peer_address else "")
        + f" ops {config.ops_listen.rsplit(':', 1)[0]}:{ops.port}",
        flush=True,
    )
    health_updates = asyncio.create_task(
        _report_health(health, readiness), name="health-from-readiness"
    )
    supervisor.watch([health_updates])
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    expiry_check = None
    if tls is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, tls, node)
        expiry_check = asyncio.create_task(_check_expiry(tls, node), name="tls-expiry")
        supervisor.watch([expiry_check])
    await stop.wait()
    supervisor.stopping = True
    health_updates.cancel()
    if expiry_check is not None:
        expiry_check.cancel()
    if supervisor.failure is not None:
        for service in HEALTH_SERVICES:
            await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(FAILED_LINGER_S)
    log.info("stopping")
    await ops.stop()
    REGISTRY.unregister(collector)
    await _shutdown([peer_server, server], driver, node, vault, payee, watcher)
    return supervisor.failure
