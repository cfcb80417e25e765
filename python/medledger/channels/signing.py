"""Channel states and refund offers: how they are signed and checked.

A channel state is signed by payer and payee over the same bytes, the encoded
`ChannelState` under the "channel-state" domain; a refund offer by the payee alone under
"channel-refund". The shape rules (lengths, the balance invariant) and the signature
checks run in the Rust core.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from medledger._core import check_channel_state, verify_channel_states
from medledger.crypto import SigningKey, signing_message, verify
from medledger.errors import MedledgerError
from medledger.signed_requests import sign_request
from medledger.tx import CHANNEL_ID_BYTES
from medledger.wire.v1 import channels_pb2

__all__ = [
    "CHANNEL_ID_BYTES",
    "HASH_BYTES",
    "PREIMAGE_BYTES",
    "ZERO_DIGEST",
    "InvalidChannelState",
    "check_channel_state",
    "decode_state",
    "initial_state",
    "refund_message",
    "sign_channel_request",
    "sign_refund",
    "sign_state",
    "state_message",
    "verify_channel_states",
    "verify_refund",
    "verify_signed_state",
]

HASH_BYTES = 32
PREIMAGE_BYTES = 32
ZERO_DIGEST = bytes(32)


class InvalidChannelState(MedledgerError):
    """A channel state that does not decode, does not add up, or lacks a valid signature;
    `field` names what failed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field)
        self.reason = reason


def state_message(chain_id: str, state: bytes) -> bytes:
    return signing_message("channel-state", chain_id, state)


def sign_state(key: SigningKey, chain_id: str, state: bytes) -> bytes:
    return key.sign(state_message(chain_id, state))


def decode_state(state: bytes, field: str = "state") -> channels_pb2.ChannelState:
    """Decodes and checks the shape rules of an encoded state (Rust)."""
    try:
        check_channel_state(state)
    except MedledgerError as error:
        raise InvalidChannelState(f"{field}.{error.field}".rstrip("."), str(error)) from error
    return channels_pb2.ChannelState.FromString(state)


def initial_state(channel_id: bytes, deposit_micros: int) -> channels_pb2.ChannelState:
    """State 0: the whole deposit is the payer's. It is never signed."""
    return channels_pb2.ChannelState(
        channel_id=channel_id,
        sequence=0,
        deposit_micros=deposit_micros,
        payer_micros=deposit_micros,
        lines_digest=ZERO_DIGEST,
    )


def verify_signed_state(
    chain_id: str,
    signed: channels_pb2.SignedChannelState,
    payer: bytes,
    payee: bytes,
    field: str = "state",
) -> channels_pb2.ChannelState:
    """The decoded state if it is well formed and signed by both `payer` and `payee`."""
    state = decode_state(signed.state, f"{field}.state")
    verdicts = verify_channel_states(
        chain_id,
        [signed.state, signed.state],
        [payer, payee],
        [signed.payer_signature, signed.payee_signature],
    )
    if not verdicts[0]:
        raise InvalidChannelState(f"{field}.payer_signature", "not the payer's signature")
    if not verdicts[1]:
        raise InvalidChannelState(f"{field}.payee_signature", "not the payee's signature")
    return state


def refund_message(chain_id: str, offer: channels_pb2.RefundOffer) -> bytes:
    """The bytes a payee signs for a refund: the offer with the signature field empty."""
    unsigned = channels_pb2.RefundOffer()
    unsigned.CopyFrom(offer)
    unsigned.payment.refund_signature = b""
    return signing_message(
        "channel-refund", chain_id, unsigned.SerializeToString(deterministic=True)
    )


def sign_refund(key: SigningKey, chain_id: str, offer: channels_pb2.RefundOffer) -> None:
    """Signs `offer` in place as its payee."""
    offer.payment.refund = True
    offer.payment.refund_signature = key.sign(refund_message(chain_id, offer))


def verify_refund(chain_id: str, offer: channels_pb2.RefundOffer, payee: bytes) -> bool:
    return verify(payee, refund_message(chain_id, offer), offer.payment.refund_signature)


R = TypeVar("R", bound=Message)


def sign_channel_request(request: R, key: SigningKey, chain_id: str) -> R:
    """Signs a GetChannelState or Invoices request in place as a party of the channel."""
    return sign_request(request, key, chain_id, "channel-request")
