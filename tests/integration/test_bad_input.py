"""Bad input against a real node: the right gRPC status, a message naming the field,
nothing committed changes, and the node keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from medledger.client import LedgerClient, new_tx_id
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.transport.credentials import sync_channel
from medledger.tx import sign_transaction
from medledger.wire.v1 import envelope_pb2, ledger_pb2, tx_pb2
from tests.integration.conftest import CHAIN_ID, RunningNode


@pytest.fixture
def client(node: RunningNode) -> Iterator[LedgerClient]:
    with node.client() as client:
        yield client


def expiry(client: LedgerClient) -> int:
    return client.status().height + 50


def assert_unchanged_after(client: LedgerClient, before: ledger_pb2.GetStatusResponse) -> None:
    after = client.status()
    assert (after.height, after.last_block_hash, after.committed_txs) == (
        before.height,
        before.last_block_hash,
        before.committed_txs,
    )


def refused(client: LedgerClient, tx: envelope_pb2.SignedTransaction) -> Rejected:
    before = client.status()
    with pytest.raises(Rejected) as raised:
        client.submit(tx)
    assert_unchanged_after(client, before)
    return raised.value


def test_malformed_protobuf_is_invalid_argument(node: RunningNode, client: LedgerClient) -> None:
    with node.channel() as channel:
        submit = channel.unary_unary(
            "/medledger.wire.v1.LedgerService/Submit",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.RpcError) as raised:
            submit(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "medledger.wire.v1.SubmitRequest" in (raised.value.details() or "")
    client.status()  # still serving


def test_a_body_that_is_not_a_transaction_body_is_named(
    node: RunningNode, client: LedgerClient
) -> None:
    tx = sign_transaction(node.payer, CHAIN_ID, b"\xff\xff\xff")
    error = refused(client, tx)
    assert (error.status, error.field) == ("INVALID_ARGUMENT", "tx.body")


def test_a_bad_signature_is_invalid_argument(node: RunningNode, client: LedgerClient) -> None:
    tx = node.builder().transfer(
        to=node.payer.public_key, amount_micros=1, expiry_height=expiry(client)
    )
    tx.signature = bytes(64)
    error = refused(client, tx)
    assert (error.status, error.field) == ("INVALID_ARGUMENT", "tx.signature")


def test_a_signature_for_another_chain_does_not_verify(
    node: RunningNode, client: LedgerClient
) -> None:
    body = tx_pb2.TransactionBody(
        chain_id=CHAIN_ID,
        tx_id=new_tx_id(),
        expiry_height=expiry(client),
        create_account=tx_pb2.CreateAccount(),
    ).SerializeToString()
    tx = sign_transaction(SigningKey.generate(), "another-chain", body)
    error = refused(client, tx)
    assert (error.status, error.field) == ("INVALID_ARGUMENT", "tx.signature")


def test_a_key_no_member_organisation_enrolled_is_permission_denied(
    node: RunningNode, client: LedgerClient
) -> None:
    """Permissioned submission: a fresh key cannot even open an account (so a stranger
    cannot flood the network with free accounts); the refusal names the key and changes
    nothing."""
    before = client.status()
    tx = node.builder(SigningKey.generate()).create_account(expiry_height=expiry(client))
    error = refused(client, tx)
    assert (error.status, error.field) == ("PERMISSION_DENIED", "tx.public_key")
    assert_unchanged_after(client, before)


def test_a_body_for_another_chain_is_named(node: RunningNode, client: LedgerClient) -> None:
    body = tx_pb2.TransactionBody(
        chain_id="another-chain",
        tx_id=new_tx_id(),
        expiry_height=expiry(client),
        create_account=tx_pb2.CreateAccount(),
    ).SerializeToString()
    tx = sign_transaction(SigningKey.generate(), CHAIN_ID, body)
    error = refused(client, tx)
    assert (error.status, error.field) == ("INVALID_ARGUMENT", "body.chain_id")


def test_an_expired_transaction_is_failed_precondition(
    node: RunningNode, client: LedgerClient
) -> None:
    client.submit(node.builder(node.member()).create_account(expiry_height=expiry(client)))
    tx = node.builder().transfer(to=node.payer.public_key, amount_micros=1, expiry_height=1)
    error = refused(client, tx)
    assert (error.status, error.field) == ("FAILED_PRECONDITION", "body.expiry_height")


def test_a_replay_returns_the_first_outcome_and_applies_once(
    node: RunningNode, client: LedgerClient
) -> None:
    bob = node.member()
    client.submit(node.builder(bob).create_account(expiry_height=expiry(client)))
    tx = node.builder().transfer(to=bob.public_key, amount_micros=7, expiry_height=expiry(client))
    first = client.submit(tx)
    before = client.status()
    again = client.submit(tx)
    assert again == first
    assert client.get_account(bob.public_key).balance_micros == 7
    assert_unchanged_after(client, before)


def test_a_conflicting_body_under_a_used_id_is_already_exists(
    node: RunningNode, client: LedgerClient
) -> None:
    tx_id = new_tx_id()
    builder = node.builder()
    client.submit(
        builder.transfer(
            to=node.payer.public_key, amount_micros=1, expiry_height=expiry(client), tx_id=tx_id
        )
    )
    conflicting = builder.transfer(
        to=node.payer.public_key, amount_micros=2, expiry_height=expiry(client), tx_id=tx_id
    )
    error = refused(client, conflicting)
    assert (error.status, error.field) == ("ALREADY_EXISTS", "body.tx_id")


def test_unknown_accounts_and_insufficient_funds_are_committed_as_failed(
    node: RunningNode, client: LedgerClient
) -> None:
    stranger, poor = SigningKey.generate(), node.member()
    client.submit(node.builder(poor).create_account(expiry_height=expiry(client)))
    payer_before = client.get_account(node.payer.public_key).balance_micros
    unknown = client.submit(
        node.builder().transfer(
            to=stranger.public_key, amount_micros=5, expiry_height=expiry(client)
        )
    )
    assert (unknown.status, unknown.code) == (
        tx_pb2.TX_STATUS_COMMITTED,
        tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT,
    )
    assert "transfer.to" in unknown.message
    broke = client.submit(
        node.builder(poor).transfer(
            to=node.payer.public_key, amount_micros=1, expiry_height=expiry(client)
        )
    )
    assert broke.code == tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS
    assert client.get_account(node.payer.public_key).balance_micros == payer_before
    assert client.get_account(poor.public_key).balance_micros == 0


def test_an_oversize_message_is_resource_exhausted(node: RunningNode, client: LedgerClient) -> None:
    tx = node.builder().transfer(
        to=node.payer.public_key, amount_micros=1, expiry_height=expiry(client)
    )
    tx.body = tx.body + b"\x00" * (17 * 1024 * 1024)
    with sync_channel(
        node.address, node.tls, [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        submit = channel.unary_unary(
            "/medledger.wire.v1.LedgerService/Submit",
            request_serializer=ledger_pb2.SubmitRequest.SerializeToString,
            response_deserializer=ledger_pb2.SubmitResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as raised:
            submit(ledger_pb2.SubmitRequest(tx=tx), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    client.status()


def test_an_oversize_transaction_is_resource_exhausted(
    node: RunningNode, client: LedgerClient
) -> None:
    tx = node.builder().transfer(
        to=node.payer.public_key, amount_micros=1, reference="", expiry_height=expiry(client)
    )
    tx.body = tx.body + b"\x00" * (70 * 1024)  # trailing padding: still a valid body
    error = refused(client, tx)
    assert (error.status, error.field) == ("RESOURCE_EXHAUSTED", "tx")


def test_too_many_transactions_in_a_batch_is_resource_exhausted(
    node: RunningNode, client: LedgerClient
) -> None:
    builder = node.builder()
    txs = [builder.create_account(expiry_height=expiry(client)) for _ in range(4097)]
    before = client.status()
    with pytest.raises(Rejected) as raised:
        list(client.submit_batches([txs]))
    assert (raised.value.status, raised.value.field) == ("RESOURCE_EXHAUSTED", "txs")
    assert_unchanged_after(client, before)


def test_unknown_ids_are_not_found_and_bad_keys_invalid(
    node: RunningNode, client: LedgerClient
) -> None:
    with pytest.raises(Rejected) as raised:
        client.get_transaction(tx_id=new_tx_id())
    assert (raised.value.status, raised.value.field) == ("NOT_FOUND", "tx_id")
    with pytest.raises(Rejected) as raised:
        client.get_account(b"\x01" * 31)
    assert (raised.value.status, raised.value.field) == ("INVALID_ARGUMENT", "owner")
    with pytest.raises(Rejected) as raised:
        client.get_block(10**9)
    assert (raised.value.status, raised.value.field) == ("NOT_FOUND", "height")
