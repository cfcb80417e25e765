"""What a scrape reads from the node's state at that moment: height and consensus
position, mempool, peers and the voting power they carry, LMDB's map, the certificate's
expiry, readiness. Nothing here runs between scrapes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from medledger.metrics import GRPC_REQUEST_SECONDS, GRPC_REQUESTS, MISSED_BLOCKS, validator_label
from medledger.node.consensus_driver import ConsensusDriver
from medledger.node.ledger_node import LedgerNode
from medledger.ops.readiness import Readiness

__all__ = ["NodeCollector", "create_series"]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class NodeCollector(Collector):
    def __init__(
        self, node: LedgerNode, driver: ConsensusDriver | None, readiness: Readiness
    ) -> None:
        self.node = node
        self.driver = driver
        self.readiness = readiness

    def collect(self) -> Iterator[GaugeMetricFamily]:
        node, driver = self.node, self.driver
        yield _gauge("medledger_height", "The height of this node's head block.", node.head.height)
        engine = driver.engine if driver is not None else None
        yield _gauge(
            "medledger_consensus_round",
            "The consensus round at the current height (0 for a lone validator).",
            engine.round if engine is not None else 0,
        )
        yield _gauge(
            "medledger_consensus_step",
            "The consensus step: 0 propose, 1 prevote, 2 precommit (0 for a lone validator).",
            int(engine.step) if engine is not None else 0,
        )
        yield _gauge(
            "medledger_mempool_transactions", "Transactions waiting for a block.", len(node.mempool)
        )
        yield _gauge(
            "medledger_mempool_bytes",
            "Encoded bytes of the transactions waiting for a block.",
            node.mempool.size_bytes,
        )
        peers = list(driver.peers.values()) if driver is not None else []
        yield _gauge(
            "medledger_peers_connected",
            "Validators whose peer connection is up now.",
            sum(link.reachable for link in peers),
        )
        members = node.validators_at(node.head.height + 1)
        if driver is not None:
            reached, total = driver.reachable_power()
        else:
            reached = total = members.total_power
        yield _gauge(
            "medledger_validator_power_reachable",
            "Voting power of the next height this node reaches: its own and its peers'.",
            reached,
        )
        yield _gauge(
            "medledger_validator_power_total", "Voting power of the next height's set.", total
        )
        used, capacity = node.store.usage()
        yield _gauge("medledger_lmdb_map_used_bytes", "Bytes of the LMDB map in use.", used)
        yield _gauge(
            "medledger_lmdb_map_size_bytes",
            "What the LMDB map may grow to: the configured maximum or the disk's room.",
            capacity,
        )
        yield _gauge(
            "medledger_tls_certificate_expiry_timestamp_seconds",
            "When this node's TLS certificate expires (0: clear text).",
            node.tls_expires_ms / 1000,
        )
        yield _gauge(
            "medledger_ready",
            "1 when /readyz says ready, else 0.",
            0 if self.readiness.reasons() else 1,
        )


def create_series(node: LedgerNode, services: dict[str, list[str]]) -> None:
    """Makes the labelled series that exist from the start: a missed-blocks counter per
    validator of the genesis set, and the OK series of every gRPC method served."""
    for key, _ in node.validators_at(node.head.height + 1).members():
        MISSED_BLOCKS.labels(validator=validator_label(key))
    for service, methods in services.items():
        for method in methods:
            GRPC_REQUESTS.labels(service=service, method=method, code="OK")
            GRPC_REQUEST_SECONDS.labels(service=service, method=method)
