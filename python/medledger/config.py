"""A node's home directory: where its config, genesis, keys and data live."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medledger import limits
from medledger.limits import (
    BLOCK_TXS_MAX,
    MESSAGE_BYTES_MIN,
    PEER_MESSAGE_BYTES_MAX,
    PEER_RPCS_MAX,
    TX_BYTES_MAX,
    VERIFY_BATCH_MAX,
)

# PEER_MESSAGE_BYTES_MAX: re-exported for medledger.client.sync, which should import it
# from medledger.limits.
__all__ = ["DEFAULT_LISTEN", "PEER_MESSAGE_BYTES_MAX", "Home", "NodeConfig"]

DEFAULT_LISTEN = "127.0.0.1:7070"
DEFAULT_OPS_LISTEN = "127.0.0.1:0"


@dataclass(frozen=True)
class NodeConfig:
    """Tunables of one node. Every queue and batch has a named maximum."""

    # The client API (LedgerService, RecordService, VaultService, ChannelService):
    # server TLS.
    listen: str = DEFAULT_LISTEN
    # PeerService, for the other nodes only: mutual TLS against the member
    # organisations' CAs. Empty for a lone validator.
    peer_listen: str = ""
    # Clear text on both listeners (a development network on one machine at most): the
    # node logs a warning. Without it the node needs its TLS files under `tls/`.
    insecure: bool = False
    # The operations HTTP port: /metrics (Prometheus), /livez, /readyz. Port 0 picks a
    # free one, named in the node's ready line; give a fixed one for a scrape config.
    ops_listen: str = DEFAULT_OPS_LISTEN
    block_interval_ms: int = 50
    # Every maximum's default, and why it has its value: medledger.limits.
    block_txs_max: int = limits.DEFAULT_BLOCK_TXS_MAX
    mempool_txs_max: int = limits.DEFAULT_MEMPOOL_TXS_MAX
    # At least one block (`block_tx_bytes_max`).
    mempool_bytes_max: int = limits.DEFAULT_MEMPOOL_BYTES_MAX
    # One key's share of the ordinary lane: a quarter, so no signer holds the whole pool.
    mempool_signer_txs_max: int = limits.DEFAULT_MEMPOOL_SIGNER_TXS_MAX
    # One organisation's share (all its members' keys together): half, so a member whose
    # people or systems flood cannot crowd out the others (permissioned chains only).
    mempool_organisation_txs_max: int = limits.DEFAULT_MEMPOOL_ORGANISATION_TXS_MAX
    submit_batch_txs_max: int = limits.DEFAULT_SUBMIT_BATCH_TXS_MAX
    # Calls the client listener runs at once; the next is refused (RESOURCE_EXHAUSTED).
    # With `message_bytes_max` it bounds what clients can make the node hold.
    client_rpcs_max: int = limits.DEFAULT_CLIENT_RPCS_MAX
    # Of those, what one client address may hold (its host; connections from it share):
    # one client cannot then take every call from the others.
    client_calls_per_address_max: int = limits.DEFAULT_CLIENT_CALLS_PER_ADDRESS_MAX
    # Calls one member organisation may hold open at once on the peer listener (its
    # validators' Push streams and their fetches), so that one member cannot take the
    # listener's whole call budget from the others; and how long a Push stream may stay
    # silent (peers resend every `resend_interval_ms`) before it is closed.
    peer_calls_per_organisation_max: int = limits.DEFAULT_PEER_CALLS_PER_ORGANISATION_MAX
    peer_push_silence_ms: int = 60_000
    # Between MESSAGE_BYTES_MIN and PEER_MESSAGE_BYTES_MAX; blocks take what fits it.
    message_bytes_max: int = limits.DEFAULT_MESSAGE_BYTES_MAX
    expiry_horizon_blocks: int = 10_000
    # The LMDB map starts at this size and doubles as it fills, up to the maximum (and
    # never past the disk's room): medledger.chain.store.
    lmdb_map_size_bytes: int = limits.DEFAULT_LMDB_MAP_SIZE_BYTES
    lmdb_map_size_max_bytes: int = limits.DEFAULT_LMDB_MAP_SIZE_MAX_BYTES
    # The PeerService address of every genesis validator, in genesis order (this node's
    # own entry included). Empty for a lone validator. Validators added later bring
    # theirs on the ledger.
    validator_addresses: list[str] = field(default_factory=list)
    timeout_propose_ms: int = 1_000
    timeout_propose_delta_ms: int = 500
    timeout_vote_ms: int = 500
    timeout_vote_delta_ms: int = 250
    resend_interval_ms: int = 500
    peer_queue_max: int = limits.DEFAULT_PEER_QUEUE_MAX
    empty_block_interval_ms: int = 1_000
    # Threads for batch verification and Merkle hashing (0: every core). Nodes that share
    # a host (a local network) each take their share, so that idle workers waiting for
    # work do not take the CPU the other nodes need.
    rust_threads: int = 0

    def __post_init__(self) -> None:
        self._check_limits()
        if self.lmdb_map_size_max_bytes < self.lmdb_map_size_bytes:
            raise ValueError(
                f"lmdb_map_size_max_bytes: {self.lmdb_map_size_max_bytes} is below "
                f"lmdb_map_size_bytes ({self.lmdb_map_size_bytes}), the map's starting size"
            )
        if self.peer_calls_per_organisation_max < 1:
            raise ValueError(
                f"peer_calls_per_organisation_max: {self.peer_calls_per_organisation_max} "
                "must be at least 1"
            )
        if self.peer_push_silence_ms < 10 * self.resend_interval_ms:
            raise ValueError(
                f"peer_push_silence_ms: {self.peer_push_silence_ms} must be at least 10 "
                f"resend intervals ({10 * self.resend_interval_ms} ms)"
            )
        if self.client_calls_per_address_max < 1:
            raise ValueError(
                f"client_calls_per_address_max: {self.client_calls_per_address_max} must be "
                "at least 1"
            )
        if self.client_rpcs_max < 1:
            raise ValueError(f"client_rpcs_max: {self.client_rpcs_max} must be at least 1")
        if self.rust_threads < 0:
            raise ValueError(f"rust_threads: {self.rust_threads} is negative (0: every core)")

    def _check_limits(self) -> None:
        """The relations of medledger.limits that a node's own values could break: each
        refusal names the field."""
        # Peers and the SDK accept messages of PEER_MESSAGE_BYTES_MAX; a block (within
        # `block_tx_bytes_max` of it) must hold one transaction of the largest size.
        if not MESSAGE_BYTES_MIN <= self.message_bytes_max <= PEER_MESSAGE_BYTES_MAX:
            raise ValueError(
                f"message_bytes_max: {self.message_bytes_max} must be from "
                f"{MESSAGE_BYTES_MIN} (a block of one transaction of TX_BYTES_MAX "
                f"{TX_BYTES_MAX} with its headroom) to {PEER_MESSAGE_BYTES_MAX} (what peers "
                "and the SDK accept)"
            )
        # The Rust core refuses a block of more than BLOCK_TXS_MAX transactions: a
        # proposer must not build one its own validation refuses.
        if not 1 <= self.block_txs_max <= BLOCK_TXS_MAX:
            raise ValueError(
                f"block_txs_max: {self.block_txs_max} must be from 1 to BLOCK_TXS_MAX "
                f"({BLOCK_TXS_MAX}), the most block validation accepts"
            )
        if self.mempool_bytes_max < self.block_tx_bytes_max:
            raise ValueError(
                f"mempool_bytes_max: {self.mempool_bytes_max} is less than one block "
                f"(block_tx_bytes_max {self.block_tx_bytes_max}, from message_bytes_max)"
            )
        for name in ("mempool_txs_max", "mempool_signer_txs_max", "mempool_organisation_txs_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} must be at least 1")
        # A batch (and a gossip message) is verified in one Rust call.
        if not 1 <= self.submit_batch_txs_max <= VERIFY_BATCH_MAX:
            raise ValueError(
                f"submit_batch_txs_max: {self.submit_batch_txs_max} must be from 1 to "
                f"VERIFY_BATCH_MAX ({VERIFY_BATCH_MAX}), what one verification call takes"
            )
        if self.peer_calls_per_organisation_max > PEER_RPCS_MAX:
            raise ValueError(
                f"peer_calls_per_organisation_max: {self.peer_calls_per_organisation_max} "
                f"exceeds the peer listener's calls at once (PEER_RPCS_MAX {PEER_RPCS_MAX})"
            )
        if self.peer_queue_max < 1:
            raise ValueError(f"peer_queue_max: {self.peer_queue_max} must be at least 1")

    @property
    def block_tx_bytes_max(self) -> int:
        """The most transaction bytes a block may hold: under the Rust core's
        BLOCK_BYTES_MAX, and small enough to travel whole within `message_bytes_max`
        (medledger.limits.block_tx_bytes_max)."""
        return limits.block_tx_bytes_max(self.message_bytes_max)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NodeConfig:
        data = json.loads(text)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Home:
    """The layout of a node's home directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.json"

    @property
    def validator_key(self) -> Path:
        return self.root / "keys" / "validator.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def signer_state(self) -> Path:
        return self.root / "data" / "last_signed.json"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def tls_key(self) -> Path:
        """The node's TLS key (0600); `tls_certificate` is its certificate."""
        return self.tls_dir / "node.key"

    @property
    def tls_certificate(self) -> Path:
        return self.tls_dir / "node.pem"

    @property
    def ca_key(self) -> Path:
        """The organisation's CA, where `init` made it (an operator may keep it elsewhere)."""
        return self.tls_dir / "ca.key"

    @property
    def ca_certificate(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def consortium_ca(self) -> Path:
        """The member organisations' CA certificates, for clients of this node."""
        return self.tls_dir / "consortium-ca.pem"

    def load_config(self) -> NodeConfig:
        return NodeConfig.from_json(self.config.read_text())
