"""The healthcare application behind the ABCI-like boundary.

Consensus (or, on a single node, the block producer) orders opaque transactions; the
application checks them at admission (`Application.check_tx`) and executes a block of
them deterministically (`Application.finalize_block`), returning per-transaction
outcomes, the state writes and the new app hash. It knows nothing of rounds, peers or
storage engines.
"""

from medledger.app.application import Application, BlockResult, TxOutcome

__all__ = ["Application", "BlockResult", "TxOutcome"]
