"""The access log as a person reads it: one row per access, with who asked, for which
record and why, what the custodian did, and the consent or break-glass declaration it
rested on. The CLI's `access log` and the demo print it."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.table import Table

from medledger.wire.v1 import records_pb2

__all__ = ["OUTCOMES", "access_table"]

OUTCOMES = {
    records_pb2.ACCESS_OUTCOME_RELEASED: "released",
    records_pb2.ACCESS_OUTCOME_REFUSED: "refused",
}


def access_table(
    events: list[records_pb2.AccessEvent], title: str, name: Callable[[bytes], str]
) -> Table:
    """The access log as a table: when, who (`name` of the requester's key), which record,
    why, the outcome, and the consent or break-glass declaration it rested on."""

    table = Table(title=title)
    for column in ("when (UTC)", "who", "record", "purpose", "outcome", "why", "consent", "flag"):
        table.add_column(column)
    for event in events:
        access = event.access
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(access.time_ms / 1000)),
            name(access.requester),
            f"{access.record_id.hex()[:12]} v{access.version}",
            records_pb2.Purpose.Name(access.purpose).removeprefix("PURPOSE_").lower(),
            OUTCOMES.get(access.outcome, "?"),
            access.reason,
            f"{access.consent_id.hex()[:12]} v{access.consent_version}"
            if access.consent_id
            else "",
            f"BREAK-GLASS ({access.emergency_reason_hash.hex()[:12]}…)"
            if access.break_glass
            else "",
        )
    return table
