"""The check that fails a run leaving a process running (tests/leaks.py) can fail: an
inner pytest session with the project's conftest leaves a detached grandchild running,
and the session fails, naming it, after killing it. A process that exits within the
grace period and a zombie are not leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.leaks import running

REPO = Path(__file__).resolve().parents[2]

INNER = """
import os
import subprocess
from pathlib import Path

OUT = Path(os.environ["LEAK_TEST_OUT"])
unreaped = []


def test_leaves_a_detached_grandchild_running():
    # As `medledger devnet up` does: a command starts a process in its own session and
    # exits; init adopts the process, which is no descendant of pytest any more.
    shell = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        start_new_session=True, capture_output=True, text=True, check=True,
    )
    (OUT / "leaked").write_text(shell.stdout.strip())


def test_starts_a_process_that_exits_within_the_grace_period():
    exiting = subprocess.Popen(["sleep", "1"], start_new_session=True)
    (OUT / "exiting").write_text(str(exiting.pid))


def test_leaves_a_zombie():
    child = subprocess.Popen(["true"])
    unreaped.append(child)  # never waited for: a zombie until the session ends
    (OUT / "zombie").write_text(str(child.pid))
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the check reads /proc")
def test_a_session_leaving_a_process_running_fails_naming_it_and_kills_it(
    tmp_path: Path,
) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pytest.ini").write_text("[pytest]\n")  # not the project's settings
    (inner / "test_inner.py").write_text(INNER)
    out = tmp_path / "out"
    out.mkdir()
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "LEAK_TEST_OUT": str(out)}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    result = subprocess.run(
        [*command, "-q", "test_inner.py"],
        cwd=inner,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    leaked = int((out / "leaked").read_text())
    try:
        report = result.stdout + result.stderr
        assert "3 passed" in report
        assert result.returncode == 1, report
        assert "1 process(es) the tests started were still running (now killed)" in report
        assert f"pid {leaked}: sleep 60" in report
        for harmless in ("exiting", "zombie"):
            assert f"pid {(out / harmless).read_text()}:" not in report
        assert not running(leaked)
    finally:
        if running(leaked):
            os.kill(leaked, signal.SIGKILL)
