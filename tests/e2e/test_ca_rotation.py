"""A member organisation rotates its CA by governance, on four real processes (issue 17).

Organisation 1 gets a new CA with an overlap (`--keep-previous-ca`): its node still
presents a certificate from the old CA and the chain goes on; the node then renews its
certificate from the new CA (SIGHUP, no restart) and the overlap is ended by a second
proposal. From then on the peer ports refuse a certificate from organisation 1's old CA,
accept one from its new CA, and the chain still commits with all four validators.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from medledger.config import Home
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.certs import (
    load_identity,
    make_ca,
    make_node_certificate,
)
from medledger.transport.credentials import ClientTls
from tests.e2e.cli_runner import init_network_as_typed, medledger
from tests.e2e.test_validator_changes import _govern, _height, _wait
from tests.integration.conftest import stop_all
from tests.integration.test_outsiders import _blocks

CHAIN_ID = "e2e-ca-rotation"


def test_a_member_rotates_its_ca_without_stopping_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "net"
    init_network_as_typed(root, CHAIN_ID, monkeypatch)
    bundle_file = root / "consortium-ca.pem"
    homes = [Home(root / f"node{i}") for i in range(4)]
    addresses = [h.load_config().listen for h in homes]
    peer_port = homes[0].load_config().peer_listen
    orgs = [["--home", str(home.root)] for home in homes]
    rotating = homes[1]
    old_ca = load_identity(rotating.ca_key, rotating.ca_certificate)
    new_ca = make_ca("org-1")
    new_ca_file = tmp_path / "org-1-new-ca.pem"
    new_ca_file.write_bytes(new_ca.certificate_pem)
    # Clients of the client API learn the new CA from the operator, as with any CA.
    for bundle in (bundle_file, *(home.consortium_ca for home in homes)):
        bundle.write_bytes(bundle.read_bytes() + new_ca.certificate_pem)
    nodes: list[NodeProcess | None] = []
    try:
        nodes = [start_node(h.root, a) for h, a in zip(homes, addresses, strict=True)]
        _wait("blocks", lambda: _height(addresses[0]) >= 2)

        overlap = _govern(
            tmp_path, "rotate", orgs[:3], "--set-org-ca", "org-1",
            "--org-tls-ca", str(new_ca_file), "--keep-previous-ca",
        )  # fmt: skip
        assert overlap["code"] == "RESULT_CODE_OK", overlap
        at = _height(addresses[0])
        _wait("blocks during the overlap", lambda: _height(addresses[0]) >= at + 3)
        # Node 1 still presents its old-CA certificate, trusted during the overlap; a
        # new connection with a certificate from either CA is accepted.
        _wait("node 1 to keep up", lambda: _height(addresses[1]) >= at + 3)
        roots = b"".join(h.ca_certificate.read_bytes() for h in homes) + new_ca.certificate_pem
        old_client = make_node_certificate(old_ca, "old", ["127.0.0.1:1"])
        new_client = make_node_certificate(new_ca, "new", ["127.0.0.1:1"])
        assert _blocks(peer_port, ClientTls(roots, old_client)) == "2 blocks"
        assert _blocks(peer_port, ClientTls(roots, new_client)) == "2 blocks"

        # Organisation 1's node moves to a certificate from the new CA, same key.
        served = load_identity(rotating.tls_key, rotating.tls_certificate)
        config = rotating.load_config()
        renewed = make_node_certificate(
            new_ca, "node1", [config.listen, config.peer_listen], key_pem=served.key_pem
        )
        rotating.tls_certificate.write_bytes(renewed.certificate_pem)  # the key stays
        node1 = nodes[1]
        assert node1 is not None
        os.kill(node1.process.pid, signal.SIGHUP)

        ended = _govern(
            tmp_path, "end-overlap", orgs[:3], "--set-org-ca", "org-1",
            "--org-tls-ca", str(new_ca_file),
        )  # fmt: skip
        assert ended["code"] == "RESULT_CODE_OK", ended
        _wait(
            "the old CA to be refused",
            lambda: _blocks(peer_port, ClientTls(roots, old_client)) == "UNAVAILABLE",
        )
        assert _blocks(peer_port, ClientTls(roots, new_client)) == "2 blocks"
        # All four still sign: node 1's links reconnect with its renewed certificate.
        at = _height(addresses[0])
        _wait("blocks after the rotation", lambda: _height(addresses[0]) >= at + 4)
        _wait("node 1 to keep up", lambda: _height(addresses[1]) >= at + 3)
    finally:
        stop_all(*nodes)
    for home in homes:
        medledger("verify-chain", "--home", str(home.root))
