"""Enrolling keys: an organisation's admin issues roles to its people's and systems' keys
(`IssueCredential`), the only way a key comes to submit transactions on a permissioned
chain or to act in a role."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from medledger.app.members import enrolment_message
from medledger.client.sync import LedgerClient
from medledger.crypto import SigningKey
from medledger.tx import TxBuilder
from medledger.wire.v1 import tx_pb2

__all__ = ["DEFAULT_VALIDITY_MS", "EnrolmentError", "enrol", "enrolment_signature"]

DEFAULT_VALIDITY_MS = 365 * 24 * 60 * 60 * 1000
"""How long a role issued by `enrol` lasts unless told otherwise: a year."""
EXPIRY_BLOCKS = 1_000


class EnrolmentError(Exception):
    """A credential was not committed with an OK result; the message says which and why."""


def enrolment_signature(subject: SigningKey, chain_id: str, organisation: str) -> bytes:
    """`subject`'s agreement to be enrolled by `organisation` (its first credential
    carries it; `medledger member agree` prints it for an admin to use)."""
    return subject.sign(enrolment_message(chain_id, organisation))


def enrol(
    client: LedgerClient,
    admin: SigningKey,
    organisation: str,
    roles: Mapping[SigningKey, Iterable[int]],
    *,
    valid_for_ms: int = DEFAULT_VALIDITY_MS,
) -> None:
    """As `admin` of `organisation`, issues each key its roles (with the key's own
    agreement to join) and waits until every credential is committed. Raises
    EnrolmentError naming the first one refused."""
    status = client.status()
    builder = TxBuilder(admin, status.chain_id)
    expires_ms = int(time.time() * 1000) + valid_for_ms
    txs = [
        builder.issue_credential(
            subject=subject.public_key,
            role=role,
            organisation=organisation,
            expires_ms=expires_ms,
            expiry_height=status.height + EXPIRY_BLOCKS,
            subject_signature=enrolment_signature(subject, status.chain_id, organisation),
        )
        for subject, held in roles.items()
        for role in held
    ]
    receipts = [client.submit(tx, wait=False) for tx in txs]
    for tx, receipt in zip(txs, receipts, strict=True):
        if receipt.status == tx_pb2.TX_STATUS_REJECTED:
            raise EnrolmentError(f"credential refused at admission: {receipt.message}")
        committed = client.wait_for_commit(receipt.tx_id)
        if committed.code != tx_pb2.RESULT_CODE_OK:
            body = tx_pb2.TransactionBody.FromString(tx.body)
            issued = body.issue_credential
            why = committed.message or tx_pb2.ResultCode.Name(committed.code)
            raise EnrolmentError(
                f"credential for {issued.subject.hex()} ({tx_pb2.Role.Name(issued.role)}): {why}"
            )
