"""The genesis file: the chain id, the validator set, the initial balances, and the
consortium's founding organisations and policy.

Every node of a network starts from the same genesis; its hash is the app hash of height
0, so two nodes started from different genesis files disagree from the first block on.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medledger.block import ValidatorSet
from medledger.crypto import SigningKey, sha256
from medledger.limits import VALIDATORS_MAX
from medledger.transport.ca_check import ca_conflict, check_ca_certificate

__all__ = [
    "Allocation",
    "Genesis",
    "GenesisOrganisation",
    "GenesisPolicy",
    "GenesisValidator",
    "founding_organisation",
]


CHALLENGE_BLOCKS_MAX = 100_000
"""The longest challenge window a channel may have (medledger.app.channels)."""
DEFAULT_MIN_CHALLENGE_BLOCKS = 10
"""A new chain's shortest channel challenge window (`Genesis.min_challenge_blocks`)."""
DEFAULT_BREAK_GLASS_MAX_MS = 60 * 60 * 1000
"""The longest break-glass window a vault may open unless the genesis sets another."""
ORGANISATION_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}", re.ASCII)
"""An organisation's id: lowercase ASCII letters, digits and '-', at most 32 bytes."""


@dataclass(frozen=True)
class GenesisValidator:
    name: str
    public_key: bytes
    power: int


@dataclass(frozen=True)
class GenesisOrganisation:
    """A founding member of the consortium: its admins enrol its people's keys."""

    id: str
    name: str
    admins: tuple[bytes, ...]
    weight: int = 1
    validators: tuple[bytes, ...] = ()  # the validator keys it runs
    tls_ca: bytes = b""  # PEM of its CA certificate (transport security)


def founding_organisation(
    index: int, admin: SigningKey, validator: SigningKey, tls_ca: bytes = b""
) -> GenesisOrganisation:
    """The organisation `init` writes for node `index`: `org-<index>`, administered by
    the node's client key and running its validator, with its CA certificate."""
    return GenesisOrganisation(
        id=f"org-{index}",
        name=f"Organisation {index}",
        admins=(admin.public_key,),
        validators=(validator.public_key,),
        tls_ca=tls_ca,
    )


@dataclass(frozen=True)
class GenesisPolicy:
    """The consortium's rules at height 0 (`state_pb2.Policy`)."""

    break_glass_max_ms: int = DEFAULT_BREAK_GLASS_MAX_MS
    emergency_overrides_deny: bool = True
    # A governance proposal needs approvals holding more than this share of the weight.
    governance_threshold: tuple[int, int] = (2, 3)
    # The consortium's auditors: keys that read all health metadata.
    auditors: tuple[bytes, ...] = ()
    # A validator-set change is refused when it moves at least this share of the power
    # at once, or leaves fewer than `validators_min` validators.
    validator_change_max: tuple[int, int] = (1, 3)
    validators_min: int = 4


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("genesis policy emergency_overrides_deny: must be true or false")
    return value


def _threshold(value: object, name: str = "governance_threshold") -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"genesis policy {name}: [numerator, denominator]")
    return int(value[0]), int(value[1])


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
    # The consortium. A genesis that names no organisation is an open development chain:
    # anyone may submit, and no key holds a role (so no record can be anchored).
    organisations: tuple[GenesisOrganisation, ...] = ()
    policy: GenesisPolicy = field(default_factory=GenesisPolicy)

    @property
    def permissioned(self) -> bool:
        """Only keys enrolled by a member organisation may submit transactions."""
        return bool(self.organisations)

    def validator_set(self) -> ValidatorSet:
        return ValidatorSet([(v.public_key, v.power) for v in self.validators])

    def to_json(self) -> str:
        data = asdict(self)
        for validator in data["validators"]:
            validator["public_key"] = validator["public_key"].hex()
        for allocation in data["allocations"]:
            allocation["owner"] = allocation["owner"].hex()
        data["policy"]["auditors"] = [key.hex() for key in self.policy.auditors]
        for organisation in data["organisations"]:
            organisation["admins"] = [key.hex() for key in organisation["admins"]]
            organisation["validators"] = [key.hex() for key in organisation["validators"]]
            if organisation["tls_ca"]:
                organisation["tls_ca"] = organisation["tls_ca"].decode()
            else:
                del organisation["tls_ca"]  # files written before it keep their hash
        # Fields at their old defaults are left out: genesis files written before them
        # keep their hash.
        if data["min_challenge_blocks"] == 1:
            del data["min_challenge_blocks"]
        if not data["organisations"]:
            del data["organisations"]
        if self.policy == GenesisPolicy():
            del data["policy"]
        else:
            for name in ("validator_change_max", "validators_min"):
                if getattr(self.policy, name) == getattr(GenesisPolicy(), name):
                    del data["policy"][name]
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
            organisations=tuple(
                GenesisOrganisation(
                    id=str(o["id"]),
                    name=str(o["name"]),
                    admins=tuple(bytes.fromhex(key) for key in o["admins"]),
                    weight=int(o.get("weight", 1)),
                    validators=tuple(bytes.fromhex(key) for key in o.get("validators", [])),
                    tls_ca=str(o.get("tls_ca", "")).encode(),
                )
                for o in data.get("organisations", [])
            ),
            policy=GenesisPolicy(
                break_glass_max_ms=int(
                    data.get("policy", {}).get("break_glass_max_ms", DEFAULT_BREAK_GLASS_MAX_MS)
                ),
                emergency_overrides_deny=_boolean(
                    data.get("policy", {}).get("emergency_overrides_deny", True)
                ),
                auditors=tuple(
                    bytes.fromhex(key) for key in data.get("policy", {}).get("auditors", [])
                ),
                governance_threshold=_threshold(
                    data.get("policy", {}).get("governance_threshold", [2, 3])
                ),
                validator_change_max=_threshold(
                    data.get("policy", {}).get("validator_change_max", [1, 3]),
                    "validator_change_max",
                ),
                validators_min=int(data.get("policy", {}).get("validators_min", 4)),
            ),
        )
        genesis.check_organisations()
        if not 1 <= genesis.min_challenge_blocks <= CHALLENGE_BLOCKS_MAX:
            raise ValueError(f"genesis min_challenge_blocks: must be 1 to {CHALLENGE_BLOCKS_MAX}")
        genesis.validator_set()  # validates keys and powers
        for allocation in genesis.allocations:
            if len(allocation.owner) != 32 or not 0 <= allocation.balance_micros < 2**64:
                raise ValueError(
                    f"genesis allocation {allocation.owner.hex()}: bad owner or balance"
                )
        return genesis

    def organisation_of(self, admin: bytes) -> str:
        """The id of the organisation `admin` administers; KeyError if none."""
        for org in self.organisations:
            if admin in org.admins:
                return org.id
        raise KeyError(f"{admin.hex()} administers no organisation of this genesis")

    def check_organisations(self) -> None:
        """Raises ValueError naming the organisation whose entry breaks a rule."""
        validators = {v.public_key for v in self.validators}
        seen_ids: set[str] = set()
        enrolled: set[bytes] = set()
        run: set[bytes] = set()
        cas: list[GenesisOrganisation] = []
        for org in self.organisations:
            where = f"genesis organisation {org.id!r}"
            if not ORGANISATION_ID.fullmatch(org.id):
                raise ValueError(f"{where}: id must be lowercase ASCII letters, digits and '-'")
            if org.id in seen_ids:
                raise ValueError(f"{where}: named twice")
            seen_ids.add(org.id)
            if not org.admins or any(len(key) != 32 for key in org.admins):
                raise ValueError(f"{where}: admins must be one or more 32-byte keys")
            if enrolled & set(org.admins):
                raise ValueError(f"{where}: an admin key already belongs to another organisation")
            enrolled |= set(org.admins)
            if not 1 <= org.weight < 2**32:
                raise ValueError(f"{where}: weight must be 1 to 2^32 - 1")
            if not set(org.validators) <= validators or run & set(org.validators):
                raise ValueError(
                    f"{where}: validators must be genesis validators run by no other organisation"
                )
            run |= set(org.validators)
            if org.tls_ca:
                check_ca_certificate(org.tls_ca, f"{where}: tls_ca")
                for earlier in cas:
                    conflict = ca_conflict(org.tls_ca, earlier.tls_ca)
                    if conflict is not None:
                        raise ValueError(
                            f"{where}: tls_ca conflicts with {earlier.id!r}'s (same {conflict})"
                        )
                cas.append(org)
        self._check_policy()

    def _check_policy(self) -> None:
        if not 0 < self.policy.break_glass_max_ms <= 24 * 60 * 60 * 1000:
            raise ValueError("genesis policy break_glass_max_ms: must be 1 ms to 24 h")
        if any(len(key) != 32 for key in self.policy.auditors):
            raise ValueError("genesis policy auditors: 32-byte keys")
        numerator, denominator = self.policy.governance_threshold
        if not (0 < denominator <= 1000 and denominator <= 2 * numerator < 2 * denominator):
            raise ValueError(
                "genesis policy governance_threshold: [numerator, denominator], at least 1/2 "
                "and below 1"
            )
        numerator, denominator = self.policy.validator_change_max
        if not (0 < denominator <= 1000 and numerator > 0 and 3 * numerator <= denominator):
            # More than a third at once and a new majority could take over before the
            # old validators notice: safety rests on < 1/3 Byzantine in each set.
            raise ValueError(
                "genesis policy validator_change_max: [numerator, denominator], above 0 and "
                "at most 1/3"
            )
        if not 1 <= self.policy.validators_min <= VALIDATORS_MAX:
            raise ValueError(f"genesis policy validators_min: 1 to {VALIDATORS_MAX}")

    @classmethod
    def load(cls, path: Path) -> Genesis:
        return cls.from_json(path.read_text())

    def hash(self) -> bytes:
        """SHA-256 of the canonical JSON form: the app hash at height 0."""
        return sha256(self.to_json().encode())
