"""Who may read which health metadata: consents, access events, anchors, and the blocks
and transactions that carry them. Pure rules over a committed snapshot; the API asks
them after checking the request's signature (the `read-request` domain).

A *full reader* sees everything: one of the consortium's auditors (`Policy.auditors`,
named by genesis or governance), or a validator key (a member node). Others see their
own part: the patient its records, consents and access log; a custodian the records it
holds and the accesses it reported; a grantee the consents that name it and the records
a current permit of it covers; a requester its own accesses and the anchors of records
released to it.
"""

from __future__ import annotations

from collections.abc import Collection

from medledger.app import queries
from medledger.app.consent import permits
from medledger.app.state import RELEASES
from medledger.errors import Rejected
from medledger.wire.v1 import records_pb2

__all__ = ["Reading"]


def _denied(field: str, reason: str) -> Rejected:
    return Rejected("PERMISSION_DENIED", field, reason)


class Reading:
    """One signed reader's view of one snapshot."""

    def __init__(
        self,
        snapshot: queries.Reader,
        requester: bytes,
        now_ms: int,
        validators: Collection[bytes],
    ) -> None:
        self.snapshot = snapshot
        self.requester = requester
        self.now_ms = now_ms
        # An organisation cannot make itself a full reader: the consortium's auditors are
        # named by genesis or governance, not by one organisation's admins.
        self.full = requester in validators or requester in queries.policy(snapshot).auditors

    def consents(self, patient: bytes) -> list[records_pb2.ConsentState]:
        every = queries.consents(self.snapshot, patient)
        if self.full or self.requester == patient:
            return every
        mine = [c for c in every if c.grant.grantee == self.requester]
        if not mine:
            raise _denied(
                "requester", "neither the patient, its custodian, a grantee nor an auditor"
            )
        return mine

    def access_events(self, patient: bytes) -> list[records_pb2.AccessEvent]:
        every = queries.access_events(self.snapshot, patient)
        if self.full or self.requester == patient:
            return every
        mine = [e for e in every if self.requester in (e.custodian, e.access.requester)]
        if not mine:
            raise _denied(
                "requester", "neither the patient, its custodian, a requester nor an auditor"
            )
        return mine

    def record(self, record: records_pb2.RecordState) -> None:
        """Raises PERMISSION_DENIED unless the reader may see this record's anchors."""
        if self.full or self.requester in (record.patient, record.custodian):
            return
        # A grantee of a permit that covers the record now, or a requester the record
        # was released to (a break-glass read, say): either may check what it receives
        # against the anchors.
        granted = permits(
            record, self.requester, queries.consents(self.snapshot, record.patient), self.now_ms
        )
        released = self.snapshot.get(RELEASES, record.record_id + self.requester) is not None
        if not granted and not released:
            raise _denied(
                "requester", "neither the patient, the custodian, a grantee nor an auditor"
            )

    def member(self, public_key: bytes) -> None:
        """The key itself, an admin of its organisation, or a full reader."""
        if self.full or self.requester == public_key:
            return
        member = queries.member(self.snapshot, public_key)
        organisation = (
            None if member is None else queries.organisation(self.snapshot, member.organisation)
        )
        if (
            organisation is not None
            and not organisation.removed_height
            and self.requester in organisation.admins
        ):
            return
        raise _denied("requester", "neither the key, an admin of its organisation nor an auditor")

    def transaction(self, signer: bytes) -> bool:
        """Whether the reader may see a committed transaction's body (and its proof)."""
        return self.full or self.requester == signer
