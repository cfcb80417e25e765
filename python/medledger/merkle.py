"""RFC 9162 Merkle trees over SHA-256: tree hash, inclusion and consistency proofs.

Leaves are hashed as H(0x00 || leaf), interior nodes as H(0x01 || left || right), so
proofs are the standard Certificate Transparency ones and any RFC 9162 verifier accepts
them. Verification functions return False for any malformed input.
"""

from __future__ import annotations

from medledger._core import (
    merkle_consistency_proof as consistency_proof,
)
from medledger._core import (
    merkle_inclusion_proof as inclusion_proof,
)
from medledger._core import (
    merkle_leaf_hash as leaf_hash,
)
from medledger._core import (
    merkle_root as root,
)
from medledger._core import (
    merkle_verify_consistency as verify_consistency,
)
from medledger._core import (
    merkle_verify_inclusion as verify_inclusion,
)

__all__ = [
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]
