"""validate_block from Python: every rule's error reaches Python as the right exception
naming the field; garbage never crashes the extension."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger import _core
from medledger import block as blocks
from medledger.block import ValidatorSet, validate_block
from medledger.crypto import SigningKey
from medledger.errors import (
    DecodeError,
    InvalidArgument,
    InvalidBlock,
    LimitExceeded,
    MedledgerError,
)
from medledger.wire.v1 import envelope_pb2
from tests.conftest import CHAIN_ID, Network


def validate(
    network: Network, block: envelope_pb2.Block, commit: envelope_pb2.CommitCertificate
) -> blocks.ValidatedBlock:
    return validate_block(
        block.SerializeToString(),
        commit.SerializeToString(),
        chain_id=CHAIN_ID,
        height=network.height,
        parent_hash=network.parent_hash,
        validators=network.validators,
    )


def test_a_valid_block_passes_with_its_hashes(network: Network) -> None:
    block = network.block(network.txs(40))
    validated = validate(network, block, network.commit(block))
    assert validated.block_hash == blocks.block_hash(block.header.SerializeToString())
    assert validated.height == network.height
    assert validated.chain_id == CHAIN_ID
    assert validated.tx_hashes == [blocks.tx_hash(tx.SerializeToString()) for tx in block.txs]
    assert validated.tx_signatures_verified == 40


def test_known_transactions_are_not_verified_twice(network: Network) -> None:
    block = network.block(network.txs(10))
    known = [blocks.tx_hash(tx.SerializeToString()) for tx in block.txs[:7]]
    validated = validate_block(
        block.SerializeToString(),
        network.commit(block).SerializeToString(),
        chain_id=CHAIN_ID,
        height=network.height,
        parent_hash=network.parent_hash,
        validators=network.validators,
        verified_tx_hashes=known,
    )
    assert validated.tx_signatures_verified == 3


def test_a_bad_transaction_signature_is_named(network: Network) -> None:
    txs = network.txs(64)
    txs[41].signature = bytes(64)
    block = network.block(txs)
    with pytest.raises(InvalidBlock) as raised:
        validate(network, block, network.commit(block))
    assert raised.value.field == "txs[41].signature"


def test_a_header_for_another_chain_is_named(network: Network) -> None:
    block = network.block(network.txs(2))
    block.header.chain_id = "another-chain"
    with pytest.raises(InvalidBlock) as raised:
        validate(network, block, network.commit(block))
    assert raised.value.field == "header.chain_id"
    assert "another-chain" in str(raised.value)


def test_a_commit_without_quorum_is_named(network: Network) -> None:
    block = network.block(network.txs(2))
    with pytest.raises(InvalidBlock) as raised:
        validate(network, block, network.commit(block, signers=(0, 1)))
    assert raised.value.field == "commit.signatures"


def test_too_many_transactions_raise_limit_exceeded(network: Network) -> None:
    block = network.block([envelope_pb2.SignedTransaction()] * (blocks.BLOCK_TXS_MAX + 1))
    with pytest.raises(LimitExceeded) as raised:
        validate(network, block, network.commit(block))
    assert (raised.value.field, raised.value.limit_name) == ("txs", "BLOCK_TXS_MAX")


def test_garbage_block_raises_decode_error(network: Network) -> None:
    with pytest.raises(DecodeError) as raised:
        validate_block(
            b"\x0a\xff\xff",
            b"",
            chain_id=CHAIN_ID,
            height=1,
            parent_hash=bytes(32),
            validators=network.validators,
        )
    assert raised.value.field == "block"


def test_a_short_parent_hash_argument_is_named(network: Network) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_block(
            b"",
            b"",
            chain_id=CHAIN_ID,
            height=1,
            parent_hash=b"short",
            validators=network.validators,
        )
    assert raised.value.field == "parent_hash"


def _another_chain(network: Network) -> object:
    block = network.block(network.txs(2))
    block.header.chain_id = "another-chain"
    return validate(network, block, network.commit(block))


@pytest.mark.parametrize(
    ("call", "kind", "field"),
    [
        (lambda _: _core.tx_hash(b"\x0a\xff\xff"), DecodeError, "tx"),
        (lambda _: _core.signing_message("tx", "", b""), InvalidArgument, "chain_id"),
        (_another_chain, InvalidBlock, "header.chain_id"),
        (
            lambda _: _core.check_channel_state(bytes(_core.STATE_BYTES_MAX + 1)),
            LimitExceeded,
            "state",
        ),
    ],
)
def test_each_core_error_kind_arrives_as_its_class_naming_the_field(
    network: Network,
    call: Callable[[Network], object],
    kind: type[MedledgerError],
    field: str,
) -> None:
    """The binding maps each variant of the core's one error type to one class of
    medledger.errors, with the field as an attribute and in the message."""
    for _ in range(2):  # the classes are looked up once, then reused
        with pytest.raises(MedledgerError) as raised:
            call(network)
        assert type(raised.value) is kind
        assert raised.value.field == field
        assert field in str(raised.value)
    # Shape errors stay ValueErrors for callers that catch those.
    assert isinstance(raised.value, ValueError) == (kind in (DecodeError, InvalidArgument))
    if isinstance(raised.value, LimitExceeded):
        assert raised.value.limit_name == "STATE_BYTES_MAX"
        assert (raised.value.limit, raised.value.actual) == (
            _core.STATE_BYTES_MAX,
            _core.STATE_BYTES_MAX + 1,
        )
        assert "STATE_BYTES_MAX" in str(raised.value)
    else:
        reason = getattr(raised.value, "reason", "")
        assert reason
        assert reason in str(raised.value)


@settings(max_examples=200, deadline=None)
@given(block=st.binary(max_size=400), commit=st.binary(max_size=200))
def test_random_bytes_never_crash_the_extension(block: bytes, commit: bytes) -> None:
    validators = Network().validators
    with pytest.raises((DecodeError, InvalidBlock, LimitExceeded)):
        validate_block(
            block,
            commit,
            chain_id=CHAIN_ID,
            height=5,
            parent_hash=bytes(32),
            validators=validators,
        )
    for decode, field in ((blocks.block_hash, "header"), (blocks.tx_hash, "tx")):
        outcome: bytes | DecodeError
        try:
            outcome = decode(block)
        except DecodeError as error:
            outcome = error
        assert len(outcome) == 32 if isinstance(outcome, bytes) else outcome.field == field


def test_validator_sets_reject_duplicates_and_zero_power() -> None:
    key = SigningKey.generate().public_key
    with pytest.raises(InvalidArgument) as raised:
        ValidatorSet([(key, 1), (key, 1)])
    assert raised.value.field == "validators[1].public_key"
    with pytest.raises(InvalidArgument) as raised:
        ValidatorSet([(key, 0)])
    assert raised.value.field == "validators[0].voting_power"
    with pytest.raises(InvalidArgument):
        ValidatorSet([])


def test_validation_releases_the_gil(network: Network) -> None:
    """Another Python thread keeps running while a large block is being validated."""
    block = network.block(network.txs(3000)).SerializeToString()
    commit_bytes = network.commit(envelope_pb2.Block.FromString(block)).SerializeToString()
    ticks = 0
    done = threading.Event()

    def count_ticks() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    counter = threading.Thread(target=count_ticks)
    counter.start()
    try:
        before = ticks
        validate_block(
            block,
            commit_bytes,
            chain_id=CHAIN_ID,
            height=network.height,
            parent_hash=network.parent_hash,
            validators=network.validators,
            threads=1,
        )
        during = ticks - before
    finally:
        done.set()
        counter.join(timeout=5)
    assert during > 10


def test_a_proposal_without_a_commit_is_checked_by_every_other_rule(network: Network) -> None:
    txs = network.txs(8)
    block = network.block(txs)
    validated = validate_block(
        block.SerializeToString(),
        None,
        chain_id=CHAIN_ID,
        height=network.height,
        parent_hash=network.parent_hash,
        validators=network.validators,
    )
    assert validated.tx_signatures_verified == 8
    block.header.parent_hash = bytes(32)
    with pytest.raises(InvalidBlock) as raised:
        validate_block(
            block.SerializeToString(),
            None,
            chain_id=CHAIN_ID,
            height=network.height,
            parent_hash=network.parent_hash,
            validators=network.validators,
        )
    assert raised.value.field == "header.parent_hash"


@settings(max_examples=60, deadline=None)
@given(
    st.text(max_size=100),
    st.lists(
        st.one_of(
            st.integers(0, 300),
            st.sampled_from([60, 61, 125, 126, 16_380, 16_381, 70_000]),
        ),
        max_size=6,
    ),
)
def test_encode_block_matches_protobuf(chain_id: str, body_sizes: list[int]) -> None:
    """The block encoding made from parts is what protobuf writes for the same message,
    whatever the lengths (one-, two- and three-byte varints)."""
    header = envelope_pb2.BlockHeader(chain_id=chain_id, height=7)
    txs = [envelope_pb2.SignedTransaction(body=b"\x01" * size) for size in body_sizes]
    expected = envelope_pb2.Block(header=header, txs=txs).SerializeToString(deterministic=True)
    encoded = blocks.encode_block(
        header.SerializeToString(deterministic=True),
        [tx.SerializeToString(deterministic=True) for tx in txs],
    )
    assert encoded == expected
