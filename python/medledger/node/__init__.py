"""The asyncio runtime of a node: admission, mempool, block production, commit."""
