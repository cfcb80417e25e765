"""The custodian's vault: record bodies encrypted under per-record data keys in the
custodian's own LMDB (never replicated by consensus), released wrapped for a requester
only when consent allows, every release and refusal audited on the ledger first."""
