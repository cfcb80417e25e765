"""Runs the `medledger` command as a user types it, in a fresh interpreter."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

TIMEOUT_S = 120


def medledger(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # In its own process group, so that a command cut short (past the timeout, or by ^C)
    # takes the processes it started with it (the nodes of `medledger demo`). Those it
    # detached into their own session (`devnet up`) are stopped by `devnet down`.
    with subprocess.Popen(
        [sys.executable, "-m", "medledger", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result
