"""A real node process on 127.0.0.1 per test module."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from medledger.cli import init_home
from medledger.client import LedgerClient, TxBuilder, enrol
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.launcher import NodeProcess, start_node
from medledger.wire.v1 import tx_pb2

CHAIN_ID = "integration-1"


@dataclass
class RunningNode:
    home: Home
    genesis: Genesis
    process: NodeProcess
    payer: SigningKey

    @property
    def address(self) -> str:
        return self.process.address

    def client(self, reader: SigningKey | None = None) -> LedgerClient:
        return LedgerClient(self.address, timeout_s=30, reader=reader)

    def builder(self, key: SigningKey | None = None) -> TxBuilder:
        return TxBuilder(key or self.payer, CHAIN_ID)

    def enrol(self, roles: Mapping[SigningKey, Iterable[int]]) -> None:
        """The node's organisation (`org-0`, whose admin is `payer`) issues these roles."""
        with self.client() as client:
            enrol(client, self.payer, "org-0", roles)

    def member(self, role: int = tx_pb2.ROLE_PAYER) -> SigningKey:
        """A fresh key, enrolled by the node's organisation in `role`."""
        key = SigningKey.generate()
        self.enrol({key: [role]})
        return key

    def restart(self) -> None:
        """Stops the node (if it still runs) and starts it again on its home."""
        self.process.stop()
        self.process = start_node(self.home.root)


MIN_CHALLENGE_BLOCKS = 2
"""The channel tests close within a few blocks; a real chain's minimum is longer."""


def launch(root: Path) -> RunningNode:
    home = Home(root)
    genesis = init_home(
        home, CHAIN_ID, listen="127.0.0.1:0", min_challenge_blocks=MIN_CHALLENGE_BLOCKS
    )
    process = start_node(home.root)
    try:
        payer = load_key(home.keys_dir / "client.json")
    except BaseException:
        process.stop()
        raise
    return RunningNode(home, genesis, process, payer)


def stop_all(*processes: NodeProcess | None) -> None:
    """Stops every process given, even if stopping one of them fails (that error is
    raised once all were stopped)."""
    errors: list[BaseException] = []
    for process in processes:
        try:
            if process is not None:
                process.stop()
        except BaseException as error:  # the others are stopped all the same
            errors.append(error)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    running = launch(tmp_path_factory.mktemp("node") / "home")
    try:
        yield running
    finally:
        running.process.stop()  # the current process: a test may have restarted it
