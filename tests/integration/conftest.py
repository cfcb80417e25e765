"""A real node process on 127.0.0.1 per test module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from medledger.cli import init_home
from medledger.client import LedgerClient, TxBuilder
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.launcher import NodeProcess, start_node

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

    def client(self) -> LedgerClient:
        return LedgerClient(self.address, timeout_s=30)

    def builder(self, key: SigningKey | None = None) -> TxBuilder:
        return TxBuilder(key or self.payer, CHAIN_ID)

    def restart(self) -> None:
        self.process = start_node(self.home.root)


def launch(root: Path) -> RunningNode:
    home = Home(root)
    genesis = init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    process = start_node(home.root)
    return RunningNode(home, genesis, process, load_key(home.keys_dir / "client.json"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    running = launch(tmp_path_factory.mktemp("node") / "home")
    yield running
    running.process.stop()
