"""The node's LMDB store: blocks, commit certificates, the transaction index and state."""

from medledger.chain.store import ChainStore, Head, Snapshot, StoreError

__all__ = ["ChainStore", "Head", "Snapshot", "StoreError"]
