"""Who may connect to the peer listener: the member organisations' CAs, as the ledger
holds them. Rebuilt whenever a block changes the organisations (a member added with its
CA, or removed), so trust follows governance."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cryptography import x509

from medledger.limits import SEEN_MAX
from medledger.transport.certs import certificate_pem, issued_by
from medledger.wire.v1 import state_pb2

__all__ = ["Membership"]

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, organisations: Iterable[state_pb2.Organisation]) -> None:
        # Each member's CAs: its current one, and during a rotation its previous one.
        self._cas: dict[str, list[x509.Certificate]] = {}
        pems = []
        for organisation in sorted(organisations, key=lambda o: o.id):
            if organisation.removed_height:
                continue
            for pem in (organisation.tls_ca, organisation.previous_tls_ca):
                if not pem:
                    continue
                try:
                    ca = x509.load_pem_x509_certificate(pem)
                except ValueError as error:
                    log.error("organisation %s: a tls_ca does not load: %s", organisation.id, error)
                    continue
                self._cas.setdefault(organisation.id, []).append(ca)
                # Re-encoded, not as stored: PEM text the ledger accepted without a final
                # newline (or with text around it) would glue two certificates together,
                # and gRPC would then load no root at all.
                pems.append(certificate_pem(ca))
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
                issuers = [
                    org
                    for org, cas in self._cas.items()
                    if any(issued_by(certificate, ca) for ca in cas)
                ]
                # Two members holding one CA (a CA certificate is public): neither is named.
                self._seen[certificate_pem] = issuers[0] if len(issuers) == 1 else None
                if len(self._seen) > SEEN_MAX:
                    self._seen.pop(next(iter(self._seen)))
        return self._seen[certificate_pem]

    def renewal_refusal(self, current_pem: bytes, new_pem: bytes) -> str | None:
        """Why a node serving `current_pem` should not switch to `new_pem`, or None: a
        certificate that a member's CA signed is replaced only by one from a CA of the same
        member (another CA's would be refused by every peer). A certificate no current CA
        signed (after a rotation without overlap) may be replaced by any."""
        organisation = self.organisation_of(current_pem)
        if organisation is None or self.organisation_of(new_pem) == organisation:
            return None
        return (
            f"not signed by a CA organisation {organisation} holds in this node's view of the "
            "ledger (if this node missed a CA rotation, restart it: start-up serves the "
            "certificate on disk)"
        )
