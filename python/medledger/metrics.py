"""The node's Prometheus metrics, named by Prometheus conventions (`medledger_` prefix,
base units, `_total` on counters). Events update these where they happen (a commit, a
refusal, an equivocation seen); what is a reading of state (height, mempool, LMDB) is
collected when Prometheus scrapes (`medledger.ops.collector`), so the hot paths pay
nothing for it. One registry per process: a node serves it on its operations port.

No label ever carries a key, a record id or anything a patient could be found by:
validators are labelled by the first 16 hex digits of their public key (as in the logs),
requests by gRPC service, method and status."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from medledger import __version__

__all__ = [
    "ADMISSION_REFUSALS",
    "BLOCKS_COMMITTED",
    "BLOCK_COMMIT_SECONDS",
    "BLOCK_FSYNC_SECONDS",
    "BLOCK_INTERVAL_SECONDS",
    "BLOCK_TRANSACTIONS",
    "CATCH_UP_RUNS",
    "CHANNEL_LOCKS",
    "CHANNEL_PAYMENTS",
    "CHANNEL_UPDATES",
    "EQUIVOCATIONS",
    "GRPC_REQUESTS",
    "GRPC_REQUEST_SECONDS",
    "HUB_ROUTES",
    "MISSED_BLOCKS",
    "REGISTRY",
    "TRANSACTIONS_COMMITTED",
    "VAULT_BREAK_GLASS",
    "VAULT_FETCHES",
    "validator_label",
]

REGISTRY = CollectorRegistry()


def _by(label: str, values: Iterable[str], name: str, documentation: str) -> Counter:
    """A counter with one label, its series for each of `values` made now, so that each
    exists from the start."""
    counter = Counter(name, documentation, [label], registry=REGISTRY)
    for value in values:
        counter.labels(value)
    return counter


_build_info = Gauge(
    "medledger_build_info",
    "Always 1: the medledger version this process runs.",
    ["version"],
    registry=REGISTRY,
)
_build_info.labels(version=__version__).set(1)

BLOCKS_COMMITTED = Counter(
    "medledger_blocks_committed", "Blocks this node committed.", registry=REGISTRY
)
TRANSACTIONS_COMMITTED = Counter(
    "medledger_transactions_committed",
    "Transactions in the blocks this node committed (whatever their result code).",
    registry=REGISTRY,
)
BLOCK_TRANSACTIONS = Histogram(
    "medledger_block_transactions",
    "Transactions per committed block.",
    buckets=(0, 1, 10, 100, 500, 1_000, 2_000, 4_000, 8_000, 16_000),
    registry=REGISTRY,
)
BLOCK_INTERVAL_SECONDS = Histogram(
    "medledger_block_interval_seconds",
    "Time between a committed block's header time and its parent's.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
BLOCK_COMMIT_SECONDS = Histogram(
    "medledger_block_commit_duration_seconds",
    "Commit of a decided block: validation with its certificate, the application, and "
    "the durable LMDB write.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
BLOCK_FSYNC_SECONDS = Histogram(
    "medledger_block_fsync_duration_seconds",
    "The block's one LMDB write transaction, synced to disk before it returns.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
ADMISSION_REFUSALS = _by(
    "code",
    (code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK),
    "medledger_admission_refusals",
    "Transactions refused at admission, by gRPC status code.",
)
EQUIVOCATIONS = Counter(
    "medledger_equivocations",
    "Evidence seen of a validator signing two different messages at one step.",
    registry=REGISTRY,
)
CATCH_UP_RUNS = Counter(
    "medledger_catch_up_runs",
    "Times this node fetched committed blocks from a peer that was ahead.",
    registry=REGISTRY,
)
MISSED_BLOCKS = Counter(
    "medledger_validator_missed_blocks",
    "Committed blocks whose commit certificate lacks this validator's precommit.",
    ["validator"],
    registry=REGISTRY,
)
GRPC_REQUESTS = Counter(
    "medledger_grpc_requests",
    "gRPC calls this node answered, by service, method and status code.",
    ["service", "method", "code"],
    registry=REGISTRY,
)
GRPC_REQUEST_SECONDS = Histogram(
    "medledger_grpc_request_duration_seconds",
    "Time from a gRPC call's start to its answer (a stream: to its end).",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
    registry=REGISTRY,
)
VAULT_FETCHES = _by(
    "outcome",
    ("released", "refused"),
    "medledger_vault_fetches",
    "Record fetches from this custodian's vault, by outcome.",
)
VAULT_BREAK_GLASS = Counter(
    "medledger_vault_break_glass_releases",
    "Records released under an emergency (break-glass) declaration.",
    registry=REGISTRY,
)


CHANNEL_UPDATES = _by(
    "outcome",
    ("accepted", "refused"),
    "medledger_channel_updates",
    "Signed channel updates this payee (a node's organisation, or a hub) decided, by outcome.",
)
CHANNEL_PAYMENTS = Counter(
    "medledger_channel_payments",
    "Payment lines in the channel updates this payee accepted.",
    registry=REGISTRY,
)
CHANNEL_LOCKS = Counter(
    "medledger_channel_locks",
    "Hash-locked payments this payee accepted.",
    registry=REGISTRY,
)
HUB_ROUTES = _by(
    "outcome",
    ("accepted", "settled", "failed"),
    "medledger_hub_routes",
    "Payments a hub routed, by outcome: accepted from a payer, settled (the provider's "
    "preimage is stored), failed.",
)


def validator_label(public_key: bytes) -> str:
    """A validator as metrics and logs name it: its key's first 16 hex digits."""
    return public_key.hex()[:16]
