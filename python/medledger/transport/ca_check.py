"""The one rule about a CA certificate the ledger holds, shared by genesis and
governance (no other transport code: the ledger needs only this)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["CA_PEM_BYTES_MAX", "check_ca_certificate", "same_ca"]

CA_PEM_BYTES_MAX = 8 * 1024


def same_ca(first: bytes, second: bytes) -> bool:
    """Whether two CA certificates (PEM) hold one key (structural: the DER public keys)."""
    try:
        keys = [x509.load_pem_x509_certificate(pem).public_key() for pem in (first, second)]
    except ValueError:
        return False
    encoded = [key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) for key in keys]
    return encoded[0] == encoded[1]


def check_ca_certificate(pem: bytes, where: str) -> None:
    """Raises ValueError naming `where` unless `pem` is one CA certificate (PEM)."""
    if len(pem) > CA_PEM_BYTES_MAX:
        raise ValueError(f"{where}: longer than {CA_PEM_BYTES_MAX} bytes")
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise ValueError(f"{where}: not a PEM certificate ({error})") from None
    if len(certificates) != 1:
        raise ValueError(f"{where}: exactly one certificate")
    try:
        constraints = certificates[0].extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise ValueError(f"{where}: not a CA certificate (no basic constraints)") from None
    if not constraints.value.ca:
        raise ValueError(f"{where}: not a CA certificate")
