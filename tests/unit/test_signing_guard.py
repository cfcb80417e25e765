"""The signing guard never lets a validator sign two different messages for one
(height, round, step), across restarts too."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medledger.consensus import LockState, Vote, VoteType
from medledger.consensus.guard import (
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    FileGuardStore,
    GuardFileError,
    MemoryGuardStore,
    SigningGuard,
)


def test_a_second_different_vote_at_the_same_step_is_refused() -> None:
    guard = SigningGuard(MemoryGuardStore())
    assert guard.permit(5, 0, STEP_PREVOTE, b"prevote A")
    assert not guard.permit(5, 0, STEP_PREVOTE, b"prevote B")
    assert guard.permit(5, 0, STEP_PREVOTE, b"prevote A")  # re-sending the same vote is fine


def test_earlier_positions_are_refused_and_later_ones_allowed() -> None:
    guard = SigningGuard(MemoryGuardStore())
    assert guard.permit(5, 1, STEP_PREVOTE, b"x")
    assert not guard.permit(5, 0, STEP_PRECOMMIT, b"y")
    assert not guard.permit(4, 9, STEP_PRECOMMIT, b"y")
    assert guard.permit(5, 1, STEP_PRECOMMIT, b"y")
    assert guard.permit(6, 0, STEP_PREVOTE, b"z")


def test_the_record_survives_a_restart_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "signer" / "last_signed.json"
    guard = SigningGuard(FileGuardStore(path))
    assert guard.permit(9, 2, STEP_PRECOMMIT, b"precommit A")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    restarted = SigningGuard(FileGuardStore(path))
    assert not restarted.permit(9, 2, STEP_PRECOMMIT, b"precommit nil")
    assert not restarted.permit(9, 2, STEP_PREVOTE, b"prevote B")
    assert restarted.permit(9, 2, STEP_PRECOMMIT, b"precommit A")
    assert restarted.permit(10, 0, STEP_PREVOTE, b"next height")


def test_the_lock_state_and_its_evidence_survive_a_restart_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "data" / "last_signed.json"
    value_id, value = b"\x01" * 32, b"the block's bytes"
    evidence = tuple(
        Vote(VoteType.PREVOTE, 7, 2, value_id, validator, bytes([validator]) * 64)
        for validator in (0, 2, 3)
    )
    lock = LockState(7, 3, 2, value_id, 2, (value_id, value), evidence)
    assert SigningGuard(FileGuardStore(path)).permit(7, 3, STEP_PREVOTE, b"nil", lock=lock)
    restored = SigningGuard(FileGuardStore(path)).last
    assert restored is not None
    assert restored.lock == lock
    assert stat.S_IMODE(os.stat(path.with_name(path.name + ".value")).st_mode) == 0o600
    # A new valid value replaces the bytes beside the record; the lock id is kept apart.
    other = LockState(7, 4, 2, value_id, 4, (b"\x02" * 32, b"newer"), ())
    assert SigningGuard(FileGuardStore(path)).permit(7, 4, STEP_PREVOTE, b"nil", lock=other)
    assert SigningGuard(FileGuardStore(path)).last.lock == other  # type: ignore[union-attr]


def test_a_valid_value_whose_bytes_were_not_written_is_forgotten_not_invented(
    tmp_path: Path,
) -> None:
    """A crash between the value file and the record leaves the file holding another
    value's bytes: the record's valid value is then dropped (it only serves liveness),
    the lock (safety) is kept."""
    path = tmp_path / "last_signed.json"
    lock = LockState(7, 3, 2, b"\x01" * 32, 2, (b"\x01" * 32, b"bytes"), ())
    SigningGuard(FileGuardStore(path)).permit(7, 3, STEP_PREVOTE, b"nil", lock=lock)
    path.with_name(path.name + ".value").write_bytes(b"\x09" * 32 + b"other")
    restored = SigningGuard(FileGuardStore(path)).last
    assert restored is not None
    assert restored.lock is not None
    assert (restored.lock.locked_round, restored.lock.locked_id) == (2, b"\x01" * 32)
    assert (restored.lock.valid_round, restored.lock.valid_value) == (-1, None)


def test_a_damaged_record_stops_the_node_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last_signed.json"
    path.write_text('{"height": 3, "round"')  # torn
    with pytest.raises(GuardFileError, match=r"last_signed\.json"):
        SigningGuard(FileGuardStore(path))
    path.write_text('{"height": 3}')
    with pytest.raises(GuardFileError, match="damaged"):
        SigningGuard(FileGuardStore(path))
