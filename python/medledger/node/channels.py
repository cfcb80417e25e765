"""The node's side of payment channels: the payee runtime reads the committed ledger
directly (no RPC), and the watcher answers unilateral closes of the node's channels.

A payer that closes with an old state (fewer payments than it made) is challenged with
the latest state both signed, inside the challenge window, without anyone watching; a
payer that closes with the latest state but never paid a lock whose preimage it was told
has the preimage revealed on the ledger (a challenge with that same state), so the lock
settles to the payee. A payer that keeps the channel open but never pays such a lock is
closed with the preimage as the lock nears its expiry. After the window the watcher
settles, so the payee's funds arrive on their own.
"""

from __future__ import annotations

import asyncio
import logging

from medledger.app import queries
from medledger.channels.payee import LOCK_MARGIN_BLOCKS, Payee
from medledger.node.ledger_node import LedgerNode
from medledger.tx import TxBuilder
from medledger.wire.v1 import channels_pb2, tx_pb2

__all__ = ["ChannelWatcher", "NodeChannelLedger"]

log = logging.getLogger(__name__)

EXPIRY_BLOCKS = 20
RESUBMIT_AFTER_BLOCKS = 5
CLAIM_MARGIN_BLOCKS = LOCK_MARGIN_BLOCKS // 2
"""A revealed lock the payer has not paid this close to its expiry is claimed on the
ledger (half the margin every new lock must leave, so a resubmission still fits)."""
"""A challenge or settlement not committed after this many blocks is submitted again."""


class NodeChannelLedger:
    """`ChannelLedger` over the node's own committed state."""

    def __init__(self, node: LedgerNode) -> None:
        self.node = node

    async def channel(self, channel_id: bytes) -> channels_pb2.Channel | None:
        with self.node.store.snapshot() as snapshot:
            return queries.channel(snapshot, channel_id)

    def height(self) -> int:
        return self.node.head.height


class ChannelWatcher:
    """After every block: challenges a closing channel whose pending state is older than
    the payee's latest, and settles channels whose window has passed."""

    def __init__(self, node: LedgerNode, payee: Payee) -> None:
        self.node = node
        self.payee = payee
        self.builder = TxBuilder(payee.key, node.chain_id)
        self._submitted: dict[tuple[bytes, str], int] = {}  # (channel, action) -> height
        self._task: asyncio.Task[None] | None = None
        self.challenges = 0  # submitted so far (for logs and tests)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="channel-watcher")

    def tasks(self) -> list[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            async with self.node.new_block:
                await self.node.new_block.wait()
            try:
                self.check()
            except Exception:
                log.exception("channel watcher: check failed; retrying at the next block")

    def check(self) -> None:
        height = self.node.head.height
        with self.node.store.snapshot() as snapshot:
            on_chain = [
                (local, queries.channel(snapshot, local.channel_id))
                for local in self.payee.channels()
            ]
        for local, channel in on_chain:
            if channel is not None and channel.status == channels_pb2.CHANNEL_STATUS_OPEN:
                self._claim_if_withheld(local, height)
            if channel is None or channel.status != channels_pb2.CHANNEL_STATUS_CLOSING:
                continue
            self.payee.mark_closing(local.channel_id)
            if height <= channel.challenge_end_height:
                self._challenge_if_stale(local, channel, height)
            else:
                self._once(local.channel_id, "settle", height, self._settle_body(channel))

    def _claim_if_withheld(self, local: channels_pb2.LocalChannel, height: int) -> None:
        """A payer told the preimage of a lock (it has what it paid for) that still has not
        paid it as the lock nears expiry is closed on the ledger with the preimage: after
        expiry it could take the amount back."""
        if not local.latest.state:
            return
        ours = channels_pb2.ChannelState.FromString(local.latest.state)
        due = [
            lock.hash
            for lock in ours.locks
            if height <= lock.expiry_height <= height + CLAIM_MARGIN_BLOCKS
        ]
        owed = self.payee.preimages(due)
        if not owed:
            return
        log.warning(
            "channel %s: the payer withholds %d revealed locks; closing to claim them",
            local.channel_id.hex(),
            len(owed),
        )
        body = tx_pb2.TransactionBody(
            force_close_channel=channels_pb2.ForceCloseChannel(
                channel_id=local.channel_id, state=local.latest, preimages=owed
            )
        )
        if self._once(local.channel_id, f"claim-{ours.sequence}", height, body):
            self.payee.mark_closing(local.channel_id)

    def _challenge_if_stale(
        self, local: channels_pb2.LocalChannel, channel: channels_pb2.Channel, height: int
    ) -> None:
        if not local.latest.state:
            return
        ours = channels_pb2.ChannelState.FromString(local.latest.state)
        pending = channel.pending_state
        revealed = set(channel.revealed_hashes)
        # Preimages of live locks in our state that the ledger does not know yet: the
        # payer owes them, and only revealing them on the ledger before expiry pays them.
        owed = self.payee.preimages(
            lock.hash
            for lock in ours.locks
            if lock.expiry_height >= height and lock.hash not in revealed
        )
        body = tx_pb2.TransactionBody(
            challenge_channel=channels_pb2.ChallengeChannel(state=local.latest, preimages=owed)
        )
        if ours.sequence > pending.sequence:
            log.warning(
                "channel %s closed with state %d; challenging with %d",
                local.channel_id.hex(),
                pending.sequence,
                ours.sequence,
            )
            if self._once(local.channel_id, f"challenge-{ours.sequence}", height, body):
                self.challenges += 1
        elif ours == pending and owed:
            log.warning(
                "channel %s closed with %d revealed locks unpaid; revealing them",
                local.channel_id.hex(),
                len(owed),
            )
            self._once(local.channel_id, f"reveal-{len(revealed)}", height, body)

    @staticmethod
    def _settle_body(channel: channels_pb2.Channel) -> tx_pb2.TransactionBody:
        return tx_pb2.TransactionBody(
            settle_channel=channels_pb2.SettleChannel(channel_id=channel.channel_id)
        )

    def _once(
        self, channel_id: bytes, action: str, height: int, body: tx_pb2.TransactionBody
    ) -> bool:
        """Submits `body` unless the same action was submitted in the last few blocks."""
        last = self._submitted.get((channel_id, action))
        if last is not None and height < last + RESUBMIT_AFTER_BLOCKS:
            return False
        tx = self.builder.sign(body, expiry_height=height + EXPIRY_BLOCKS)
        (admitted,) = self.node.submit([tx])
        receipt = admitted.pending_receipt()
        if receipt.status == tx_pb2.TX_STATUS_REJECTED:
            # Not recorded: the next block tries again (a full lane or storage may have
            # room then), rather than RESUBMIT_AFTER_BLOCKS later with a window running.
            log.warning("channel %s: %s refused: %s", channel_id.hex(), action, receipt.message)
            return False
        self._submitted[(channel_id, action)] = height
        return True
