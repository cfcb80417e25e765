"""The demo's payments: an insurer pays a hospital's claims on the ledger, and every way
a payment can go wrong is shown refused or recorded as it must be."""

from __future__ import annotations

import time

from medledger.client import LedgerClient, TxBuilder, verify_transaction_proof
from medledger.client.proofs import ProofError
from medledger.demo.cast import Cast
from medledger.demo.story import Story
from medledger.errors import Rejected
from medledger.genesis import Genesis
from medledger.transport.credentials import ClientTls
from medledger.wire.v1 import tx_pb2

__all__ = ["run_payments"]

CLAIM_MICROS = 125_000_000
BATCH = 1_000


def code_name(code: int) -> str:
    return tx_pb2.ResultCode.Name(code).removeprefix("RESULT_CODE_")  # type: ignore[arg-type]


def run_payments(
    story: Story,
    address: str,
    cast: Cast,
    genesis: Genesis,
    *,
    transfers: int,
    tls: ClientTls | None,
) -> None:
    chain_id = genesis.chain_id
    with LedgerClient(address, tls=tls) as client:
        expiry = client.status().height + 1_000
        insurer = TxBuilder(cast.insurer, chain_id)
        hospital = TxBuilder(cast.hospital, chain_id)
        processor = TxBuilder(cast.processor, chain_id)

        registrations = [
            (insurer, tx_pb2.ROLE_INSURER, cast.names[cast.insurer.public_key]),
            (hospital, tx_pb2.ROLE_HOSPITAL, cast.names[cast.hospital.public_key]),
            (processor, tx_pb2.ROLE_PAYMENT_PROCESSOR, cast.names[cast.processor.public_key]),
        ]
        receipts = [
            client.submit(
                builder.register_participant(
                    kind=tx_pb2.PARTICIPANT_KIND_ORGANISATION,
                    role=role,
                    display_name=name,
                    expiry_height=expiry,
                )
            )
            for builder, role, name in registrations
        ]
        story.check(
            "register the insurer, the hospital and the payment processor",
            ", ".join(f"{code_name(r.code)} at height {r.height}" for r in receipts),
            ok=all(r.code == tx_pb2.RESULT_CODE_OK for r in receipts),
            expected="OK for each",
        )

        before = client.get_account(cast.hospital.public_key).balance_micros
        claims = [
            insurer.transfer(
                to=cast.hospital.public_key,
                amount_micros=CLAIM_MICROS,
                reference=f"claim CLM-2026-{n:04d} CPT 99213",
                expiry_height=expiry,
            )
            for n in range(5)
        ]
        (batch,) = list(client.submit_batches([claims]))
        after = client.get_account(cast.hospital.public_key).balance_micros
        story.check(
            "pay 5 claims in one streamed batch",
            f"all {sorted({code_name(r.code) for r in batch})}, heights "
            f"{sorted({r.height for r in batch})}, hospital +{after - before:,} µ",
            ok=all(r.code == tx_pb2.RESULT_CODE_OK for r in batch)
            and after - before == 5 * CLAIM_MICROS,
            expected=f"5 x OK and +{5 * CLAIM_MICROS:,} µ",
        )

        overdraft = client.submit(
            processor.transfer(
                to=cast.insurer.public_key,
                amount_micros=client.get_account(cast.processor.public_key).balance_micros + 1,
                expiry_height=expiry,
            )
        )
        story.check(
            "the processor overspends its balance by 1 µ",
            f"committed as {code_name(overdraft.code)} ({overdraft.message}), nothing moved",
            ok=overdraft.code == tx_pb2.RESULT_CODE_INSUFFICIENT_FUNDS,
            expected="INSUFFICIENT_FUNDS",
        )

        again = client.submit(claims[0])
        paid_once = client.get_account(cast.hospital.public_key).balance_micros == after
        story.check(
            "claim 0 submitted again (a replay)",
            f"its first outcome returned (height {again.height}, index {again.index}), "
            f"paid once: {paid_once}",
            ok=(again.height, again.index) == (batch[0].height, batch[0].index) and paid_once,
            expected=f"height {batch[0].height} index {batch[0].index}, paid once",
        )

        conflicting = insurer.transfer(
            to=cast.hospital.public_key, amount_micros=1, expiry_height=expiry, tx_id=batch[0].tx_id
        )
        try:
            client.submit(conflicting)
            refusal = "accepted"
        except Rejected as rejected:
            refusal = f"refused {rejected.status} ({rejected})"
        story.check(
            "another body under claim 0's id",
            refusal,
            ok=refusal.startswith("refused ALREADY_EXISTS"),
            expected="ALREADY_EXISTS",
        )

        # The insurer, who signed the claim, is entitled to its body and proof.
        with LedgerClient(address, reader=cast.insurer, tls=tls) as insurer_client:
            response = insurer_client.get_transaction(tx_id=batch[2].tx_id)
        block_hash = verify_transaction_proof(response, genesis.validator_set(), chain_id)
        body = bytearray(response.tx.body)
        body[-1] ^= 0x01  # one flipped bit: a forged claim
        response.tx.body = bytes(body)
        try:
            verify_transaction_proof(response, genesis.validator_set(), chain_id)
            tampered = "accepted"
        except ProofError as error:
            tampered = f"refused ({error})"
        story.check(
            "an auditor checks claim 2 offline against the genesis validators",
            f"Merkle path of {len(response.proof.hashes)} hashes and the commit signatures "
            f"check out (block {block_hash.hex()[:16]}…); one flipped bit: {tampered}",
            ok=tampered.startswith("refused"),
            expected="the tampered proof refused",
        )

        story.note(f"streaming {transfers:,} pre-signed micropayments in batches of {BATCH:,}…")
        txs = [
            insurer.transfer(to=cast.hospital.public_key, amount_micros=1, expiry_height=expiry)
            for _ in range(transfers)
        ]
        started = time.perf_counter()
        committed = 0
        for receipts_of_batch in client.submit_batches(
            [txs[i : i + BATCH] for i in range(0, transfers, BATCH)], timeout_s=120
        ):
            committed += sum(r.code == tx_pb2.RESULT_CODE_OK for r in receipts_of_batch)
        elapsed = time.perf_counter() - started
        status = client.status()
        story.figure(f"{committed:,} streamed transfers at {committed / elapsed:,.0f} tx/s")
        story.check(
            f"{transfers:,} micropayments committed",
            f"{committed:,} in {elapsed:.2f} s ({committed / elapsed:,.0f} tx/s), "
            f"height {status.height}, {status.committed_txs:,} transactions on chain",
            ok=committed == transfers,
            expected=f"{transfers:,} OK",
        )
