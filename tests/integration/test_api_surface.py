"""What a client sees: reflection and health for generic tools, resumable block streams,
inclusion proofs that verify offline, and the asyncio client."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_requests import Client

from medledger.client import AsyncLedgerClient, ProofError, verify_transaction_proof
from medledger.wire.v1 import channels_pb2, ledger_pb2, records_pb2, tx_pb2
from tests.integration.conftest import CHAIN_ID, RunningNode


def commit_some(node: RunningNode, count: int) -> list[tx_pb2.Receipt]:
    with node.client() as client:
        expiry = client.status().height + 100
        builder = node.builder()
        txs = [
            builder.transfer(to=node.payer.public_key, amount_micros=1, expiry_height=expiry)
            for _ in range(count)
        ]
        return [receipt for batch in client.submit_batches([txs]) for receipt in batch]


def test_a_reflection_client_lists_and_calls_the_api_without_generated_code(
    node: RunningNode,
) -> None:
    commit_some(node, 3)
    client = Client.get_by_endpoint(
        node.address, ssl=True, credentials={"root_certificates": node.tls.roots_pem}
    )
    services = client.service_names
    assert "medledger.wire.v1.LedgerService" in services
    assert "grpc.health.v1.Health" in services
    status = client.request("medledger.wire.v1.LedgerService", "GetStatus", {})
    assert status["chain_id"] == CHAIN_ID
    height = int(status["height"])
    block = client.request("medledger.wire.v1.LedgerService", "GetBlock", {"height": height})
    assert int(block["block"]["header"]["height"]) == height


def test_reflection_answers_a_v1_client_as_it_answers_v1alpha(node: RunningNode) -> None:
    """A client that speaks only grpc.reflection.v1 (grpcurl's default) lists the services
    and gets the file that declares LedgerService, as a v1alpha client does."""
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="medledger.wire.v1.LedgerService"
        ),
    ]
    answers = {}
    for service in (
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        with node.channel() as channel:
            call = channel.stream_stream(
                f"/{service}/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            answers[service] = list(call(iter(requests), timeout=10))
    v1, v1alpha = answers.values()
    listed = {s.name for s in v1[0].list_services_response.service}
    assert {"medledger.wire.v1.LedgerService", "grpc.reflection.v1.ServerReflection"} <= listed
    assert v1[1].file_descriptor_response.file_descriptor_proto
    assert [a.SerializeToString() for a in v1] == [a.SerializeToString() for a in v1alpha]


def answer_code(channel: grpc.Channel, path: str, method: Any) -> grpc.StatusCode:
    """The status a method answers an empty request with (OK if it answers at all)."""
    try:
        if method.client_streaming:
            bidi: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(path)
            next(iter(bidi(iter([b""]), timeout=5)), None)
        elif method.server_streaming:
            server: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)
            stream = server(b"", timeout=5)
            next(iter(stream), None)
            stream.cancel()
        else:
            unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
            unary(b"", timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    "service",
    [
        ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"],
        records_pb2.DESCRIPTOR.services_by_name["RecordService"],
        records_pb2.DESCRIPTOR.services_by_name["VaultService"],
        channels_pb2.DESCRIPTOR.services_by_name["ChannelService"],
    ],
    ids=lambda service: service.name,
)
def test_every_method_the_schema_declares_is_served(node: RunningNode, service: Any) -> None:
    """A method in the .proto that the node does not route answers UNIMPLEMENTED: each
    one is called with an empty request and must answer anything else."""
    with node.channel() as channel:
        codes = {
            method.name: answer_code(channel, f"/{service.full_name}/{method.name}", method)
            for method in service.methods
        }
    assert grpc.StatusCode.UNIMPLEMENTED not in codes.values(), codes


def test_the_health_service_reports_serving(node: RunningNode) -> None:
    with node.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "medledger.wire.v1.LedgerService"):
            request = health_pb2.HealthCheckRequest(service=service)
            response = stub.Check(request, timeout=10)  # type: ignore[attr-defined]
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_block_streams_resume_from_a_height(node: RunningNode) -> None:
    commit_some(node, 5)
    with node.client() as client:
        head = client.status().height
        first = [b.block.header.height for b in _take(client.stream_blocks(1, timeout_s=10), head)]
        assert first == list(range(1, head + 1))
        # A client that disconnected after height 2 resumes from 3.
        resumed = [
            b.block.header.height for b in _take(client.stream_blocks(3, timeout_s=10), head - 2)
        ]
        assert resumed == list(range(3, head + 1))
        # Live: a block committed after the stream started arrives on it.
        stream = client.stream_blocks(head + 1, timeout_s=20)
        commit_some(node, 1)
        assert next(stream).block.header.height == head + 1


def _take(stream, count: int) -> list:  # type: ignore[no-untyped-def, type-arg]
    out = []
    for item in stream:
        out.append(item)
        if len(out) == count:
            break
    return out


def test_an_inclusion_proof_verifies_offline_and_tampering_is_caught(node: RunningNode) -> None:
    receipts = commit_some(node, 20)
    with node.client() as stranger:  # an unsigned read: the receipt, not the body
        assert not stranger.get_transaction(tx_id=receipts[13].tx_id).HasField("tx")
    with node.client(reader=node.payer) as client:  # the signer reads its own
        response = client.get_transaction(tx_id=receipts[13].tx_id)
    validators = node.genesis.validator_set()
    block_hash = verify_transaction_proof(response, validators, CHAIN_ID)
    assert response.commit.block_hash == block_hash
    response.tx.body = response.tx.body + b"\x00"
    with pytest.raises(ProofError, match="proof"):
        verify_transaction_proof(response, validators, CHAIN_ID)


def test_the_asyncio_client_submits_and_reads(node: RunningNode) -> None:
    async def scenario() -> None:
        async with AsyncLedgerClient(node.address) as client:
            status = await client.status()
            builder = node.builder(node.member())
            receipt = await client.submit(builder.create_account(expiry_height=status.height + 10))
            assert receipt.code == tx_pb2.RESULT_CODE_OK
            txs = [
                node.builder().transfer(
                    to=builder.key.public_key, amount_micros=3, expiry_height=status.height + 10
                )
                for _ in range(4)
            ]
            results = [r async for r in client.submit_batches([txs[:2], txs[2:]])]
            assert [batch_id for batch_id, _ in results] == [0, 1]
            assert (await client.get_account(builder.key.public_key)).balance_micros == 12
            pending = await client.submit(
                node.builder().transfer(
                    to=builder.key.public_key, amount_micros=1, expiry_height=status.height + 10
                ),
                wait=False,
            )
            assert pending.status in (tx_pb2.TX_STATUS_PENDING, tx_pb2.TX_STATUS_COMMITTED)

    asyncio.run(scenario())
