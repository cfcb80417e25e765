"""Validator-set changes through the real Application: a governance proposal adds,
removes or re-weights validators from H+2; the limits (power moved at once, fewest
validators, one change per block, lone validator) each refuse with a message naming the
rule; the organisations' validator lists follow; the schedule every node and
`verify-chain` read gives the set of any height; the replica judges each vote by the set
of its height."""

from __future__ import annotations

import os

import pytest

from medledger.app import Application, governance
from medledger.app.state import VALIDATORS, MemoryState, genesis_writes
from medledger.app.validators import LATEST_KEY, ValidatorSchedule, height_key
from medledger.client import TxBuilder
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.genesis import Genesis, GenesisOrganisation, GenesisPolicy, GenesisValidator
from medledger.wire.v1 import governance_pb2, state_pb2, tx_pb2

CHAIN = "validators-unit"
NOW_MS = 1_800_000_000_000
ORGS = ["org-a", "org-b", "org-c", "org-d"]
ADMINS = {org: SigningKey.from_seed(bytes([80 + i]) * 32) for i, org in enumerate(ORGS)}
VALIDATOR_KEYS = [SigningKey.from_seed(bytes([90 + i]) * 32) for i in range(4)]
NEWCOMER = SigningKey.from_seed(b"n" * 32).public_key
POWER = 10


def genesis(validators: int = 4, policy: GenesisPolicy | None = None) -> Genesis:
    keys = VALIDATOR_KEYS[:validators]
    return Genesis(
        CHAIN,
        0,
        tuple(GenesisValidator(f"v{i}", k.public_key, POWER) for i, k in enumerate(keys)),
        organisations=tuple(
            GenesisOrganisation(
                org,
                org.upper(),
                (ADMINS[org].public_key,),
                validators=(keys[i].public_key,) if i < len(keys) else (),
            )
            for i, org in enumerate(ORGS)
        ),
        policy=policy or GenesisPolicy(),
    )


class Chain:
    def __init__(self, made: Genesis | None = None) -> None:
        self.genesis = made or genesis()
        self.state = MemoryState(genesis_writes(self.genesis))
        self.height = 0
        self.app = Application(CHAIN, 1000, permissioned=True)

    def block(self, *bodies: tx_pb2.TransactionBody) -> list[tuple[str, str]]:
        """One block holding `bodies` (each signed by org-a's admin)."""
        self.height += 1
        key = ADMINS["org-a"]
        txs = []
        for body in bodies:
            signed = TxBuilder(key, CHAIN).sign(body, expiry_height=self.height + 10)
            txs.append((key.public_key, tx_pb2.TransactionBody.FromString(signed.body)))
        result = self.app.finalize_block(
            self.height, bytes(32), self.state, txs, time_ms=NOW_MS + self.height
        )
        self.state.apply(result.writes)
        return [
            (tx_pb2.ResultCode.Name(o.code).removeprefix("RESULT_CODE_"), o.message)
            for o in result.outcomes
        ]

    def change(self, *updates: governance_pb2.ValidatorUpdate) -> tuple[str, str]:
        return self.block(approved(*updates))[0]

    def latest(self) -> state_pb2.ValidatorSetRecord:
        raw = self.state.get(VALIDATORS, LATEST_KEY)
        assert raw is not None
        return state_pb2.ValidatorSetRecord.FromString(raw)

    def organisation(self, org: str) -> state_pb2.Organisation:
        raw = self.state.get("organisations", org.encode())
        assert raw is not None
        return state_pb2.Organisation.FromString(raw)


def approved(*updates: governance_pb2.ValidatorUpdate) -> tx_pb2.TransactionBody:
    """A proposal with `updates`, approved by org-a, org-b and org-c (3 of 4)."""
    made = governance_pb2.GovernanceProposal(
        chain_id=CHAIN,
        proposal_id=os.urandom(16),
        expires_height=1000,
        change_validators=governance_pb2.ValidatorChanges(updates=updates),
    )
    raw = made.SerializeToString(deterministic=True)
    message = governance.signed_bytes(CHAIN, raw)
    approvals = [
        governance_pb2.Approval(
            organisation=org, admin=ADMINS[org].public_key, signature=ADMINS[org].sign(message)
        )
        for org in ORGS[:3]
    ]
    return tx_pb2.TransactionBody(govern=governance_pb2.Govern(proposal=raw, approvals=approvals))


def add(
    key: bytes = NEWCOMER, power: int = POWER, org: str = "org-b"
) -> governance_pb2.ValidatorUpdate:
    return governance_pb2.ValidatorUpdate(
        public_key=key, power=power, organisation=org, address="10.0.0.5:7070"
    )


def remove(index: int) -> governance_pb2.ValidatorUpdate:
    return governance_pb2.ValidatorUpdate(public_key=VALIDATOR_KEYS[index].public_key, power=0)


def test_an_added_validator_joins_the_set_two_heights_later_run_by_its_organisation() -> None:
    chain = Chain()
    assert chain.change(add()) == ("OK", "")
    record = chain.latest()
    assert record.effective_height == chain.height + 2
    assert [v.public_key for v in record.validators] == [
        *(k.public_key for k in VALIDATOR_KEYS),
        NEWCOMER,
    ]
    assert (record.validators[4].organisation, record.validators[4].address) == (
        "org-b",
        "10.0.0.5:7070",
    )
    assert chain.state.get(VALIDATORS, height_key(chain.height + 2)) is not None
    assert list(chain.organisation("org-b").validators) == [
        VALIDATOR_KEYS[1].public_key,
        NEWCOMER,
    ]


def test_a_removed_validator_leaves_and_its_organisation_may_then_leave_too() -> None:
    chain = Chain()
    assert chain.change(add())[0] == "OK"
    chain.block()  # the addition takes effect
    removal = approved(remove(3))
    assert chain.block(removal)[0] == ("OK", "")
    assert VALIDATOR_KEYS[3].public_key not in [v.public_key for v in chain.latest().validators]
    assert list(chain.organisation("org-d").validators) == []
    leave = governance_pb2.GovernanceProposal(
        chain_id=CHAIN, proposal_id=os.urandom(16), expires_height=1000, remove_organisation="org-d"
    )
    raw = leave.SerializeToString(deterministic=True)
    message = governance.signed_bytes(CHAIN, raw)
    body = tx_pb2.TransactionBody(
        govern=governance_pb2.Govern(
            proposal=raw,
            approvals=[
                governance_pb2.Approval(
                    organisation=org,
                    admin=ADMINS[org].public_key,
                    signature=ADMINS[org].sign(message),
                )
                for org in ORGS[:3]
            ],
        )
    )
    assert chain.block(body)[0] == ("OK", "")


@pytest.mark.parametrize(
    ("updates", "refusal"),
    [
        ([add(power=2 * POWER)], "moves 20 of 40 power at once"),
        ([remove(0)], "would leave 3 validators; at least 4"),
        ([add(), governance_pb2.ValidatorUpdate(public_key=VALIDATOR_KEYS[0].public_key, power=5)],
         "moves 15 of 40 power"),
        ([governance_pb2.ValidatorUpdate(public_key=NEWCOMER, power=0)], "not a validator"),
        ([governance_pb2.ValidatorUpdate(public_key=NEWCOMER, power=1, organisation="org-b")],
         "a new validator needs one"),
        ([governance_pb2.ValidatorUpdate(public_key=VALIDATOR_KEYS[0].public_key, power=POWER)],
         "changes nothing"),
        ([governance_pb2.ValidatorUpdate(
            public_key=VALIDATOR_KEYS[0].public_key, power=12, organisation="org-b")],
         "another organisation runs it"),
    ],
)  # fmt: skip
def test_changes_beyond_the_policy_are_refused_and_change_nothing(
    updates: list[governance_pb2.ValidatorUpdate], refusal: str
) -> None:
    chain = Chain()
    before = chain.latest()
    code, message = chain.change(*updates)
    assert code == "VALIDATOR_CHANGE_REFUSED"
    assert refusal in message
    assert chain.latest() == before


def test_an_unknown_organisation_cannot_run_a_validator() -> None:
    chain = Chain()
    assert chain.change(add(org="org-z"))[0] == "UNKNOWN_ORGANISATION"


def test_one_change_per_block_and_the_next_block_may_change_again() -> None:
    chain = Chain()
    other = SigningKey.from_seed(b"o" * 32).public_key
    first, second = chain.block(approved(add()), approved(add(other)))
    assert first == ("OK", "")
    assert second[0] == "VALIDATOR_CHANGE_REFUSED"
    assert "a change already takes effect" in second[1]
    # The next block's change is measured against the set the first one made.
    assert chain.change(add(other)) == ("OK", "")
    assert len(chain.latest().validators) == 6


def test_genesis_sets_the_limits_and_a_lone_validator_cannot_change() -> None:
    loose = Chain(genesis(policy=GenesisPolicy(validators_min=3, validator_change_max=(3, 10))))
    assert loose.change(remove(0)) == ("OK", "")  # 10 of 40 < 3/10; 3 left are enough
    strict = Chain(genesis(policy=GenesisPolicy(validator_change_max=(1, 4))))
    assert "less than 1/4" in strict.change(add())[1]  # 10 of 40 is not less than 1/4
    lone = Chain(genesis(validators=1, policy=GenesisPolicy(validators_min=1)))
    code, message = lone.change(add())
    assert code == "VALIDATOR_CHANGE_REFUSED"
    assert "lone validator" in message
    with pytest.raises(ValueError, match="at most 1/3"):
        Genesis.from_json(
            genesis(policy=GenesisPolicy(validator_change_max=(1, 2))).to_json()
        ).check_organisations()


def test_proposals_are_checked_for_shape_before_they_are_counted() -> None:
    bad = [
        governance_pb2.ValidatorUpdate(public_key=b"short", power=1),
        governance_pb2.ValidatorUpdate(public_key=NEWCOMER, power=2**32),
        governance_pb2.ValidatorUpdate(public_key=NEWCOMER, power=1, address="no port"),
    ]
    for update in bad:
        body = approved(update)
        with pytest.raises(Rejected) as raised:
            governance.check_govern(body.govern, ADMINS["org-a"].public_key)
        assert "change_validators.updates[0]" in raised.value.field
    with pytest.raises(Rejected, match="named twice"):
        governance.check_govern(approved(add(), add()).govern, ADMINS["org-a"].public_key)


def test_the_schedule_gives_the_set_of_any_height() -> None:
    chain = Chain()
    chain.block()
    chain.change(add())  # at height 2: effective at 4
    chain.block()
    chain.change(remove(0))  # at height 4: effective at 6
    stored = [
        (key, value)
        for key in (height_key(h) for h in range(1, 8))
        if (value := chain.state.get(VALIDATORS, key)) is not None
    ]
    schedule = ValidatorSchedule.of(chain.genesis, stored)
    original = chain.genesis.validator_set()
    assert [schedule.set_at(h).hash == original.hash for h in range(1, 4)] == [True] * 3
    assert len(schedule.set_at(4).members()) == 5
    assert len(schedule.set_at(5).members()) == 5
    assert schedule.keys_at(6)[0] == VALIDATOR_KEYS[1].public_key
    assert schedule.index_at(6, NEWCOMER) == 3
    assert schedule.index_at(6, VALIDATOR_KEYS[0].public_key) is None
    assert [r.effective_height for r in schedule.changes(5)] == [4]
    assert schedule.addresses() == {NEWCOMER: "10.0.0.5:7070"}
