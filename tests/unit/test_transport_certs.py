"""Certificates for the transport, with real gRPC handshakes on 127.0.0.1: a node's
certificate from its organisation's CA serves and authenticates; the peer listener
refuses a client with no certificate, one from a CA no member holds, an expired one, and
one whose organisation has left (the roots are re-read for each handshake); key files are
0600 and refused when others can read them."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from medledger.transport.ca_check import same_ca
from medledger.transport.certs import (
    CertificateError,
    Identity,
    issued_by,
    load_certificates,
    load_identity,
    make_ca,
    make_node_certificate,
    save_identity,
)
from medledger.transport.credentials import ClientTls, PeerTrust, ServerTls, aio_channel
from medledger.transport.membership import Membership
from medledger.wire.v1 import state_pb2

ADDRESS = ["127.0.0.1:0"]


def test_a_node_certificate_chains_to_its_organisation_and_names_its_addresses() -> None:
    ca, other = make_ca("org-a"), make_ca("org-b")
    node = make_node_certificate(ca, "node0", ["127.0.0.1:7070", "hospital.example:7070"])
    assert issued_by(node.certificate, ca.certificate)
    assert not issued_by(node.certificate, other.certificate)
    names = str(node.certificate.extensions)
    assert "127.0.0.1" in names
    assert "hospital.example" in names
    renewed = make_node_certificate(ca, "node0", ["127.0.0.1:7070"], key_pem=node.key_pem)
    assert renewed.key_pem == node.key_pem
    assert renewed.certificate.serial_number != node.certificate.serial_number


def test_key_files_are_private_and_must_match_their_certificate(tmp_path: Path) -> None:
    ca = make_ca("org-a")
    node = make_node_certificate(ca, "node0", ADDRESS)
    save_identity(node, tmp_path / "node.key", tmp_path / "node.pem")
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    assert load_identity(tmp_path / "node.key", tmp_path / "node.pem") == node
    with pytest.raises(CertificateError, match="already exists"):
        save_identity(node, tmp_path / "node.key", tmp_path / "node.pem")
    os.chmod(tmp_path / "node.key", 0o640)
    with pytest.raises(CertificateError, match="accessible by others"):
        load_identity(tmp_path / "node.key", tmp_path / "node.pem")
    os.chmod(tmp_path / "node.key", 0o600)
    (tmp_path / "other.pem").write_bytes(make_node_certificate(ca, "x", ADDRESS).certificate_pem)
    with pytest.raises(CertificateError, match="not the certificate of"):
        load_identity(tmp_path / "node.key", tmp_path / "other.pem")


async def _check(port: int, tls: ClientTls | None) -> str:
    async with aio_channel(f"127.0.0.1:{port}", tls) as channel:
        try:
            check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
            await check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


def test_the_peer_listener_admits_only_current_members_certificates(tmp_path: Path) -> None:
    member_a, member_b, stranger = make_ca("org-a"), make_ca("org-b"), make_ca("stranger")
    node = make_node_certificate(member_a, "node0", ["127.0.0.1:1"])
    save_identity(node, tmp_path / "node.key", tmp_path / "node.pem")
    roots = [member_a.certificate_pem + member_b.certificate_pem]
    trust = PeerTrust(ServerTls(tmp_path / "node.key", tmp_path / "node.pem"), lambda: roots[0])
    peer_b = make_node_certificate(member_b, "node1", ["127.0.0.1:1"])
    expired = make_node_certificate(
        member_b, "old", ["127.0.0.1:1"], days=30, issued_at=datetime.now(UTC) - timedelta(days=60)
    )
    outsider = make_node_certificate(stranger, "x", ["127.0.0.1:1"])
    server_roots = member_a.certificate_pem

    async def scenario() -> list[str]:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_secure_port("127.0.0.1:0", trust.server_credentials())
        await server.start()
        try:
            results = [
                await _check(port, ClientTls(server_roots, peer_b)),
                await _check(port, ClientTls(server_roots)),  # no client certificate
                await _check(port, ClientTls(server_roots, outsider)),
                await _check(port, ClientTls(server_roots, expired)),
                await _check(port, None),  # clear text
            ]
            roots[0] = member_a.certificate_pem  # org-b leaves the consortium
            results.append(await _check(port, ClientTls(server_roots, peer_b)))
        finally:
            await server.stop(None)
        return results

    assert asyncio.run(scenario()) == ["OK"] + ["UNAVAILABLE"] * 5


def test_a_renewed_certificate_serves_after_reload_without_a_restart(tmp_path: Path) -> None:
    ca = make_ca("org-a")
    first = make_node_certificate(ca, "node0", ["127.0.0.1:1"])
    save_identity(first, tmp_path / "node.key", tmp_path / "node.pem")
    served = ServerTls(tmp_path / "node.key", tmp_path / "node.pem")
    renewed = make_node_certificate(ca, "node0", ["127.0.0.1:1"], key_pem=first.key_pem)
    (tmp_path / "node.pem").write_bytes(renewed.certificate_pem)
    assert served.reload() == renewed
    (tmp_path / "node.pem").write_bytes(b"garbage")
    with pytest.raises(CertificateError):
        served.reload()
    assert served.identity == renewed  # a bad file keeps the old identity


def test_a_reload_refuses_a_certificate_peers_would_refuse(tmp_path: Path) -> None:
    """Expired, not yet valid, or from another member's CA: the node keeps serving the
    certificate it has (and says why), instead of one every peer would refuse."""
    ca, other = make_ca("org-a"), make_ca("org-b")
    membership = Membership(
        [
            state_pb2.Organisation(id="org-a", tls_ca=ca.certificate_pem),
            state_pb2.Organisation(id="org-b", tls_ca=other.certificate_pem),
        ]
    )
    first = make_node_certificate(ca, "node0", ["127.0.0.1:1"])
    save_identity(first, tmp_path / "node.key", tmp_path / "node.pem")
    served = ServerTls(tmp_path / "node.key", tmp_path / "node.pem")

    def same_member(identity: Identity) -> None:
        refusal = membership.renewal_refusal(first.certificate_pem, identity.certificate_pem)
        if refusal is not None:
            raise CertificateError(refusal)

    now = datetime.now(UTC)
    refused = {
        "expired at": make_node_certificate(
            ca,
            "node0",
            ["127.0.0.1:1"],
            key_pem=first.key_pem,
            days=1,
            issued_at=now - timedelta(days=3),
        ),
        "not valid until": make_node_certificate(
            ca,
            "node0",
            ["127.0.0.1:1"],
            key_pem=first.key_pem,
            issued_at=now + timedelta(days=2),
        ),
        "not signed by a CA organisation org-a holds": make_node_certificate(
            other, "node0", ["127.0.0.1:1"], key_pem=first.key_pem
        ),
    }
    for reason, certificate in refused.items():
        (tmp_path / "node.pem").write_bytes(certificate.certificate_pem)
        with pytest.raises(CertificateError, match=reason):
            served.reload(same_member)
        assert served.identity == first
    renewed = make_node_certificate(ca, "node0", ["127.0.0.1:1"], key_pem=first.key_pem)
    (tmp_path / "node.pem").write_bytes(renewed.certificate_pem)
    assert served.reload(same_member) == renewed
    # After a rotation without overlap no member's CA signed the old certificate: the
    # new CA's certificate is taken.
    rotated = Membership([state_pb2.Organisation(id="org-a", tls_ca=other.certificate_pem)])
    assert (
        rotated.renewal_refusal(
            first.certificate_pem,
            refused["not signed by a CA organisation org-a holds"].certificate_pem,
        )
        is None
    )


def test_member_cas_form_a_bundle_grpc_loads_whatever_text_the_ledger_holds() -> None:
    """A CA accepted on the ledger without its final newline would glue two PEM blocks
    together, and gRPC would load no root at all: the bundle is re-encoded. Two members
    holding one CA (a CA certificate is public) name no organisation."""
    first, second = make_ca("org-a"), make_ca("org-b")
    membership = Membership(
        [
            state_pb2.Organisation(id="org-a", tls_ca=first.certificate_pem.rstrip(b"\n")),
            state_pb2.Organisation(id="org-b", tls_ca=b"note\n" + second.certificate_pem),
            state_pb2.Organisation(id="org-c", tls_ca=b"", weight=1),
        ]
    )
    assert len(load_certificates(membership.bundle)) == 2
    assert membership.bundle.count(b"-----END CERTIFICATE-----\n-----BEGIN") == 1
    node = make_node_certificate(first, "node0", ADDRESS)
    assert membership.organisation_of(node.certificate_pem) == "org-a"
    copycat = Membership(
        [
            state_pb2.Organisation(id="org-a", tls_ca=first.certificate_pem),
            state_pb2.Organisation(id="aaa", tls_ca=first.certificate_pem),
        ]
    )
    assert copycat.organisation_of(node.certificate_pem) is None
    assert same_ca(first.certificate_pem, first.certificate_pem.rstrip(b"\n"))
    assert not same_ca(first.certificate_pem, second.certificate_pem)


def test_an_identitys_private_key_stays_out_of_its_repr() -> None:
    identity = make_node_certificate(make_ca("org-a"), "node0", ADDRESS)
    assert b"PRIVATE" in identity.key_pem
    assert "PRIVATE" not in repr(identity)
