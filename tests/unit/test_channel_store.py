"""The channel store's group commit against a real LMDB environment: many commits share
one fsync, and stopping never drops a commit that was asked for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from medledger.channels.store import ChannelStore, GroupCommit
from medledger.wire.v1 import channels_pb2


def channel(n: int) -> channels_pb2.LocalChannel:
    return channels_pb2.LocalChannel(channel_id=n.to_bytes(16, "big"), deposit_micros=n)


def test_stopping_writes_every_queued_commit(tmp_path: Path) -> None:
    store = ChannelStore(tmp_path / "channels")

    async def commit_then_stop() -> list[asyncio.Future[None]]:
        commit = GroupCommit(store)
        commit.start()
        futures = [commit.commit([store.channel_write(channel(n))]) for n in range(50)]
        await commit.stop()  # at once: nothing has been written yet
        return futures

    futures = asyncio.run(commit_then_stop())
    assert all(f.done() and f.exception() is None for f in futures)
    store.close()
    reopened = ChannelStore(tmp_path / "channels")
    assert sorted(local.deposit_micros for local in reopened.channels()) == list(range(50))
    reopened.close()


def test_commits_queued_together_share_one_transaction(tmp_path: Path) -> None:
    store = ChannelStore(tmp_path / "channels")

    async def burst() -> int:
        commit = GroupCommit(store)
        commit.start()
        await asyncio.gather(
            *(commit.commit([store.channel_write(channel(n))]) for n in range(100))
        )
        await commit.stop()
        return commit.transactions

    assert asyncio.run(burst()) == 1
    store.close()
