"""Reads of the records, consent, audit and channel state from one consistent snapshot."""

from __future__ import annotations

from typing import Protocol

from medledger.app.members import active_roles
from medledger.app.records import break_glass_key, version_key
from medledger.app.state import (
    ACCESS_EVENTS,
    BREAK_GLASS,
    BREAK_GLASS_REVIEW,
    CHANNELS,
    CONSENTS,
    CONSORTIUM_KEY,
    MEMBERS,
    ORGANISATIONS,
    PARTICIPANTS,
    POLICY,
    POLICY_KEY,
    RECORD_VERSIONS,
    RECORDS,
)
from medledger.limits import LIST_MAX
from medledger.wire.v1 import channels_pb2, records_pb2, state_pb2

__all__ = [
    "LIST_MAX",
    "access_events",
    "break_glass_reviews",
    "break_glass_window",
    "channel",
    "consents",
    "member",
    "organisation",
    "participant",
    "policy",
    "record",
    "record_version",
    "record_versions",
    "roles",
]


class Reader(Protocol):
    def get(self, table: str, key: bytes) -> bytes | None: ...
    def scan(self, table: str, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]: ...
    def scan_last(self, table: str, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]: ...


def record(reader: Reader, record_id: bytes) -> records_pb2.RecordState | None:
    raw = reader.get(RECORDS, record_id)
    return None if raw is None else records_pb2.RecordState.FromString(raw)


def record_version(
    reader: Reader, record_id: bytes, version: int
) -> records_pb2.RecordVersion | None:
    raw = reader.get(RECORD_VERSIONS, version_key(record_id, version))
    return None if raw is None else records_pb2.RecordVersion.FromString(raw)


def record_versions(reader: Reader, record_id: bytes) -> list[records_pb2.RecordVersion]:
    return [
        records_pb2.RecordVersion.FromString(v)
        for _, v in reader.scan(RECORD_VERSIONS, record_id, LIST_MAX)
    ]


def consents(reader: Reader, patient: bytes) -> list[records_pb2.ConsentState]:
    return [
        records_pb2.ConsentState.FromString(v) for _, v in reader.scan(CONSENTS, patient, LIST_MAX)
    ]


def access_events(reader: Reader, patient: bytes) -> list[records_pb2.AccessEvent]:
    """A patient's newest LIST_MAX access events, oldest first (a flood of old events
    never hides the latest)."""
    return [
        records_pb2.AccessEvent.FromString(v)
        for _, v in reader.scan_last(ACCESS_EVENTS, patient, LIST_MAX)
    ]


def break_glass_window(
    reader: Reader, patient: bytes, custodian: bytes, requester: bytes
) -> records_pb2.BreakGlassWindow | None:
    raw = reader.get(BREAK_GLASS, break_glass_key(patient, custodian, requester))
    return None if raw is None else records_pb2.BreakGlassWindow.FromString(raw)


def break_glass_reviews(reader: Reader, custodian: bytes) -> list[records_pb2.AccessEvent]:
    """The newest LIST_MAX break-glass releases a custodian reported, oldest first."""
    return [
        records_pb2.AccessEvent.FromString(v)
        for _, v in reader.scan_last(BREAK_GLASS_REVIEW, custodian, LIST_MAX)
    ]


def member(reader: Reader, public_key: bytes) -> state_pb2.Member | None:
    raw = reader.get(MEMBERS, public_key)
    return None if raw is None else state_pb2.Member.FromString(raw)


def organisation(reader: Reader, org_id: str) -> state_pb2.Organisation | None:
    raw = reader.get(ORGANISATIONS, org_id.encode())
    return None if raw is None else state_pb2.Organisation.FromString(raw)


def roles(reader: Reader, public_key: bytes, time_ms: int) -> frozenset[int]:
    """The roles `public_key` holds at `time_ms`, as issued on the ledger."""
    held = member(reader, public_key)
    if held is None:
        return frozenset()
    return active_roles(held, organisation(reader, held.organisation), time_ms)


def policy(reader: Reader) -> state_pb2.Policy:
    raw = reader.get(POLICY, POLICY_KEY)
    return state_pb2.Policy() if raw is None else state_pb2.Policy.FromString(raw)


def participant(reader: Reader, public_key: bytes) -> state_pb2.Participant | None:
    raw = reader.get(PARTICIPANTS, public_key)
    return None if raw is None else state_pb2.Participant.FromString(raw)


def channel(reader: Reader, channel_id: bytes) -> channels_pb2.Channel | None:
    raw = reader.get(CHANNELS, channel_id)
    return None if raw is None else channels_pb2.Channel.FromString(raw)


def consortium(reader: Reader) -> state_pb2.Consortium:
    """The member organisations' ids and total governance weight."""
    raw = reader.get(POLICY, CONSORTIUM_KEY)
    return state_pb2.Consortium() if raw is None else state_pb2.Consortium.FromString(raw)
