"""The genesis file: the chain id, the validator set and the initial balances.

Every node of a network starts from the same genesis; its hash is the app hash of height
0, so two nodes started from different genesis files disagree from the first block on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medledger.block import ValidatorSet
from medledger.crypto import sha256

__all__ = ["Allocation", "Genesis", "GenesisValidator"]


CHALLENGE_BLOCKS_MAX = 100_000
"""The longest challenge window a channel may have (medledger.app.channels)."""
DEFAULT_MIN_CHALLENGE_BLOCKS = 10
"""A new chain's shortest channel challenge window (`Genesis.min_challenge_blocks`)."""


@dataclass(frozen=True)
class GenesisValidator:
    name: str
    public_key: bytes
    power: int


@dataclass(frozen=True)
class Allocation:
    owner: bytes
    balance_micros: int


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    validators: tuple[GenesisValidator, ...]
    allocations: tuple[Allocation, ...] = field(default=())
    # The shortest challenge window a channel may have: a payee needs that many blocks to
    # answer an old state, even under load. 1 (no minimum) when a genesis names none.
    min_challenge_blocks: int = 1

    def validator_set(self) -> ValidatorSet:
        return ValidatorSet([(v.public_key, v.power) for v in self.validators])

    def to_json(self) -> str:
        data = asdict(self)
        for validator in data["validators"]:
            validator["public_key"] = validator["public_key"].hex()
        for allocation in data["allocations"]:
            allocation["owner"] = allocation["owner"].hex()
        if data["min_challenge_blocks"] == 1:
            del data["min_challenge_blocks"]  # genesis files written before it keep their hash
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Genesis:
        data = json.loads(text)
        genesis = cls(
            chain_id=data["chain_id"],
            genesis_time_ms=int(data["genesis_time_ms"]),
            validators=tuple(
                GenesisValidator(v["name"], bytes.fromhex(v["public_key"]), int(v["power"]))
                for v in data["validators"]
            ),
            allocations=tuple(
                Allocation(bytes.fromhex(a["owner"]), int(a["balance_micros"]))
                for a in data.get("allocations", [])
            ),
            min_challenge_blocks=int(data.get("min_challenge_blocks", 1)),
        )
        if not 1 <= genesis.min_challenge_blocks <= CHALLENGE_BLOCKS_MAX:
            raise ValueError(f"genesis min_challenge_blocks: must be 1 to {CHALLENGE_BLOCKS_MAX}")
        genesis.validator_set()  # validates keys and powers
        for allocation in genesis.allocations:
            if len(allocation.owner) != 32 or not 0 <= allocation.balance_micros < 2**64:
                raise ValueError(
                    f"genesis allocation {allocation.owner.hex()}: bad owner or balance"
                )
        return genesis

    @classmethod
    def load(cls, path: Path) -> Genesis:
        return cls.from_json(path.read_text())

    def hash(self) -> bytes:
        """SHA-256 of the canonical JSON form: the app hash at height 0."""
        return sha256(self.to_json().encode())
