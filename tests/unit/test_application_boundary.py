"""The application's boundary (ABCI's prepare, process, finalize and commit): expiry decided
in one place, a proposal's transactions judged by the application, receipts made once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from medledger.app import Application
from medledger.app.application import expiry_refusal
from medledger.app.state import MemoryState
from medledger.crypto import SigningKey, sha256
from medledger.errors import Rejected
from medledger.tx import TxBuilder
from medledger.wire.v1 import tx_pb2
from tests.conftest import CHAIN_ID


@dataclass(frozen=True)
class Tx:
    signer: bytes
    body: tx_pb2.TransactionBody
    tx_id: bytes
    tx_hash: bytes
    body_hash: bytes
    checked: bool


def make_tx(expiry_height: int = 100, *, checked: bool = True, tx_id: bytes | None = None) -> Tx:
    key = SigningKey.generate()
    signed = TxBuilder(key, CHAIN_ID).create_account(expiry_height=expiry_height)
    body = tx_pb2.TransactionBody.FromString(signed.body)
    if tx_id is not None:
        body.tx_id = tx_id
    return Tx(
        key.public_key, body, body.tx_id, sha256(b"leaf" + body.tx_id), sha256(signed.body), checked
    )


APP = Application(CHAIN_ID, expiry_horizon_blocks=1_000)


@pytest.mark.parametrize(
    ("expiry", "height", "expired"), [(10, 9, False), (10, 10, False), (10, 11, True)]
)
def test_a_transaction_may_enter_blocks_up_to_its_expiry_height(
    expiry: int, height: int, expired: bool
) -> None:
    refusal = expiry_refusal(expiry, height)
    assert (refusal is not None) is expired
    if refusal is not None:
        assert refusal.status == "FAILED_PRECONDITION"
        assert refusal.field == "body.expiry_height"
        assert f"{expiry} is below the block height {height}" in str(refusal)


def test_admission_and_the_block_apply_the_same_expiry_rule() -> None:
    tx = make_tx(expiry_height=10)
    APP.check_tx(tx.body, 10, tx.signer)  # the last height it may enter
    with pytest.raises(Rejected, match="below the next height 11") as refused:
        APP.check_tx(tx.body, 11, tx.signer)
    assert refused.value.field == "body.expiry_height"
    for height, code in ((10, tx_pb2.RESULT_CODE_OK), (11, tx_pb2.RESULT_CODE_EXPIRED)):
        result = APP.finalize_block(
            height, bytes(32), MemoryState([]), [(tx.signer, tx.body)], time_ms=1
        )
        assert result.outcomes[0].code == code


def test_prepare_proposal_keeps_the_order_and_refuses_the_expired() -> None:
    fresh_a, stale, fresh_b = make_tx(50), make_tx(9), make_tx(10)
    prepared = APP.prepare_proposal(10, [fresh_a, stale, fresh_b])
    assert prepared.txs == [fresh_a, fresh_b]
    assert [tx for tx, _ in prepared.refused] == [stale]
    assert prepared.refused[0][1].field == "body.expiry_height"


def test_process_proposal_checks_what_this_node_did_not_admit() -> None:
    wrong_chain = make_tx(checked=False)
    wrong_chain.body.chain_id = "another-chain"
    verdict = APP.process_proposal(5, [make_tx(), wrong_chain])
    assert verdict is not None
    assert verdict.startswith("txs[1]: ")
    assert "body.chain_id" in verdict
    # Admitted here (checked at admission): its rules are not run a second time.
    assert APP.process_proposal(5, [make_tx(), make_tx(checked=True)]) is None


def test_process_proposal_refuses_a_transaction_id_twice() -> None:
    first = make_tx(tx_id=bytes(16))
    second = make_tx(tx_id=bytes(16))
    assert APP.process_proposal(5, [first, second]) == "a transaction id appears twice"


def test_an_expired_transaction_does_not_make_a_proposal_invalid() -> None:
    # Validators agree on it and finalize_block records it as EXPIRED.
    assert APP.process_proposal(5, [make_tx(expiry_height=4, checked=False)]) is None


def test_commit_makes_one_record_per_transaction_from_its_outcome() -> None:
    ok, expired = make_tx(expiry_height=100), make_tx(expiry_height=3)
    txs = [ok, expired]
    result = APP.finalize_block(
        7, bytes(32), MemoryState([]), [(t.signer, t.body) for t in txs], time_ms=1
    )
    block = APP.commit(7, txs, result)
    assert block.writes == result.writes
    assert block.app_hash == result.app_hash
    assert [(r.height, r.index) for r in block.records] == [(7, 0), (7, 1)]
    assert [r.code for r in block.records] == [tx_pb2.RESULT_CODE_OK, tx_pb2.RESULT_CODE_EXPIRED]
    assert [r.tx_hash for r in block.records] == [ok.tx_hash, expired.tx_hash]
    assert [r.body_hash for r in block.records] == [ok.body_hash, expired.body_hash]
    assert [(tx_id, tx_hash) for tx_id, tx_hash, _ in block.tx_index] == [
        (ok.tx_id, ok.tx_hash),
        (expired.tx_id, expired.tx_hash),
    ]
    assert [raw for _, _, raw in block.tx_index] == [r.SerializeToString() for r in block.records]
