"""Who may connect to the peer listener: the member organisations' CAs, as the ledger
holds them. Rebuilt whenever a block changes the organisations (a member added with its
CA, or removed), so trust follows governance."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509

from medledger.transport.certs import issued_by
from medledger.wire.v1 import state_pb2

__all__ = ["Membership"]


class Membership:
    def __init__(self, organisations: Iterable[state_pb2.Organisation]) -> None:
        self._cas: dict[str, x509.Certificate] = {}
        pems = []
        for organisation in sorted(organisations, key=lambda o: o.id):
            if organisation.removed_height or not organisation.tls_ca:
                continue
            self._cas[organisation.id] = x509.load_pem_x509_certificate(organisation.tls_ca)
            pems.append(organisation.tls_ca)
        self.bundle = b"".join(pems)
        """The member CAs as one PEM bundle: the peer listener's and peer links' roots."""
        self._seen: dict[bytes, str | None] = {}

    def is_member(self, organisation: str) -> bool:
        return organisation in self._cas

    def organisation_of(self, certificate_pem: bytes) -> str | None:
        """The member whose CA signed this certificate (a connection's client
        certificate, which the handshake already checked against `bundle`)."""
        if certificate_pem not in self._seen:
            try:
                certificate = x509.load_pem_x509_certificate(certificate_pem)
            except ValueError:
                self._seen[certificate_pem] = None
            else:
                self._seen[certificate_pem] = next(
                    (org for org, ca in self._cas.items() if issued_by(certificate, ca)), None
                )
        return self._seen[certificate_pem]
