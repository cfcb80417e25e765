"""Every size and count maximum of medledger, each with why it has its value, and the
relations between them, checked when this module is imported.

Limits meet: transactions make a block, a block travels whole in one gRPC message, a
mempool must hold a block, a validator change must fit one transaction. A value changed
here without its neighbours stops the import with `LimitsError` naming the relation,
rather than letting a proposer build a block that its own validation refuses.

The Rust core's maxima (rust/core/src/limits.rs) are re-exported, never restated. The
per-node tunables are `medledger.config.NodeConfig` fields: their defaults are the
`DEFAULT_*` values here, and NodeConfig refuses a configuration that breaks a relation,
naming the field.

Kept where they are used: durations (timeouts, back-offs, clock skew, challenge windows
in blocks) and value ranges (`BALANCE_MAX`, `POWER_MAX`), which bound no memory and meet
no other limit.
"""

from __future__ import annotations

from medledger._core import (
    BATCH_PAYMENTS_MAX,
    BLOCK_BYTES_MAX,
    BLOCK_TXS_MAX,
    CHAIN_ID_BYTES_MAX,
    LOCKS_MAX,
    MERKLE_LEAVES_MAX,
    STATE_BYTES_MAX,
    THREADS_MAX,
    TX_BYTES_MAX,
    VALIDATORS_MAX,
    VERIFY_BATCH_MAX,
)

__all__ = [
    "ADDRESS_BYTES_MAX",
    "ADMINS_MAX",
    "APPROVALS_MAX",
    "AUDITORS_MAX",
    "BLOCKS_PER_REQUEST_MAX",
    "BLOCK_BYTES_MAX",
    "BLOCK_HEADROOM_BYTES",
    "BLOCK_TXS_MAX",
    "CATCH_UP_BLOCKS_MAX",
    "CATCH_UP_BYTES_MAX",
    "CA_PEM_BYTES_MAX",
    "CHAIN_ID_BYTES_MAX",
    "CHANNEL_LINE_BYTES_BOUND",
    "CHANNEL_LOCKS_MAX",
    "CHANNEL_STATE_BYTES_MAX",
    "CHANNEL_UPDATE_LINES_MAX",
    "COMMIT_BYTES_MAX",
    "CONSENT_TEXT_BYTES_MAX",
    "DEFAULT_BLOCK_TXS_MAX",
    "DEFAULT_BLOCK_TX_BYTES_MAX",
    "DEFAULT_CLIENT_CALLS_PER_ADDRESS_MAX",
    "DEFAULT_CLIENT_RPCS_MAX",
    "DEFAULT_LMDB_MAP_SIZE_BYTES",
    "DEFAULT_LMDB_MAP_SIZE_MAX_BYTES",
    "DEFAULT_MEMPOOL_BYTES_MAX",
    "DEFAULT_MEMPOOL_ORGANISATION_TXS_MAX",
    "DEFAULT_MEMPOOL_SIGNER_TXS_MAX",
    "DEFAULT_MEMPOOL_TXS_MAX",
    "DEFAULT_MESSAGE_BYTES_MAX",
    "DEFAULT_PEER_CALLS_PER_ORGANISATION_MAX",
    "DEFAULT_PEER_QUEUE_MAX",
    "DEFAULT_SUBMIT_BATCH_TXS_MAX",
    "DESCRIPTION_BYTES_MAX",
    "FRAMING_BYTES",
    "GOSSIP_INLINE_BYTES_MAX",
    "GOSSIP_INLINE_TXS_MAX",
    "HEADER_BYTES_BOUND",
    "HUB_CALLS_PER_ADDRESS_MAX",
    "HUB_RPCS_MAX",
    "INPUTS_MAX",
    "INVOICES_PER_REQUEST_MAX",
    "LABELS_MAX",
    "LABEL_BYTES_MAX",
    "LIST_MAX",
    "MERKLE_LEAVES_MAX",
    "MESSAGE_BYTES_MIN",
    "MESSAGE_ENVELOPE_BYTES_BOUND",
    "NAME_BYTES_MAX",
    "OPEN_INVOICES_PER_CHANNEL_MAX",
    "PEER_MESSAGE_BYTES_MAX",
    "PEER_RPCS_MAX",
    "PREIMAGES_MAX",
    "PROPOSAL_FETCHES_MAX",
    "REASON_BYTES_MAX",
    "SCOPE_ITEMS_MAX",
    "SEEN_MAX",
    "STREAM_PENDING_MAX",
    "TEXT_BYTES_MAX",
    "THREADS_MAX",
    "TX_BYTES_MAX",
    "UPDATES_MAX",
    "URGENT_BYTES_MAX",
    "URGENT_PAYEE_PER_CHANNEL_MAX",
    "URGENT_PER_CHANNEL_MAX",
    "URGENT_TXS_MAX",
    "VALIDATORS_MAX",
    "VERIFY_BATCH_MAX",
    "LimitsError",
    "block_tx_bytes_max",
    "broken_relations",
    "relations",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# ------------------------------------------------------------------ the Rust core
# Re-exported above from medledger._core (rust/core/src/limits.rs, parallel.rs):
# BLOCK_BYTES_MAX (32 MiB: the largest block `validate_block` decodes), BLOCK_TXS_MAX
# (20,000), TX_BYTES_MAX (64 KiB per encoded SignedTransaction), VERIFY_BATCH_MAX (2^20
# signatures per call), MERKLE_LEAVES_MAX (2^24), CHAIN_ID_BYTES_MAX (64),
# VALIDATORS_MAX (1,000), THREADS_MAX (256); and the channel maxima of
# rust/core/src/channel.rs, under the names medledger gives them:
CHANNEL_STATE_BYTES_MAX = STATE_BYTES_MAX
"""The largest encoded channel state the channel rules accept (STATE_BYTES_MAX in
rust/core/src/channel.rs, 60 KiB): TX_BYTES_MAX less room for the close, force close or
challenge that carries it, so that a payee never signs a state it cannot defend on the
ledger. The rules also accept only a state's canonical encoding, so none is padded."""
CHANNEL_LOCKS_MAX = LOCKS_MAX
"""Hash locks one channel state may hold (LOCKS_MAX in rust/core/src/channel.rs, 1,024)."""
CHANNEL_UPDATE_LINES_MAX = BATCH_PAYMENTS_MAX
"""Payment lines one channel update may carry (BATCH_PAYMENTS_MAX in
rust/core/src/channel.rs, 4,096): a hub forwards at most this many in one update."""

# The core enforces this one too, but the binding does not export it yet; the value is
# pinned to the core's by tests/unit/test_limits.py (which makes the core refuse one
# past it). Once rust/py exports it, import it above instead.
COMMIT_BYTES_MAX = 64 + 80 * VALIDATORS_MAX
"""The largest commit certificate `validate_block` reads (rust/core/src/block.rs): a
height, a round and a hash, then one signature with its index per validator."""
CHANNEL_LINE_BYTES_BOUND = 512
"""What one payment line of a channel update takes, encoded (about 480 bytes at most,
the billing fields at their limits), so an update of CHANNEL_UPDATE_LINES_MAX lines is
about 2 MiB."""

# ------------------------------------------------------------- blocks and messages
PEER_MESSAGE_BYTES_MAX = 16 * MIB
"""The gRPC message limit of every channel a node, a hub or the SDK opens
(medledger.client.sync) and the most a listener may accept (`message_bytes_max`). gRPC's
own default (4 MiB) would hold only 60 of the largest transactions; 16 MiB carries a
block of 15 MiB of transactions with its headroom, while a listener running
`client_rpcs_max` calls at once is still bounded (512 calls of 16 MiB)."""
DEFAULT_MESSAGE_BYTES_MAX = PEER_MESSAGE_BYTES_MAX
"""A listener accepts what peers and the SDK send: all of it."""
FRAMING_BYTES = 8
"""What an item adds to the message that carries it beyond its own bytes: a
transaction's field tag and length in a block (4 bytes for one of TX_BYTES_MAX), or a
stream message's gRPC frame header (5 bytes); rounded up."""
HEADER_BYTES_BOUND = 1 * KIB
"""What an encoded BlockHeader can take: a chain id of CHAIN_ID_BYTES_MAX, six 32-byte
hashes and keys, three varints (about 320 bytes)."""
MESSAGE_ENVELOPE_BYTES_BOUND = 4 * KIB
"""What the message around a block can add: a signed ConsensusProposal (heights,
rounds, a hash, a signature), a BlockWithCommit's or GetProposalResponse's tags and
lengths (a few hundred bytes)."""
BLOCK_HEADROOM_BYTES = 1 * MIB
"""Room a block leaves under the message limit for its header, a commit certificate of
VALIDATORS_MAX signatures (COMMIT_BYTES_MAX, 78 KiB) and the message that carries it
whole (a proposal, a GetBlocks or GetProposal answer): about 83 KiB today, rounded up to
1 MiB so that none of them growing a field can push a block over."""


def block_tx_bytes_max(message_bytes_max: int) -> int:
    """The most transaction bytes (each framed) a block may hold when messages are limited
    to `message_bytes_max`: under the core's BLOCK_BYTES_MAX, and small enough to travel
    whole in one message with BLOCK_HEADROOM_BYTES to spare."""
    return min(BLOCK_BYTES_MAX, message_bytes_max) - BLOCK_HEADROOM_BYTES


DEFAULT_BLOCK_TX_BYTES_MAX = block_tx_bytes_max(DEFAULT_MESSAGE_BYTES_MAX)
"""15 MiB: about 240 transactions of TX_BYTES_MAX, or all 8,000 of a full block of
ordinary ones (a transfer is about 200 bytes)."""
MESSAGE_BYTES_MIN = BLOCK_HEADROOM_BYTES + TX_BYTES_MAX + FRAMING_BYTES
"""The smallest `message_bytes_max`: a block must hold one transaction of the largest
admissible size, or a node could admit one that no block can carry."""
DEFAULT_BLOCK_TXS_MAX = 8_000
"""Transactions per block when they are small (a block every `block_interval_ms`, 50 ms:
up to 160,000 tx/s): a block of them validates in tens of milliseconds. Under
BLOCK_TXS_MAX, which validation enforces; large transactions meet
`block_tx_bytes_max` first."""

# ----------------------------------------------------------------------- mempool
DEFAULT_MEMPOOL_TXS_MAX = 200_000
"""Transactions waiting in the ordinary lane: 25 full blocks, a few seconds of the
highest load a node sustains."""
DEFAULT_MEMPOOL_BYTES_MAX = 128 * MIB
"""Bytes of the ordinary lane: eight blocks of the largest transactions, so that a
proposer always has a full block while the last is decided, in bounded memory."""
DEFAULT_MEMPOOL_SIGNER_TXS_MAX = DEFAULT_MEMPOOL_TXS_MAX // 4
"""One key's share of the ordinary lane: a quarter, so no signer holds the whole pool."""
DEFAULT_MEMPOOL_ORGANISATION_TXS_MAX = DEFAULT_MEMPOOL_TXS_MAX // 2
"""One member organisation's share (all its members' keys together): half, so that a
member whose people or systems flood cannot crowd out the others."""
URGENT_TXS_MAX = 10_000
"""Room of the time-critical lane (challenges, settlements, payee claims), beside the
ordinary limit: blocks take it first, so it must never wait behind a flood."""
URGENT_BYTES_MAX = 16 * MIB
"""Bytes of the time-critical lane, counted apart from the ordinary lane's: about one
block's worth, a block at most behind."""
URGENT_PER_CHANNEL_MAX = 4
"""Time-critical transactions one channel may have waiting from anyone but its payee (a
payer holding many states both signed could submit many challenges)."""
URGENT_PAYEE_PER_CHANNEL_MAX = 2
"""The room the channel's payee has in the lane, which nobody else can take."""
DEFAULT_SUBMIT_BATCH_TXS_MAX = 4_096
"""Transactions in one submitted batch or gossip message: verified in one Rust call
(under VERIFY_BATCH_MAX). Bytes are bounded by the message limit."""

# ------------------------------------------------------------ consensus and peers
INPUTS_MAX = 50_000
"""Peer messages waiting for the consensus task; more are dropped (peers resend)."""
DEFAULT_PEER_QUEUE_MAX = 10_000
"""Messages waiting for one peer's stream; the oldest is dropped when it is full."""
GOSSIP_INLINE_TXS_MAX = 512
"""A gossip batch of at most this many transactions (and GOSSIP_INLINE_BYTES_MAX) is
verified on the event loop; a larger one, which would stall it, in a thread."""
GOSSIP_INLINE_BYTES_MAX = 1 * MIB
"""See GOSSIP_INLINE_TXS_MAX."""
PROPOSAL_FETCHES_MAX = 4
"""Whole-block fetches of compact proposals in flight at once (one height's worth)."""
BLOCKS_PER_REQUEST_MAX = 100
"""Blocks one GetBlocks call streams: a catching-up peer asks again for more."""
CATCH_UP_BLOCKS_MAX = BLOCKS_PER_REQUEST_MAX
"""Blocks a catching-up node asks for at once: all one request gives."""
CATCH_UP_BYTES_MAX = 64 * MIB
"""Bytes of fetched blocks a catching-up node holds before it commits them: four
messages of the largest blocks."""

# ------------------------------------------------------------ calls on listeners
DEFAULT_CLIENT_RPCS_MAX = 512
"""Calls the client listener runs at once; the next is RESOURCE_EXHAUSTED. With the
message limit it bounds what clients can make the node hold."""
DEFAULT_CLIENT_CALLS_PER_ADDRESS_MAX = DEFAULT_CLIENT_RPCS_MAX // 2
"""Of those, what one client address may hold, so that one client cannot take every
call from the others."""
PEER_RPCS_MAX = 256
"""Calls the peer listener runs at once: validators hold one Push stream each, and fetch
blocks and proposals a few at a time."""
DEFAULT_PEER_CALLS_PER_ORGANISATION_MAX = 16
"""Of those, what one member organisation's validators may hold (Push streams and their
fetches), so that one member cannot take the listener from the others."""
HUB_RPCS_MAX = 1_024
"""Calls a hub runs at once: one stream per open channel, beside a few unary calls."""
HUB_CALLS_PER_ADDRESS_MAX = HUB_RPCS_MAX // 2
"""Of which one client address may hold (a processor runs many channels from one host)."""
STREAM_PENDING_MAX = 1_024
"""Channel updates one stream may have accepted but not yet acknowledged
(back-pressure)."""

# ---------------------------------------------------------------------- storage
DEFAULT_LMDB_MAP_SIZE_BYTES = 1 * GIB
"""The chain's LMDB map starts at this size and doubles as it fills..."""
DEFAULT_LMDB_MAP_SIZE_MAX_BYTES = 1024 * GIB
"""...up to this (and never past the disk's room)."""

# ------------------------------------------------- transaction fields (the rules)
TEXT_BYTES_MAX = 128
"""A transfer's reference or a participant's display name."""
LABEL_BYTES_MAX = 64
"""One label of a record."""
LABELS_MAX = 16
"""Labels on one record."""
REASON_BYTES_MAX = 256
"""A stated reason (an access's, an erasure's)."""
SCOPE_ITEMS_MAX = 32
"""Items in each list of a consent scope."""
CONSENT_TEXT_BYTES_MAX = 64
"""One resource type of a consent scope."""
UPDATES_MAX = 64
"""Validator updates in one governance proposal."""
ADDRESS_BYTES_MAX = 256
"""A validator's host:port."""
DESCRIPTION_BYTES_MAX = 512
"""A governance proposal's description."""
NAME_BYTES_MAX = 128
"""A member organisation's display name."""
ADMINS_MAX = 16
"""Admins of one member organisation."""
APPROVALS_MAX = 64
"""Approvals on one governance transaction: one per admin of the approving members."""
AUDITORS_MAX = 64
"""Auditors a policy names."""
CA_PEM_BYTES_MAX = 8 * KIB
"""A member's CA certificate (PEM): an EC or Ed25519 certificate is under 2 KiB."""
PREIMAGES_MAX = 64
"""Preimages one channel transaction reveals (each costs a hash per lock to match)."""
INVOICES_PER_REQUEST_MAX = 4_096
"""Invoices one request asks a payee for: an update's worth of lines."""
OPEN_INVOICES_PER_CHANNEL_MAX = 100_000
"""Unpaid invoices one channel may hold: asking for invoices costs the asker nothing."""

# ------------------------------------------------------------------------ reads
LIST_MAX = 10_000
"""Entries one list query returns."""
SEEN_MAX = 4_096
"""TLS certificates a node remembers with their organisation (a member can mint any
number)."""


# -------------------------------------------------------------------- relations


class LimitsError(ImportError):
    """Limits that do not fit together (raised when this module is imported)."""


# Upper bounds on encodings (protobuf: a field's tag is 1 byte here, a length-delimited
# field adds a varint of its length, a varint is at most 10 bytes, 5 for a uint32).
_KEY = 2 + 32  # a 32-byte key or hash with its tag and length
_SIGNATURE = 2 + 64
_ORGANISATION_ID = 2 + 32  # an organisation id is at most 32 bytes (medledger.genesis)
_VARINT = 1 + 10
# A SignedTransaction around a body: the body's tag and length, the signer's key, the
# signature; the body's own chain id, tx id, expiry and the tag and length of its kind
# (a kind's field number is 16 or more: a 2-byte tag, and a length up to 2^21, 3 bytes).
_TX_ENVELOPE = 4 + _KEY + _SIGNATURE + (2 + CHAIN_ID_BYTES_MAX) + (2 + 16) + _VARINT + 5


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _governance_tx_bytes() -> int:
    """The largest Govern transaction the rules admit: validator changes of UPDATES_MAX
    new validators (the largest kind of proposal) and APPROVALS_MAX approvals."""
    update = 3 + _KEY + (1 + 5) + _ORGANISATION_ID + (3 + ADDRESS_BYTES_MAX)
    proposal = (
        ((2 + CHAIN_ID_BYTES_MAX) + (2 + 16) + _VARINT + (3 + DESCRIPTION_BYTES_MAX))
        + 4
        + UPDATES_MAX * update
    )
    approval = 2 + _ORGANISATION_ID + _KEY + _SIGNATURE
    return _TX_ENVELOPE + 4 + proposal + APPROVALS_MAX * approval


def _channel_tx_bytes(state_bytes: int) -> int:
    """The largest transaction that carries a signed channel state of `state_bytes`: a
    ForceCloseChannel (a ChallengeChannel or CloseChannel lacks its channel id) with both
    parties' signatures and PREIMAGES_MAX preimages of 32 bytes (admission refuses more,
    or longer)."""
    signed_state = (1 + _varint_bytes(state_bytes)) + state_bytes + 2 * _SIGNATURE
    kind = (2 + 16) + (1 + 3) + signed_state + PREIMAGES_MAX * _KEY
    return _TX_ENVELOPE + kind


# The largest state the channel rules accept: CHANNEL_LOCKS_MAX locks (each a hash and two
# varints, with its tag and 1-byte length), a channel id, four varints and a lines
# digest at their largest, and the final flag (59,490 bytes).
_LOCK = 2 + _KEY + 2 * _VARINT
_LOCKED_STATE_BYTES = (2 + 16) + 4 * _VARINT + CHANNEL_LOCKS_MAX * _LOCK + _KEY + 2
# A payment line as the channel rules bound it: its id, amount, a billing line (claim
# id of 64 characters, procedure code of 16, each up to 4 bytes in UTF-8, units, a
# patient reference of 32 bytes, a YYYY-MM-DD date), the refund flag and signature.
_BILLING_LINE = (2 + 4 * 64) + (2 + 4 * 16) + 6 + (2 + 32) + (2 + 10)
_LINE_BYTES = 3 + (2 + 16) + _VARINT + (3 + _BILLING_LINE) + 2 + _SIGNATURE


def relations() -> list[tuple[str, bool]]:
    """Each relation between the limits, in words, and whether it holds."""
    block = DEFAULT_BLOCK_TX_BYTES_MAX
    return [
        (
            "a block of DEFAULT_BLOCK_TX_BYTES_MAX, with BLOCK_HEADROOM_BYTES, fits one "
            "message of DEFAULT_MESSAGE_BYTES_MAX",
            block + BLOCK_HEADROOM_BYTES <= DEFAULT_MESSAGE_BYTES_MAX,
        ),
        (
            "DEFAULT_MESSAGE_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX (peers and the SDK "
            "accept what a listener sends)",
            DEFAULT_MESSAGE_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX,
        ),
        (
            "a block of block_tx_bytes_max(PEER_MESSAGE_BYTES_MAX), with its headroom, is "
            "within BLOCK_BYTES_MAX (validation accepts it)",
            block_tx_bytes_max(PEER_MESSAGE_BYTES_MAX) + BLOCK_HEADROOM_BYTES <= BLOCK_BYTES_MAX,
        ),
        (
            "BLOCK_HEADROOM_BYTES holds a header, a commit certificate of COMMIT_BYTES_MAX "
            "and the message around them",
            HEADER_BYTES_BOUND + COMMIT_BYTES_MAX + MESSAGE_ENVELOPE_BYTES_BOUND
            <= BLOCK_HEADROOM_BYTES,
        ),
        (
            "HEADER_BYTES_BOUND covers a header with a chain id of CHAIN_ID_BYTES_MAX",
            (2 + CHAIN_ID_BYTES_MAX) + 6 * _KEY + 3 * _VARINT <= HEADER_BYTES_BOUND,
        ),
        (
            "FRAMING_BYTES covers a transaction's tag and length (1 + varint of "
            "TX_BYTES_MAX) and a gRPC frame header (5)",
            max(1 + _varint_bytes(TX_BYTES_MAX), 5) <= FRAMING_BYTES,
        ),
        (
            "TX_BYTES_MAX + FRAMING_BYTES fits a block of DEFAULT_BLOCK_TX_BYTES_MAX",
            block >= TX_BYTES_MAX + FRAMING_BYTES,
        ),
        (
            "MESSAGE_BYTES_MIN <= DEFAULT_MESSAGE_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX",
            MESSAGE_BYTES_MIN <= DEFAULT_MESSAGE_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX,
        ),
        (
            "a compact proposal of BLOCK_TXS_MAX hashes fits a message of MESSAGE_BYTES_MIN",
            HEADER_BYTES_BOUND + BLOCK_TXS_MAX * _KEY + MESSAGE_ENVELOPE_BYTES_BOUND
            <= MESSAGE_BYTES_MIN,
        ),
        (
            "1 <= DEFAULT_BLOCK_TXS_MAX <= BLOCK_TXS_MAX <= MERKLE_LEAVES_MAX",
            1 <= DEFAULT_BLOCK_TXS_MAX <= BLOCK_TXS_MAX <= MERKLE_LEAVES_MAX,
        ),
        (
            "a block's signatures verify in one call: BLOCK_TXS_MAX + VALIDATORS_MAX <= "
            "VERIFY_BATCH_MAX",
            BLOCK_TXS_MAX + VALIDATORS_MAX <= VERIFY_BATCH_MAX,
        ),
        (
            "the mempool holds at least one block: DEFAULT_MEMPOOL_BYTES_MAX >= "
            "DEFAULT_BLOCK_TX_BYTES_MAX and DEFAULT_MEMPOOL_TXS_MAX >= DEFAULT_BLOCK_TXS_MAX",
            block <= DEFAULT_MEMPOOL_BYTES_MAX and DEFAULT_MEMPOOL_TXS_MAX >= DEFAULT_BLOCK_TXS_MAX,
        ),
        (
            "1 <= DEFAULT_MEMPOOL_SIGNER_TXS_MAX <= DEFAULT_MEMPOOL_ORGANISATION_TXS_MAX <= "
            "DEFAULT_MEMPOOL_TXS_MAX",
            1
            <= DEFAULT_MEMPOOL_SIGNER_TXS_MAX
            <= DEFAULT_MEMPOOL_ORGANISATION_TXS_MAX
            <= DEFAULT_MEMPOOL_TXS_MAX,
        ),
        (
            "the time-critical lane holds the largest transaction and every channel's "
            "share: URGENT_BYTES_MAX >= TX_BYTES_MAX, URGENT_TXS_MAX >= "
            "URGENT_PER_CHANNEL_MAX + URGENT_PAYEE_PER_CHANNEL_MAX",
            URGENT_BYTES_MAX >= TX_BYTES_MAX
            and URGENT_TXS_MAX >= URGENT_PER_CHANNEL_MAX + URGENT_PAYEE_PER_CHANNEL_MAX >= 2,
        ),
        (
            "a submitted batch verifies in one call: DEFAULT_SUBMIT_BATCH_TXS_MAX <= "
            "VERIFY_BATCH_MAX",
            1 <= DEFAULT_SUBMIT_BATCH_TXS_MAX <= VERIFY_BATCH_MAX,
        ),
        (
            "gossip verified inline is a small batch: GOSSIP_INLINE_TXS_MAX <= "
            "DEFAULT_SUBMIT_BATCH_TXS_MAX, GOSSIP_INLINE_BYTES_MAX <= MESSAGE_BYTES_MIN",
            GOSSIP_INLINE_TXS_MAX <= DEFAULT_SUBMIT_BATCH_TXS_MAX
            and GOSSIP_INLINE_BYTES_MAX <= MESSAGE_BYTES_MIN,
        ),
        (
            "catch-up asks for what one GetBlocks gives and holds at least one message: "
            "CATCH_UP_BLOCKS_MAX <= BLOCKS_PER_REQUEST_MAX, CATCH_UP_BYTES_MAX >= "
            "PEER_MESSAGE_BYTES_MAX",
            CATCH_UP_BLOCKS_MAX <= BLOCKS_PER_REQUEST_MAX
            and CATCH_UP_BYTES_MAX >= PEER_MESSAGE_BYTES_MAX,
        ),
        (
            "a share of a listener is within the listener: client, peer and hub",
            DEFAULT_CLIENT_CALLS_PER_ADDRESS_MAX <= DEFAULT_CLIENT_RPCS_MAX
            and DEFAULT_PEER_CALLS_PER_ORGANISATION_MAX <= PEER_RPCS_MAX
            and HUB_CALLS_PER_ADDRESS_MAX <= HUB_RPCS_MAX,
        ),
        (
            "a validator change of UPDATES_MAX (<= VALIDATORS_MAX) updates with "
            "APPROVALS_MAX approvals fits one transaction of TX_BYTES_MAX",
            UPDATES_MAX <= VALIDATORS_MAX and _governance_tx_bytes() <= TX_BYTES_MAX,
        ),
        (
            "the largest state the channel rules allow (CHANNEL_LOCKS_MAX locks, every "
            "varint at its longest) is within CHANNEL_STATE_BYTES_MAX",
            _LOCKED_STATE_BYTES <= CHANNEL_STATE_BYTES_MAX,
        ),
        (
            "a close, force close or challenge carrying a state of CHANNEL_STATE_BYTES_MAX, "
            "both signatures and PREIMAGES_MAX preimages fits one transaction of "
            "TX_BYTES_MAX (a payee can always defend a state it signed)",
            _channel_tx_bytes(CHANNEL_STATE_BYTES_MAX) <= TX_BYTES_MAX,
        ),
        (
            "a channel update of CHANNEL_UPDATE_LINES_MAX lines, a state of "
            "CHANNEL_STATE_BYTES_MAX and CHANNEL_LOCKS_MAX new locks fits a message of "
            "DEFAULT_MESSAGE_BYTES_MAX",
            _LINE_BYTES <= CHANNEL_LINE_BYTES_BOUND
            and CHANNEL_UPDATE_LINES_MAX * CHANNEL_LINE_BYTES_BOUND
            + CHANNEL_STATE_BYTES_MAX
            + CHANNEL_LOCKS_MAX * (3 + _KEY + 6)
            + MESSAGE_ENVELOPE_BYTES_BOUND
            <= DEFAULT_MESSAGE_BYTES_MAX,
        ),
        (
            "INVOICES_PER_REQUEST_MAX <= OPEN_INVOICES_PER_CHANNEL_MAX",
            1 <= INVOICES_PER_REQUEST_MAX <= OPEN_INVOICES_PER_CHANNEL_MAX,
        ),
        (
            "DEFAULT_LMDB_MAP_SIZE_BYTES <= DEFAULT_LMDB_MAP_SIZE_MAX_BYTES, and the map "
            "starts with room for a few blocks",
            4 * BLOCK_BYTES_MAX <= DEFAULT_LMDB_MAP_SIZE_BYTES <= DEFAULT_LMDB_MAP_SIZE_MAX_BYTES,
        ),
    ]


def broken_relations() -> list[str]:
    """The relations that do not hold (none, or this module would not import)."""
    return [relation for relation, holds in relations() if not holds]


_broken = broken_relations()
if _broken:
    raise LimitsError("limits do not fit together: " + "; ".join(_broken))
