"""A local devnet: the nodes of a network made by `init_network`, started as detached
processes on this machine, their pids recorded so that `devnet_down` stops them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from medledger.config import Home
from medledger.run.launcher import NodeProcess, start_node

__all__ = ["devnet_down", "devnet_up"]

DEVNET_FILE = "devnet.json"
STOP_TIMEOUT_S = 10.0


def devnet_up(root: Path) -> list[NodeProcess]:
    """Starts every node of the network under `root`, detached; records their pids."""
    homes = sorted(p.parent for p in root.glob("node*/config.json"))
    if not homes:
        raise FileNotFoundError(f"no network under {root}; run `medledger init --validators N`")
    nodes: list[NodeProcess] = []
    try:
        for home in homes:
            nodes.append(start_node(home, Home(home).load_config().listen, detach=True))
    except BaseException:
        # Detached nodes outlive this process: stop those already started, or nothing
        # (no devnet.json) would ever stop them.
        for node in nodes:
            node.stop()
        raise
    record = [{"home": str(n.home), "pid": n.process.pid, "address": n.address} for n in nodes]
    (root / DEVNET_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return nodes


def devnet_down(root: Path) -> int:
    """Stops the processes `devnet_up` started (SIGTERM, then SIGKILL past the deadline).
    Returns how many were running."""
    path = root / DEVNET_FILE
    if not path.exists():
        return 0
    pids = [int(entry["pid"]) for entry in json.loads(path.read_text())]
    running = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while running and time.monotonic() < deadline:
        running = [pid for pid in running if _alive(pid)]
        time.sleep(0.1)
    for pid in running:
        _signal(pid, signal.SIGKILL)
    path.unlink()
    return len(pids)


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: ask the kernel
        return _signal(pid, 0)
    return finished == 0
