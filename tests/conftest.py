"""Shared test fixtures: outside vectors and a small signed network. The run fails if a
process the tests started is still running at its end (tests/leaks.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from medledger.block import ValidatorSet, assemble_block, make_commit
from medledger.crypto import SigningKey
from medledger.tx import sign_transaction
from medledger.wire.v1 import envelope_pb2
from tests.leaks import pytest_sessionfinish, pytest_sessionstart  # noqa: F401 - the hooks

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"
CHAIN_ID = "medledger-test"


def load_vector(name: str) -> Any:
    path = VECTORS / name
    if not path.exists():
        pytest.fail(f"test vector missing: {path} (see tests/vectors/README.md)")
    return json.loads(path.read_text())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seeds", type=int, default=1000, help="simulation seeds to run (tests/sim)")
    parser.addoption("--seed", type=int, default=None, help="replay one simulation seed")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--seed")
        seeds = [chosen] if chosen is not None else range(metafunc.config.getoption("--seeds"))
        metafunc.parametrize("seed", seeds)


@dataclass
class Network:
    """Four equal-power validators and a few clients, with helpers to make signed blocks."""

    validator_keys: list[SigningKey] = field(
        default_factory=lambda: [SigningKey.from_seed(bytes([100 + i]) * 32) for i in range(4)]
    )
    clients: list[SigningKey] = field(
        default_factory=lambda: [SigningKey.from_seed(bytes([i]) * 32) for i in range(4)]
    )
    height: int = 5
    parent_hash: bytes = b"\x07" * 32

    @property
    def validators(self) -> ValidatorSet:
        return ValidatorSet([(k.public_key, 10) for k in self.validator_keys])

    def txs(self, count: int) -> list[envelope_pb2.SignedTransaction]:
        return [
            sign_transaction(self.clients[i % len(self.clients)], CHAIN_ID, b"tx body %d" % i)
            for i in range(count)
        ]

    def block(self, txs: list[envelope_pb2.SignedTransaction]) -> envelope_pb2.Block:
        return assemble_block(
            chain_id=CHAIN_ID,
            height=self.height,
            parent_hash=self.parent_hash,
            txs=txs,
            proposer=self.validator_keys[0].public_key,
            validators=self.validators,
            next_validators=self.validators,
            app_hash=b"\x03" * 32,
            time_unix_ms=1_700_000_000_000,
        )

    def commit(
        self, block: envelope_pb2.Block, signers: tuple[int, ...] = (0, 1, 2)
    ) -> envelope_pb2.CommitCertificate:
        return make_commit(
            chain_id=CHAIN_ID,
            header=block.header,
            round=0,
            signers=[(i, self.validator_keys[i]) for i in signers],
        )


@pytest.fixture
def network() -> Network:
    return Network()
