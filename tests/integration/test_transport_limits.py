"""Issue 17: TLS 1.3 on every listener, and bounded calls, on a real node process.

gRPC Python cannot set a minimum TLS version, so the node refuses calls (not
handshakes) over TLS 1.2. A gRPC client cannot be made to speak TLS 1.2 either, so the
test speaks HTTP/2 itself (`h2`) over a Python `ssl` socket limited to TLS 1.2, and
makes the same call over TLS 1.3 to show the hand-made client works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.connection
import h2.events
import pytest

from medledger.api.server import LEDGER_SERVICE, PEER_SERVICE
from medledger.client import LedgerClient
from medledger.config import Home, NodeConfig
from medledger.run.homes import free_base_port, init_home, init_network, network_homes
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.certs import load_identity, make_node_certificate
from medledger.transport.credentials import aio_channel
from medledger.wire.v1 import ledger_pb2, ledger_pb2_grpc, peer_pb2
from tests.integration.conftest import member_tls, tls_of

CHAIN_ID = "medledger-transport-limits"


@contextlib.contextmanager
def lone_node(tmp_path: Path, **config: Any) -> Iterator[tuple[Home, NodeProcess]]:
    home = Home(tmp_path / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    if config:
        home.config.write_text(dataclasses.replace(home.load_config(), **config).to_json())
    node = start_node(home.root)
    try:
        yield home, node
    finally:
        node.stop()


def grpc_call_over(
    address: str,
    ca: bytes,
    version: ssl.TLSVersion,
    path: str,
    request: bytes,
    certificate: Home | None = None,
    source: str = "",
) -> dict[str, str]:
    """One gRPC call over HTTP/2 on a TLS connection that negotiates exactly `version`
    (presenting the node certificate of `certificate`, a home, if given; from the local
    address `source`, if given); the response's headers and trailers."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cadata=ca.decode())
    context.minimum_version = context.maximum_version = version
    if certificate is not None:
        context.load_cert_chain(certificate.tls_certificate, certificate.tls_key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(
            (host, int(port)), timeout=10, source_address=(source, 0) if source else None
        ) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2"}.get(version, "TLSv1.3")
        connection = h2.connection.H2Connection()
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(
            stream,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", path),
                (":authority", address),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        framed = b"\x00" + len(request).to_bytes(4, "big") + request
        connection.send_data(stream, framed, end_stream=True)
        tls.sendall(connection.data_to_send())
        headers: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = tls.recv(65_536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers.update((bytes(k).decode(), bytes(v).decode()) for k, v in event.headers)
                if isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return headers
            tls.sendall(connection.data_to_send())
        raise AssertionError(f"no answer from {address} over {version.name}")


def test_calls_over_tls_1_2_are_refused_and_tls_1_3_is_answered(tmp_path: Path) -> None:
    with lone_node(tmp_path) as (home, node):
        ca = home.consortium_ca.read_bytes()
        status = f"/{LEDGER_SERVICE}/GetStatus"
        health = "/grpc.health.v1.Health/Check"
        for path in (status, health):
            answer = grpc_call_over(node.address, ca, ssl.TLSVersion.TLSv1_3, path, b"")
            assert answer.get("grpc-status") == "0", answer
            refused = grpc_call_over(node.address, ca, ssl.TLSVersion.TLSv1_2, path, b"")
            assert refused.get("grpc-status") == str(grpc.StatusCode.UNAUTHENTICATED.value[0])
            message = urllib.parse.unquote(refused.get("grpc-message", ""))
            assert "TLS 1.3 is required" in message, message
            assert "TLSv1.2" in message, message
        # The refusals changed nothing: the node still answers a real client.
        with LedgerClient(node.address, timeout_s=10, tls=tls_of(home)) as client:
            assert client.status().chain_id == CHAIN_ID
    assert "Traceback" not in (home.root / "node.log").read_text()


def test_the_peer_port_refuses_tls_1_2_even_from_a_member(tmp_path: Path) -> None:
    """Mutual TLS with a member's certificate, but TLS 1.2: refused before PeerService
    reads the request. (Only node 0 of the network runs: its peer port is up.)"""
    init_network(tmp_path, CHAIN_ID, 4, free_base_port(8), 1_000)
    homes = network_homes(tmp_path, 4)
    node = start_node(homes[0].root)
    try:
        peer_port = homes[0].load_config().peer_listen
        ca = homes[0].consortium_ca.read_bytes()
        path = f"/{PEER_SERVICE}/GetBlocks"
        request = peer_pb2.GetBlocksRequest(from_height=1, count_max=1).SerializeToString()
        answer = grpc_call_over(peer_port, ca, ssl.TLSVersion.TLSv1_3, path, request, homes[1])
        assert answer.get("grpc-status") == "0", answer
        refused = grpc_call_over(peer_port, ca, ssl.TLSVersion.TLSv1_2, path, request, homes[1])
        assert refused.get("grpc-status") == str(grpc.StatusCode.UNAUTHENTICATED.value[0])
        assert "TLS 1.3 is required" in urllib.parse.unquote(refused.get("grpc-message", ""))
    finally:
        node.stop()


async def _status_code(stub: ledger_pb2_grpc.LedgerServiceAsyncStub) -> grpc.StatusCode:
    try:
        await stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _held_streams(
    address: str, home: Home, count: int, meanwhile: Callable[[str], None] | None = None
) -> None:
    """`count` StreamBlocks calls held open (the lone node makes no block without
    transactions), then a further call: refused at once while they hold (its message
    given to `meanwhile`, which runs then), answered once one ends."""
    async with aio_channel(address, tls_of(home)) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        status = await stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=10)
        held = [
            stub.StreamBlocks(ledger_pb2.StreamBlocksRequest(from_height=status.height + 1))
            for _ in range(count)
        ]
        try:
            deadline = time.monotonic() + 10
            while (code := await _status_code(stub)) == grpc.StatusCode.OK:
                # Until the server has taken all of them in.
                assert time.monotonic() < deadline, "the limit never took effect"
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            if meanwhile is not None:
                try:
                    await stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=5)
                except grpc.aio.AioRpcError as error:
                    meanwhile(error.details() or "")
            held.pop().cancel()
            deadline = time.monotonic() + 10
            while (code := await _status_code(stub)) != grpc.StatusCode.OK:
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline, "a freed slot was never reused"
        finally:
            for call in held:
                call.cancel()


def test_the_client_listener_runs_a_bounded_number_of_calls(tmp_path: Path) -> None:
    with lone_node(tmp_path, client_rpcs_max=3) as (home, node):
        asyncio.run(_held_streams(node.address, home, 3))
        with LedgerClient(node.address, timeout_s=10, tls=tls_of(home)) as client:
            assert client.status().chain_id == CHAIN_ID


def test_one_client_address_cannot_take_every_call(tmp_path: Path) -> None:
    """A client at 127.0.0.1 holds its share of the client listener's calls: its next call
    is refused naming its address, while a client at 127.0.0.2 is still answered."""
    with lone_node(tmp_path, client_calls_per_address_max=3) as (home, node):
        ca = home.consortium_ca.read_bytes()
        get_status = f"/{LEDGER_SERVICE}/GetStatus"
        answers: list[dict[str, str]] = []

        def while_held(refusal: str) -> None:
            assert "client address ipv4:127.0.0.1" in refusal
            assert "client_calls_per_address_max" in refusal
            request = ledger_pb2.GetStatusRequest().SerializeToString()
            answers.append(
                grpc_call_over(
                    node.address,
                    ca,
                    ssl.TLSVersion.TLSv1_3,
                    get_status,
                    request,
                    source="127.0.0.2",
                )
            )

        asyncio.run(_held_streams(node.address, home, 3, while_held))
        assert [answer.get("grpc-status") for answer in answers] == ["0"]


@pytest.mark.parametrize("value", [0, -1])
def test_a_config_without_room_for_a_call_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="client_rpcs_max"):
        NodeConfig(client_rpcs_max=value)
    with pytest.raises(ValueError, match="client_calls_per_address_max"):
        NodeConfig(client_calls_per_address_max=value)


def test_a_renewed_certificate_takes_over_on_sighup_and_its_expiry_is_reported(
    tmp_path: Path,
) -> None:
    """Renewal with the same key needs no governance step: SIGHUP, and new connections
    get the new certificate; GetStatus reports the expiry of the one served, and the log
    warns once fewer than 7 days are left."""
    with lone_node(tmp_path) as (home, node):
        served = load_identity(home.tls_key, home.tls_certificate)
        with LedgerClient(node.address, timeout_s=10, tls=tls_of(home)) as client:
            expires_ms = client.status().tls_certificate_expires_unix_ms
        assert expires_ms == int(served.certificate.not_valid_after_utc.timestamp() * 1000)
        ca = load_identity(home.ca_key, home.ca_certificate)
        renewed = make_node_certificate(ca, "node0", [node.address], key_pem=served.key_pem, days=3)
        home.tls_certificate.write_bytes(renewed.certificate_pem)
        os.kill(node.process.pid, signal.SIGHUP)
        wanted = int(renewed.certificate.not_valid_after_utc.timestamp() * 1000)
        deadline = time.monotonic() + 10
        while True:
            with LedgerClient(node.address, timeout_s=10, tls=tls_of(home)) as client:
                if client.status().tls_certificate_expires_unix_ms == wanted:
                    break
            assert time.monotonic() < deadline, "SIGHUP did not reload the certificate"
            time.sleep(0.1)
        # A new connection is served the renewed certificate.
        host, port = node.address.rsplit(":", 1)
        presented = ssl.get_server_certificate((host, int(port)))
        assert presented.encode().strip() == renewed.certificate_pem.strip()
    log = (home.root / "node.log").read_text()
    assert "renew it" in log  # the warning: fewer than 7 days left


PUSH = f"/{PEER_SERVICE}/Push"
GET_BLOCKS = f"/{PEER_SERVICE}/GetBlocks"


async def _get_blocks_code(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    get = channel.unary_stream(
        GET_BLOCKS,
        request_serializer=peer_pb2.GetBlocksRequest.SerializeToString,
        response_deserializer=peer_pb2.BlockWithCommit.FromString,
    )
    try:
        async for _ in get(peer_pb2.GetBlocksRequest(from_height=1, count_max=1), timeout=5):
            pass
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def _one_member_cannot_starve_the_others(homes: list[Home], share: int) -> None:
    """node 1's organisation holds its whole share of node 0's peer listener with Push
    streams that never send: its next call is refused naming it, node 2's organisation
    is still answered, and the silent streams are closed after the silence window."""
    peer_port = homes[0].load_config().peer_listen
    async with (
        aio_channel(peer_port, member_tls(homes[1])) as byzantine,
        aio_channel(peer_port, member_tls(homes[2])) as honest,
    ):
        push: grpc.aio.StreamUnaryMultiCallable[bytes, peer_pb2.PushAck]
        push = byzantine.stream_unary(
            PUSH, request_serializer=None, response_deserializer=peer_pb2.PushAck.FromString
        )

        async def silent() -> AsyncIterator[bytes]:
            await asyncio.Event().wait()
            yield b""  # never reached

        started = time.monotonic()
        held = [push(silent()) for _ in range(share)]
        deadline = time.monotonic() + 10
        while (answer := await _get_blocks_code(byzantine))[0] == grpc.StatusCode.OK:
            assert time.monotonic() < deadline, "the organisation's share never filled"
            await asyncio.sleep(0.1)
        code, details = answer
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "organisation org-1" in details
        assert "peer_calls_per_organisation_max" in details
        assert await _get_blocks_code(honest) == (grpc.StatusCode.OK, "")

        outcomes = await asyncio.gather(*held, return_exceptions=True)
        assert time.monotonic() - started >= 2.5  # held open until the silence window
        for outcome in outcomes:
            assert isinstance(outcome, grpc.aio.AioRpcError)
            assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "peer_push_silence_ms" in (outcome.details() or "")
        # Its share is free again.
        assert await _get_blocks_code(byzantine) == (grpc.StatusCode.OK, "")


def test_one_member_cannot_hold_the_peer_listener(tmp_path: Path) -> None:
    init_network(tmp_path, CHAIN_ID, 4, free_base_port(8), 1_000)
    homes = network_homes(tmp_path, 4)
    config = dataclasses.replace(
        homes[0].load_config(), peer_calls_per_organisation_max=4, peer_push_silence_ms=5_000
    )
    homes[0].config.write_text(config.to_json())
    node = start_node(homes[0].root)  # alone: nothing else talks to it
    try:
        asyncio.run(_one_member_cannot_starve_the_others(homes, share=4))
    finally:
        node.stop()
    assert "Traceback" not in (homes[0].root / "node.log").read_text()


@pytest.mark.parametrize(
    ("setting", "value"),
    [("peer_calls_per_organisation_max", 0), ("peer_push_silence_ms", 4_999)],
)
def test_a_peer_listener_config_that_would_refuse_honest_peers_is_refused(
    setting: str, value: int
) -> None:
    settings: dict[str, Any] = {setting: value}
    with pytest.raises(ValueError, match=setting):
        NodeConfig(**settings)
