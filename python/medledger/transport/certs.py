"""X.509 for the transport: an organisation's CA, its nodes' TLS certificates, and the
files that hold them.

Each organisation has a CA (a P-256 key and a self-signed certificate, path length 0); its
certificate is part of the organisation's on-ledger membership, so a node trusts exactly
the CAs of the consortium's current members. A node's TLS certificate is signed by its
organisation's CA, names the node's addresses as subject alternative names and serves
both as server and as client certificate (mutual TLS between nodes). Private keys are
written 0600 and refused if group- or world-readable, like the Ed25519 key files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medledger.keys import private_file_problem

__all__ = [
    "CA_VALIDITY_DAYS",
    "NODE_VALIDITY_DAYS",
    "CertificateError",
    "Identity",
    "certificate_pem",
    "issued_by",
    "load_certificates",
    "load_identity",
    "make_ca",
    "make_node_certificate",
    "not_after",
    "save_identity",
]

CA_VALIDITY_DAYS = 10 * 365
NODE_VALIDITY_DAYS = 397  # what browsers accept for a server certificate
KEY_FILE_MODE = 0o600
CLOCK_SKEW = datetime.timedelta(minutes=5)


class CertificateError(Exception):
    """A certificate or key file that is missing, malformed or readable by others."""


@dataclass(frozen=True)
class Identity:
    """A private key and its certificate, PEM-encoded (what gRPC takes)."""

    key_pem: bytes = field(repr=False)  # never in a log line or a traceback
    certificate_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def make_ca(organisation: str, days: int = CA_VALIDITY_DAYS) -> Identity:
    """A new CA for `organisation`: it signs node certificates, nothing else."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} medledger CA"),
        ]
    )
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Identity(_key_pem(key), certificate_pem(certificate))


def _alternative_names(addresses: Sequence[str]) -> list[x509.GeneralName]:
    """Each address's host (an IP or a DNS name), and localhost."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for address in addresses:
        host = address.rsplit(":", 1)[0].strip("[]")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return list(dict.fromkeys(names))


def make_node_certificate(
    ca: Identity,
    node: str,
    addresses: Sequence[str],
    *,
    key_pem: bytes | None = None,
    days: int = NODE_VALIDITY_DAYS,
    issued_at: datetime.datetime | None = None,
) -> Identity:
    """A node's TLS certificate from its organisation's CA, for `addresses` (host:port).
    With `key_pem` the node keeps its key (a renewal: no governance step needed)."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the CA key must be an EC (P-256) key")
    if key_pem is None:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        loaded = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise CertificateError("the node key must be an EC (P-256) key")
        key = loaded
    ca_certificate = ca.certificate
    now = issued_at or _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    *ca_certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
                    x509.NameAttribute(NameOID.COMMON_NAME, node),
                ]
            )
        )
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(
            min(now + datetime.timedelta(days=days), ca_certificate.not_valid_after_utc)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_alternative_names(addresses)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Identity(_key_pem(key), certificate_pem(certificate))


def issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `certificate` (its issuer name and signature)."""
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        # UnsupportedAlgorithm: a CA whose key this library cannot load signs nothing
        # (every peer call asks this: it must answer, never raise).
        return False
    return True


def not_after(certificate_pem_bytes: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(certificate_pem_bytes).not_valid_after_utc


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError as error:
        raise CertificateError(f"{path} already exists; refusing to overwrite a key") from error
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def save_identity(identity: Identity, key_path: Path, certificate_path: Path) -> None:
    """The key 0600 (a new file), the certificate beside it (public)."""
    _write_private(key_path, identity.key_pem)
    temporary = certificate_path.with_suffix(".tmp")
    temporary.write_bytes(identity.certificate_pem)
    temporary.replace(certificate_path)


def _read_private(path: Path) -> bytes:
    problem = private_file_problem(path, "TLS key")
    if problem is not None:
        raise CertificateError(problem)
    return path.read_bytes()


def load_identity(key_path: Path, certificate_path: Path) -> Identity:
    """A key (0600) and its certificate; refused if they do not belong together."""
    key_pem = _read_private(key_path)
    try:
        certificate_pem_bytes = certificate_path.read_bytes()
        key = serialization.load_pem_private_key(key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(certificate_pem_bytes)
    except FileNotFoundError as error:
        raise CertificateError(f"{error.filename}: no such file") from error
    except ValueError as error:
        raise CertificateError(f"{key_path} / {certificate_path}: {error}") from error
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateError(f"{certificate_path}: not the certificate of {key_path}")
    return Identity(key_pem, certificate_pem_bytes)


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (CertificateError if none or malformed)."""
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise CertificateError(f"not a PEM certificate bundle: {error}") from error
    return found
