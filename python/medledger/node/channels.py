"""The node's side of payment channels: the payee runtime reads the committed ledger
directly (no RPC), and the watcher challenges unilateral closes of its channels."""

from __future__ import annotations

from medledger.app import queries
from medledger.node.ledger_node import LedgerNode
from medledger.wire.v1 import channels_pb2

__all__ = ["NodeChannelLedger"]


class NodeChannelLedger:
    """`ChannelLedger` over the node's own committed state."""

    def __init__(self, node: LedgerNode) -> None:
        self.node = node

    async def channel(self, channel_id: bytes) -> channels_pb2.Channel | None:
        with self.node.store.snapshot() as snapshot:
            return queries.channel(snapshot, channel_id)

    def height(self) -> int:
        return self.node.head.height
