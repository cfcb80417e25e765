"""gRPC credentials for medledger's listeners and channels.

- The peer listener (PeerService) requires mutual TLS: a client certificate that chains to
  the CA of a current member organisation. The member CAs come from the ledger and change
  with governance, and the node's own certificate may be renewed on disk (SIGHUP), so the
  server credentials are dynamic: gRPC asks `PeerTrust.configuration` before each new
  handshake, and it answers with what is current.
- The client listener (LedgerService, RecordService, VaultService, ChannelService) is
  server TLS: transactions and requests are signed, so no client certificate is asked.
- Channels verify the server against the consortium's CAs; node-to-node channels also
  present the node's certificate.

`ClientTls` is what an SDK user or the CLI passes: the CA bundle to trust (and, for
nodes, an identity). Where none is passed, the clients use `FROM_ENVIRONMENT`: TLS, with
the bundle named by $MEDLEDGER_TLS_CA, or else gRPC's default roots (the system's). Clear
text is only ever explicit: `None`, which only a node run with `--insecure` accepts.
"""

from __future__ import annotations

import datetime
import enum
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from medledger.transport.certs import (
    CLOCK_SKEW,
    CertificateError,
    Identity,
    load_certificates,
    load_identity,
)

__all__ = [
    "FROM_ENVIRONMENT",
    "TLS_CA_ENV",
    "ClientTls",
    "PeerTrust",
    "ServerTls",
    "Transport",
    "aio_channel",
    "sync_channel",
]

log = logging.getLogger(__name__)

TLS_CA_ENV = "MEDLEDGER_TLS_CA"
"""The consortium's CA bundle (PEM), for clients not given one."""


class _FromEnvironment(enum.Enum):
    FROM_ENVIRONMENT = "from the environment"


FROM_ENVIRONMENT = _FromEnvironment.FROM_ENVIRONMENT


@dataclass(frozen=True)
class ClientTls:
    """Trust roots (PEM bundle) and, for a node, its own identity (mutual TLS)."""

    roots_pem: bytes
    identity: Identity | None = None

    @classmethod
    def from_file(cls, path: Path) -> ClientTls:
        roots = path.read_bytes()
        load_certificates(roots)  # CertificateError if it holds none
        return cls(roots)

    @classmethod
    def from_environment(cls) -> ClientTls:
        """The bundle $MEDLEDGER_TLS_CA names; without it, gRPC's default roots."""
        path = os.environ.get(TLS_CA_ENV)
        return cls.from_file(Path(path)) if path else cls(b"")

    def credentials(self) -> grpc.ChannelCredentials:
        roots = self.roots_pem or None  # None: gRPC's default roots
        if self.identity is None:
            return grpc.ssl_channel_credentials(roots)
        return grpc.ssl_channel_credentials(
            roots, self.identity.key_pem, self.identity.certificate_pem
        )


Transport = ClientTls | None | _FromEnvironment
"""How a client reaches a node: TLS as given, clear text (None), or TLS as the
environment says (`FROM_ENVIRONMENT`)."""


def resolve(tls: Transport) -> ClientTls | None:
    return ClientTls.from_environment() if tls is FROM_ENVIRONMENT else tls


def sync_channel(
    target: str, tls: Transport, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    resolved = resolve(tls)
    if resolved is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, resolved.credentials(), options=list(options))


def aio_channel(
    target: str, tls: Transport, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    resolved = resolve(tls)
    if resolved is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, resolved.credentials(), options=list(options))


@dataclass
class ServerTls:
    """A listener's identity, re-read from its files on `reload` (SIGHUP): a renewed
    certificate with the same or a new key serves new handshakes without a restart."""

    key_path: Path
    certificate_path: Path

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._identity = load_identity(self.key_path, self.certificate_path)

    @property
    def identity(self) -> Identity:
        with self._lock:
            return self._identity

    def reload(self, check: Callable[[Identity], None] | None = None) -> Identity:
        """Reads the files again; keeps the old identity and raises on a bad file, on a
        certificate outside its validity period (peers would refuse it), or when `check`
        (the caller's rule, e.g. the same organisation) raises CertificateError."""
        identity = load_identity(self.key_path, self.certificate_path)
        now = datetime.datetime.now(datetime.UTC)
        certificate = identity.certificate
        if certificate.not_valid_after_utc <= now:
            raise CertificateError(
                f"{self.certificate_path}: expired at {certificate.not_valid_after_utc}"
            )
        if certificate.not_valid_before_utc > now + CLOCK_SKEW:
            raise CertificateError(
                f"{self.certificate_path}: not valid until {certificate.not_valid_before_utc}"
            )
        if check is not None:
            check(identity)
        with self._lock:
            self._identity = identity
        return identity

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server TLS, no client certificate asked; reloaded identities take effect on
        the next handshake."""
        return _dynamic_credentials(lambda: (self.identity, None), require_client=False)


def _dynamic_credentials(
    current: Callable[[], tuple[Identity, bytes | None]], *, require_client: bool
) -> grpc.ServerCredentials:
    """Credentials gRPC asks again before each handshake: `current` gives the identity
    and the client roots (None: no client certificate asked) in force now."""
    served: list[tuple[Identity, bytes | None] | None] = [None]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        identity, roots = now = current()
        if served[0] is not None and served[0][0] is identity and served[0][1] == roots:
            return None  # unchanged: gRPC keeps the current configuration
        served[0] = now
        return grpc.ssl_server_certificate_configuration(
            [(identity.key_pem, identity.certificate_pem)], root_certificates=roots
        )

    first = fetch()
    assert first is not None
    # gRPC documents None as "no change"; its stubs do not.
    return grpc.dynamic_ssl_server_credentials(
        first,
        fetch,  # type: ignore[arg-type]
        require_client_authentication=require_client,
    )


class PeerTrust:
    """The peer listener's mutual TLS: this node's identity (a `ServerTls`) and the CA
    bundle of the consortium's current members (`roots`, set by the node whenever the
    ledger's membership changes). Each handshake is judged against the roots current at
    that moment."""

    def __init__(self, server: ServerTls, roots: Callable[[], bytes]) -> None:
        self.server = server
        self._roots = roots

    def server_credentials(self) -> grpc.ServerCredentials:
        return _dynamic_credentials(
            lambda: (self.server.identity, self._roots()), require_client=True
        )

    def client(self) -> ClientTls:
        """For this node's own channels to its peers: the same roots, its identity."""
        return ClientTls(self._roots(), self.server.identity)
