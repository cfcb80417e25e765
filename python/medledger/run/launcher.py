"""Starting and stopping node processes (for the CLI's devnet, demo and bench, and the
integration tests). Each node is a real `medledger node start` process on 127.0.0.1."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medledger.config import Home
from medledger.transport.certs import load_identity, make_node_certificate, save_identity

__all__ = ["NodeProcess", "start_hub", "start_node"]

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
READY_LINE = re.compile(r"medledger node listening on (\S+:\d+)")
OPS_ADDRESS = re.compile(r" ops (\S+:\d+)")
HUB_READY_LINE = re.compile(r"medledger hub listening on (\S+:\d+)")


@dataclass
class NodeProcess:
    home: Path
    process: subprocess.Popen[str]
    address: str
    output: list[str] = field(default_factory=list)
    ops_address: str = ""
    """The operations HTTP port (metrics, probes), from the ready line."""

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up, like a power cut."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM, then wait for a clean exit (SIGKILL past the deadline)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        return self.process.returncode


def start_node(
    home: Path,
    listen: str = "127.0.0.1:0",
    log_path: Path | None = None,
    *,
    detach: bool = False,
    options: Sequence[str] = (),
) -> NodeProcess:
    """Starts `medledger node start --home HOME` (with `options`, e.g. `--log-format
    json`) and waits until it serves. A detached node runs in its own session with its
    output in the log, so it outlives the caller."""
    command = ["node", "start", "--home", str(home), "--listen", listen, *options]
    return _start(command, home, log_path or home / "node.log", READY_LINE, detach=detach)


def hub_tls_options(organisation: Home, directory: Path) -> list[str]:
    """`medledger hub start` transport options for a hub of the organisation whose CA is
    in `organisation` (a home, as `init` leaves it): a certificate from that CA, kept in
    `directory`/tls and reused when there already (a restarted hub), and the consortium's
    CAs to verify the node and the providers against."""
    key, certificate = directory / "tls" / "hub.key", directory / "tls" / "hub.pem"
    if not key.exists():
        ca = load_identity(organisation.ca_key, organisation.ca_certificate)
        save_identity(make_node_certificate(ca, "hub", ["127.0.0.1:0"]), key, certificate)
    return [
        "--tls-key", str(key),
        "--tls-cert", str(certificate),
        "--tls-ca", str(organisation.consortium_ca),
    ]  # fmt: skip


def start_hub(
    store: Path,
    key: Path,
    node: str,
    listen: str = "127.0.0.1:0",
    *,
    tls: Sequence[str] = ("--insecure",),
) -> NodeProcess:
    """Starts `medledger hub start` on the hub's channel store and waits until it serves.
    `tls`: its transport options (`--tls-key K --tls-cert C --tls-ca B`, or
    `--insecure`)."""
    command = ["hub", "start", "--store", str(store), "--key", str(key), "--node", node]
    command += ["--listen", listen, *tls]
    return _start(command, store, store.parent / "hub.log", HUB_READY_LINE, detach=False)


def _start(
    arguments: list[str], home: Path, log_path: Path, ready_line: re.Pattern[str], *, detach: bool
) -> NodeProcess:
    log = log_path.open("a")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
        [sys.executable, "-m", "medledger", *arguments],
        stdout=log if detach else subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=detach,
    )
    log.close()
    if detach:
        return _wait_for_log(home, process, log_path, ready_line)
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    lines: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            lines.append(line)
            match = ready_line.search(line)
            if match:
                ops = OPS_ADDRESS.search(line)
                return NodeProcess(
                    home, process, match.group(1), lines, ops.group(1) if ops else ""
                )
        elif process.poll() is not None:
            break
    process.kill()
    process.wait()
    raise RuntimeError(f"{home} did not start: {''.join(lines)} (see {log_path})")


def _wait_for_log(
    home: Path, process: subprocess.Popen[str], log_path: Path, ready_line: re.Pattern[str]
) -> NodeProcess:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        matches = ready_line.findall(log_path.read_text())
        if matches:
            return NodeProcess(home, process, matches[-1])
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"node at {home} did not start (see {log_path})")
