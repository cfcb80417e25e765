"""The maxima fit together (issue 18): a block of the largest size travels in one message
with its headroom, the largest transaction fits a block, the mempool holds a block, a
NodeConfig that breaks a relation is refused naming its field, and a proposer given
nothing but the largest transactions builds only blocks its own validation accepts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from medledger import _core, limits
from medledger.block import ValidatorSet, make_commit, validate_block
from medledger.config import Home, NodeConfig
from medledger.consensus.guard import FileGuardStore, SigningGuard
from medledger.crypto import SigningKey
from medledger.errors import InvalidArgument, LimitExceeded
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.limits import (
    BLOCK_BYTES_MAX,
    BLOCK_HEADROOM_BYTES,
    BLOCK_TXS_MAX,
    COMMIT_BYTES_MAX,
    DEFAULT_BLOCK_TX_BYTES_MAX,
    FRAMING_BYTES,
    HEADER_BYTES_BOUND,
    MESSAGE_BYTES_MIN,
    PEER_MESSAGE_BYTES_MAX,
    TX_BYTES_MAX,
    VALIDATORS_MAX,
)
from medledger.node.consensus_driver import ConsensusDriver, gossip_chunks
from medledger.node.ledger_node import LedgerNode
from medledger.run.homes import init_home, init_network, network_homes
from medledger.tx import sign_transaction
from medledger.wire.v1 import channels_pb2, envelope_pb2, peer_pb2, tx_pb2

CHAIN_ID = "limits-unit"
FUNDS = 10**12


# ------------------------------------------------------------------ the relations


def test_every_relation_holds() -> None:
    """medledger.limits checks its relations at import; this names any that fail."""
    assert limits.broken_relations() == []
    assert len(limits.relations()) >= 20


def test_a_block_of_the_largest_size_fits_one_message_with_its_headroom() -> None:
    config = NodeConfig()
    assert config.block_tx_bytes_max == DEFAULT_BLOCK_TX_BYTES_MAX
    assert config.block_tx_bytes_max + BLOCK_HEADROOM_BYTES <= config.message_bytes_max
    assert config.message_bytes_max <= PEER_MESSAGE_BYTES_MAX
    assert config.block_tx_bytes_max + BLOCK_HEADROOM_BYTES <= BLOCK_BYTES_MAX
    assert HEADER_BYTES_BOUND + COMMIT_BYTES_MAX < BLOCK_HEADROOM_BYTES


def test_the_largest_transaction_fits_a_block_and_the_mempool_holds_a_block() -> None:
    config = NodeConfig()
    assert config.block_tx_bytes_max >= TX_BYTES_MAX + FRAMING_BYTES
    assert limits.block_tx_bytes_max(MESSAGE_BYTES_MIN) == TX_BYTES_MAX + FRAMING_BYTES
    assert config.mempool_bytes_max >= config.block_tx_bytes_max
    assert config.mempool_txs_max >= config.block_txs_max
    assert 1 <= config.block_txs_max <= BLOCK_TXS_MAX
    assert limits.URGENT_BYTES_MAX >= TX_BYTES_MAX
    assert config.submit_batch_txs_max <= limits.VERIFY_BATCH_MAX


def test_the_headroom_holds_the_largest_header_and_commit_certificate() -> None:
    """Measured, not estimated: a header with the longest chain id and the largest
    varints, and a certificate signed by VALIDATORS_MAX validators, around a block of
    DEFAULT_BLOCK_TX_BYTES_MAX, make a message within the limit."""
    header = envelope_pb2.BlockHeader(
        chain_id="c" * limits.CHAIN_ID_BYTES_MAX,
        height=2**64 - 1,
        parent_hash=bytes(32),
        time_unix_ms=2**64 - 1,
        tx_root=bytes(32),
        tx_count=2**32 - 1,
        app_hash=bytes(32),
        validators_hash=bytes(32),
        proposer=bytes(32),
        next_validators_hash=bytes(32),
    )
    assert header.ByteSize() <= HEADER_BYTES_BOUND
    commit = envelope_pb2.CommitCertificate(
        height=2**64 - 1,
        round=2**32 - 1,
        block_hash=bytes(32),
        signatures=[
            envelope_pb2.CommitSignature(validator_index=i, signature=bytes(64))
            for i in range(VALIDATORS_MAX)
        ],
    )
    assert commit.ByteSize() <= COMMIT_BYTES_MAX
    block = header.ByteSize() + 2 + 4 + DEFAULT_BLOCK_TX_BYTES_MAX
    carried = peer_pb2.BlockWithCommit(block=bytes(block), commit=commit.SerializeToString())
    assert carried.ByteSize() <= PEER_MESSAGE_BYTES_MAX
    proposal = peer_pb2.PeerMessage(
        sender=2**32 - 1,
        committed_height=2**64 - 1,
        proposal=peer_pb2.ConsensusProposal(
            height=2**64 - 1,
            round=2**32 - 1,
            valid_round=-1,
            proposer=2**32 - 1,
            block=bytes(block),
            block_hash=bytes(32),
            signature=bytes(64),
        ),
    )
    assert proposal.ByteSize() <= PEER_MESSAGE_BYTES_MAX


def test_the_core_limits_match_the_core() -> None:
    """COMMIT_BYTES_MAX is restated in medledger.limits until the binding exports it; the
    channel limits are the binding's. The core refuses exactly one past each."""
    assert (
        limits.CHANNEL_STATE_BYTES_MAX,
        limits.CHANNEL_LOCKS_MAX,
        limits.CHANNEL_UPDATE_LINES_MAX,
    ) == (_core.STATE_BYTES_MAX, _core.LOCKS_MAX, _core.BATCH_PAYMENTS_MAX)
    validators = ValidatorSet([(SigningKey.from_seed(b"\x01" * 32).public_key, 1)])
    with pytest.raises(LimitExceeded) as raised:
        validate_block(
            b"",
            bytes(COMMIT_BYTES_MAX + 1),
            chain_id=CHAIN_ID,
            height=1,
            parent_hash=bytes(32),
            validators=validators,
        )
    assert (raised.value.limit_name, raised.value.limit) == ("COMMIT_BYTES_MAX", COMMIT_BYTES_MAX)

    with pytest.raises(LimitExceeded) as raised:
        _core.check_channel_state(bytes(limits.CHANNEL_STATE_BYTES_MAX + 1))
    assert raised.value.limit == limits.CHANNEL_STATE_BYTES_MAX

    locks = [
        channels_pb2.HashLock(hash=bytes(32), amount_micros=1, expiry_height=1)
        for _ in range(limits.CHANNEL_LOCKS_MAX + 1)
    ]
    state = channels_pb2.ChannelState(
        channel_id=bytes(16), sequence=1, deposit_micros=len(locks), locks=locks
    )
    with pytest.raises(LimitExceeded) as raised:
        _core.check_channel_state(state.SerializeToString())
    assert raised.value.limit == limits.CHANNEL_LOCKS_MAX

    lines = channels_pb2.PaymentBatch(
        payments=[
            channels_pb2.Payment(payment_id=i.to_bytes(16, "big"), amount_micros=1)
            for i in range(limits.CHANNEL_UPDATE_LINES_MAX + 1)
        ]
    )
    with pytest.raises(LimitExceeded) as raised:
        _core.sum_channel_payments(lines.SerializeToString())
    assert raised.value.limit == limits.CHANNEL_UPDATE_LINES_MAX


def _channel_txs(state: bytes) -> list[envelope_pb2.SignedTransaction]:
    """A close, a force close and a challenge carrying `state` with both signatures, as
    large as admission allows around it: the longest chain id, the largest expiry and
    PREIMAGES_MAX preimages."""
    key = SigningKey.from_seed(b"\x02" * 32)
    chain_id = "c" * limits.CHAIN_ID_BYTES_MAX
    signed = channels_pb2.SignedChannelState(
        state=state, payer_signature=bytes(64), payee_signature=bytes(64)
    )
    preimages = [bytes(32)] * limits.PREIMAGES_MAX
    kinds = {
        "close_channel": channels_pb2.CloseChannel(state=signed),
        "force_close_channel": channels_pb2.ForceCloseChannel(
            channel_id=bytes(16), state=signed, preimages=preimages
        ),
        "challenge_channel": channels_pb2.ChallengeChannel(state=signed, preimages=preimages),
    }
    txs = []
    for kind, message in kinds.items():
        body = tx_pb2.TransactionBody(chain_id=chain_id, tx_id=bytes(16), expiry_height=2**64 - 1)
        getattr(body, kind).CopyFrom(message)
        txs.append(sign_transaction(key, chain_id, body.SerializeToString()))
    return txs


def _largest_state() -> bytes:
    """A state the rules accept with CHANNEL_LOCKS_MAX locks and its varints as long as
    they can be while the parts still add up to the deposit."""
    share = (2**64 - 1) // (limits.CHANNEL_LOCKS_MAX + 2)
    locks = [
        channels_pb2.HashLock(
            hash=i.to_bytes(32, "big"), amount_micros=share, expiry_height=2**64 - 1
        )
        for i in range(limits.CHANNEL_LOCKS_MAX)
    ]
    state = channels_pb2.ChannelState(
        channel_id=bytes(16),
        sequence=2**64 - 1,
        deposit_micros=2**64 - 1,
        payer_micros=share,
        payee_micros=2**64 - 1 - share * (limits.CHANNEL_LOCKS_MAX + 1),
        locks=locks,
        lines_digest=bytes(32),
    )
    return state.SerializeToString(deterministic=True)


def test_a_state_the_channel_rules_accept_fits_the_challenge_that_carries_it() -> None:
    """Issue 18: a payee must never sign a state it cannot defend on the ledger. The
    reviewers' attack padded a state with an unknown field up to STATE_BYTES_MAX (then 64
    KiB, TX_BYTES_MAX itself), so the challenge carrying it was too large to admit. Now
    the rules refuse any state that is not the canonical encoding of its fields, and
    CHANNEL_STATE_BYTES_MAX leaves room under TX_BYTES_MAX for the transaction around it,
    so even bytes of that size would fit."""
    state = channels_pb2.ChannelState(channel_id=bytes(16), sequence=1).SerializeToString()
    pad = limits.CHANNEL_STATE_BYTES_MAX - len(state) - 2 - 3  # an unknown field's tag, length
    padded = state + _varint(1000 << 3 | 2) + _varint(pad) + bytes(pad)
    assert len(padded) == limits.CHANNEL_STATE_BYTES_MAX
    _core.check_channel_state(state)
    with pytest.raises(InvalidArgument) as raised:
        _core.check_channel_state(padded)  # the rules refuse it: not canonical
    assert raised.value.field == "state"
    assert "canonical" in str(raised.value)
    # Any bytes the size check lets through fit every transaction that carries them.
    for tx in _channel_txs(bytes(limits.CHANNEL_STATE_BYTES_MAX)):
        assert tx.ByteSize() <= TX_BYTES_MAX, tx.ByteSize()
    # And the largest state the rules allow is accepted and fits with room to spare.
    largest = _largest_state()
    _core.check_channel_state(largest)
    assert len(largest) <= limits.CHANNEL_STATE_BYTES_MAX
    for tx in _channel_txs(largest):
        assert tx.ByteSize() <= TX_BYTES_MAX, tx.ByteSize()


def test_the_transaction_bound_in_the_relations_covers_the_largest_channel_transaction() -> None:
    """The relation medledger.limits checks at import estimates the largest force close;
    measured, it is no smaller than the real encoding."""
    measured = max(tx.ByteSize() for tx in _channel_txs(bytes(limits.CHANNEL_STATE_BYTES_MAX)))
    assert measured <= limits._channel_tx_bytes(limits.CHANNEL_STATE_BYTES_MAX) <= TX_BYTES_MAX
    assert len(_largest_state()) <= limits._LOCKED_STATE_BYTES <= limits.CHANNEL_STATE_BYTES_MAX


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# ------------------------------------------------------- a config that breaks them


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_bytes_max", MESSAGE_BYTES_MIN - 1),
        ("message_bytes_max", PEER_MESSAGE_BYTES_MAX + 1),
        ("block_txs_max", BLOCK_TXS_MAX + 1),
        ("block_txs_max", 0),
        ("mempool_bytes_max", DEFAULT_BLOCK_TX_BYTES_MAX - 1),
        ("mempool_txs_max", 0),
        ("mempool_signer_txs_max", 0),
        ("mempool_organisation_txs_max", 0),
        ("submit_batch_txs_max", limits.VERIFY_BATCH_MAX + 1),
        ("submit_batch_txs_max", 0),
        ("peer_calls_per_organisation_max", limits.PEER_RPCS_MAX + 1),
        ("peer_queue_max", 0),
    ],
)
def test_a_config_that_breaks_a_relation_is_refused_naming_the_field(
    field: str, value: int
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: {value} "):
        NodeConfig(**{field: value})  # type: ignore[arg-type]


def test_a_config_at_the_edges_of_the_relations_is_accepted() -> None:
    smallest = NodeConfig(message_bytes_max=MESSAGE_BYTES_MIN, mempool_bytes_max=TX_BYTES_MAX * 2)
    assert smallest.block_tx_bytes_max == TX_BYTES_MAX + FRAMING_BYTES
    assert NodeConfig(block_txs_max=BLOCK_TXS_MAX).block_txs_max == BLOCK_TXS_MAX
    one_block = NodeConfig(mempool_bytes_max=DEFAULT_BLOCK_TX_BYTES_MAX)
    assert one_block.mempool_bytes_max == one_block.block_tx_bytes_max


def test_a_smaller_message_limit_makes_smaller_blocks_and_a_smaller_mempool_suffices() -> None:
    config = NodeConfig(message_bytes_max=4 * 1024 * 1024, mempool_bytes_max=4 * 1024 * 1024)
    assert config.block_tx_bytes_max == 3 * 1024 * 1024
    with pytest.raises(ValueError, match=r"^mempool_bytes_max: "):
        replace(config, mempool_bytes_max=3 * 1024 * 1024 - 1)


# ----------------------------------------------------- blocks of large transactions


def large_tx(
    key: SigningKey, n: int, height: int, size: int = TX_BYTES_MAX
) -> envelope_pb2.SignedTransaction:
    """A transfer padded with an unknown field (admitted and kept) to `size` bytes."""
    body = tx_pb2.TransactionBody(
        chain_id=CHAIN_ID,
        tx_id=n.to_bytes(16, "big"),
        expiry_height=height + 1_000,
        transfer=tx_pb2.Transfer(to=b"\x05" * 32, amount_micros=1),
    ).SerializeToString(deterministic=True)
    base = sign_transaction(key, CHAIN_ID, body).ByteSize()
    pad = size - base - 3  # the unknown field's tag (2 bytes) and its length
    for _ in range(4):  # the length of the lengths settles in a step or two
        padded = body + _varint(1000 << 3 | 2) + _varint(pad) + bytes(pad)
        tx = sign_transaction(key, CHAIN_ID, padded)
        if tx.ByteSize() == size:
            return tx
        pad += size - tx.ByteSize()
    raise AssertionError(f"could not pad a transaction to {size} bytes")


def framed_bytes(block: envelope_pb2.Block) -> int:
    return sum(tx.ByteSize() + FRAMING_BYTES for tx in block.txs)


def test_gossip_is_cut_by_bytes_as_well_as_by_count() -> None:
    """4,096 transactions of TX_BYTES_MAX are 256 MiB: one gossip message of them would
    exceed every peer's message limit."""
    key = SigningKey.from_seed(b"\x03" * 32)
    tx = large_tx(key, 1, 1)
    txs = [tx] * 700
    chunks = list(gossip_chunks(txs, 4_096, DEFAULT_BLOCK_TX_BYTES_MAX))
    assert sum(len(c) for c in chunks) == len(txs)
    assert len(chunks) == 3
    for chunk in chunks:
        message = peer_pb2.PeerMessage(txs=peer_pb2.TxGossip(txs=chunk))
        assert sum(t.ByteSize() + FRAMING_BYTES for t in chunk) <= DEFAULT_BLOCK_TX_BYTES_MAX
        assert message.ByteSize() + BLOCK_HEADROOM_BYTES <= PEER_MESSAGE_BYTES_MAX
    small = [sign_transaction(key, CHAIN_ID, b"x")] * 10_000
    assert [len(c) for c in gossip_chunks(small, 4_096, DEFAULT_BLOCK_TX_BYTES_MAX)] == [
        4_096,
        4_096,
        1_808,
    ]
    assert [len(c) for c in gossip_chunks(txs[:3], 2, DEFAULT_BLOCK_TX_BYTES_MAX)] == [2, 1]


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def validators(tmp_path: Path) -> Iterator[tuple[ConsensusDriver, list[SigningKey], SigningKey]]:
    """Validator 0 of a four-validator network, its consensus driver on a real
    LedgerNode over LMDB; the validators' keys; a funded, enrolled client key."""
    init_network(tmp_path, CHAIN_ID, 4, 30_000, FUNDS)
    homes = network_homes(tmp_path, 4)
    home = homes[0]
    config = home.load_config()
    node = LedgerNode(home, config, Genesis.load(home.genesis), load_key(home.validator_key))
    driver = ConsensusDriver(node, config, SigningGuard(FileGuardStore(home.signer_state)))
    keys = [load_key(h.validator_key) for h in homes]
    yield driver, keys, load_key(home.keys_dir / "client.json")
    node.store.close()


TXS = 520  # 34 MB of transactions of TX_BYTES_MAX: more than two blocks' worth


def test_a_proposer_given_the_largest_transactions_builds_blocks_its_validation_accepts(
    validators: tuple[ConsensusDriver, list[SigningKey], SigningKey],
) -> None:
    """The mempool holds more than two blocks of transactions of TX_BYTES_MAX. Each value
    the proposer builds (Replica.get_value) stays within block_tx_bytes_max and the
    block count, fits one message with its commit, is valid to this node's own
    validation, and commits; every transaction ends up in a block."""
    driver, keys, client = validators
    node, config = driver.node, driver.config
    assert 2 * config.block_tx_bytes_max < TXS * TX_BYTES_MAX
    txs = [large_tx(client, n + 1, node.head.height) for n in range(TXS)]
    for start in range(0, TXS, 100):
        answers = node.submit(txs[start : start + 100], gossip=False)
        receipts = [a.pending_receipt() for a in answers]
        assert {r.status for r in receipts} == {tx_pb2.TX_STATUS_PENDING}, receipts[0]
    assert len(node.mempool) == TXS
    index = {key: i for i, (key, _) in enumerate(node.validators.members())}

    async def propose_until_empty() -> list[int]:
        counts = []
        while len(node.mempool):
            height = node.head.height + 1
            driver.replica.now_ms = max(now_ms(), node.head_time_ms + 1)
            value_id, value = driver.replica.get_value(height)
            block = envelope_pb2.Block.FromString(value)
            assert 0 < len(block.txs) <= config.block_txs_max
            assert framed_bytes(block) <= config.block_tx_bytes_max
            assert len(value) <= BLOCK_BYTES_MAX
            assert driver.replica.valid(height, value_id, value)  # its own validation
            commit = make_commit(
                chain_id=CHAIN_ID,
                header=block.header,
                round=0,
                signers=[(index[k.public_key], k) for k in keys[:3]],
            )
            carried = peer_pb2.BlockWithCommit(block=value, commit=commit.SerializeToString())
            assert carried.ByteSize() <= config.message_bytes_max
            await node.commit_block(value, commit.SerializeToString())
            assert node.head.height == height
            counts.append(len(block.txs))
        return counts

    counts = asyncio.run(propose_until_empty())
    assert sum(counts) == TXS
    assert len(counts) >= 3


def test_a_lone_validator_given_the_largest_transactions_commits_them_all(tmp_path: Path) -> None:
    """The solo producer (LedgerNode._produce_blocks) takes what fits by bytes too."""
    home = Home(tmp_path / "solo")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    config = replace(home.load_config(), block_interval_ms=10)
    node = LedgerNode(home, config, Genesis.load(home.genesis), load_key(home.validator_key))
    client = load_key(home.keys_dir / "client.json")
    txs = [large_tx(client, n + 1, node.head.height) for n in range(TXS)]

    async def produce() -> None:
        node.start()
        try:
            for start in range(0, TXS, 100):
                node.submit(txs[start : start + 100])
            while len(node.mempool) or node.in_flight:
                await asyncio.sleep(0.05)
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(produce(), 120))  # stopping closes its store
    reopened = LedgerNode(home, config, Genesis.load(home.genesis), load_key(home.validator_key))
    try:
        heights = range(1, reopened.head.height + 1)
        blocks = [envelope_pb2.Block.FromString(reopened.store.block(h) or b"") for h in heights]
    finally:
        reopened.store.close()
    assert sum(len(b.txs) for b in blocks) == TXS
    assert len(blocks) >= 3
    for block in blocks:
        assert framed_bytes(block) <= config.block_tx_bytes_max
        assert block.ByteSize() + BLOCK_HEADROOM_BYTES <= config.message_bytes_max
        assert len(block.txs) <= config.block_txs_max
