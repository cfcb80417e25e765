"""A small consortium for tests of the application: genesis organisations whose admins
issue roles through real `IssueCredential` transactions applied by the `Application`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from medledger.app import Application
from medledger.app.state import MemoryState, genesis_writes
from medledger.client import TxBuilder
from medledger.client.members import enrolment_signature
from medledger.crypto import SigningKey
from medledger.genesis import Genesis, GenesisOrganisation, GenesisPolicy, GenesisValidator
from medledger.wire.v1 import tx_pb2

__all__ = ["ADMINS", "FAR_FUTURE_MS", "NOW_MS", "consortium_genesis", "enrol"]

NOW_MS = 1_800_000_000_000
FAR_FUTURE_MS = NOW_MS + 10 * 365 * 24 * 3600 * 1000
ADMINS = {
    "hospital-a": SigningKey.from_seed(b"A" * 32),
    "hospital-b": SigningKey.from_seed(b"B" * 32),
}


def consortium_genesis(chain_id: str, policy: GenesisPolicy | None = None) -> Genesis:
    validator = SigningKey.from_seed(b"V" * 32)
    return Genesis(
        chain_id,
        0,
        (GenesisValidator("v", validator.public_key, 10),),
        organisations=tuple(
            GenesisOrganisation(org, org.title(), (admin.public_key,))
            for org, admin in ADMINS.items()
        ),
        policy=policy or GenesisPolicy(),
    )


def enrol(
    chain_id: str,
    roles: Mapping[SigningKey, Iterable[int]],
    *,
    organisation: str = "hospital-a",
    policy: GenesisPolicy | None = None,
) -> MemoryState:
    """A consortium's state at height 1, with each key enrolled by `organisation` in the
    given roles (issued by its admin, expiring far in the future)."""
    genesis = consortium_genesis(chain_id, policy)
    state = MemoryState(genesis_writes(genesis))
    builder = TxBuilder(ADMINS[organisation], chain_id)
    bodies = [
        tx_pb2.TransactionBody.FromString(
            builder.issue_credential(
                subject=key.public_key,
                role=role,
                organisation=organisation,
                expires_ms=FAR_FUTURE_MS,
                expiry_height=100,
                subject_signature=enrolment_signature(key, chain_id, organisation),
            ).body
        )
        for key, held in roles.items()
        for role in held
    ]
    app = Application(chain_id, 1000, permissioned=True)
    result = app.finalize_block(
        1,
        genesis.hash(),
        state,
        [(ADMINS[organisation].public_key, body) for body in bodies],
        time_ms=NOW_MS,
    )
    assert all(o.code == tx_pb2.RESULT_CODE_OK for o in result.outcomes), result.outcomes
    state.apply(result.writes)
    return state
