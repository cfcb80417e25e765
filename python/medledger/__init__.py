"""medledger: a permissioned, Byzantine-fault-tolerant ledger for healthcare networks.

The per-transaction cryptography runs in a Rust extension (`medledger._core`); the public
modules are `medledger.crypto`, `medledger.merkle`, `medledger.block` and
`medledger.errors`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medledger")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
