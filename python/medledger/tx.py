"""Building and signing transactions: the envelope every client submits, and `TxBuilder`
for every kind of body. It sits in the core so that the SDK, the vault, the hub and the
node's channel watcher all reach it without depending on one another."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from medledger.crypto import SigningKey, tx_signing_message
from medledger.wire.v1 import channels_pb2, envelope_pb2, records_pb2, tx_pb2

__all__ = ["CHANNEL_ID_BYTES", "TX_ID_BYTES", "TxBuilder", "new_tx_id", "sign_transaction"]

CHANNEL_ID_BYTES = 16
"""A channel's id (rust/core `channel::CHANNEL_ID_LEN`)."""


def sign_transaction(key: SigningKey, chain_id: str, body: bytes) -> envelope_pb2.SignedTransaction:
    """Signs an encoded transaction body for `chain_id` (domain-separated)."""
    return envelope_pb2.SignedTransaction(
        body=body,
        public_key=key.public_key,
        signature=key.sign(tx_signing_message(chain_id, body)),
    )


TX_ID_BYTES = 16


def new_tx_id() -> bytes:
    """A fresh random 128-bit transaction id."""
    return secrets.token_bytes(TX_ID_BYTES)


class TxBuilder:
    """Signs transactions of every kind with one key for one chain."""

    def __init__(self, key: SigningKey, chain_id: str) -> None:
        self.key = key
        self.chain_id = chain_id

    def sign(
        self, body: tx_pb2.TransactionBody, *, expiry_height: int, tx_id: bytes | None = None
    ) -> envelope_pb2.SignedTransaction:
        body.chain_id = self.chain_id
        body.tx_id = tx_id if tx_id is not None else new_tx_id()
        body.expiry_height = expiry_height
        return sign_transaction(self.key, self.chain_id, body.SerializeToString(deterministic=True))

    def transfer(
        self,
        *,
        to: bytes,
        amount_micros: int,
        expiry_height: int,
        reference: str = "",
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        body = tx_pb2.TransactionBody(
            transfer=tx_pb2.Transfer(to=to, amount_micros=amount_micros, reference=reference)
        )
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def create_account(
        self, *, expiry_height: int, tx_id: bytes | None = None
    ) -> envelope_pb2.SignedTransaction:
        body = tx_pb2.TransactionBody(create_account=tx_pb2.CreateAccount())
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def register_participant(
        self,
        *,
        kind: tx_pb2.ParticipantKind.ValueType,
        role: tx_pb2.Role.ValueType,
        display_name: str,
        expiry_height: int,
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        body = tx_pb2.TransactionBody(
            register_participant=tx_pb2.RegisterParticipant(
                kind=kind, role=role, display_name=display_name
            )
        )
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def issue_credential(
        self,
        *,
        subject: bytes,
        role: tx_pb2.Role.ValueType | int,
        organisation: str,
        expires_ms: int,
        expiry_height: int,
        subject_signature: bytes = b"",
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        """As an admin of `organisation`: `subject` holds `role` until `expires_ms`. A key
        no organisation enrolled yet must agree: `subject_signature` is its
        `client.members.enrolment_signature`."""
        body = tx_pb2.TransactionBody(
            issue_credential=tx_pb2.IssueCredential(
                subject=subject,
                role=role,  # type: ignore[arg-type]
                organisation=organisation,
                expires_ms=expires_ms,
                subject_signature=subject_signature,
            )
        )
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def revoke_credential(
        self,
        *,
        subject: bytes,
        role: tx_pb2.Role.ValueType | int,
        expiry_height: int,
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        body = tx_pb2.TransactionBody(
            revoke_credential=tx_pb2.RevokeCredential(subject=subject, role=role)  # type: ignore[arg-type]
        )
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def grant_consent(
        self,
        *,
        grantee: bytes,
        purposes: Sequence[records_pb2.Purpose.ValueType],
        valid_from_ms: int,
        valid_until_ms: int,
        expiry_height: int,
        deny: bool = False,
        resource_types: Sequence[str] = (),
        categories: Sequence[str] = (),
        security_labels: Sequence[str] = (),
        record_ids: Sequence[bytes] = (),
        consent_id: bytes | None = None,
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        """A consent by this key's holder (the patient) for `grantee` to read."""
        decision = (
            records_pb2.CONSENT_DECISION_DENY if deny else records_pb2.CONSENT_DECISION_PERMIT
        )
        grant = records_pb2.GrantConsent(
            consent_id=consent_id if consent_id is not None else new_tx_id(),
            patient=self.key.public_key,
            grantee=grantee,
            decision=decision,
            actions=[records_pb2.CONSENT_ACTION_READ],
            purposes=purposes,
            scope=records_pb2.ConsentScope(
                resource_types=resource_types,
                categories=categories,
                security_labels=security_labels,
                record_ids=record_ids,
            ),
            valid_from_ms=valid_from_ms,
            valid_until_ms=valid_until_ms,
        )
        body = tx_pb2.TransactionBody(grant_consent=grant)
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def revoke_consent(
        self,
        *,
        consent_id: bytes,
        expiry_height: int,
        reason: records_pb2.RevocationReason.ValueType = (
            records_pb2.REVOCATION_REASON_PATIENT_WITHDREW
        ),
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        """The patient revokes a consent; `reason` is a code (no free text on chain)."""
        revoke = records_pb2.RevokeConsent(
            consent_id=consent_id, patient=self.key.public_key, reason=reason
        )
        return self.sign(
            tx_pb2.TransactionBody(revoke_consent=revoke), expiry_height=expiry_height, tx_id=tx_id
        )

    # ------------------------------------------------------------ micropayment channels

    def open_channel(
        self,
        *,
        payee: bytes,
        deposit_micros: int,
        challenge_blocks: int,
        expiry_height: int,
        channel_id: bytes | None = None,
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        """A channel from this key's holder (the payer) to `payee`. Without `channel_id` a
        random one is chosen; it is in the body (`open_channel.channel_id`)."""
        open_channel = channels_pb2.OpenChannel(
            channel_id=channel_id
            if channel_id is not None
            else secrets.token_bytes(CHANNEL_ID_BYTES),
            payee=payee,
            deposit_micros=deposit_micros,
            challenge_blocks=challenge_blocks,
        )
        body = tx_pb2.TransactionBody(open_channel=open_channel)
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def top_up_channel(
        self,
        *,
        channel_id: bytes,
        amount_micros: int,
        expiry_height: int,
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        top_up = channels_pb2.TopUpChannel(channel_id=channel_id, amount_micros=amount_micros)
        body = tx_pb2.TransactionBody(top_up_channel=top_up)
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def close_channel(
        self,
        *,
        state: channels_pb2.SignedChannelState,
        expiry_height: int,
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        """A cooperative close with a final `state` both parties signed."""
        body = tx_pb2.TransactionBody(close_channel=channels_pb2.CloseChannel(state=state))
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def force_close_channel(
        self,
        *,
        channel_id: bytes,
        expiry_height: int,
        state: channels_pb2.SignedChannelState | None = None,
        preimages: Sequence[bytes] = (),
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        """A unilateral close with the latest `state` both signed (None: state 0)."""
        force_close = channels_pb2.ForceCloseChannel(
            channel_id=channel_id, state=state, preimages=preimages
        )
        body = tx_pb2.TransactionBody(force_close_channel=force_close)
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def challenge_channel(
        self,
        *,
        state: channels_pb2.SignedChannelState,
        expiry_height: int,
        preimages: Sequence[bytes] = (),
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        challenge = channels_pb2.ChallengeChannel(state=state, preimages=preimages)
        body = tx_pb2.TransactionBody(challenge_channel=challenge)
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)

    def settle_channel(
        self,
        *,
        channel_id: bytes,
        expiry_height: int,
        preimages: Sequence[bytes] = (),
        tx_id: bytes | None = None,
    ) -> envelope_pb2.SignedTransaction:
        settle = channels_pb2.SettleChannel(channel_id=channel_id, preimages=preimages)
        body = tx_pb2.TransactionBody(settle_channel=settle)
        return self.sign(body, expiry_height=expiry_height, tx_id=tx_id)
