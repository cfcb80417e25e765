"""A node home's TLS files: the organisation's CA (where `init` makes it), the node's key
and certificate, and the consortium's CA bundle its clients trust."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from medledger.config import Home
from medledger.transport.certs import (
    Identity,
    load_certificates,
    load_identity,
    make_node_certificate,
    save_identity,
)

__all__ = ["issue_node_certificate", "save_ca", "write_bundle"]


def save_ca(home: Home, ca: Identity) -> None:
    save_identity(ca, home.ca_key, home.ca_certificate)


def issue_node_certificate(
    home: Home, ca: Identity, node: str, addresses: Sequence[str]
) -> Identity:
    """The node's TLS key and certificate from `ca`, for its `addresses`."""
    identity = make_node_certificate(ca, node, addresses)
    save_identity(identity, home.tls_key, home.tls_certificate)
    return identity


def write_bundle(path: Path, certificates: Iterable[bytes]) -> None:
    """A PEM bundle of CA certificates (public), replaced whole."""
    bundle = b"".join(certificates)
    load_certificates(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(bundle)
    temporary.replace(path)


def load_node_identity(home: Home) -> Identity:
    return load_identity(home.tls_key, home.tls_certificate)
