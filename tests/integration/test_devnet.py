"""`devnet up` starts detached node processes that outlive the command: one that fails
to start must not leave the others running with no record to stop them by."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from medledger.run.devnet import DEVNET_FILE, devnet_up
from medledger.run.homes import free_base_port, init_network
from tests.leaks import MARKER, marked


def test_a_devnet_that_cannot_start_every_node_stops_those_it_started(tmp_path: Path) -> None:
    base = free_base_port(6)
    init_network(tmp_path, "devnet-1", 3, base, 10**9)
    with socket.socket() as taken:  # node2's port is someone else's
        taken.bind(("127.0.0.1", base + 2))
        taken.listen()
        with pytest.raises(RuntimeError, match="did not start"):
            devnet_up(tmp_path)
    assert not (tmp_path / DEVNET_FILE).exists()
    assert not [p for p in marked(os.environ[MARKER]) if str(tmp_path) in p.command]
