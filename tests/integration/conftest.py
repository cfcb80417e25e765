"""A real node process on 127.0.0.1 per test module."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from medledger.client import LedgerClient, TxBuilder, enrol
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.run.homes import init_home
from medledger.run.launcher import NodeProcess, hub_tls_options, start_node
from medledger.transport.certs import load_identity, make_node_certificate, save_identity
from medledger.transport.credentials import (
    TLS_CA_ENV,
    ClientTls,
    PeerTrust,
    ServerTls,
    sync_channel,
)
from medledger.wire.v1 import tx_pb2

CHAIN_ID = "integration-1"


def tls_of(home: Home) -> ClientTls:
    """What a client of the node at `home` trusts: the consortium's CA bundle."""
    return ClientTls.from_file(home.consortium_ca)


def member_tls(home: Home) -> ClientTls:
    """What the node at `home` presents to its peers: its organisation's certificate
    (a test playing that organisation, honest or Byzantine)."""
    return ClientTls(
        home.consortium_ca.read_bytes(), load_identity(home.tls_key, home.tls_certificate)
    )


def peer_credentials(home: Home) -> grpc.ServerCredentials:
    """A PeerService listener as the node at `home` would serve it (mutual TLS)."""
    bundle = home.consortium_ca.read_bytes()
    return PeerTrust(
        ServerTls(home.tls_key, home.tls_certificate), lambda: bundle
    ).server_credentials()


def issue_tls(home: Home, name: str, directory: Path) -> ServerTls:
    """A certificate from the organisation of the node at `home` (its CA is in the home,
    as `init` leaves it), for a server of that organisation (a hub, a provider); kept in
    `directory`/tls and reused when there already (a restarted server)."""
    key, certificate = directory / "tls" / f"{name}.key", directory / "tls" / f"{name}.pem"
    if not key.exists():
        ca = load_identity(home.ca_key, home.ca_certificate)
        save_identity(make_node_certificate(ca, name, ["127.0.0.1:0"]), key, certificate)
    return ServerTls(key, certificate)


def hub_tls_args(home: Home, directory: Path) -> list[str]:
    """`medledger hub start` options for a hub of `home`'s organisation."""
    return hub_tls_options(home, directory)


def trust(monkeypatch: pytest.MonkeyPatch, bundle: Path) -> None:
    """SDK clients made without `tls` trust this CA bundle ($MEDLEDGER_TLS_CA): a
    network's `consortium-ca.pem`, or a home's `tls/consortium-ca.pem`."""
    monkeypatch.setenv(TLS_CA_ENV, str(bundle))


@dataclass
class RunningNode:
    home: Home
    genesis: Genesis
    process: NodeProcess
    payer: SigningKey

    @property
    def address(self) -> str:
        return self.process.address

    @property
    def tls(self) -> ClientTls:
        """The consortium's CA bundle, as a client of this node trusts it."""
        return tls_of(self.home)

    def channel(self) -> grpc.Channel:
        """A raw gRPC channel to the node's client API, over TLS."""
        return sync_channel(self.address, self.tls)

    def client(self, reader: SigningKey | None = None) -> LedgerClient:
        return LedgerClient(self.address, timeout_s=30, reader=reader, tls=self.tls)

    def builder(self, key: SigningKey | None = None) -> TxBuilder:
        return TxBuilder(key or self.payer, CHAIN_ID)

    def enrol(self, roles: Mapping[SigningKey, Iterable[int]]) -> None:
        """The node's organisation (`org-0`, whose admin is `payer`) issues these roles."""
        with self.client() as client:
            enrol(client, self.payer, "org-0", roles)

    def member(self, role: int = tx_pb2.ROLE_PAYER) -> SigningKey:
        """A fresh key, enrolled by the node's organisation in `role`."""
        key = SigningKey.generate()
        self.enrol({key: [role]})
        return key

    def restart(self) -> None:
        """Stops the node (if it still runs) and starts it again on its home."""
        self.process.stop()
        self.process = start_node(self.home.root)


MIN_CHALLENGE_BLOCKS = 2
"""The channel tests close within a few blocks; a real chain's minimum is longer."""


def launch(root: Path) -> RunningNode:
    home = Home(root)
    genesis = init_home(
        home, CHAIN_ID, listen="127.0.0.1:0", min_challenge_blocks=MIN_CHALLENGE_BLOCKS
    )
    process = start_node(home.root)
    try:
        payer = load_key(home.keys_dir / "client.json")
    except BaseException:
        process.stop()
        raise
    return RunningNode(home, genesis, process, payer)


def stop_all(*processes: NodeProcess | None) -> None:
    """Stops every process given, even if stopping one of them fails (that error is
    raised once all were stopped)."""
    errors: list[BaseException] = []
    for process in processes:
        try:
            if process is not None:
                process.stop()
        except BaseException as error:  # the others are stopped all the same
            errors.append(error)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    running = launch(tmp_path_factory.mktemp("node") / "home")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(TLS_CA_ENV, str(running.home.consortium_ca))
            yield running
    finally:
        running.process.stop()  # the current process: a test may have restarted it
