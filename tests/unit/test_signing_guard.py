"""The signing guard never lets a validator sign two different messages for one
(height, round, step), across restarts too."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from medledger.consensus.guard import (
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    FileGuardStore,
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
