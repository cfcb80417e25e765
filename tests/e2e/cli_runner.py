"""Runs the `medledger` command as a user types it, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def medledger(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "medledger", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result
