"""The vault's behaviour, apart from gRPC: store and anchor, consent-checked release,
crypto-shredding. Every answer to a fetch of a known record — release or refusal — is
first committed on the ledger as an access event; no key leaves without its audit."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass

from medledger.app import queries
from medledger.app.consent import decide
from medledger.app.records import ERASURE_REASONS, RECORD_ID_BYTES
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.metrics import VAULT_BREAK_GLASS, VAULT_FETCHES
from medledger.node.ledger_node import LedgerNode
from medledger.tx import TxBuilder
from medledger.vault import envelope
from medledger.vault.requests import check_request
from medledger.vault.store import SlotTaken, VaultStore
from medledger.wire.v1 import records_pb2, tx_pb2

__all__ = ["CONTENT_BYTES_MAX", "Vault"]

log = logging.getLogger(__name__)

CONTENT_BYTES_MAX = 1024 * 1024
"""Largest record body the vault stores."""
COMMIT_WAIT_S = 30.0
EMERGENCY_REASON_BYTES_MAX = 256
"""Longest break-glass declaration (kept in the vault, shown in its review queue)."""
STRANGER_FETCHES_PER_MINUTE = 60
"""Fetches by keys no member enrolled that are decided (refused) and audited per minute;
more are refused without touching the ledger."""
EXPIRY_BLOCKS = 100


def _check_record_id(record_id: bytes) -> None:
    if len(record_id) != RECORD_ID_BYTES:
        raise Rejected(
            "INVALID_ARGUMENT",
            "record_id",
            f"must be {RECORD_ID_BYTES} bytes, got {len(record_id)}",
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Stored:
    record_id: bytes
    version: int
    commitment: bytes
    tx_id: bytes
    height: int


class Vault:
    def __init__(self, node: LedgerNode, custodian: SigningKey, store: VaultStore) -> None:
        self.node = node
        self.custodian = custodian
        self.store = store
        self.builder = TxBuilder(custodian, node.chain_id)
        self._stranger_fetches: deque[int] = deque()  # times of fetches by non-members
        self.reconcile()  # a crash may have left a version stored but never anchored

    async def _commit(self, body: tx_pb2.TransactionBody) -> tx_pb2.Receipt:
        """Signs `body` as the custodian, submits it to this node and waits for it to be
        committed; raises UNAVAILABLE when it is not."""
        tx = self.builder.sign(body, expiry_height=self.node.head.height + EXPIRY_BLOCKS)
        (admitted,) = self.node.submit([tx])
        try:
            receipt = await admitted.result(COMMIT_WAIT_S)
        except TimeoutError:
            raise Rejected("UNAVAILABLE", "ledger", "not committed in time") from None
        if receipt.status != tx_pb2.TX_STATUS_COMMITTED:
            raise Rejected("UNAVAILABLE", "ledger", f"refused: {receipt.message}")
        return receipt

    # ---------------------------------------------------------------------- put

    def _check_put(self, request: records_pb2.PutRecordRequest) -> None:
        if request.custodian != self.custodian.public_key:
            raise Rejected("PERMISSION_DENIED", "custodian", "not this vault's custodian")
        check_request(request, request.custodian, self.node.chain_id, _now_ms())
        if len(request.content) > CONTENT_BYTES_MAX:
            raise Rejected("RESOURCE_EXHAUSTED", "content", f"exceeds {CONTENT_BYTES_MAX} bytes")
        try:
            resource = json.loads(request.content)
        except ValueError:
            raise Rejected("INVALID_ARGUMENT", "content", "not JSON") from None
        if not isinstance(resource, dict) or resource.get("resourceType") != request.resource_type:
            raise Rejected(
                "INVALID_ARGUMENT", "resource_type", "differs from the content's resourceType"
            )
        if len(request.patient) != 32:
            raise Rejected("INVALID_ARGUMENT", "patient", "must be a 32-byte public key")
        if request.record_id:
            _check_record_id(request.record_id)

    async def put(self, request: records_pb2.PutRecordRequest) -> Stored:
        self._check_put(request)
        self.reconcile()
        with self.node.store.snapshot() as snapshot:
            existing = queries.record(snapshot, request.record_id) if request.record_id else None
        if request.record_id and existing is None:
            raise Rejected("NOT_FOUND", "record_id", "unknown record")
        if existing is not None:
            if existing.custodian != self.custodian.public_key:
                raise Rejected("PERMISSION_DENIED", "record_id", "held by another custodian")
            if existing.erased_height or not self.store.holds(existing.record_id):
                raise Rejected("FAILED_PRECONDITION", "record_id", "the record was erased")
            record_id, version = existing.record_id, existing.latest_version + 1
        else:
            record_id, version = os.urandom(16), 1
        # A data key of its own for every version: a key released for one opens no other.
        data_key, salt = envelope.new_data_key(), envelope.new_salt()
        commitment = envelope.commitment(salt, request.content)
        sealed = envelope.seal_body(data_key, record_id, version, commitment, request.content)
        anchor = records_pb2.AnchorRecord(
            record_id=record_id,
            version=version,
            patient=request.patient,
            commitment=commitment,
            resource_type=request.resource_type,
            category=request.category,
            security_labels=request.security_labels,
        )
        expiry_height = self.node.head.height + EXPIRY_BLOCKS
        tx = self.builder.sign(
            tx_pb2.TransactionBody(anchor_record=anchor), expiry_height=expiry_height
        )
        # Stored pending first: once the anchor can commit, the body must exist. It
        # becomes visible only when the anchor is seen committed, and is discarded if the
        # anchor is refused (or, see `reconcile`, can no longer commit).
        try:
            self.store.put_pending(
                record_id, version, (data_key, salt), sealed, (commitment, expiry_height)
            )
        except SlotTaken:
            raise Rejected(
                "ABORTED", "record_id", f"version {version} is being stored already; retry"
            ) from None
        (admitted,) = self.node.submit([tx])
        try:
            receipt = await admitted.result(COMMIT_WAIT_S)
        except TimeoutError:
            raise Rejected(
                "UNAVAILABLE", "ledger", "the anchor was not committed in time; retry later"
            ) from None
        if receipt.status != tx_pb2.TX_STATUS_COMMITTED or receipt.code != tx_pb2.RESULT_CODE_OK:
            self.store.discard(record_id, version)
            status = "FAILED_PRECONDITION" if receipt.code else "UNAVAILABLE"
            raise Rejected(status, "record_id", f"the anchor was refused: {receipt.message}")
        self.store.mark_anchored(record_id, version)
        return Stored(record_id, version, commitment, receipt.tx_id, receipt.height)

    def reconcile(self) -> int:
        """Settles versions stored pending: one whose anchor committed (with its
        commitment) becomes visible; one whose anchor can no longer commit (past its
        expiry height, and not anchored) is discarded. Returns how many were discarded.
        Run at start (a crash between storing and anchoring) and before each put."""
        discarded = 0
        for pending in self.store.pending():
            with self.node.store.snapshot() as snapshot:
                anchored = queries.record_version(snapshot, pending.record_id, pending.version)
            if anchored is not None and anchored.commitment == pending.commitment:
                self.store.mark_anchored(pending.record_id, pending.version)
            elif anchored is not None or self.node.head.height > pending.expiry_height:
                self.store.discard(pending.record_id, pending.version)
                log.warning(
                    "discarded record %s v%d: its anchor never committed",
                    pending.record_id.hex(),
                    pending.version,
                )
                discarded += 1
        return discarded

    # -------------------------------------------------------------------- fetch

    async def fetch(self, request: records_pb2.FetchRequest) -> records_pb2.FetchResponse:
        check_request(request, request.requester, self.node.chain_id, _now_ms())
        _check_record_id(request.record_id)
        if len(request.recipient_key) != 32:
            raise Rejected("INVALID_ARGUMENT", "recipient_key", "must be a 32-byte X25519 key")
        if request.purpose == records_pb2.PURPOSE_UNSPECIFIED:
            raise Rejected("INVALID_ARGUMENT", "purpose", "must be set")
        if len(request.emergency_reason.encode()) > EMERGENCY_REASON_BYTES_MAX:
            raise Rejected(
                "INVALID_ARGUMENT",
                "emergency_reason",
                f"longer than {EMERGENCY_REASON_BYTES_MAX} bytes",
            )
        now_ms = _now_ms()
        with self.node.store.snapshot() as snapshot:
            record = queries.record(snapshot, request.record_id)
            if record is None:
                raise Rejected("NOT_FOUND", "record_id", "unknown record")
            if record.custodian != self.custodian.public_key:
                raise Rejected("NOT_FOUND", "record_id", "not held by this vault")
            version = request.version or record.latest_version
            anchored = queries.record_version(snapshot, record.record_id, version)
            if anchored is None:
                raise Rejected("NOT_FOUND", "version", f"record has no version {version}")
            # A key no member enrolled is refused, and its refusal audited, only within
            # a budget: fresh keys cost nothing, and must not fill a patient's access log
            # (or the custodian organisation's quota).
            try:
                self.node.app.submitter_organisation(snapshot, request.requester, now_ms)
            except Rejected:
                self._stranger_budget(now_ms)
            roles = queries.roles(snapshot, request.requester, now_ms)
            decision = decide(
                record=record,
                requester=request.requester,
                requester_is_clinician=tx_pb2.ROLE_CLINICIAN in roles,
                purpose=request.purpose,
                consents=queries.consents(snapshot, record.patient),
                now_ms=now_ms,
                policy=queries.policy(snapshot),
                emergency_reason=request.emergency_reason,
                window=queries.break_glass_window(
                    snapshot, record.patient, self.custodian.public_key, request.requester
                ),
            )
        reason_hash = decision.emergency_reason_hash
        if decision.emergency_reason:
            # The clinician's words stay here, under erasure; the chain gets their salted
            # hash (which proves them later to whoever is shown them).
            salt = envelope.new_salt()
            reason_hash = envelope.commitment(salt, decision.emergency_reason.encode())
            self.store.put_reason(record.record_id, reason_hash, salt, decision.emergency_reason)
        access = records_pb2.RecordAccess(
            record_id=record.record_id,
            version=version,
            requester=request.requester,
            purpose=request.purpose,
            outcome=records_pb2.ACCESS_OUTCOME_RELEASED
            if decision.permitted
            else records_pb2.ACCESS_OUTCOME_REFUSED,
            reason=decision.reason,
            consent_id=decision.consent.grant.consent_id if decision.consent else b"",
            consent_version=decision.consent.version if decision.consent else 0,
            break_glass=decision.break_glass,
            emergency_reason_hash=reason_hash,
            time_ms=now_ms,
            break_glass_until_ms=decision.window_until_ms,
        )
        receipt = await self._commit(tx_pb2.TransactionBody(record_access=access))
        if receipt.code != tx_pb2.RESULT_CODE_OK:
            raise Rejected("UNAVAILABLE", "ledger", f"audit refused: {receipt.message}")
        VAULT_FETCHES.labels(outcome="released" if decision.permitted else "refused").inc()
        if not decision.permitted:
            raise Rejected("PERMISSION_DENIED", decision.field, decision.reason)
        VAULT_BREAK_GLASS.inc(int(decision.break_glass))  # a release under an emergency
        if self.store.is_pending(record.record_id, version):
            self.reconcile()  # its anchor is committed: this version is visible now
        material = self.store.key_material(record.record_id, version)
        sealed = self.store.body(record.record_id, version)
        if material is None or sealed is None:
            raise Rejected("NOT_FOUND", "record_id", "the record's key material is gone")
        data_key, salt = material
        event = records_pb2.AccessEvent(
            access=access,
            custodian=record.custodian,
            patient=record.patient,
            height=receipt.height,
            tx_id=receipt.tx_id,
        )
        return records_pb2.FetchResponse(
            record_id=record.record_id,
            version=version,
            commitment=anchored.commitment,
            ciphertext=sealed,
            wrapped_key=envelope.wrap_key(
                data_key, salt, request.recipient_key, record.record_id, version
            ),
            access=event,
        )

    def _stranger_budget(self, now_ms: int) -> None:
        """Counts a fetch from a key no member enrolled; past STRANGER_FETCHES_PER_MINUTE
        in the last minute, refuses it at once, with nothing written on the ledger."""
        recent = self._stranger_fetches
        while recent and recent[0] <= now_ms - 60_000:
            recent.popleft()
        if len(recent) >= STRANGER_FETCHES_PER_MINUTE:
            raise Rejected(
                "RESOURCE_EXHAUSTED",
                "requester",
                "not enrolled by a member organisation; too many such requests, not audited",
            )
        recent.append(now_ms)

    # ------------------------------------------------------------------- review

    def reviews(self, request: records_pb2.ListReviewsRequest) -> records_pb2.ListReviewsResponse:
        """Every break-glass release of this vault's records, for its privacy officer: the
        custodian's own key, or a key holding the auditor role from its organisation."""
        now_ms = _now_ms()
        check_request(request, request.requester, self.node.chain_id, now_ms)
        custodian = self.custodian.public_key
        with self.node.store.snapshot() as snapshot:
            if request.requester != custodian:
                own = queries.member(snapshot, custodian)
                requester = queries.member(snapshot, request.requester)
                auditor = tx_pb2.ROLE_AUDITOR in queries.roles(snapshot, request.requester, now_ms)
                if own is None or requester is None or requester.organisation != own.organisation:
                    auditor = False
                if not auditor:
                    raise Rejected(
                        "PERMISSION_DENIED",
                        "requester",
                        "neither this vault's custodian nor an auditor of its organisation",
                    )
            events = queries.break_glass_reviews(snapshot, custodian)
        held = [self.store.reason(e.access.emergency_reason_hash) for e in events]
        return records_pb2.ListReviewsResponse(
            events=events,
            emergency_reasons=[h[1] if h else "" for h in held],
            emergency_reason_salts=[h[0] if h else b"" for h in held],
        )

    # -------------------------------------------------------------------- erase

    async def erase(self, request: records_pb2.EraseRequest) -> tx_pb2.Receipt:
        if request.custodian != self.custodian.public_key:
            raise Rejected("PERMISSION_DENIED", "custodian", "not this vault's custodian")
        check_request(request, request.custodian, self.node.chain_id, _now_ms())
        _check_record_id(request.record_id)
        if request.reason not in ERASURE_REASONS:  # checked before anything is destroyed
            raise Rejected("INVALID_ARGUMENT", "reason", "must be a known erasure reason code")
        with self.node.store.snapshot() as snapshot:
            record = queries.record(snapshot, request.record_id)
        if record is None or record.custodian != self.custodian.public_key:
            raise Rejected("NOT_FOUND", "record_id", "unknown record")
        if record.erased_height:
            raise Rejected("FAILED_PRECONDITION", "record_id", "already erased")
        # Destroy first: once the key is gone no release can happen, whatever follows.
        self.store.erase(record.record_id)
        log.info("erased the key material of record %s", record.record_id.hex())
        erase = records_pb2.EraseRecord(record_id=record.record_id, reason=request.reason)
        return await self._commit(tx_pb2.TransactionBody(erase_record=erase))
