"""Key files are private; the mempool is bounded."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from medledger._core import THREADS_MAX, use_threads
from medledger.app.channels import URGENT, URGENT_FOR_PAYEE
from medledger.client import TxBuilder
from medledger.config import NodeConfig
from medledger.crypto import SigningKey
from medledger.errors import InvalidArgument, Rejected
from medledger.keys import KeyFileError, load_key, save_key
from medledger.node.mempool import URGENT_PER_CHANNEL_MAX, Mempool, PendingTx
from medledger.run.homes import init_network, network_homes
from medledger.wire.v1 import channels_pb2, tx_pb2


def test_a_key_file_is_written_0600_and_reads_back(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "keys" / "k.json"
    save_key(key, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key(path).public_key == key.public_key


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    save_key(SigningKey.generate(), path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="accessible by others"):
        load_key(path)


def test_an_existing_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    first = SigningKey.generate()
    save_key(first, path)
    with pytest.raises(KeyFileError, match="already exists"):
        save_key(SigningKey.generate(), path)
    assert load_key(path).public_key == first.public_key


def pending(n: int, size: int = 100) -> PendingTx:
    tx = TxBuilder(SigningKey.from_seed(b"\x01" * 32), "c").create_account(
        expiry_height=10, tx_id=n.to_bytes(16, "big")
    )
    body = tx_pb2.TransactionBody.FromString(tx.body)
    return PendingTx(tx, body, b"x" * size, n.to_bytes(32, "big"), b"b" * 32)


def test_the_mempool_refuses_past_its_count_limit() -> None:
    async def scenario() -> None:
        pool = Mempool(txs_max=2, bytes_max=10_000)
        pool.add(pending(1))
        pool.add(pending(2))
        with pytest.raises(Rejected) as raised:
            pool.add(pending(3))
        assert (raised.value.status, raised.value.field) == ("RESOURCE_EXHAUSTED", "mempool")
        taken = pool.take(5, 10_000)
        assert [p.tx_id for p in taken] == [(1).to_bytes(16, "big"), (2).to_bytes(16, "big")]
        assert len(pool) == 0
        assert pool.size_bytes == 0

    asyncio.run(scenario())


def test_the_mempool_refuses_past_its_byte_limit() -> None:
    async def scenario() -> None:
        pool = Mempool(txs_max=100, bytes_max=250)
        pool.add(pending(1, size=200))
        with pytest.raises(Rejected):
            pool.add(pending(2, size=51))
        pool.add(pending(3, size=50))
        assert len(pool) == 2

    asyncio.run(scenario())


def test_the_mempool_finds_transactions_by_hash_until_they_leave() -> None:
    async def scenario() -> None:
        pool = Mempool(txs_max=10, bytes_max=10_000)
        first, second = pending(1), pending(2)
        pool.add(first)
        pool.add(second)
        assert pool.by_hash(second.tx_hash) is second
        pool.remove(second.tx_id)
        assert pool.by_hash(second.tx_hash) is None
        pool.take(1, 10_000)
        assert pool.by_hash(first.tx_hash) is None

    asyncio.run(scenario())


def test_a_block_takes_only_what_fits_its_byte_budget() -> None:
    """A block is bounded by bytes as well as by count: transactions padded to the
    largest admissible size must not make a block that no validator can accept or send
    (a lone validator's producer died on one)."""

    async def scenario() -> None:
        pool = Mempool(txs_max=100, bytes_max=10**6)
        for n in range(1, 6):
            pool.add(pending(n))
        each = pending(1).block_bytes
        assert [int.from_bytes(p.tx_id, "big") for p in pool.peek(10, 3 * each)] == [1, 2, 3]
        assert len(pool.peek(2, 10**6)) == 2  # the count limit still holds
        assert pool.peek(10, each - 1) == []
        taken = pool.take(10, 2 * each + each // 2)
        assert [int.from_bytes(p.tx_id, "big") for p in taken] == [1, 2]
        assert [int.from_bytes(p.tx_id, "big") for p in pool.peek(10, 10**6)] == [3, 4, 5]

    asyncio.run(scenario())


def challenge(n: int, channel: bytes) -> PendingTx:
    tx = TxBuilder(SigningKey.from_seed(bytes([n % 250 + 2]) * 32), "c").sign(
        tx_pb2.TransactionBody(
            challenge_channel=channels_pb2.ChallengeChannel(
                state=channels_pb2.SignedChannelState(
                    state=channels_pb2.ChannelState(channel_id=channel).SerializeToString()
                )
            )
        ),
        expiry_height=10,
        tx_id=(10_000 + n).to_bytes(16, "big"),
    )
    body = tx_pb2.TransactionBody.FromString(tx.body)
    return PendingTx(tx, body, b"c" * 100, (10_000 + n).to_bytes(32, "big"), b"b" * 32)


def test_time_critical_transactions_go_first_and_have_room_of_their_own() -> None:
    """A flood of ordinary transactions must not delay a challenge past its window."""

    async def scenario() -> None:
        pool = Mempool(txs_max=3, bytes_max=10**6)
        for n in range(1, 4):
            pool.add(pending(n))
        with pytest.raises(Rejected):
            pool.add(pending(4))  # the ordinary lane is full ...
        urgent = challenge(1, b"\x01" * 16)
        pool.add(urgent, urgent=URGENT)  # ... the reserved one is not
        assert pool.peek(2, 10**6)[0] is urgent  # and blocks take it first
        assert pool.get(urgent.tx_id) is urgent
        assert pool.remove(urgent.tx_id) is urgent
        assert len(pool) == 3

    asyncio.run(scenario())


def test_one_channel_cannot_fill_the_reserved_lane() -> None:
    async def scenario() -> None:
        pool = Mempool(txs_max=10, bytes_max=10**6)
        channel = b"\x02" * 16
        for n in range(URGENT_PER_CHANNEL_MAX):
            pool.add(challenge(n, channel), urgent=URGENT)
        with pytest.raises(Rejected, match="time-critical lane"):
            pool.add(challenge(99, channel), urgent=URGENT)
        pool.add(challenge(100, b"\x03" * 16), urgent=URGENT)  # another channel's challenge
        pool.add(challenge(101, channel), urgent=URGENT_FOR_PAYEE)  # the payee's own room

    asyncio.run(scenario())


def test_one_signer_cannot_hold_the_whole_pool() -> None:
    async def scenario() -> None:
        pool = Mempool(txs_max=100, bytes_max=10**6, signer_txs_max=2)
        pool.add(pending(1))
        pool.add(pending(2))
        with pytest.raises(Rejected) as raised:
            pool.add(pending(3))  # the same key signed all three
        assert (raised.value.status, raised.value.field) == ("RESOURCE_EXHAUSTED", "tx.public_key")
        pool.take(1, 10**6)
        pool.add(pending(3))  # room again once one left

    asyncio.run(scenario())


def test_one_organisation_cannot_hold_the_whole_pool() -> None:
    """Its members' keys together: fresh keys of one organisation do not add room."""

    async def scenario() -> None:
        pool = Mempool(txs_max=100, bytes_max=10**6, signer_txs_max=100, organisation_txs_max=2)
        pool.add(pending(1), organisation="org-a")
        pool.add(pending(2), organisation="org-a")
        with pytest.raises(Rejected) as raised:
            pool.add(pending(3), organisation="org-a")
        assert (raised.value.status, raised.value.field) == ("RESOURCE_EXHAUSTED", "tx.public_key")
        assert "org-a" in raised.value.reason
        pool.add(pending(4), organisation="org-b")  # another organisation has its own share
        pool.take(1, 10**6)
        pool.add(pending(3), organisation="org-a")  # room again once one left
        pool.remove((4).to_bytes(16, "big"))
        pool.add(pending(5), organisation="org-b")

    asyncio.run(scenario())


@pytest.mark.parametrize("message_bytes_max", [1024 * 1024, 1024 * 1024 + 4096, 32 * 1024 * 1024])
def test_a_config_whose_blocks_could_not_travel_or_hold_a_transaction_is_refused(
    message_bytes_max: int,
) -> None:
    with pytest.raises(ValueError, match="message_bytes_max"):
        NodeConfig(message_bytes_max=message_bytes_max)


def test_rust_threads_must_be_a_count_of_threads() -> None:
    with pytest.raises(ValueError, match="rust_threads"):
        NodeConfig(rust_threads=-1)
    for count in (0, THREADS_MAX + 1):
        with pytest.raises(InvalidArgument, match="threads"):
            use_threads(count)


def test_a_local_network_shares_the_cores_among_its_nodes(tmp_path: Path) -> None:
    init_network(tmp_path, "chain-threads", 4, 30_000, 1_000)
    shares = {home.load_config().rust_threads for home in network_homes(tmp_path, 4)}
    assert shares == {max(1, (os.cpu_count() or 1) // 4)}
