"""The explorer on a real node's operations port: pages answer, a block links to its
transactions and back, a transaction's proof downloads and verifies offline against the
genesis (also with `medledger verify-proof`), hostile paths get 400/404 with a message
and never a traceback, and nothing a signed reader alone may see (bodies, signers,
references) is on any page."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medledger.client import LedgerClient, enrol
from medledger.client.proofs import ProofError
from medledger.client.tx_proof import leaf_hash_of, verify_tx_proof
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.run.homes import init_home
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.credentials import ClientTls
from medledger.tx import TxBuilder
from medledger.wire.v1 import envelope_pb2, tx_pb2

CHAIN = "explorer-1"
CANARY = "CANARY-explorer-reference-7f3a"


@dataclass
class Chain:
    home: Home
    process: NodeProcess
    txs: list[envelope_pb2.SignedTransaction]
    tx_ids: list[bytes]
    channel_id: bytes
    signer: bytes

    @property
    def ops(self) -> str:
        return self.process.ops_address


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def links(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.hrefs


def get(ops: str, path: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://{ops}{path}", timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    home = Home(tmp_path_factory.mktemp("explorer") / "node")
    init_home(home, CHAIN, listen="127.0.0.1:0")
    process = start_node(home.root)
    try:
        key = load_key(home.keys_dir / "client.json")
        builder = TxBuilder(key, CHAIN)
        with LedgerClient(process.address, tls=ClientTls.from_file(home.consortium_ca)) as client:
            expiry = client.status().height + 100
            txs = [
                builder.transfer(
                    to=key.public_key, amount_micros=1, expiry_height=expiry, reference=CANARY
                )
                for _ in range(5)
            ]
            (receipts,) = client.submit_batches([txs])
            payee_key = SigningKey.generate()
            enrol(client, key, "org-0", {payee_key: [tx_pb2.ROLE_PAYER]})
            client.submit(
                TxBuilder(payee_key, CHAIN).create_account(expiry_height=expiry), wait=True
            )
            payee = payee_key.public_key
            channel = builder.open_channel(
                payee=payee, deposit_micros=10, challenge_blocks=10, expiry_height=expiry
            )
            opened = client.submit(channel, wait=True)
            assert opened.code == tx_pb2.RESULT_CODE_OK, opened.message
        assert all(r.height for r in receipts)
        yield Chain(
            home,
            process,
            txs,
            [r.tx_id for r in receipts],
            tx_pb2.TransactionBody.FromString(channel.body).open_channel.channel_id,
            key.public_key,
        )
    finally:
        process.stop()


def test_the_pages_answer(chain: Chain) -> None:
    status, html, headers = get(chain.ops, "/explorer/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    heights = [h for h in links(html) if h.startswith("/explorer/blocks/")]
    assert heights, "the latest blocks link to their pages"
    for path in (
        "/explorer/validators",
        f"/explorer/accounts/{chain.signer.hex()}",
        f"/explorer/channels/{chain.channel_id.hex()}",
        heights[0],
    ):
        status, html, _ = get(chain.ops, path)
        assert status == 200, (path, html)
    _, validators, _ = get(chain.ops, "/explorer/validators")
    validator = Genesis.load(chain.home.genesis).validators[0]
    assert validator.public_key.hex() in validators
    _, channel, _ = get(chain.ops, f"/explorer/channels/{chain.channel_id.hex()}")
    assert "OPEN" in channel
    status, _, headers = get(chain.ops, "/explorer")  # redirected to /explorer/
    assert status == 200


def test_head_json_follows_the_chain(chain: Chain) -> None:
    status, body, headers = get(chain.ops, "/explorer/head.json")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    head = json.loads(body)
    proof = json.loads(get(chain.ops, f"/explorer/tx/{chain.tx_ids[0].hex()}/proof.json")[1])
    assert head["height"] >= proof["height"]
    assert len(head["block_hash"]) == 64
    assert head["time_unix_ms"] > 0


def test_a_block_links_to_its_transactions_and_back(chain: Chain) -> None:
    tx_id = chain.tx_ids[0]
    status, html, _ = get(chain.ops, f"/explorer/tx/{tx_id.hex()}")
    assert status == 200
    blocks = [h for h in links(html) if h.startswith("/explorer/blocks/")]
    assert blocks, "a transaction links to its block"
    status, block_html, _ = get(chain.ops, blocks[0])
    assert status == 200
    tx_links = [h for h in links(block_html) if h.startswith("/explorer/tx/")]
    assert f"/explorer/tx/{tx_id.hex()}" in tx_links
    for href in tx_links:
        status, page, _ = get(chain.ops, href)
        assert status == 200, href
        assert blocks[0] in links(page), "each transaction of the block links back to it"
    assert "OK" in html
    assert f"/explorer/tx/{tx_id.hex()}/proof.json" in links(html)


def test_the_proof_downloads_and_verifies_offline(chain: Chain, tmp_path: Path) -> None:
    genesis = Genesis.load(chain.home.genesis)
    for tx, tx_id in zip(chain.txs, chain.tx_ids, strict=True):
        status, body, headers = get(chain.ops, f"/explorer/tx/{tx_id.hex()}/proof.json")
        assert status == 200
        assert "attachment" in headers["Content-Disposition"]
        document = json.loads(body)
        proven = verify_tx_proof(document, genesis)
        assert proven.tx_id == tx_id
        # Whoever holds the signed transaction finds it is the proven leaf.
        assert proven.leaf_hash == leaf_hash_of(tx)
    path = tmp_path / "proof.json"
    path.write_text(body)
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "medledger",
            "verify-proof",
            str(path),
            "--genesis",
            str(chain.home.genesis),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "proof OK" in checked.stdout
    tampered = dict(document, leaf_hash="00" * 32)
    with pytest.raises(ProofError, match="tx_root"):
        verify_tx_proof(tampered, genesis)
    moved = dict(document, index=document["index"] + 1)
    with pytest.raises(ProofError):
        verify_tx_proof(moved, genesis)
    path.write_text(json.dumps(tampered))
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "medledger",
            "verify-proof",
            str(path),
            "--genesis",
            str(chain.home.genesis),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "INVALID" in refused.stderr + refused.stdout


HOSTILE = [
    ("/explorer/blocks/abc", 400),
    ("/explorer/blocks/-1", 400),
    ("/explorer/blocks/0", 400),
    ("/explorer/blocks/1e9", 400),
    ("/explorer/blocks/99999999999999999999999999999", 400),
    ("/explorer/blocks/9999999999999999999", 404),
    ("/explorer/blocks/1000000", 404),
    ("/explorer/blocks/1?page=abc", 400),
    ("/explorer/blocks/1?page=999", 404),
    ("/explorer/?before=x", 400),
    ("/explorer/?count=0", 400),
    ("/explorer/?count=" + "9" * 40, 400),
    ("/explorer/tx/zz", 400),
    ("/explorer/tx/" + "g" * 32, 400),
    ("/explorer/tx/" + "ab" * 17, 400),
    ("/explorer/tx/%20" + "ab" * 15 + "a", 400),
    ("/explorer/tx/" + "00" * 16, 404),
    ("/explorer/tx/" + "00" * 16 + "/proof.json", 404),
    ("/explorer/tx/nothex/proof.json", 400),
    ("/explorer/accounts/" + "11" * 32, 404),
    ("/explorer/accounts/" + "11" * 31, 400),
    ("/explorer/accounts/%3Cscript%3Ealert(1)%3C%2Fscript%3E", 400),
    ("/explorer/channels/" + "22" * 16, 404),
    ("/explorer/channels/" + "x" * 5000, 400),
    ("/explorer/records/" + "33" * 16, 403),
    ("/explorer/search?q=what", 400),
    ("/explorer/no/such/page", 404),
]


@pytest.mark.parametrize(("path", "expected"), HOSTILE)
def test_hostile_paths_get_a_clear_answer(chain: Chain, path: str, expected: int) -> None:
    status, body, _ = get(chain.ops, path)
    assert status == expected, body
    assert "Traceback" not in body
    assert "<script>alert" not in body, "what a path carries is escaped"
    if path.startswith("/explorer/") and expected >= 400:
        assert 'id="error"' in body


def test_search_redirects(chain: Chain) -> None:
    for query, landing in (
        ("1", "/explorer/blocks/1"),
        (chain.tx_ids[0].hex(), f"/explorer/tx/{chain.tx_ids[0].hex()}"),
        (chain.signer.hex(), f"/explorer/accounts/{chain.signer.hex()}"),
    ):
        with urllib.request.urlopen(f"http://{chain.ops}/explorer/search?q={query}") as response:
            assert response.url.endswith(landing)
            assert response.status == 200


def test_nothing_gated_is_shown(chain: Chain) -> None:
    """A transfer's reference is in its body; the signer is in the signed transaction:
    neither is on a block's, a transaction's page or in the proof."""
    _, tx_html, _ = get(chain.ops, f"/explorer/tx/{chain.tx_ids[0].hex()}")
    block = next(h for h in links(tx_html) if h.startswith("/explorer/blocks/"))
    pages = [tx_html, get(chain.ops, block)[1], get(chain.ops, "/explorer/")[1]]
    pages.append(get(chain.ops, f"/explorer/tx/{chain.tx_ids[0].hex()}/proof.json")[1])
    for page in pages:
        assert CANARY not in page
        assert chain.signer.hex() not in page
    document = json.loads(pages[-1])
    raw = base64.b64decode(document["proof"])
    assert CANARY.encode() not in raw
    assert chain.signer not in raw
