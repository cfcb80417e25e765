"""A single-validator ledger node: admission, mempool, block production and commit.

The block producer stands where consensus will (the Tendermint engine decides the block;
here the only validator does). Everything behind it — Rust validation, the application,
one LMDB write transaction per block — is what every node runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError as ProtobufDecodeError

from medledger import __version__
from medledger._core import admit_batch
from medledger.app import Application, queries
from medledger.app.application import BlockTx
from medledger.app.channels import NOT_URGENT, time_critical
from medledger.app.state import ORGANISATIONS, VALIDATORS
from medledger.app.validators import ValidatorSchedule
from medledger.block import (
    ValidatorSet,
    block_tx_hashes,
    make_commit,
    validate_block,
)
from medledger.chain import ChainStore, Head, Snapshot
from medledger.config import Home, NodeConfig
from medledger.crypto import SigningKey, sha256
from medledger.errors import Rejected
from medledger.genesis import Genesis
from medledger.limits import TX_BYTES_MAX
from medledger.metrics import (
    ADMISSION_REFUSALS,
    BLOCK_COMMIT_SECONDS,
    BLOCK_FSYNC_SECONDS,
    BLOCK_INTERVAL_SECONDS,
    BLOCK_TRANSACTIONS,
    BLOCKS_COMMITTED,
    MISSED_BLOCKS,
    TRANSACTIONS_COMMITTED,
    validator_label,
)
from medledger.node.mempool import Mempool, PendingTx
from medledger.node.proposal import propose_block
from medledger.transport.membership import Membership
from medledger.wire.v1 import envelope_pb2, ledger_pb2, state_pb2, tx_pb2

__all__ = [
    "Admitted",
    "DecodedTx",
    "LedgerNode",
    "TxEntry",
    "block_entries",
    "committed_receipt",
    "rejected_receipt",
]

log = logging.getLogger(__name__)

STORAGE_FULL_FRACTION = 0.95
"""Past this share of the LMDB map in use, new transactions are refused..."""
URGENT_STORAGE_FULL_FRACTION = 0.99
"""... and time-critical ones (challenges, settlements) past this one."""

STATUS_CODES = {
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "UNAVAILABLE": 14,
}


def refused_at_admission(
    rejected: Rejected, tx_id: bytes = b"", tx_hash: bytes = b""
) -> tx_pb2.Receipt:
    """The receipt of a transaction refused at admission, counted by its status."""
    ADMISSION_REFUSALS.labels(code=rejected.status).inc()
    return rejected_receipt(rejected, tx_id, tx_hash)


def rejected_receipt(
    rejected: Rejected, tx_id: bytes = b"", tx_hash: bytes = b""
) -> tx_pb2.Receipt:
    return tx_pb2.Receipt(
        tx_id=tx_id,
        tx_hash=tx_hash,
        status=tx_pb2.TX_STATUS_REJECTED,
        message=str(rejected),
        error_code=STATUS_CODES.get(rejected.status, 2),
    )


def committed_receipt(tx_id: bytes, record: state_pb2.TxRecord) -> tx_pb2.Receipt:
    return tx_pb2.Receipt(
        tx_id=tx_id,
        tx_hash=record.tx_hash,
        status=tx_pb2.TX_STATUS_COMMITTED,
        code=record.code,
        message=record.message,
        height=record.height,
        index=record.index,
    )


@dataclass(frozen=True)
class PreparedBatch:
    """A batch after `LedgerNode.prepare`: what was refused already, the decoded bodies,
    and for each the Rust verdict (canonical encoding, tx hash, body hash, signature ok)."""

    txs: Sequence[envelope_pb2.SignedTransaction]
    answers: list[Admitted | None]
    decoded: list[tuple[int, tx_pb2.TransactionBody]]
    prepared: list[tuple[bytes, bytes, bytes, bool]]


TxEntry = BlockTx
"""A block's transaction: a `PendingTx` this node admitted, or a `DecodedTx` from a block
that carried one it had not."""


@dataclass(frozen=True, slots=True)
class DecodedTx:
    """A transaction decoded from a peer's block, not (yet) checked by this node."""

    signer: bytes
    body: tx_pb2.TransactionBody
    tx_id: bytes
    tx_hash: bytes
    body_hash: bytes
    checked: bool = False

    @classmethod
    def decode(cls, tx: envelope_pb2.SignedTransaction, tx_hash: bytes) -> DecodedTx:
        """`tx_hash` is the hash of its canonical encoding (the Merkle leaf), computed in
        Rust. A body that does not decode is kept as an empty body: the application
        records it as malformed, deterministically."""
        try:
            body = tx_pb2.TransactionBody.FromString(tx.body)
        except ProtobufDecodeError:
            body = tx_pb2.TransactionBody()
        return cls(tx.public_key, body, body.tx_id, tx_hash, sha256(tx.body))


@dataclass
class Admitted:
    """The answer to one submitted transaction: a receipt now, or one to wait for."""

    receipt: tx_pb2.Receipt | None = None
    pending: asyncio.Future[tx_pb2.Receipt] | None = None
    tx_id: bytes = b""
    tx_hash: bytes = b""

    def pending_receipt(self) -> tx_pb2.Receipt:
        """What to answer a client that does not wait for the commit."""
        if self.receipt is not None:
            return self.receipt
        return tx_pb2.Receipt(
            tx_id=self.tx_id, tx_hash=self.tx_hash, status=tx_pb2.TX_STATUS_PENDING
        )

    async def result(self, timeout_s: float) -> tx_pb2.Receipt:
        if self.receipt is not None:
            return self.receipt
        assert self.pending is not None
        return await asyncio.wait_for(asyncio.shield(self.pending), timeout_s)


def block_entries(
    block_bytes: bytes, admitted: Callable[[bytes], PendingTx | None]
) -> list[TxEntry]:
    """A block's transactions: taken from `admitted` (by hash, computed in Rust) where this
    node already decoded and verified them, decoded otherwise. Raises MedledgerError for a
    block that does not decode."""
    hashes = block_tx_hashes(block_bytes)
    block: envelope_pb2.Block | None = None
    entries: list[TxEntry] = []
    for index, tx_hash in enumerate(hashes):
        pending = admitted(tx_hash)
        if pending is not None:
            entries.append(pending)
            continue
        if block is None:
            block = envelope_pb2.Block.FromString(block_bytes)
        entries.append(DecodedTx.decode(block.txs[index], tx_hash))
    return entries


class LedgerNode:
    """Owns the store, the application and the mempool; produces and commits blocks."""

    def __init__(self, home: Home, config: NodeConfig, genesis: Genesis, key: SigningKey) -> None:
        self.config = config
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.key = key
        self.solo = len(genesis.validators) == 1
        if self.solo and key.public_key != genesis.validators[0].public_key:
            raise ValueError("this node's key is not the lone genesis validator")
        self.store = ChainStore(
            home.data, config.lmdb_map_size_bytes, config.lmdb_map_size_max_bytes
        )
        self.store.init_genesis(genesis)
        # Every validator set the chain has had: a node whose key is in none of them yet
        # follows the chain (it validates and commits blocks, and signs nothing) until
        # governance adds it.
        with self.store.snapshot() as snapshot:
            stored = snapshot.scan(VALIDATORS, b"", sys.maxsize)
        self.schedule = ValidatorSchedule.of(genesis, stored)
        self.membership = self._membership()
        self.app = Application(
            self.chain_id,
            config.expiry_horizon_blocks,
            min_challenge_blocks=genesis.min_challenge_blocks,
            permissioned=genesis.permissioned,
        )
        if not genesis.permissioned:
            log.warning("open chain: the genesis names no organisation, so anyone may submit")
        self.mempool = Mempool(
            config.mempool_txs_max,
            config.mempool_bytes_max,
            config.mempool_signer_txs_max,
            config.mempool_organisation_txs_max,
        )
        self.head_time_ms = self._stored_head_time()
        # Taken from the mempool, not yet durable: still answers resubmissions.
        self.in_flight: dict[bytes, PendingTx] = {}
        self.new_block = asyncio.Condition()
        self._producer: asyncio.Task[None] | None = None
        self.on_admitted: Callable[[list[envelope_pb2.SignedTransaction]], None] | None = None
        self._stopping = False
        # Judged once per admitted batch, not per transaction: the clock, the next
        # height, and why storage refuses ordinary and time-critical transactions.
        self._now_ms = 0
        self._next_height = 0
        self._storage_refusal: tuple[Rejected | None, Rejected | None] = (None, None)
        # Signers admitted since the last commit: organisation, and until when it holds.
        self._submitters: dict[bytes, tuple[str, int]] = {}
        # When the TLS certificate the listeners present expires (Unix ms; 0: clear text).
        self.tls_expires_ms = 0

    @property
    def head(self) -> Head:
        return self.store.head

    def _membership(self) -> Membership:
        with self.store.snapshot() as snapshot:
            stored = snapshot.scan(ORGANISATIONS, b"", sys.maxsize)
        return Membership(state_pb2.Organisation.FromString(value) for _, value in stored)

    def runs(self, height: int, public_key: bytes) -> str | None:
        """The organisation that runs validator `public_key` at `height` (None: not a
        validator there)."""
        return self.schedule.organisation_of(height, public_key)

    def validators_at(self, height: int) -> ValidatorSet:
        """The set that validates the block at `height` (known up to head + 2)."""
        return self.schedule.set_at(height)

    @property
    def validators(self) -> ValidatorSet:
        """The set of the next height."""
        return self.schedule.set_at(self.head.height + 1)

    def _stored_head_time(self) -> int:
        height = self.store.head.height
        if height == 0:
            return self.genesis.genesis_time_ms
        block = self.store.block(height)
        assert block is not None, "the head block is stored with the head"
        return envelope_pb2.Block.FromString(block).header.time_unix_ms

    # ----------------------------------------------------------------- admission

    def submit(
        self, txs: Sequence[envelope_pb2.SignedTransaction], *, gossip: bool = True
    ) -> list[Admitted]:
        """Admits a batch: decode, one Rust batch verification, application checks,
        idempotency, mempool. One answer per transaction, in order. Transactions new to
        the mempool are handed to `on_admitted` (peer gossip) unless `gossip` is off; a
        peer's gossip has no client waiting, so no receipt future is made for it."""
        return self.admit_prepared(self.prepare(txs), gossip=gossip)

    def storage_full(
        self, fraction: float = STORAGE_FULL_FRACTION, usage: tuple[int, int] | None = None
    ) -> Rejected | None:
        """Why new transactions are refused while the chain's storage is past `fraction`
        of its capacity (`ChainStore.usage`): a block that no longer fits would stop this
        node (health NOT_SERVING, exit 1), so clients hear it first, naming the storage;
        None while there is room.
        Time-critical transactions (a payee's challenge) are let in up to a higher
        fraction: a dispute must not be lost to a nearly full disk."""
        used, size = usage or self.store.usage()
        if used <= size * fraction:
            return None
        return Rejected(
            "RESOURCE_EXHAUSTED",
            "storage",
            f"the ledger's storage is {used * 100 // size}% full ({used:,} of {size:,} "
            "bytes, the smaller of lmdb_map_size_max_bytes and what the disk can hold); "
            "the operator must raise lmdb_map_size_max_bytes or free disk",
        )

    def prepare(self, txs: Sequence[envelope_pb2.SignedTransaction]) -> PreparedBatch:
        """The stateless part of admission: sizes, decoding, and one Rust call for the
        canonical encodings, hashes and signature verdicts. It touches no node state, so
        it may run off the event loop (a peer's gossip does)."""
        answers: list[Admitted | None] = [None] * len(txs)
        decoded: list[tuple[int, tx_pb2.TransactionBody]] = []
        for i, tx in enumerate(txs):
            size = tx.ByteSize()
            if size > TX_BYTES_MAX:
                reason = f"{size} bytes exceeds TX_BYTES_MAX {TX_BYTES_MAX}"
                answers[i] = Admitted(
                    refused_at_admission(Rejected("RESOURCE_EXHAUSTED", "tx", reason))
                )
                continue
            try:
                body = tx_pb2.TransactionBody.FromString(tx.body)
            except ProtobufDecodeError:
                rejected = Rejected("INVALID_ARGUMENT", "tx.body", "not a TransactionBody")
                answers[i] = Admitted(refused_at_admission(rejected))
                continue
            decoded.append((i, body))

        # One Rust call for the batch: canonical encoding (the Merkle leaf), both hashes,
        # and the signature verdicts.
        prepared = admit_batch(
            self.chain_id,
            [txs[i].body for i, _ in decoded],
            [txs[i].public_key for i, _ in decoded],
            [txs[i].signature for i, _ in decoded],
        )
        return PreparedBatch(txs, answers, decoded, prepared)

    def admit_prepared(self, batch: PreparedBatch, *, gossip: bool = True) -> list[Admitted]:
        """The stateful part of admission, on the event loop: application checks,
        idempotency against the chain and the mempool, and the mempool itself."""
        txs, answers, decoded, prepared = batch.txs, batch.answers, batch.decoded, batch.prepared
        added_before = self.mempool.added
        next_height = self._next_height = self.head.height + 1
        usage = self.store.usage()
        self._storage_refusal = (
            self.storage_full(STORAGE_FULL_FRACTION, usage),
            self.storage_full(URGENT_STORAGE_FULL_FRACTION, usage),
        )
        # What credentials are judged against at admission: the clock, never behind the
        # head block (the block that commits them is later still).
        self._now_ms = max(int(time.time() * 1000), self.head_time_ms)
        with self.store.snapshot() as snapshot:  # one read transaction for the batch
            for (i, body), (encoded, tx_hash, body_hash, valid) in zip(
                decoded, prepared, strict=True
            ):
                try:
                    if not valid:
                        raise Rejected(
                            "INVALID_ARGUMENT",
                            "tx.signature",
                            "does not verify for tx.public_key over this chain's tx domain",
                        )
                    self.app.check_tx(body, next_height, txs[i].public_key)
                    answers[i] = self._admit(
                        snapshot, txs[i], body, (encoded, tx_hash, body_hash), wait=gossip
                    )
                except Rejected as rejected:
                    answers[i] = Admitted(refused_at_admission(rejected, body.tx_id, tx_hash))
        assert all(answer is not None for answer in answers)
        if gossip and self.on_admitted is not None and self.mempool.added != added_before:
            self.on_admitted([p.tx for p in self.mempool.newest(self.mempool.added - added_before)])
        return [answer for answer in answers if answer is not None]

    def _admit(
        self,
        snapshot: Snapshot,
        tx: envelope_pb2.SignedTransaction,
        body: tx_pb2.TransactionBody,
        hashed: tuple[bytes, bytes, bytes],
        *,
        wait: bool,
    ) -> Admitted:
        encoded, tx_hash, body_hash = hashed
        raw = snapshot.get("txs", body.tx_id)
        if raw is not None:
            record = state_pb2.TxRecord.FromString(raw)
            if record.body_hash != body_hash:
                raise Rejected(
                    "ALREADY_EXISTS", "body.tx_id", "used by another committed transaction"
                )
            return Admitted(committed_receipt(body.tx_id, record))
        known = self.in_flight.get(body.tx_id) or self.mempool.get(body.tx_id)
        if known is not None:
            if known.body_hash != body_hash:
                raise Rejected(
                    "ALREADY_EXISTS", "body.tx_id", "used by another pending transaction"
                )
            waiter = known.wait() if wait else None
            return Admitted(pending=waiter, tx_id=body.tx_id, tx_hash=tx_hash)
        try:
            organisation = self._submitter(snapshot, tx.public_key)
        except Rejected:
            # A record's custodian may always erase it, member or no longer.
            held = (
                queries.record(snapshot, body.erase_record.record_id)
                if body.WhichOneof("kind") == "erase_record"
                else None
            )
            if held is None or held.custodian != tx.public_key:
                raise
            organisation = ""
        pending = PendingTx(tx, body, encoded, tx_hash, body_hash)
        urgent = time_critical(snapshot, body, tx.public_key, self._next_height, self.chain_id)
        full = self._storage_refusal[urgent != NOT_URGENT]
        if full is not None:
            raise full
        self.mempool.add(pending, urgent=urgent, organisation=organisation)
        waiter = pending.wait() if wait else None
        return Admitted(pending=waiter, tx_id=body.tx_id, tx_hash=tx_hash)

    def _submitter(self, snapshot: Snapshot, signer: bytes) -> str:
        """The signer's organisation if it may submit now (PERMISSION_DENIED otherwise):
        looked up once per signer between commits, since only a commit changes who is
        a member (an answer also lapses when the roles behind it expire)."""
        known = self._submitters.get(signer)
        if known is not None and self._now_ms < known[1]:
            return known[0]
        organisation, until = self.app.submitter(snapshot, signer, self._now_ms)
        self._submitters[signer] = (organisation, until)
        return organisation

    def pending_receipt(self, tx_id: bytes) -> tx_pb2.Receipt | None:
        known = self.in_flight.get(tx_id) or self.mempool.get(tx_id)
        if known is None:
            return None
        return tx_pb2.Receipt(tx_id=tx_id, tx_hash=known.tx_hash, status=tx_pb2.TX_STATUS_PENDING)

    # ---------------------------------------------------------- block production

    def start(self) -> None:
        """A lone validator produces blocks itself; otherwise a consensus driver decides
        them and calls `commit_block`."""
        if self.solo:
            self._producer = asyncio.create_task(self._produce_blocks(), name="block-producer")

    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-lived tasks this node runs (for the process's supervisor)."""
        return [self._producer] if self._producer is not None else []

    async def stop(self) -> None:
        self._stopping = True
        if self._producer is not None:
            self._producer.cancel()
            # A producer that failed has been reported by the supervisor already.
            await asyncio.gather(self._producer, return_exceptions=True)
        self.store.close()

    async def _produce_blocks(self) -> None:
        interval_s = self.config.block_interval_ms / 1000
        while not self._stopping:
            await self.mempool.not_empty.wait()
            # Let a block fill for one interval unless it is already full.
            if len(self.mempool) < self.config.block_txs_max:
                await asyncio.sleep(interval_s)
            batch = self.mempool.take(self.config.block_txs_max, self.config.block_tx_bytes_max)
            if batch:
                await self._commit_batch(batch, int(time.time() * 1000))

    async def _commit_batch(self, batch: list[PendingTx], now_ms: int) -> None:
        height = self.head.height + 1
        prepared = self.app.prepare_proposal(height, batch)
        for pending, refusal in prepared.refused:
            pending.resolve(rejected_receipt(refusal, pending.tx_id, pending.tx_hash))
        batch = prepared.txs
        if not batch:
            return
        for pending in batch:
            self.in_flight[pending.tx_id] = pending
        try:
            proposed = propose_block(self, height, batch, now_ms)
            commit = make_commit(
                chain_id=self.chain_id,
                header=proposed.header_message,
                round=0,
                signers=[(0, self.key)],
            )
            await self.commit_block(proposed.value, commit.SerializeToString(), list(batch))
        except Exception:
            log.exception("block %d failed; its transactions are refused", height)
            for pending in batch:
                failure = Rejected("UNAVAILABLE", "block", f"block {height} could not be committed")
                pending.resolve(rejected_receipt(failure, pending.tx_id, pending.tx_hash))
            raise
        finally:
            for pending in batch:
                self.in_flight.pop(pending.tx_id, None)

    async def commit_block(
        self, block_bytes: bytes, commit_bytes: bytes, entries: list[TxEntry] | None = None
    ) -> None:
        """Makes a decided block durable: Rust validation with its commit certificate,
        the application, one LMDB write transaction. `entries` are the block's
        transactions as this node already decoded and verified them; without them the
        block is decoded here and every signature is verified."""
        started = time.perf_counter()
        head = self.head
        height = head.height + 1
        if entries is None:
            entries = self.block_entries(block_bytes)
            verified = [e.tx_hash for e in entries if e.checked]
        else:
            verified = [e.tx_hash for e in entries]
        validated = await asyncio.to_thread(
            validate_block,
            block_bytes,
            commit_bytes,
            chain_id=self.chain_id,
            height=height,
            parent_hash=head.block_hash,
            validators=self.validators_at(height),
            next_validators=self.validators_at(height + 1),
            app_hash=head.app_hash,
            verified_tx_hashes=verified,
        )
        with self.store.snapshot() as snapshot:
            result = self.app.finalize_block(
                height,
                head.app_hash,
                snapshot,
                [(e.signer, e.body) for e in entries],
                time_ms=validated.time_unix_ms,
                checked=[e.checked for e in entries],
            )
        block = self.app.commit(height, entries, result)
        # The set this block schedules (for height + 2) is known before the head moves:
        # peer messages are verified while the commit runs in its thread, against the set
        # of head + 2, which must never be read stale. (Block `height` is decided, so
        # whatever it schedules is what the chain will hold even if this write fails.)
        if self.schedule.updates_in(result.writes):
            log.info("validator set changes at height %d", height + 2)
        write_started = time.perf_counter()
        await asyncio.to_thread(
            self.store.commit_block,
            height=height,
            block=block_bytes,
            commit=commit_bytes,
            block_hash=validated.block_hash,
            app_hash=block.app_hash,
            tx_index=block.tx_index,
            writes=block.writes,
        )
        done = time.perf_counter()
        parent_time_ms, self.head_time_ms = self.head_time_ms, validated.time_unix_ms
        if any(table == ORGANISATIONS for table, _, _ in result.writes):
            self.membership = self._membership()  # trust follows governance
        self._submitters.clear()  # the block may have issued or revoked roles
        # Now durable: whoever waits for these transactions, wherever they were admitted,
        # gets a receipt (built only for transactions someone waits on).
        for entry, record in zip(entries, block.records, strict=True):
            pending = self.in_flight.pop(entry.tx_id, None) or self.mempool.remove(entry.tx_id)
            if pending is not None and pending.waiters:
                pending.resolve(committed_receipt(entry.tx_id, record))
        async with self.new_block:
            self.new_block.notify_all()
        log.info("committed block %d with %d transactions", height, len(entries))
        try:  # counted once the block is durable and announced: metrics never undo that
            self._count_block(
                height, entries, commit_bytes, validated.time_unix_ms - parent_time_ms
            )
            BLOCK_FSYNC_SECONDS.observe(done - write_started)
            BLOCK_COMMIT_SECONDS.observe(done - started)
        except Exception:
            log.exception("counting block %d in the metrics failed", height)

    def _count_block(
        self, height: int, entries: Sequence[TxEntry], commit_bytes: bytes, interval_ms: int
    ) -> None:
        """Metrics of a committed block: its transactions, its interval, and the
        validators of its height whose precommit its certificate lacks."""
        BLOCKS_COMMITTED.inc()
        TRANSACTIONS_COMMITTED.inc(len(entries))
        BLOCK_TRANSACTIONS.observe(len(entries))
        BLOCK_INTERVAL_SECONDS.observe(max(0, interval_ms) / 1000)
        signed = {
            s.validator_index
            for s in envelope_pb2.CommitCertificate.FromString(commit_bytes).signatures
        }
        for index, (key, _) in enumerate(self.validators_at(height).members()):
            if index not in signed:
                MISSED_BLOCKS.labels(validator=validator_label(key)).inc()

    def block_entries(self, block_bytes: bytes) -> list[TxEntry]:
        """A block's transactions (see `block_entries`), with this node's mempool."""
        return block_entries(block_bytes, self.mempool.by_hash)

    def admitted(self, tx_hash: bytes) -> PendingTx | None:
        """A transaction in this node's mempool, by the hash of its canonical encoding."""
        return self.mempool.by_hash(tx_hash)

    def any_committed(self, tx_ids: Sequence[bytes]) -> bool:
        with self.store.snapshot() as snapshot:
            return any(snapshot.get("txs", tx_id) is not None for tx_id in tx_ids)

    def candidates(self, height: int, count_max: int, bytes_max: int) -> list[PendingTx]:
        """The mempool's next transactions for a proposal at `height`; those that expired
        meanwhile leave the mempool, and whoever waits on them hears why."""
        prepared = self.app.prepare_proposal(height, self.mempool.peek(count_max, bytes_max))
        for candidate, refusal in prepared.refused:
            self.mempool.remove(candidate.tx_id)
            candidate.resolve(rejected_receipt(refusal, candidate.tx_id, candidate.tx_hash))
        return prepared.txs

    # ------------------------------------------------------------------- queries

    def status(self) -> ledger_pb2.GetStatusResponse:
        head = self.head
        return ledger_pb2.GetStatusResponse(
            chain_id=self.chain_id,
            height=head.height,
            last_block_hash=head.block_hash,
            app_hash=head.app_hash,
            mempool_txs=len(self.mempool),
            mempool_bytes=self.mempool.size_bytes,
            version=__version__,
            validator_public_key=self.key.public_key,
            committed_txs=head.committed_txs,
            tls_certificate_expires_unix_ms=self.tls_expires_ms,
        )
