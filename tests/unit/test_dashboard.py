"""The Grafana dashboard in docs/ asks only for metrics a node exports (by family name as
the node's registry declares them, with Prometheus' _total/_bucket/_count/_sum suffixes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from medledger.metrics import REGISTRY

DASHBOARD = Path(__file__).parents[2] / "docs" / "operations" / "grafana-dashboard.json"
# Gauges a node's scrape-time collector adds (medledger.ops.collector), beside REGISTRY's.
COLLECTED = {
    "medledger_height",
    "medledger_consensus_round",
    "medledger_consensus_step",
    "medledger_mempool_transactions",
    "medledger_mempool_bytes",
    "medledger_peers_connected",
    "medledger_validator_power_reachable",
    "medledger_validator_power_total",
    "medledger_lmdb_map_used_bytes",
    "medledger_lmdb_map_size_bytes",
    "medledger_tls_certificate_expiry_timestamp_seconds",
    "medledger_ready",
}


def exported_series() -> set[str]:
    names = set(COLLECTED)
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    return names


def test_every_metric_the_dashboard_queries_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bmedledger_[a-z0-9_]+", target["expr"])
    }
    assert len(queried) >= 20
    assert queried - exported_series() == set()


def test_the_collected_gauges_are_those_a_node_serves() -> None:
    # Kept in step with the collector: tests/integration/test_operations.py scrapes a real
    # node and checks each of these names there.
    source = (Path(__file__).parents[2] / "python/medledger/ops/collector.py").read_text()
    assert set(re.findall(r'"(medledger_[a-z0-9_]+)"', source)) == COLLECTED
