"""No process the tests start outlives the run.

At session start a marker unique to the session goes into os.environ, so every process
the tests start inherits it: children, and grandchildren that a CLI detached into their
own session (`devnet up`) and init adopted. At session end, after every fixture's
teardown, any process other than pytest that still carries the marker is a leak: after a
short grace period (for processes that are just exiting) it is SIGKILLed, listed, and the
run fails. Zombies (exited, not yet reaped) are not processes left running.

tests/conftest.py installs these hooks; a session can also load them with
`-p tests.leaks`. Standard library only: /proc, so Linux."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "MARKER",
    "Survivor",
    "kill",
    "marked",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "running",
    "survivors",
]

MARKER = "MEDLEDGER_TEST_SESSION"
GRACE_S = 5.0
PROC = Path("/proc")
_token = pytest.StashKey[str]()


@dataclass(frozen=True)
class Survivor:
    pid: int
    command: str


def marked(token: str) -> list[Survivor]:
    """Running processes (not zombies, not this one) whose environment carries the
    marker with this token."""
    needle = f"{MARKER}={token}".encode()
    me = os.getpid()
    found: list[Survivor] = []
    if not PROC.is_dir():  # not Linux: nothing to check with
        return found
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:  # gone meanwhile, or another user's
            continue
        if running(int(entry.name)):
            found.append(Survivor(int(entry.name), command.decode(errors="replace")))
    return found


def running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie has: it only waits for
    its parent to collect its status)."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    # pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ")".
    return stat.rpartition(b")")[2].split()[:1] not in ([b"Z"], [b"X"])


def survivors(token: str, grace_s: float = GRACE_S) -> list[Survivor]:
    """The marked processes still running after up to `grace_s` of waiting for them to
    exit (processes stopped in a teardown may still be on their way out)."""
    deadline = time.monotonic() + grace_s
    while True:
        left = marked(token)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def kill(processes: list[Survivor]) -> None:
    """SIGKILLs each process and waits (briefly) until none is running."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while any(running(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)


def pytest_sessionstart(session: pytest.Session) -> None:
    token = secrets.token_hex(8)
    session.config.stash[_token] = token
    os.environ[MARKER] = token


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of the remaining fixtures
def pytest_sessionfinish(session: pytest.Session) -> None:
    token = session.config.stash.get(_token, None)
    if token is None:
        return
    left = survivors(token)
    if not left:
        return
    kill(left)
    lines = [f"pid {process.pid}: {process.command}" for process in left]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    title = f"{len(left)} process(es) the tests started were still running (now killed)"
    if reporter is not None:
        reporter.write_line("")  # ends the progress line
        reporter.write_sep("=", title, red=True, bold=True)
        for line in lines:
            reporter.write_line(line)
        reporter.stats.setdefault("leaked", []).extend(left)  # "N passed, 1 leaked in ..."
    else:
        print(title, *lines, sep="\n", file=sys.stderr)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
