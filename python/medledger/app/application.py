"""The Application: the ledger's rules behind a boundary in the manner of ABCI.

The node calls, in order: `check_tx` when a transaction is submitted; `prepare_proposal`
on the candidates when it proposes; `process_proposal` on a block another validator
proposed; `finalize_block` on a decided block; `commit` for what that block writes (state
and the transaction index with each transaction's receipt), which the node makes durable
in one LMDB transaction. Everything here is deterministic and reads state only through a
`StateReader`: expiry, id rules and receipts are decided in this one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from medledger.app import accounts, channels, consent, governance, identity, members, records
from medledger.app.outcome import TxOutcome
from medledger.app.state import (
    MEMBERS,
    ORGANISATIONS,
    BlockState,
    StateReader,
    next_app_hash,
)
from medledger.errors import Rejected
from medledger.limits import TEXT_BYTES_MAX
from medledger.wire.v1 import state_pb2, tx_pb2

__all__ = [
    "Application",
    "BlockCommit",
    "BlockResult",
    "BlockTx",
    "Prepared",
    "TxOutcome",
    "expiry_refusal",
]

TX_ID_BYTES = 16

Handler = Callable[[BlockState, int, bytes, Any], TxOutcome]

# One table of handlers per module; the oneof field name selects the handler.
HANDLERS: dict[str, Handler] = {
    "register_participant": identity.register_participant,
    "create_account": accounts.create_account,
    "transfer": accounts.transfer,
    "anchor_record": records.anchor_record,
    "erase_record": records.erase_record,
    "grant_consent": consent.grant_consent,
    "revoke_consent": consent.revoke_consent,
    "record_access": records.record_access,
    "open_channel": channels.open_channel,
    "top_up_channel": channels.top_up_channel,
    "close_channel": channels.close_channel,
    "force_close_channel": channels.force_close_channel,
    "challenge_channel": channels.challenge_channel,
    "settle_channel": channels.settle_channel,
    "issue_credential": members.issue_credential,
    "revoke_credential": members.revoke_credential,
    "govern": governance.govern,
}

# Stateless rules of the kinds that have them beyond check_body's; they may depend on the
# signer (a consent is signed by its patient) and raise `Rejected` naming the field.
CHECKS: dict[str, Callable[[Any, bytes], None]] = {
    "anchor_record": records.check_anchor,
    "erase_record": records.check_erase,
    "grant_consent": consent.check_grant,
    "revoke_consent": consent.check_revoke,
    "record_access": records.check_record_access,
    "open_channel": channels.check_open,
    "top_up_channel": channels.check_top_up,
    "close_channel": channels.check_close,
    "force_close_channel": channels.check_force_close,
    "challenge_channel": channels.check_challenge,
    "settle_channel": channels.check_settle,
    "issue_credential": members.check_issue,
    "revoke_credential": members.check_revoke,
    "govern": governance.check_govern,
}


class BlockTx(Protocol):
    """A block's transaction as the application needs it: decoded, with the hashes Rust
    computed, and whether this node already checked it (`check_tx`) at admission."""

    @property
    def signer(self) -> bytes: ...
    @property
    def body(self) -> tx_pb2.TransactionBody: ...
    @property
    def tx_id(self) -> bytes: ...
    @property
    def tx_hash(self) -> bytes: ...
    @property
    def body_hash(self) -> bytes: ...
    @property
    def checked(self) -> bool:
        """Whether this node verified the signature and ran the application's
        stateless checks (`Application.check_tx`) on it already."""
        ...


T = TypeVar("T", bound=BlockTx)


@dataclass(frozen=True)
class BlockResult:
    outcomes: list[TxOutcome]
    writes: list[tuple[str, bytes, bytes]]
    app_hash: bytes


@dataclass
class Prepared(Generic[T]):
    """`prepare_proposal`'s answer: the transactions to propose, in order, and those that
    may never be committed, each with the refusal to give whoever waits on it."""

    txs: list[T] = field(default_factory=list)
    refused: list[tuple[T, Rejected]] = field(default_factory=list)


@dataclass(frozen=True)
class BlockCommit:
    """What a finalized block writes, in one LMDB transaction: the state writes, the new
    app hash, and the transaction index (tx id, tx hash, encoded `TxRecord`), whose
    records are also the block's receipts."""

    writes: list[tuple[str, bytes, bytes]]
    app_hash: bytes
    tx_index: list[tuple[bytes, bytes, bytes]]
    records: list[state_pb2.TxRecord]


def expiry_refusal(expiry_height: int, height: int, *, when: str = "block") -> Rejected | None:
    """The one expiry rule: a transaction may be in the block at `height` up to and
    including its `expiry_height`. `when` names the height in the refusal ("next" at
    admission, "block" when proposing)."""
    if expiry_height >= height:
        return None
    return Rejected(
        "FAILED_PRECONDITION",
        "body.expiry_height",
        f"expired: {expiry_height} is below the {when} height {height}",
    )


def _invalid(field: str, reason: str) -> Rejected:
    return Rejected("INVALID_ARGUMENT", field, reason)


def check_body(body: tx_pb2.TransactionBody, chain_id: str, signer: bytes) -> str:
    """Stateless rules every transaction body must follow; raises `Rejected`. Returns
    the body's kind (the field of its `kind` oneof)."""
    if body.chain_id != chain_id:
        raise _invalid("body.chain_id", f"expected {chain_id!r}, got {body.chain_id!r}")
    if len(body.tx_id) != TX_ID_BYTES:
        raise _invalid("body.tx_id", f"must be {TX_ID_BYTES} bytes, got {len(body.tx_id)}")
    kind = body.WhichOneof("kind")
    if kind is None:
        raise _invalid("body.kind", "no transaction kind is set")
    if kind == "transfer":
        transfer = body.transfer
        if len(transfer.to) != 32:
            raise _invalid(
                "body.transfer.to", f"must be a 32-byte public key, got {len(transfer.to)}"
            )
        if transfer.amount_micros == 0:
            raise _invalid("body.transfer.amount_micros", "must be positive")
        reference = transfer.reference
        # UTF-8 takes at most 4 bytes a character: most references need no encoding.
        if len(reference) * 4 > TEXT_BYTES_MAX and len(reference.encode()) > TEXT_BYTES_MAX:
            raise _invalid("body.transfer.reference", f"longer than {TEXT_BYTES_MAX} bytes")
    elif kind == "register_participant":
        register = body.register_participant
        if register.kind == tx_pb2.PARTICIPANT_KIND_UNSPECIFIED:
            raise _invalid("body.register_participant.kind", "must be set")
        if register.role == tx_pb2.ROLE_UNSPECIFIED:
            raise _invalid("body.register_participant.role", "must be set")
        if len(register.display_name.encode()) > TEXT_BYTES_MAX:
            raise _invalid(
                "body.register_participant.display_name", f"longer than {TEXT_BYTES_MAX} bytes"
            )
    elif kind in CHECKS:
        CHECKS[kind](getattr(body, kind), signer)
    return kind


class Application:
    """The healthcare ledger's rules, behind an ABCI-like boundary."""

    def __init__(
        self,
        chain_id: str,
        expiry_horizon_blocks: int,
        *,
        min_challenge_blocks: int = 1,
        permissioned: bool = False,
    ) -> None:
        self.chain_id = chain_id
        self.expiry_horizon_blocks = expiry_horizon_blocks
        self.min_challenge_blocks = min_challenge_blocks
        # Only members' keys may submit (`Genesis.permissioned`); an open chain lets anyone.
        self.permissioned = permissioned

    def submitter_organisation(self, reader: StateReader, signer: bytes, time_ms: int) -> str:
        """The organisation whose member `signer` is, if it may submit at `time_ms`;
        raises PERMISSION_DENIED naming the key otherwise. "" on an open chain."""
        return self.submitter(reader, signer, time_ms)[0]

    def submitter(self, reader: StateReader, signer: bytes, time_ms: int) -> tuple[str, int]:
        """`submitter_organisation`, and the time until which the answer holds unless
        the state changes (the latest expiry of the roles that admit the key)."""
        if not self.permissioned:
            return "", 2**63
        raw = reader.get(MEMBERS, signer)
        member = None if raw is None else state_pb2.Member.FromString(raw)
        organisation = None
        if member is not None:
            raw_org = reader.get(ORGANISATIONS, member.organisation.encode())
            organisation = None if raw_org is None else state_pb2.Organisation.FromString(raw_org)
        if not members.submitter(member, organisation, time_ms):
            raise Rejected(
                "PERMISSION_DENIED",
                "tx.public_key",
                "not enrolled by a member organisation, or holds no current role",
            )
        assert member is not None
        if member.admin:
            return member.organisation, 2**63
        until = max(grant.expires_ms for grant in member.roles if grant.revoked_height == 0)
        return member.organisation, until

    def _check_genesis_rules(self, body: tx_pb2.TransactionBody, kind: str) -> None:
        """Rules the genesis sets for this chain (`kind`: the body's, as `check_body`
        returns it)."""
        if (
            kind == "open_channel"
            and body.open_channel.challenge_blocks < self.min_challenge_blocks
        ):
            raise _invalid(
                "body.open_channel.challenge_blocks",
                f"below this chain's minimum of {self.min_challenge_blocks} blocks",
            )

    def check_tx(self, body: tx_pb2.TransactionBody, next_height: int, signer: bytes) -> None:
        """Admission: stateless rules and expiry. Raises `Rejected` naming the field."""
        self._check_genesis_rules(body, check_body(body, self.chain_id, signer))
        expiry_height = body.expiry_height
        expired = expiry_refusal(expiry_height, next_height, when="next")
        if expired is not None:
            raise expired
        if expiry_height > next_height + self.expiry_horizon_blocks:
            raise _invalid(
                "body.expiry_height",
                f"{expiry_height} is more than {self.expiry_horizon_blocks} blocks ahead",
            )

    def prepare_proposal(self, height: int, candidates: Sequence[T]) -> Prepared[T]:
        """The transactions of a proposal at `height` from the mempool's `candidates`
        (admitted, oldest first, within the block's count and byte caps): those that
        expired meanwhile are refused, not proposed."""
        prepared: Prepared[T] = Prepared()
        for candidate in candidates:
            expired = expiry_refusal(candidate.body.expiry_height, height)
            if expired is None:
                prepared.txs.append(candidate)
            else:
                prepared.refused.append((candidate, expired))
        return prepared

    def process_proposal(self, height: int, txs: Sequence[BlockTx]) -> str | None:
        """Why another validator's proposal at `height` is invalid as far as its
        transactions go, or None: each not checked here at admission must follow the
        stateless rules (`check_body`), and no transaction id may appear twice. The
        node adds what needs its storage and Rust (ids committed before; signatures,
        the Merkle root and header links). An expired transaction does not make a
        block invalid: `finalize_block` records it as EXPIRED."""
        for index, tx in enumerate(txs):
            if tx.checked:
                continue  # admitted here: check_tx ran these rules already
            try:
                check_body(tx.body, self.chain_id, tx.signer)
            except Rejected as error:
                return f"txs[{index}]: {error}"
        if len({tx.tx_id for tx in txs}) != len(txs):
            return "a transaction id appears twice"
        return None

    def finalize_block(
        self,
        height: int,
        previous_app_hash: bytes,
        reader: StateReader,
        txs: Sequence[tuple[bytes, tx_pb2.TransactionBody]],
        *,
        time_ms: int,
        checked: Sequence[bool] | None = None,
    ) -> BlockResult:
        """Applies `txs` (signer, body) in order, at the block's time `time_ms`.
        Deterministic: the same committed state, transactions and block time give the
        same outcomes, writes and app hash.

        `checked[i]` says that this node already ran the stateless checks of `check_tx`
        on `txs[i]` (at admission, with this chain id and genesis): they are a function
        of the body and signer alone, so they passed and are not run again."""
        state = BlockState(reader, self.chain_id, time_ms)
        outcomes = []
        if checked is None:
            checked = [False] * len(txs)
        for (signer, body), passed in zip(txs, checked, strict=True):
            outcomes.append(self._apply(state, height, signer, body, checked=passed))
        writes = state.writes()
        return BlockResult(outcomes, writes, next_app_hash(previous_app_hash, writes))

    @staticmethod
    def commit(height: int, txs: Sequence[BlockTx], result: BlockResult) -> BlockCommit:
        """What block `height` writes: `result`'s state writes and app hash, and for each
        transaction its index entry, a `TxRecord` (height, position, hashes, outcome)
        that every later receipt of it is made from."""
        tx_index = []
        records = []
        for index, (tx, outcome) in enumerate(zip(txs, result.outcomes, strict=True)):
            record = state_pb2.TxRecord(
                height=height,
                index=index,
                tx_hash=tx.tx_hash,
                body_hash=tx.body_hash,
                code=outcome.code,
                message=outcome.message,
            )
            tx_index.append((tx.tx_id, tx.tx_hash, record.SerializeToString()))
            records.append(record)
        return BlockCommit(result.writes, result.app_hash, tx_index, records)

    def _apply(
        self,
        state: BlockState,
        height: int,
        signer: bytes,
        body: tx_pb2.TransactionBody,
        *,
        checked: bool,
    ) -> TxOutcome:
        if not checked:
            try:
                self._check_genesis_rules(body, check_body(body, self.chain_id, signer))
            except Rejected as rejected:
                return TxOutcome(tx_pb2.RESULT_CODE_MALFORMED, str(rejected))
        if expiry_refusal(body.expiry_height, height) is not None:
            return TxOutcome(tx_pb2.RESULT_CODE_EXPIRED, f"expired at height {body.expiry_height}")
        if (
            self.permissioned
            and not self._may_submit(state, signer)
            and not records.erasing_own_record(state, signer, body)
        ):
            return TxOutcome(
                tx_pb2.RESULT_CODE_NOT_PERMITTED,
                "signer: not enrolled by a member organisation, or holds no current role",
            )
        kind = body.WhichOneof("kind")
        assert kind is not None, "check_body guarantees a kind"
        state.tx_id = body.tx_id
        return HANDLERS[kind](state, height, signer, getattr(body, kind))

    @staticmethod
    def _may_submit(state: BlockState, signer: bytes) -> bool:
        allowed = state.submitters.get(signer)
        if allowed is None:
            member = state.get(MEMBERS, signer, state_pb2.Member)
            organisation = None
            if member is not None:
                organisation = state.get(
                    ORGANISATIONS, member.organisation.encode(), state_pb2.Organisation
                )
            allowed = members.submitter(member, organisation, state.time_ms)
            state.submitters[signer] = allowed
        return allowed
