"""Runs the `medledger` command as a user types it, in a fresh interpreter."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medledger.run.homes import free_base_port
from medledger.transport.credentials import TLS_CA_ENV

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


def init_network_as_typed(
    root: Path, chain_id: str, monkeypatch: pytest.MonkeyPatch, *, ports: int = 8
) -> int:
    """`medledger init` of a 4-validator network at `root`, as an operator types it,
    on `ports` free ports from the one returned (client APIs first, then PeerServices).
    Later commands trust the network's CA bundle (`TLS_CA_ENV`), as `--node` needs."""
    port = free_base_port(ports)
    medledger(
        "init", "--home", str(root), "--chain-id", chain_id, "--validators", "4",
        "--base-port", str(port),
    )  # fmt: skip
    monkeypatch.setenv(TLS_CA_ENV, str(root / "consortium-ca.pem"))
    return port
