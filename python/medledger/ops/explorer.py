"""The explorer: read-only HTML pages about the chain on the operations port, under
`/explorer/`. It is unauthenticated, so it shows only what an unsigned gRPC caller sees:
block headers and certificates, receipts (by transaction id), hashes, accounts, channels
and the validator set. Transaction bodies, signers, whole blocks, record anchors,
consents and access events need a signed reader (`api.reads`) and are not shown.

Every path parameter is checked before anything is read (400 for a malformed one, 404
for one that names nothing); pages are bounded (at most `BLOCKS_PER_PAGE_MAX` headers,
`TXS_PER_PAGE` transactions), and building one runs in a worker thread, so a large block
never holds the event loop."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import jinja2
from aiohttp import web
from google.protobuf.message import DecodeError

from medledger import merkle
from medledger.app import queries
from medledger.metrics import MISSED_BLOCKS, validator_label
from medledger.node.ledger_node import LedgerNode, committed_receipt
from medledger.tx import CHANNEL_ID_BYTES, TX_ID_BYTES
from medledger.wire.v1 import channels_pb2, envelope_pb2, ledger_pb2, tx_pb2

__all__ = ["BLOCKS_PER_PAGE_MAX", "PROOF_FORMAT", "TXS_PER_PAGE", "Explorer", "add_explorer"]

EXPLORER_THREADS = 2
"""Threads that build explorer pages: their own, so page reads never queue ahead of a
block's validation or commit on the default pool."""
EXPLORER_PAGES_MAX = 16
"""Pages built or waiting at once; the next is answered 503 at once."""

log = logging.getLogger(__name__)

BLOCKS_PER_PAGE = 20
BLOCKS_PER_PAGE_MAX = 50
TXS_PER_PAGE = 100
PROOF_FORMAT = "medledger-tx-inclusion-proof/v1"
"""As `medledger.client.tx_proof.FORMAT` reads it (a unit test keeps the two equal)."""
KEY_BYTES = 32
NUMBER = re.compile(r"[0-9]{1,19}")
HEX = re.compile(r"[0-9a-fA-F]+")
GATED = (
    "Record anchors, consents, access events, transaction bodies and whole blocks are "
    "health metadata: the node serves them only to a signed reader entitled to them "
    "(`medledger record show`, `medledger query tx --key`), never on this unauthenticated page."
)


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_number(text: str, what: str, *, minimum: int = 0) -> int:
    if not NUMBER.fullmatch(text):
        raise PageError(400, f"{what}: {text[:40]!r} is not a number (decimal digits, at most 19)")
    value = int(text)
    if value < minimum:
        raise PageError(400, f"{what}: must be at least {minimum}")
    return value


def parse_hex(text: str, what: str, length: int) -> bytes:
    if len(text) != 2 * length or not HEX.fullmatch(text):
        raise PageError(
            400, f"{what}: expected {2 * length} hex digits ({length} bytes), got {text[:80]!r}"
        )
    return bytes.fromhex(text)


def header_of(raw: bytes) -> envelope_pb2.BlockHeader:
    """A stored block's header without decoding its transactions: the canonical encoding
    writes the header (field 1) first; anything else is decoded whole."""
    if raw[:1] == b"\x0a":
        length, shift, i = 0, 0, 1
        while i < len(raw) and i < 11:
            byte = raw[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                if i + length <= len(raw):
                    return envelope_pb2.BlockHeader.FromString(raw[i : i + length])
                break
    return envelope_pb2.Block.FromString(raw).header


def utc(time_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{time_ms % 1000:03d} UTC"


def result_code(code: int) -> str:
    try:
        return tx_pb2.ResultCode.Name(code).removeprefix("RESULT_CODE_")  # type: ignore[arg-type]
    except ValueError:
        return str(code)


def missed_blocks() -> dict[str, int]:
    """Missed blocks per validator label, as this node counted them since it started."""
    counts: dict[str, int] = {}
    for family in MISSED_BLOCKS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["validator"]] = int(sample.value)
    return counts


@dataclass
class Explorer:
    node: LedgerNode

    # ------------------------------------------------------------------ reads

    def _raw_block(self, height: int) -> bytes:
        head = self.node.head.height
        if height > head:
            raise PageError(404, f"no block at height {height}: the head is at {head}")
        raw = self.node.store.block(height)
        if raw is None:
            raise PageError(404, f"no block at height {height}")
        return raw

    def _commit(self, height: int) -> envelope_pb2.CommitCertificate:
        return envelope_pb2.CommitCertificate.FromString(self.node.store.commit(height) or b"")

    def head(self) -> dict[str, Any]:
        head = self.node.head
        time_ms = header_of(self._raw_block(head.height)).time_unix_ms if head.height else 0
        return {
            "height": head.height,
            "block_hash": head.block_hash.hex(),
            "time_unix_ms": time_ms,
            "committed_txs": head.committed_txs,
        }

    def blocks(self, before: int | None, count: int) -> dict[str, Any]:
        head = self.node.head.height
        top = head if before is None else min(before, head)
        rows = []
        for height in range(top, max(0, top - count), -1):
            raw = self._raw_block(height)
            header = header_of(raw)
            rows.append(
                {
                    "height": height,
                    "time": utc(header.time_unix_ms),
                    "proposer": header.proposer.hex(),
                    "txs": header.tx_count,
                    "size": len(raw),
                    "hash": self._commit(height).block_hash.hex(),
                }
            )
        older = top - count if top - count >= 1 else None
        return {"head": head, "rows": rows, "older": older, "count": count, "live": before is None}

    def block(self, height: int, page: int) -> dict[str, Any]:
        block = envelope_pb2.Block.FromString(self._raw_block(height))
        header = block.header
        pages = max(1, -(-len(block.txs) // TXS_PER_PAGE))
        if page >= pages:
            raise PageError(404, f"page {page}: block {height} has {pages} page(s) of transactions")
        first = page * TXS_PER_PAGE
        txs = []
        for index, tx in enumerate(block.txs[first : first + TXS_PER_PAGE], start=first):
            try:
                tx_id = tx_pb2.TransactionBody.FromString(tx.body).tx_id
            except DecodeError:  # committed as MALFORMED: listed, with nothing to link to
                tx_id = b""
            record = self.node.store.tx_record(tx_id) if tx_id else None
            txs.append(
                {
                    "index": index,
                    "tx_id": tx_id.hex(),
                    "tx_hash": record.tx_hash.hex() if record is not None else "",
                    "code": result_code(record.code) if record is not None else "",
                }
            )
        commit = self._commit(height)
        return {
            "height": height,
            "head": self.node.head.height,
            "header": {
                "time": utc(header.time_unix_ms),
                "proposer": header.proposer.hex(),
                "parent_hash": header.parent_hash.hex(),
                "tx_root": header.tx_root.hex(),
                "app_hash": header.app_hash.hex(),
                "validators_hash": header.validators_hash.hex(),
                "tx_count": header.tx_count,
            },
            "block_hash": commit.block_hash.hex(),
            "round": commit.round,
            "signatures": len(commit.signatures),
            "txs": txs,
            "page": page,
            "pages": pages,
        }

    def transaction(self, tx_id: bytes) -> dict[str, Any]:
        record = self.node.store.tx_record(tx_id)
        if record is None:
            pending = self.node.pending_receipt(tx_id)
            if pending is None:
                raise PageError(
                    404, f"no transaction {tx_id.hex()} (neither committed nor pending)"
                )
            return {"tx_id": tx_id.hex(), "pending": True, "tx_hash": pending.tx_hash.hex()}
        return {
            "tx_id": tx_id.hex(),
            "pending": False,
            "tx_hash": record.tx_hash.hex(),
            "code": result_code(record.code),
            "message": record.message,
            "height": record.height,
            "index": record.index,
            "block_hash": self._commit(record.height).block_hash.hex(),
        }

    def proof(self, tx_id: bytes) -> dict[str, Any]:
        """The transaction's inclusion proof without its body: the leaf hash, the path,
        the header, the certificate and the validator-set transitions since genesis."""
        record = self.node.store.tx_record(tx_id)
        if record is None:
            raise PageError(404, f"no committed transaction {tx_id.hex()}")
        block = envelope_pb2.Block.FromString(self._raw_block(record.height))
        leaves = [tx.SerializeToString(deterministic=True) for tx in block.txs]
        response = ledger_pb2.GetTransactionResponse(
            receipt=committed_receipt(tx_id, record),
            proof=ledger_pb2.InclusionProof(
                leaf_index=record.index,
                tree_size=len(leaves),
                hashes=merkle.inclusion_proof(leaves, record.index),
            ),
            header=block.header,
            commit=self._commit(record.height),
            transitions=self._transitions(record.height),
        )
        return {
            "format": PROOF_FORMAT,
            "tx_id": tx_id.hex(),
            "tx_hash": record.tx_hash.hex(),
            "height": record.height,
            "index": record.index,
            "leaf_hash": merkle.leaf_hash(leaves[record.index]).hex(),
            "code": result_code(record.code),
            "block_hash": response.commit.block_hash.hex(),
            "proof": base64.b64encode(response.SerializeToString(deterministic=True)).decode(),
        }

    def _transitions(self, height: int) -> list[ledger_pb2.ValidatorTransition]:
        transitions = []
        for change in self.node.schedule.changes(height):
            before = change.effective_height - 1
            header = header_of(self._raw_block(before))
            transitions.append(
                ledger_pb2.ValidatorTransition(
                    header=header,
                    commit=self._commit(before),
                    validators=[
                        ledger_pb2.ValidatorPower(public_key=v.public_key, power=v.power)
                        for v in change.validators
                    ],
                )
            )
        return transitions

    def validators(self) -> dict[str, Any]:
        height = self.node.head.height + 1
        members = self.node.validators_at(height)
        missed = missed_blocks()
        rows = [
            {
                "key": key.hex(),
                "power": power,
                "organisation": self.node.runs(height, key) or "",
                "missed": missed.get(validator_label(key), 0),
            }
            for key, power in members.members()
        ]
        return {"height": height, "rows": rows, "total": members.total_power}

    def account(self, owner: bytes) -> dict[str, Any]:
        account = self.node.store.account(owner)
        if account is None:
            raise PageError(404, f"no account for key {owner.hex()}")
        return {
            "owner": owner.hex(),
            "balance_micros": account.balance_micros,
            "created_height": account.created_height,
        }

    def channel(self, channel_id: bytes) -> dict[str, Any]:
        with self.node.store.snapshot() as snapshot:
            channel = queries.channel(snapshot, channel_id)
        if channel is None:
            raise PageError(404, f"no channel {channel_id.hex()}")
        return {
            "channel_id": channel_id.hex(),
            "status": channels_pb2.ChannelStatus.Name(channel.status).removeprefix(
                "CHANNEL_STATUS_"
            ),
            "payer": channel.payer.hex(),
            "payee": channel.payee.hex(),
            "deposit_micros": channel.deposit_micros,
            "challenge_blocks": channel.challenge_blocks,
            "opened_height": channel.opened_height,
            "closing": channel.HasField("pending_state"),
            "pending_sequence": channel.pending_state.sequence,
            "challenge_end_height": channel.challenge_end_height,
            "closed_by": channel.closed_by.hex(),
            "settled_height": channel.settled_height,
            "payer_paid_micros": channel.payer_paid_micros,
            "payee_paid_micros": channel.payee_paid_micros,
            "revealed_locks": len(channel.revealed_hashes),
        }


def search_target(query: str) -> str:
    """Where the search box sends a query: a height, a transaction or channel id (16
    bytes: a transaction when one has it), or an account key (32 bytes)."""
    query = query.strip()
    if NUMBER.fullmatch(query):
        return f"/explorer/blocks/{int(query)}"
    if len(query) == 2 * KEY_BYTES and HEX.fullmatch(query):
        return f"/explorer/accounts/{query.lower()}"
    if len(query) == 2 * TX_ID_BYTES and HEX.fullmatch(query):
        return f"/explorer/tx/{query.lower()}"
    raise PageError(
        400, "search: give a block height, a transaction id (32 hex digits) or a key (64)"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageBuilder:
    """Builds pages on the explorer's own threads, never the default pool that block
    validation and LMDB commits use; past EXPLORER_PAGES_MAX at once, a page is 503."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(EXPLORER_THREADS, thread_name_prefix="explorer")
        self.building = 0

    async def build(self, read: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        if self.building >= EXPLORER_PAGES_MAX:
            raise web.HTTPServiceUnavailable(text="the explorer is busy; retry shortly")
        self.building += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, partial(read, *args))
        finally:
            self.building -= 1

    async def stop(self, _: web.Application) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def add_explorer(application: web.Application, node: LedgerNode) -> None:
    """Serves the explorer's pages on `application` under /explorer/."""
    explorer = Explorer(node)
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("medledger.ops", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )

    def render(name: str, http_status: int = 200, **context: Any) -> web.Response:
        html = templates.get_template(name).render(chain_id=node.chain_id, **context)
        return web.Response(
            status=http_status, text=html, content_type="text/html", charset="utf-8"
        )

    pages = PageBuilder()
    off_loop = pages.build
    application.on_cleanup.append(pages.stop)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/explorer"):
            return await handler(request)
        try:
            return await handler(request)
        except PageError as error:
            return render("error.html", error.status, status=error.status, message=error.message)
        except web.HTTPNotFound:
            return render("error.html", 404, status=404, message="no such explorer page")
        except web.HTTPMethodNotAllowed:
            return render("error.html", 405, status=405, message="the explorer is read-only")
        except web.HTTPException:
            raise
        except (DecodeError, ValueError, OSError):
            log.exception("explorer page %s failed", request.path)
            return render("error.html", 500, status=500, message="the page could not be read")

    def query_number(request: web.Request, name: str, default: int, **kw: int) -> int:
        text = request.query.get(name)
        return default if text is None else parse_number(text, name, **kw)

    async def index(request: web.Request) -> web.Response:
        before = request.query.get("before")
        count = min(query_number(request, "count", BLOCKS_PER_PAGE, minimum=1), BLOCKS_PER_PAGE_MAX)
        top = None if before is None else parse_number(before, "before", minimum=1)
        return render("index.html", **await off_loop(explorer.blocks, top, count))

    async def head(_: web.Request) -> web.Response:
        return web.json_response(await off_loop(explorer.head))

    async def block(request: web.Request) -> web.Response:
        height = parse_number(request.match_info["height"], "height", minimum=1)
        page = query_number(request, "page", 0)
        return render("block.html", **await off_loop(explorer.block, height, page))

    async def transaction(request: web.Request) -> web.Response:
        tx_id = parse_hex(request.match_info["tx_id"], "transaction id", TX_ID_BYTES)
        return render("tx.html", tx=await off_loop(explorer.transaction, tx_id))

    async def proof(request: web.Request) -> web.Response:
        tx_id = parse_hex(request.match_info["tx_id"], "transaction id", TX_ID_BYTES)
        document = await off_loop(explorer.proof, tx_id)
        response = web.json_response(document, dumps=_dumps)
        response.headers["Content-Disposition"] = (
            f'attachment; filename="tx-{tx_id.hex()}.proof.json"'
        )
        return response

    async def validators(_: web.Request) -> web.Response:
        return render("validators.html", **await off_loop(explorer.validators))

    async def account(request: web.Request) -> web.Response:
        owner = parse_hex(request.match_info["key"], "account key", KEY_BYTES)
        return render("account.html", account=await off_loop(explorer.account, owner))

    async def channel(request: web.Request) -> web.Response:
        channel_id = parse_hex(request.match_info["channel_id"], "channel id", CHANNEL_ID_BYTES)
        return render("channel.html", channel=await off_loop(explorer.channel, channel_id))

    async def gated(_: web.Request) -> web.Response:
        return render("error.html", 403, status=403, message=GATED)

    async def search(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther(search_target(request.query.get("q", "")))

    async def to_index(_: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("/explorer/")

    application.middlewares.append(errors)
    application.add_routes(
        [
            web.get("/explorer", to_index),
            web.get("/explorer/", index),
            web.get("/explorer/head.json", head),
            web.get("/explorer/search", search),
            web.get("/explorer/blocks/{height}", block),
            web.get("/explorer/tx/{tx_id}", transaction),
            web.get("/explorer/tx/{tx_id}/proof.json", proof),
            web.get("/explorer/validators", validators),
            web.get("/explorer/accounts/{key}", account),
            web.get("/explorer/channels/{channel_id}", channel),
            web.get("/explorer/records", gated),
            web.get("/explorer/records/{rest:.*}", gated),
        ]
    )


def _dumps(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"
