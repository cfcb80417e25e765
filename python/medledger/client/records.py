"""The records SDK: store a resource in a custodian's vault, fetch one as a grantee
(decrypted and checked against its on-chain commitment), erase, and read the consent and
access-audit state."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medledger.client.errors import translated_errors
from medledger.client.reads import sign_read
from medledger.client.sync import DEFAULT_TIMEOUT_S
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.transport.credentials import FROM_ENVIRONMENT, Transport, sync_channel
from medledger.transport.grpc_common import channel_options
from medledger.vault import envelope
from medledger.vault.requests import sign_request
from medledger.wire.v1 import records_pb2, records_pb2_grpc

__all__ = ["FetchedRecord", "RecordsClient", "fetch_request", "open_fetched"]


@dataclass(frozen=True)
class FetchedRecord:
    record_id: bytes
    version: int
    content: bytes
    commitment: bytes
    access: records_pb2.AccessEvent


def fetch_request(
    requester: bytes,
    record_id: bytes,
    *,
    purpose: records_pb2.Purpose.ValueType,
    version: int = 0,
    emergency_reason: str = "",
) -> tuple[records_pb2.FetchRequest, X25519PrivateKey]:
    """An unsigned fetch request and the fresh X25519 key its data key is wrapped for."""
    recipient = X25519PrivateKey.generate()
    request = records_pb2.FetchRequest(
        record_id=record_id,
        version=version,
        requester=requester,
        purpose=purpose,
        recipient_key=recipient.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        emergency_reason=emergency_reason,
    )
    return request, recipient


def open_fetched(response: records_pb2.FetchResponse, recipient: X25519PrivateKey) -> bytes:
    """The content of a fetch response: data key unwrapped, body decrypted and checked
    against the commitment the response names."""
    data_key, salt = envelope.unwrap_key(
        response.wrapped_key, recipient, response.record_id, response.version
    )
    content = envelope.open_body(
        data_key, response.record_id, response.version, response.commitment, response.ciphertext
    )
    if envelope.commitment(salt, content) != response.commitment:
        raise Rejected("DATA_LOSS", "commitment", "the content does not match its anchor")
    return content


class RecordsClient:
    """RecordService and VaultService of one node. Every call has a deadline; refusals
    raise `Rejected` (PERMISSION_DENIED for a consent refusal)."""

    def __init__(
        self,
        target: str,
        chain_id: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tls: Transport = FROM_ENVIRONMENT,
    ) -> None:
        self.chain_id = chain_id
        self.timeout_s = timeout_s
        self._channel = sync_channel(target, tls, channel_options())
        self._records = records_pb2_grpc.RecordServiceStub(self._channel)
        self._vault = records_pb2_grpc.VaultServiceStub(self._channel)

    def __enter__(self) -> RecordsClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._channel.close()

    # ----------------------------------------------------------------- the vault

    def put(
        self,
        custodian: SigningKey,
        *,
        patient: bytes,
        resource_type: str,
        content: bytes,
        category: str = "",
        security_labels: tuple[str, ...] = (),
        record_id: bytes = b"",
    ) -> records_pb2.PutRecordResponse:
        request = records_pb2.PutRecordRequest(
            patient=patient,
            resource_type=resource_type,
            category=category,
            security_labels=security_labels,
            content=content,
            record_id=record_id,
            custodian=custodian.public_key,
        )
        with translated_errors():
            return self._vault.Put(
                sign_request(request, custodian, self.chain_id), timeout=self.timeout_s
            )

    def fetch(
        self,
        requester: SigningKey,
        record_id: bytes,
        *,
        purpose: records_pb2.Purpose.ValueType,
        version: int = 0,
        emergency_reason: str = "",
    ) -> FetchedRecord:
        """Fetches, unwraps the data key with a fresh X25519 key, decrypts, and checks the
        content against the commitment anchored on the ledger."""
        request, recipient = fetch_request(
            requester.public_key,
            record_id,
            purpose=purpose,
            version=version,
            emergency_reason=emergency_reason,
        )
        with translated_errors():
            response = self._vault.Fetch(
                sign_request(request, requester, self.chain_id), timeout=self.timeout_s
            )
        content = open_fetched(response, recipient)
        anchored = self.record(record_id, requester).versions
        if not any(
            v.version == response.version and v.commitment == response.commitment for v in anchored
        ):
            raise Rejected("DATA_LOSS", "commitment", "differs from the one on the ledger")
        return FetchedRecord(
            response.record_id, response.version, content, response.commitment, response.access
        )

    def erase(
        self,
        custodian: SigningKey,
        record_id: bytes,
        reason: records_pb2.ErasureReason.ValueType = records_pb2.ERASURE_REASON_PATIENT_REQUEST,
    ) -> records_pb2.EraseResponse:
        request = records_pb2.EraseRequest(
            record_id=record_id, reason=reason, custodian=custodian.public_key
        )
        with translated_errors():
            return self._vault.Erase(
                sign_request(request, custodian, self.chain_id), timeout=self.timeout_s
            )

    def reviews(self, requester: SigningKey) -> list[tuple[records_pb2.AccessEvent, str, bytes]]:
        """The vault's break-glass review queue, as its custodian or one of its
        organisation's auditors: each release with the clinician's words and their salt
        (SHA-256(salt || words) is the hash on the chain; "" once erased)."""
        request = records_pb2.ListReviewsRequest(requester=requester.public_key)
        with translated_errors():
            response = self._vault.ListReviews(
                sign_request(request, requester, self.chain_id), timeout=self.timeout_s
            )
        return list(
            zip(
                response.events,
                response.emergency_reasons,
                response.emergency_reason_salts,
                strict=True,
            )
        )

    # ------------------------------------------------------------------- queries

    def record(self, record_id: bytes, reader: SigningKey) -> records_pb2.GetRecordResponse:
        """A record's anchors, read as `reader` (its patient, custodian, a grantee of the
        patient, or an auditor; anyone else hears NOT_FOUND)."""
        request = sign_read(
            records_pb2.GetRecordRequest(record_id=record_id), reader, self.chain_id
        )
        with translated_errors():
            return self._records.GetRecord(request, timeout=self.timeout_s)

    def consents(self, patient: bytes, reader: SigningKey) -> list[records_pb2.ConsentState]:
        """A patient's consents as `reader` sees them (a grantee: those naming it)."""
        request = sign_read(records_pb2.ListConsentsRequest(patient=patient), reader, self.chain_id)
        with translated_errors():
            response = self._records.ListConsents(request, timeout=self.timeout_s)
        return list(response.consents)

    def access_events(self, patient: bytes, reader: SigningKey) -> list[records_pb2.AccessEvent]:
        """A patient's access log as `reader` sees it (a custodian or requester: its own
        part)."""
        request = sign_read(
            records_pb2.ListAccessEventsRequest(patient=patient), reader, self.chain_id
        )
        with translated_errors():
            response = self._records.ListAccessEvents(request, timeout=self.timeout_s)
        return list(response.events)
