"""The signing guard: a validator never signs two different messages for the same
height, round and step, and never forgets its lock, not even across a crash.

Before a signature leaves the process, the guard records (height, round, step), a
digest of what was signed, and the engine's lock state (locked round and value id,
valid round and value id: what the validator's votes depend on), and makes that record
durable (fsync). The valid value's bytes, which a validator needs to re-propose it, are
written beside the record only when they change (about once a height), before the
record that names them. A later request is signed only if it is for a later (height,
round, step), or is the very same message again (a re-send). After a restart the record
is read back first: the engine resumes with its lock, so it cannot be made to contradict
its votes, and the guard refuses what would contradict its signatures. One fsync per
signed message (a step), not per message received.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medledger.consensus.engine import LockState, Vote, VoteType
from medledger.crypto import sha256

__all__ = ["FileGuardStore", "GuardFileError", "MemoryGuardStore", "SignedRecord", "SigningGuard"]

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
    lock: LockState | None = None
    # The vote signed (its signature left out): after a crash it is signed again, to the
    # same bytes (Ed25519 is deterministic), and sent again, for the peers that missed it.
    vote: Vote | None = None

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


def _vote_to_json(vote: Vote) -> dict[str, Any]:
    return {
        "type": int(vote.type),
        "height": vote.height,
        "round": vote.round,
        "value_id": None if vote.value_id is None else vote.value_id.hex(),
        "validator": vote.validator,
        "signature": vote.signature.hex(),
    }


def _vote_from_json(data: dict[str, Any]) -> Vote:
    value_id = data["value_id"]
    return Vote(
        VoteType(int(data["type"])),
        int(data["height"]),
        int(data["round"]),
        None if value_id is None else bytes.fromhex(value_id),
        int(data["validator"]),
        bytes.fromhex(data["signature"]),
    )


class GuardFileError(Exception):
    """The signing guard's record is unreadable. The node must not start: signing without
    it could contradict what this validator signed before the damage."""

    def __init__(self, path: Path, cause: Exception) -> None:
        super().__init__(
            f"{path}: the signing guard's record is damaged ({cause!r}); the node will not "
            "sign without it. Restore it from a backup, or, only if this validator has "
            "signed nothing at this height, remove it"
        )


def _write_durably(path: Path, data: bytes) -> None:
    """Replaces `path` atomically with `data` (mode 0600), fsynced, directory included."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class FileGuardStore:
    """A small JSON file, replaced atomically and fsynced (file and directory), and the
    valid value's bytes in `<file>.value`, written before the record that names them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value_path = path.with_name(path.name + ".value")
        self._value_id: bytes | None = None  # whose bytes `value_path` holds

    def load(self) -> SignedRecord | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise GuardFileError(self.path, error) from error
        try:
            lock, vote = data.get("lock"), data.get("vote")
            return SignedRecord(
                int(data["height"]),
                int(data["round"]),
                int(data["step"]),
                bytes.fromhex(data["digest"]),
                self._load_lock(lock) if lock is not None else None,
                _vote_from_json(vote) if vote is not None else None,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise GuardFileError(self.path, error) from error

    def _load_lock(self, lock: dict[str, Any]) -> LockState:
        valid_id = bytes.fromhex(lock["valid_id"])
        valid_value = None
        try:
            stored = self.value_path.read_bytes()
        except FileNotFoundError:
            stored = b""
        # The file starts with the id it holds the bytes of.
        if valid_id and stored[:32] == valid_id:
            valid_value = (valid_id, stored[32:])
            self._value_id = valid_id
        evidence = tuple(_vote_from_json(v) for v in lock.get("evidence", []))
        return LockState(
            int(lock["height"]),
            int(lock["round"]),
            int(lock["locked_round"]),
            bytes.fromhex(lock["locked_id"]),
            int(lock["valid_round"]) if valid_value is not None else -1,
            valid_value,
            evidence if valid_value is not None else (),
        )

    def save(self, record: SignedRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "height": record.height,
            "round": record.round,
            "step": record.step,
            "digest": record.digest.hex(),
        }
        lock = record.lock
        if lock is not None:
            valid_id = lock.valid_value[0] if lock.valid_value is not None else b""
            if lock.valid_value is not None and valid_id != self._value_id:
                _write_durably(self.value_path, valid_id + lock.valid_value[1])
                self._value_id = valid_id
            data["lock"] = {
                "height": lock.height,
                "round": lock.round,
                "locked_round": lock.locked_round,
                "locked_id": lock.locked_id.hex(),
                "valid_round": lock.valid_round,
                "valid_id": valid_id.hex(),
                "evidence": [_vote_to_json(v) for v in lock.evidence],
            }
        if record.vote is not None:
            data["vote"] = _vote_to_json(record.vote)
        _write_durably(self.path, json.dumps(data).encode())


class SigningGuard:
    def __init__(self, store: GuardStore) -> None:
        self._store = store
        self._last = store.load()

    @property
    def last(self) -> SignedRecord | None:
        return self._last

    def permit(
        self,
        height: int,
        round_: int,
        step: int,
        message: bytes,
        *,
        lock: LockState | None = None,
        vote: Vote | None = None,
    ) -> bool:
        """Whether `message` may be signed; if so, the permission, `lock` (the engine's
        lock state as the message leaves) and `vote` (the message, when it is a vote) are
        durable on return."""
        record = SignedRecord(height, round_, step, sha256(message), lock, vote)
        last = self._last
        if last is not None:
            if record.position < last.position:
                return False
            if record.position == last.position:
                return record.digest == last.digest  # the same message again: a re-send
        self._store.save(record)
        self._last = record
        return True
