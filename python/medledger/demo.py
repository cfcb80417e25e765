"""The README's main job: start a real node on 127.0.0.1 (LMDB, one validator) and run a
short healthcare-billing workload against it over gRPC, printing what happened."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from medledger.chain import ChainStore
from medledger.chain.verify import verify_chain
from medledger.cli import DEFAULT_FUND_MICROS, init_home
from medledger.client import LedgerClient, TxBuilder, verify_transaction_proof
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.errors import Rejected
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.network import free_base_port, init_network, network_homes
from medledger.node.launcher import start_node
from medledger.wire.v1 import envelope_pb2, tx_pb2

__all__ = ["run_demo"]

CHAIN_ID = "medledger-demo"
STREAMED_TXS = 20_000
BATCH = 1_000


def code_name(code: int) -> str:
    return tx_pb2.ResultCode.Name(code).removeprefix("RESULT_CODE_")  # type: ignore[arg-type]


def run_demo(home_dir: Path | None = None, validators: int = 4) -> None:
    with tempfile.TemporaryDirectory(prefix="medledger-demo-") as tmp:
        root = home_dir or Path(tmp) / "network"
        if validators == 1:
            homes = [Home(root)]
            genesis = init_home(homes[0], CHAIN_ID, listen="127.0.0.1:0")
        else:
            genesis = init_network(
                root, CHAIN_ID, validators, free_base_port(validators), DEFAULT_FUND_MICROS
            )
            homes = network_homes(root, validators)
        nodes = [start_node(home.root, home.load_config().listen) for home in homes]
        print(
            f"{validators} validator process(es) up on 127.0.0.1 "
            f"({', '.join(n.address for n in nodes)}), chain {CHAIN_ID}, LMDB under {root}"
        )
        try:
            _workload(nodes[0].address, load_key(homes[0].keys_dir / "client.json"), genesis)
        finally:
            for node in nodes:
                node.stop()
        _verify_all(homes, genesis)


def _verify_all(homes: list[Home], genesis: Genesis) -> None:
    """verify-chain on every node's LMDB files, and the same block at every height."""
    chains = []
    for home in homes:
        store = ChainStore(home.data, home.load_config().lmdb_map_size_bytes)
        try:
            report = verify_chain(store, genesis)
            chains.append([store.commit(h) for h in range(1, report.height + 1)])
        finally:
            store.close()
        verdict = "OK" if report.ok else f"BROKEN at {report.broken_height}: {report.reason}"
        print(
            f"verify-chain {home.root.name} after shutdown: {verdict} "
            f"({report.height} blocks, {report.transactions} transactions)"
        )
    common = min(len(chain) for chain in chains)
    hashes = {
        tuple(
            envelope_pb2.CommitCertificate.FromString(c or b"").block_hash for c in chain[:common]
        )
        for chain in chains
    }
    print(f"all {len(homes)} node(s) hold the same {common} blocks: {len(hashes) == 1}")


def _workload(address: str, insurer: SigningKey, genesis: Genesis) -> None:
    hospital = SigningKey.generate()
    with LedgerClient(address) as client:
        expiry = client.status().height + 1_000
        payer, provider = TxBuilder(insurer, CHAIN_ID), TxBuilder(hospital, CHAIN_ID)

        receipts = [
            client.submit(
                payer.register_participant(
                    kind=tx_pb2.PARTICIPANT_KIND_ORGANISATION,
                    role=tx_pb2.ROLE_INSURER,
                    display_name="Northwind Health Insurance",
                    expiry_height=expiry,
                )
            ),
            client.submit(
                provider.register_participant(
                    kind=tx_pb2.PARTICIPANT_KIND_ORGANISATION,
                    role=tx_pb2.ROLE_HOSPITAL,
                    display_name="St. Example General Hospital",
                    expiry_height=expiry,
                )
            ),
            client.submit(provider.create_account(expiry_height=expiry)),
        ]
        print(
            "registered an insurer and a hospital, opened the hospital's account: "
            + ", ".join(f"{code_name(r.code)} at height {r.height}" for r in receipts)
        )

        claims = [
            payer.transfer(
                to=hospital.public_key,
                amount_micros=125_000_000,
                reference=f"claim-2026-{n:04d} CPT 99213",
                expiry_height=expiry,
            )
            for n in range(5)
        ]
        (batch_receipts,) = list(client.submit_batches([claims]))
        print(
            f"paid 5 claims in one streamed batch: all {code_name(batch_receipts[0].code)}, "
            f"heights {sorted({r.height for r in batch_receipts})}"
        )
        balance = client.get_account(hospital.public_key).balance_micros
        print(f"hospital balance: {balance:,} micros")

        overspend = provider.transfer(
            to=insurer.public_key, amount_micros=balance + 1, expiry_height=expiry
        )
        receipt = client.submit(overspend)
        print(
            f"hospital overspends by 1 micro: committed as {code_name(receipt.code)} "
            f"({receipt.message})"
        )

        again = client.submit(claims[0])
        print(
            f"claim 0 resubmitted: same outcome returned (height {again.height}, "
            f"index {again.index}), paid once"
        )
        conflicting = payer.transfer(
            to=hospital.public_key,
            amount_micros=1,
            expiry_height=expiry,
            tx_id=batch_receipts[0].tx_id,
        )
        try:
            client.submit(conflicting)
        except Rejected as rejected:
            print(f"another body under claim 0's id: refused {rejected.status} ({rejected})")

        response = client.get_transaction(tx_id=batch_receipts[2].tx_id)
        block_hash = verify_transaction_proof(response, genesis.validator_set(), CHAIN_ID)
        print(
            f"claim 2 proven offline: Merkle path of {len(response.proof.hashes)} hashes, "
            f"header and commit signature check out (block {block_hash.hex()[:16]}…)"
        )

        print(f"streaming {STREAMED_TXS:,} pre-signed micropayments in batches of {BATCH:,}…")
        txs = [
            payer.transfer(to=hospital.public_key, amount_micros=1, expiry_height=expiry)
            for _ in range(STREAMED_TXS)
        ]
        started = time.perf_counter()
        committed = 0
        for batch in client.submit_batches(
            [txs[i : i + BATCH] for i in range(0, STREAMED_TXS, BATCH)], timeout_s=120
        ):
            committed += sum(r.code == tx_pb2.RESULT_CODE_OK for r in batch)
        elapsed = time.perf_counter() - started
        status = client.status()
        print(
            f"committed {committed:,} transfers in {elapsed:.2f} s "
            f"({committed / elapsed:,.0f} tx/s), height {status.height}, "
            f"{status.committed_txs:,} transactions on chain"
        )
