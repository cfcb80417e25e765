"""Micropayment channels on the ledger: opening, funding, closing, disputes, settlement.

Payments move off the ledger as channel states signed by both parties; the ledger only
holds the deposit and pays it out once, by a final state both signed (at once) or by the
highest-sequence state put forward before a challenge window ends. Every handler checks
all its rules before it writes anything, so a refused transaction changes no state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from medledger.app.accounts import BALANCE_MAX
from medledger.app.outcome import TxOutcome
from medledger.app.state import CHANNELS, BlockState, StateReader
from medledger.channels.signing import (
    CHANNEL_ID_BYTES,
    PREIMAGE_BYTES,
    InvalidChannelState,
    decode_state,
    initial_state,
    verify_signed_state,
)
from medledger.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, sha256
from medledger.errors import Rejected
from medledger.genesis import CHALLENGE_BLOCKS_MAX
from medledger.limits import PREIMAGES_MAX
from medledger.wire.v1 import channels_pb2, ledger_pb2, tx_pb2

__all__ = [
    "CHALLENGE_BLOCKS_MAX",
    "PREIMAGES_MAX",
    "challenge_channel",
    "check_challenge",
    "check_close",
    "check_force_close",
    "check_open",
    "check_settle",
    "check_top_up",
    "close_channel",
    "force_close_channel",
    "open_channel",
    "payout",
    "settle_channel",
    "top_up_channel",
]

OPEN = channels_pb2.CHANNEL_STATUS_OPEN
CLOSING = channels_pb2.CHANNEL_STATUS_CLOSING
SETTLED = channels_pb2.CHANNEL_STATUS_SETTLED

Msg = TypeVar("Msg", bound=Message)


# ------------------------------------------------------------------ stateless checks


def _invalid(field: str, reason: str) -> Rejected:
    return Rejected("INVALID_ARGUMENT", field, reason)


def _check_length(field: str, value: bytes, length: int) -> None:
    if len(value) != length:
        raise _invalid(field, f"must be {length} bytes, got {len(value)}")


def _check_signatures(field: str, signed: channels_pb2.SignedChannelState) -> None:
    # The state itself is checked against the channel when the transaction is applied.
    _check_length(f"{field}.payer_signature", signed.payer_signature, SIGNATURE_BYTES)
    _check_length(f"{field}.payee_signature", signed.payee_signature, SIGNATURE_BYTES)


def _require_state(
    field: str, parent: channels_pb2.CloseChannel | channels_pb2.ChallengeChannel
) -> None:
    if not parent.HasField("state"):
        raise _invalid(f"{field}.state", "is required")
    _check_signatures(f"{field}.state", parent.state)


def _check_preimages(field: str, preimages: Sequence[bytes]) -> None:
    if len(preimages) > PREIMAGES_MAX:
        raise _invalid(field, f"more than {PREIMAGES_MAX}")
    for index, preimage in enumerate(preimages):
        if len(preimage) != PREIMAGE_BYTES:
            raise _invalid(field, f"preimage {index} must be {PREIMAGE_BYTES} bytes")


def check_open(msg: channels_pb2.OpenChannel, signer: bytes) -> None:
    field = "body.open_channel"
    _check_length(f"{field}.channel_id", msg.channel_id, CHANNEL_ID_BYTES)
    _check_length(f"{field}.payee", msg.payee, PUBLIC_KEY_BYTES)
    if msg.payee == signer:
        raise _invalid(f"{field}.payee", "a channel to oneself would move nothing")
    if msg.deposit_micros == 0:
        raise _invalid(f"{field}.deposit_micros", "must be positive")
    if not 1 <= msg.challenge_blocks <= CHALLENGE_BLOCKS_MAX:
        raise _invalid(f"{field}.challenge_blocks", f"must be 1 to {CHALLENGE_BLOCKS_MAX}")


def check_top_up(msg: channels_pb2.TopUpChannel, _signer: bytes) -> None:
    _check_length("body.top_up_channel.channel_id", msg.channel_id, CHANNEL_ID_BYTES)
    if msg.amount_micros == 0:
        raise _invalid("body.top_up_channel.amount_micros", "must be positive")


def check_close(msg: channels_pb2.CloseChannel, _signer: bytes) -> None:
    _require_state("body.close_channel", msg)


def check_force_close(msg: channels_pb2.ForceCloseChannel, _signer: bytes) -> None:
    field = "body.force_close_channel"
    _check_length(f"{field}.channel_id", msg.channel_id, CHANNEL_ID_BYTES)
    if msg.HasField("state"):  # none: the implicit state 0
        _check_signatures(f"{field}.state", msg.state)
    _check_preimages(f"{field}.preimages", msg.preimages)


def check_challenge(msg: channels_pb2.ChallengeChannel, _signer: bytes) -> None:
    _require_state("body.challenge_channel", msg)
    _check_preimages("body.challenge_channel.preimages", msg.preimages)


def check_settle(msg: channels_pb2.SettleChannel, _signer: bytes) -> None:
    _check_length("body.settle_channel.channel_id", msg.channel_id, CHANNEL_ID_BYTES)
    _check_preimages("body.settle_channel.preimages", msg.preimages)


# ------------------------------------------------------------------ rules on state


class _Refused(Exception):
    """A rule the transaction broke. Raised before any write, so nothing changed."""

    def __init__(self, code: tx_pb2.ResultCode.ValueType, message: str) -> None:
        super().__init__(message)
        self.outcome = TxOutcome(code, message)


def _handler(
    apply: Callable[[BlockState, int, bytes, Msg], None],
) -> Callable[[BlockState, int, bytes, Msg], TxOutcome]:
    """Turns a rule function that raises `_Refused` into a handler returning an outcome."""

    @functools.wraps(apply)
    def handler(state: BlockState, height: int, signer: bytes, msg: Msg) -> TxOutcome:
        try:
            apply(state, height, signer, msg)
        except _Refused as refused:
            return refused.outcome
        return TxOutcome(tx_pb2.RESULT_CODE_OK, "")

    return handler


def _channel(state: BlockState, channel_id: bytes, field: str) -> channels_pb2.Channel:
    """A working copy of the channel: edits reach the block state only through `put`, so
    a refusal part-way through leaves the cached record as it was."""
    cached = state.get(CHANNELS, channel_id, channels_pb2.Channel)
    if cached is None:
        raise _Refused(tx_pb2.RESULT_CODE_UNKNOWN_CHANNEL, f"{field}: unknown channel")
    channel = channels_pb2.Channel()
    channel.CopyFrom(cached)
    return channel


def _put_channel(state: BlockState, channel: channels_pb2.Channel) -> None:
    state.put(CHANNELS, channel.channel_id, channel)


def _account(state: BlockState, owner: bytes, who: str) -> ledger_pb2.Account:
    account = state.account(owner)
    if account is None:
        raise _Refused(tx_pb2.RESULT_CODE_UNKNOWN_ACCOUNT, f"{who} has no account")
    return account


def _debit(state: BlockState, owner: bytes, amount: int) -> None:
    """Takes `amount` from the signer's account into a channel deposit."""
    account = _account(state, owner, "signer")
    if account.balance_micros < amount:
        raise _Refused(
            tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS,
            f"balance {account.balance_micros} < {amount}",
        )
    account.balance_micros -= amount
    state.put_account(account)


def _require_status(
    channel: channels_pb2.Channel, *allowed: channels_pb2.ChannelStatus.ValueType
) -> None:
    if channel.status not in allowed:
        names = " or ".join(channels_pb2.ChannelStatus.Name(s) for s in allowed)
        raise _Refused(
            tx_pb2.RESULT_CODE_WRONG_CHANNEL_STATUS,
            f"channel is {channels_pb2.ChannelStatus.Name(channel.status)}, needs {names}",
        )


def _require_payer(channel: channels_pb2.Channel, signer: bytes) -> None:
    if signer != channel.payer:
        raise _Refused(tx_pb2.RESULT_CODE_NOT_CHANNEL_PARTY, "only the channel's payer may")


def _require_party(channel: channels_pb2.Channel, signer: bytes) -> None:
    if signer not in (channel.payer, channel.payee):
        raise _Refused(
            tx_pb2.RESULT_CODE_NOT_CHANNEL_PARTY, "only the channel's payer or payee may"
        )


def _invalid_state(reason: str) -> _Refused:
    return _Refused(tx_pb2.RESULT_CODE_INVALID_CHANNEL_STATE, reason)


def _named_channel(
    state: BlockState, signed: channels_pb2.SignedChannelState, field: str
) -> channels_pb2.Channel:
    """The channel a signed state names (close and challenge carry no other id). Only its
    shape is checked here; `_verified` checks its signatures against that channel."""
    try:
        named = decode_state(signed.state, f"{field}.state")
    except InvalidChannelState as error:
        raise _invalid_state(str(error)) from error
    return _channel(state, named.channel_id, f"{field}.state.channel_id")


def _verified(
    state: BlockState,
    channel: channels_pb2.Channel,
    signed: channels_pb2.SignedChannelState,
    field: str,
) -> channels_pb2.ChannelState:
    """The state, if both parties signed it for this chain and it fits this channel."""
    try:
        checked = verify_signed_state(state.chain_id, signed, channel.payer, channel.payee, field)
    except InvalidChannelState as error:
        raise _invalid_state(str(error)) from error
    if checked.channel_id != channel.channel_id:
        raise _invalid_state(f"{field}.state.channel_id: a state of another channel")
    if checked.deposit_micros > channel.deposit_micros:
        raise _invalid_state(
            f"{field}.state.deposit_micros: {checked.deposit_micros} is more than the "
            f"channel's deposit {channel.deposit_micros}"
        )
    return checked


def _record_reveals(
    channel: channels_pb2.Channel,
    pending: channels_pb2.ChannelState,
    preimages: Iterable[bytes],
    height: int,
) -> None:
    """Adds to the channel's revealed locks those of the pending state that `preimages`
    open while the lock is live at `height`, keeping each preimage beside its hash;
    sorted by hash, so every node stores the same lists. A preimage opening nothing is
    ignored rather than refused: a challenge committed just before may have replaced the
    state whose lock it answered, and the rest of the transaction stands."""
    live = {lock.hash for lock in pending.locks if lock.expiry_height >= height}
    known = dict(
        zip(map(sha256, channel.revealed_preimages), channel.revealed_preimages, strict=True)
    )
    for preimage in preimages:
        digest = sha256(preimage)
        if digest in live:
            known.setdefault(digest, preimage)
    channel.revealed_hashes[:] = sorted(set(channel.revealed_hashes).union(known))
    channel.revealed_preimages[:] = [known[digest] for digest in sorted(known)]


def _opens_new_lock(channel: channels_pb2.Channel, preimages: Iterable[bytes], height: int) -> bool:
    live = {lock.hash for lock in channel.pending_state.locks if lock.expiry_height >= height}
    return bool(live.intersection(map(sha256, preimages)) - set(channel.revealed_hashes))


def payout(channel: channels_pb2.Channel) -> tuple[int, int]:
    """(payer, payee) amounts the channel's pending state pays out. Together they are the
    whole deposit: the state's parts sum to its deposit (checked in Rust), and top-ups it
    does not include yet go back to the payer."""
    pending = channel.pending_state
    revealed = set(channel.revealed_hashes)
    won = sum(lock.amount_micros for lock in pending.locks if lock.hash in revealed)
    locked = sum(lock.amount_micros for lock in pending.locks)
    not_included = channel.deposit_micros - pending.deposit_micros
    return pending.payer_micros + locked - won + not_included, pending.payee_micros + won


def _pay_out(state: BlockState, height: int, channel: channels_pb2.Channel) -> None:
    """Credits both parties and marks the channel settled; both credits are checked for
    overflow before either is made."""
    payer_paid, payee_paid = payout(channel)
    payer = _account(state, channel.payer, "the channel's payer")
    payee = _account(state, channel.payee, "the channel's payee")
    for account, amount in ((payer, payer_paid), (payee, payee_paid)):
        if account.balance_micros + amount > BALANCE_MAX:
            raise _Refused(tx_pb2.RESULT_CODE_INVALID_TRANSFER, "a balance would overflow")
    payer.balance_micros += payer_paid
    payee.balance_micros += payee_paid
    state.put_account(payer)
    state.put_account(payee)
    channel.status = SETTLED
    channel.settled_height = height
    channel.payer_paid_micros = payer_paid
    channel.payee_paid_micros = payee_paid
    _put_channel(state, channel)


# ------------------------------------------------------------------ handlers


@_handler
def open_channel(
    state: BlockState, height: int, signer: bytes, msg: channels_pb2.OpenChannel
) -> None:
    # A settled channel keeps its record, so an id is never reused and the states signed
    # for an old channel can never be replayed against a new one.
    if state.get(CHANNELS, msg.channel_id, channels_pb2.Channel) is not None:
        raise _Refused(tx_pb2.RESULT_CODE_CHANNEL_EXISTS, "open_channel.channel_id: in use")
    _account(state, msg.payee, "open_channel.payee")
    _debit(state, signer, msg.deposit_micros)
    channel = channels_pb2.Channel(
        channel_id=msg.channel_id,
        payer=signer,
        payee=msg.payee,
        deposit_micros=msg.deposit_micros,
        challenge_blocks=msg.challenge_blocks,
        status=OPEN,
        opened_height=height,
    )
    _put_channel(state, channel)


@_handler
def top_up_channel(
    state: BlockState, _height: int, signer: bytes, msg: channels_pb2.TopUpChannel
) -> None:
    channel = _channel(state, msg.channel_id, "top_up_channel.channel_id")
    _require_payer(channel, signer)
    _require_status(channel, OPEN)
    if channel.deposit_micros + msg.amount_micros > BALANCE_MAX:
        raise _Refused(tx_pb2.RESULT_CODE_INVALID_TRANSFER, "the deposit would overflow")
    _debit(state, signer, msg.amount_micros)
    channel.deposit_micros += msg.amount_micros
    _put_channel(state, channel)


@_handler
def close_channel(
    state: BlockState, height: int, signer: bytes, msg: channels_pb2.CloseChannel
) -> None:
    field = "close_channel.state"
    channel = _named_channel(state, msg.state, field)
    _require_party(channel, signer)
    # Also while closing: a final state both signed is their last word, whatever the
    # pending state says.
    _require_status(channel, OPEN, CLOSING)
    final = _verified(state, channel, msg.state, field)
    if not final.final:
        raise _invalid_state(f"{field}.state.final: a cooperative close needs a final state")
    # The settled state stays on the record: a remittance export reconciles its lines
    # against its lines_digest. (Rust already refused a final state holding locks.)
    channel.pending_state.CopyFrom(final)
    channel.closed_by = signer
    _pay_out(state, height, channel)


@_handler
def force_close_channel(
    state: BlockState, height: int, signer: bytes, msg: channels_pb2.ForceCloseChannel
) -> None:
    field = "force_close_channel.state"
    channel = _channel(state, msg.channel_id, "force_close_channel.channel_id")
    _require_party(channel, signer)
    _require_status(channel, OPEN)
    if msg.HasField("state"):
        pending = _verified(state, channel, msg.state, field)
    else:
        pending = initial_state(channel.channel_id, channel.deposit_micros)
    channel.status = CLOSING
    channel.pending_state.CopyFrom(pending)
    channel.closed_by = signer
    channel.challenge_end_height = height + channel.challenge_blocks
    _record_reveals(channel, pending, msg.preimages, height)
    _put_channel(state, channel)


@_handler
def challenge_channel(
    state: BlockState, height: int, _signer: bytes, msg: channels_pb2.ChallengeChannel
) -> None:
    # Anyone may submit a challenge: the parties' signatures are what authenticate it, so
    # a watchtower can defend a party that is offline.
    field = "challenge_channel.state"
    channel = _named_channel(state, msg.state, field)
    _require_status(channel, CLOSING)
    if height > channel.challenge_end_height:
        raise _Refused(
            tx_pb2.RESULT_CODE_CHALLENGE_WINDOW,
            f"the challenge window ended at height {channel.challenge_end_height}",
        )
    newer = _verified(state, channel, msg.state, field)
    pending = channel.pending_state
    if newer.sequence == pending.sequence and newer == pending:
        # The pending state again, to reveal preimages of its locks: a payee whose payer
        # closed with the latest state (but never paid the revealed locks) claims them so.
        if not _opens_new_lock(channel, msg.preimages, height):
            raise _Refused(
                tx_pb2.RESULT_CODE_STALE_CHANNEL_STATE,
                f"{field}.state.sequence: {newer.sequence} is the pending state and "
                "challenge_channel.preimages open none of its live locks not yet revealed",
            )
    elif newer.sequence <= pending.sequence:
        raise _Refused(
            tx_pb2.RESULT_CODE_STALE_CHANNEL_STATE,
            f"{field}.state.sequence: {newer.sequence} is not above the pending {pending.sequence}",
        )
    # The window is not extended: each challenge can only raise the sequence, so a
    # closing channel settles at a known height however many challenges arrive.
    channel.pending_state.CopyFrom(newer)
    # Hashes revealed earlier stay revealed: their preimage became public on the ledger
    # while a lock with that hash was live, so the payer could already use it upstream.
    _record_reveals(channel, newer, msg.preimages, height)
    _put_channel(state, channel)


@_handler
def settle_channel(
    state: BlockState, height: int, _signer: bytes, msg: channels_pb2.SettleChannel
) -> None:
    channel = _channel(state, msg.channel_id, "settle_channel.channel_id")
    _require_status(channel, CLOSING)
    if height <= channel.challenge_end_height:
        raise _Refused(
            tx_pb2.RESULT_CODE_CHALLENGE_WINDOW,
            f"the challenge window is open until height {channel.challenge_end_height}",
        )
    pending = channel.pending_state
    _record_reveals(channel, pending, msg.preimages, height)
    _pay_out(state, height, channel)


NOT_URGENT, URGENT, URGENT_FOR_PAYEE = 0, 1, 2
"""How urgent a transaction is, for the mempool's reserved lane."""

_URGENT_HANDLERS: dict[str, Callable[[BlockState, int, bytes, Any], TxOutcome]] = {
    "challenge_channel": challenge_channel,
    "settle_channel": settle_channel,
    "force_close_channel": force_close_channel,
}


def time_critical(
    reader: StateReader, body: tx_pb2.TransactionBody, signer: bytes, height: int, chain_id: str
) -> int:
    """Whether `body` must not wait behind ordinary transactions: a challenge, a
    settlement, or the payee's own close of an open channel (it claims a lock before it
    expires), that the committed state would accept at `height` (the rule itself is run,
    signatures included, on a copy of the state that is thrown away). Anything that
    would fail is NOT_URGENT, so nobody can fill the reserved lane with it. The channel's
    payee signing is URGENT_FOR_PAYEE: it has room no one else can take."""
    kind = body.WhichOneof("kind")
    handler = _URGENT_HANDLERS.get(kind or "")
    if kind is None or handler is None:
        return NOT_URGENT
    channel_id = channel_id_of(body)
    raw = reader.get(CHANNELS, channel_id) if channel_id else None
    if raw is None:
        return NOT_URGENT
    channel = channels_pb2.Channel.FromString(raw)
    if kind == "force_close_channel" and signer != channel.payee:
        return NOT_URGENT  # a payer's close waits like any transaction
    try:
        outcome = handler(BlockState(reader, chain_id), height, signer, getattr(body, kind))
    except Rejected:
        return NOT_URGENT
    if outcome.code != tx_pb2.RESULT_CODE_OK:
        return NOT_URGENT
    return URGENT_FOR_PAYEE if signer == channel.payee else URGENT


def channel_id_of(body: tx_pb2.TransactionBody) -> bytes:
    """The channel a channel transaction acts on; empty for other kinds (a challenge
    names it inside the state both parties signed)."""
    kind = body.WhichOneof("kind")
    if kind in ("open_channel", "top_up_channel", "force_close_channel", "settle_channel"):
        return bytes(getattr(body, kind).channel_id)
    if kind in ("challenge_channel", "close_channel"):
        try:
            state = channels_pb2.ChannelState.FromString(getattr(body, kind).state.state)
        except DecodeError:
            return b""
        return bytes(state.channel_id)
    return b""
