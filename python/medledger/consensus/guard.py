"""The signing guard: a validator never signs two different messages for the same
height, round and step, not even across a crash.

Before a signature leaves the process, the guard records (height, round, step) and a
digest of what was signed, and makes that record durable (fsync). A later request is
signed only if it is for a later (height, round, step), or is the very same message again
(a re-send). After a restart the record is read back first, so an engine that has
forgotten its votes cannot be made to contradict them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from medledger.crypto import sha256

__all__ = ["FileGuardStore", "MemoryGuardStore", "SignedRecord", "SigningGuard"]

# Steps in the order a validator signs them within a round.
STEP_PROPOSAL = 0
STEP_PREVOTE = 1
STEP_PRECOMMIT = 2


@dataclass(frozen=True)
class SignedRecord:
    height: int
    round: int
    step: int
    digest: bytes

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.height, self.round, self.step)


class GuardStore(Protocol):
    def load(self) -> SignedRecord | None: ...

    def save(self, record: SignedRecord) -> None: ...


class MemoryGuardStore:
    """For the simulation: survives a simulated crash because the harness keeps it."""

    def __init__(self) -> None:
        self.record: SignedRecord | None = None

    def load(self) -> SignedRecord | None:
        return self.record

    def save(self, record: SignedRecord) -> None:
        self.record = record


class FileGuardStore:
    """A small JSON file, replaced atomically and fsynced (file and directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> SignedRecord | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return SignedRecord(
            int(data["height"]),
            int(data["round"]),
            int(data["step"]),
            bytes.fromhex(data["digest"]),
        )

    def save(self, record: SignedRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        text = json.dumps(
            {
                "height": record.height,
                "round": record.round,
                "step": record.step,
                "digest": record.digest.hex(),
            }
        )
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class SigningGuard:
    def __init__(self, store: GuardStore) -> None:
        self._store = store
        self._last = store.load()

    @property
    def last(self) -> SignedRecord | None:
        return self._last

    def permit(self, height: int, round_: int, step: int, message: bytes) -> bool:
        """Whether `message` may be signed; if so, the permission is durable on return."""
        record = SignedRecord(height, round_, step, sha256(message))
        last = self._last
        if last is not None:
            if record.position < last.position:
                return False
            if record.position == last.position:
                return record.digest == last.digest  # the same message again: a re-send
        self._store.save(record)
        self._last = record
        return True
