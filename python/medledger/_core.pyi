"""Typed face of the Rust extension `medledger._core` (checked by mypy.stubtest)."""

from collections.abc import Sequence
from typing import final

__all__ = [
    "BATCH_PAYMENTS_MAX",
    "BLOCK_BYTES_MAX",
    "BLOCK_TXS_MAX",
    "CHAIN_ID_BYTES_MAX",
    "LOCKS_MAX",
    "MERKLE_LEAVES_MAX",
    "STATE_BYTES_MAX",
    "THREADS_MAX",
    "TX_BYTES_MAX",
    "VALIDATORS_MAX",
    "VERIFY_BATCH_MAX",
    "SigningKey",
    "ValidatedBlock",
    "ValidatorSet",
    "admit_batch",
    "block_hash",
    "block_id",
    "block_tx_hashes",
    "check_channel_state",
    "merkle_consistency_proof",
    "merkle_inclusion_proof",
    "merkle_leaf_hash",
    "merkle_root",
    "merkle_verify_consistency",
    "merkle_verify_inclusion",
    "sha256",
    "signing_message",
    "sum_channel_payments",
    "tx_hash",
    "use_threads",
    "validate_block",
    "verify",
    "verify_batch",
    "verify_channel_states",
    "vote_signing_message",
]

BLOCK_BYTES_MAX: int
BLOCK_TXS_MAX: int
TX_BYTES_MAX: int
VERIFY_BATCH_MAX: int
MERKLE_LEAVES_MAX: int
CHAIN_ID_BYTES_MAX: int
VALIDATORS_MAX: int
THREADS_MAX: int
# Channel maxima (rust/core/src/channel.rs): the largest encoded state, the locks one state
# holds, the payment lines one update carries.
STATE_BYTES_MAX: int
LOCKS_MAX: int
BATCH_PAYMENTS_MAX: int

def use_threads(count: int) -> None: ...
def sha256(data: bytes) -> bytes: ...

@final
class SigningKey:
    """An Ed25519 signing key; the secret is zeroised when the key is dropped."""

    @staticmethod
    def generate() -> SigningKey: ...
    @staticmethod
    def from_seed(seed: bytes) -> SigningKey: ...
    @property
    def public_key(self) -> bytes: ...
    def seed(self) -> bytes: ...
    def sign(self, message: bytes) -> bytes: ...

def verify(public_key: bytes, message: bytes, signature: bytes) -> bool: ...
def verify_batch(
    public_keys: Sequence[bytes],
    messages: Sequence[bytes],
    signatures: Sequence[bytes],
    *,
    threads: int | None = None,
) -> list[bool]: ...
def admit_batch(
    chain_id: str,
    bodies: Sequence[bytes],
    public_keys: Sequence[bytes],
    signatures: Sequence[bytes],
    *,
    threads: int | None = None,
) -> list[tuple[bytes, bytes, bytes, bool]]: ...
def signing_message(domain: str, chain_id: str, payload: bytes) -> bytes: ...
def vote_signing_message(
    chain_id: str, vote_type: int, height: int, round: int, block_hash: bytes
) -> bytes: ...
def check_channel_state(state: bytes) -> None: ...
def sum_channel_payments(batch: bytes, groups: list[int] = ...) -> tuple[list[int], int, int]: ...
def verify_channel_states(
    chain_id: str,
    states: Sequence[bytes],
    public_keys: Sequence[bytes],
    signatures: Sequence[bytes],
    *,
    threads: int | None = None,
) -> list[bool]: ...
def merkle_leaf_hash(leaf: bytes) -> bytes: ...
def merkle_root(leaves: Sequence[bytes], *, threads: int | None = None) -> bytes: ...
def merkle_inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]: ...
def merkle_verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool: ...
def merkle_consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]: ...
def merkle_verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool: ...

@final
class ValidatorSet:
    """A validator set fixed by genesis: (public key, voting power) per member."""

    def __new__(cls, members: Sequence[tuple[bytes, int]]) -> ValidatorSet: ...
    @property
    def hash(self) -> bytes: ...
    @property
    def total_power(self) -> int: ...
    def members(self) -> list[tuple[bytes, int]]: ...
    def __len__(self) -> int: ...

@final
class ValidatedBlock:
    """What `validate_block` learned about a block that passed every rule."""

    @property
    def block_hash(self) -> bytes: ...
    @property
    def chain_id(self) -> str: ...
    @property
    def height(self) -> int: ...
    @property
    def parent_hash(self) -> bytes: ...
    @property
    def time_unix_ms(self) -> int: ...
    @property
    def tx_root(self) -> bytes: ...
    @property
    def app_hash(self) -> bytes: ...
    @property
    def proposer(self) -> bytes: ...
    @property
    def tx_hashes(self) -> list[bytes]: ...
    @property
    def tx_signatures_verified(self) -> int: ...

def validate_block(
    block: bytes,
    commit: bytes | None,
    *,
    chain_id: str,
    height: int,
    parent_hash: bytes,
    validators: ValidatorSet,
    next_validators: ValidatorSet | None = None,
    app_hash: bytes | None = None,
    verified_tx_hashes: Sequence[bytes] | None = None,
    threads: int | None = None,
) -> ValidatedBlock: ...
def block_hash(header: bytes) -> bytes: ...
def tx_hash(tx: bytes) -> bytes: ...
def block_tx_hashes(block: bytes) -> list[bytes]: ...
def block_id(block: bytes) -> bytes: ...
