"""The Python SDK: keys, building and signing transactions, submitting them one at a time
or in streamed batches, waiting for commits, and checking inclusion proofs offline.

    from medledger.client import LedgerClient, TxBuilder
    with LedgerClient("127.0.0.1:7070") as client:
        builder = TxBuilder(key, client.status().chain_id)
        receipt = client.submit(builder.transfer(to=bob, amount_micros=5, expiry_height=1000))
"""

from medledger.client.aio import AsyncLedgerClient
from medledger.client.members import EnrolmentError, enrol
from medledger.client.proofs import ProofError, verify_transaction_proof
from medledger.client.sync import LedgerClient
from medledger.tx import TxBuilder, new_tx_id

__all__ = [
    "AsyncLedgerClient",
    "EnrolmentError",
    "LedgerClient",
    "ProofError",
    "TxBuilder",
    "enrol",
    "new_tx_id",
    "verify_transaction_proof",
]
