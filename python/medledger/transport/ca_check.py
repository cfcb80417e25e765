"""The rules about a CA certificate the ledger holds, shared by genesis and governance
(no other transport code: the ledger needs only this).

Every function here is total: a certificate it cannot read is refused (or reported as a
conflict), never an exception escaping into block application, where one would stop
every node on the same block."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medledger.limits import CA_PEM_BYTES_MAX

__all__ = [
    "CA_PEM_BYTES_MAX",
    "ca_conflict",
    "check_ca_certificate",
    "overlap_refusal",
    "same_ca",
]

CURVES = ("secp256r1", "secp384r1")
"""ECDSA curves a CA key may use (beside Ed25519): what TLS 1.3 stacks all verify."""


def _load(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem)
    except Exception:  # any unreadable certificate is simply not one
        return None


def _key_der(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:  # an unknown key type has no comparable encoding
        return None


def _key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except Exception:  # absent or malformed: no identifier to compare
        return None


_ASCII_SPACE = re.compile(r"[ \t\n\r\f\v]+")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _canonical(name: x509.Name) -> tuple[tuple[str, str], ...]:
    """A name as TLS stacks compare names when they look for an issuer: each attribute's
    value with ASCII letters lowered and ASCII white space collapsed and trimmed (ASCII
    only: the ledger's answer must not depend on an interpreter's Unicode tables)."""
    return tuple(
        (
            attribute.oid.dotted_string,
            _ASCII_SPACE.sub(" ", str(attribute.value)).strip(" ").translate(_ASCII_LOWER),
        )
        for attribute in name
    )


@dataclass(frozen=True)
class _Ca:
    """What comparisons of CA certificates read: subject (canonical), key (DER) and key
    identifier."""

    subject: tuple[tuple[str, str], ...]
    key: bytes
    identifier: bytes | None


def _read_pair(first: bytes, second: bytes) -> tuple[_Ca, _Ca] | None:
    """Both certificates as `_Ca`, or None when either or its key cannot be read."""
    read = []
    for pem in (first, second):
        certificate = _load(pem)
        key = None if certificate is None else _key_der(certificate)
        if certificate is None or key is None:
            return None
        try:
            subject = _canonical(certificate.subject)
        except Exception:  # a name the library cannot read: the pair cannot be compared
            return None
        read.append(_Ca(subject, key, _key_identifier(certificate)))
    return read[0], read[1]


def same_ca(first: bytes, second: bytes) -> bool:
    """Whether two CA certificates (PEM) hold one key (structural: the DER public keys)."""
    pair = _read_pair(first, second)
    return pair is not None and pair[0].key == pair[1].key


def ca_conflict(first: bytes, second: bytes) -> str | None:
    """What two organisations' CAs share that would let a certificate one signs be taken
    for the other's: the key (it would name either organisation), the subject or the key
    identifier (a TLS stack picks an issuer by name and key identifier, so the other's
    chains would be checked against the wrong key and fail). None when they share none;
    "unreadable" when either cannot be read (refused, never guessed)."""
    pair = _read_pair(first, second)
    if pair is None:
        return "unreadable"
    a, b = pair
    if a.key == b.key:
        return "key"
    if a.subject == b.subject:
        return "subject"
    if a.identifier is not None and a.identifier == b.identifier:
        return "key identifier"
    return None


def overlap_refusal(new: bytes, current: bytes) -> str | None:
    """Why an organisation's new CA cannot be trusted beside its current one during a
    rotation, or None. Under one subject a TLS stack tells two CAs apart only by their key
    identifiers (a node certificate's authority key identifier names its CA), so two keys
    under one subject need distinct identifiers, and one identifier cannot name two keys."""
    pair = _read_pair(new, current)
    if pair is None:
        return "unreadable beside the current CA"
    a, b = pair
    if a.key == b.key:
        return None  # a renewal: chains verify under either certificate
    if a.identifier is not None and a.identifier == b.identifier:
        return "the current CA's key identifier, for another key"
    if a.subject == b.subject and (a.identifier is None or b.identifier is None):
        return "the current CA's subject, without key identifiers to tell the two apart"
    return None


def check_ca_certificate(pem: bytes, where: str) -> None:
    """Raises ValueError naming `where` unless `pem` is one CA certificate (PEM) with a
    positive serial, an ECDSA P-256/P-384 or Ed25519 key, allowed to sign certificates,
    whose self-signature verifies when it is self-issued. Only ValueError escapes: it runs
    in block application, where any other exception would stop the block."""
    if len(pem) > CA_PEM_BYTES_MAX:
        raise ValueError(f"{where}: longer than {CA_PEM_BYTES_MAX} bytes")
    try:
        _check(pem, where)
    except ValueError:
        raise
    except Exception as error:  # what the library raises on input it does not expect
        raise ValueError(f"{where}: unreadable certificate ({type(error).__name__})") from None


def _check(pem: bytes, where: str) -> None:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise ValueError(f"{where}: not a PEM certificate ({error})") from None
    if len(certificates) != 1:
        raise ValueError(f"{where}: exactly one certificate")
    certificate = certificates[0]
    # A serial of zero or below is refused by RFC 5280 and, in a coming `cryptography`,
    # at parsing: refused here now, so that no two library versions judge it apart.
    if certificate.serial_number <= 0:
        raise ValueError(f"{where}: its serial number must be positive")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise ValueError(f"{where}: not a CA certificate (no basic constraints)") from None
    if not constraints.value.ca:
        raise ValueError(f"{where}: not a CA certificate")
    try:
        key = certificate.public_key()
    except UnsupportedAlgorithm as error:
        raise ValueError(f"{where}: unreadable public key ({type(error).__name__})") from None
    if not (
        isinstance(key, ed25519.Ed25519PublicKey)
        or (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in CURVES)
    ):
        raise ValueError(f"{where}: the key must be ECDSA P-256 or P-384, or Ed25519")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise ValueError(f"{where}: its key usage does not allow signing certificates")
    if certificate.issuer == certificate.subject:
        try:
            certificate.verify_directly_issued_by(certificate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise ValueError(f"{where}: its self-signature does not verify") from None
