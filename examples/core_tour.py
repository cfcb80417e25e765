"""A short tour of what medledger's Rust core does for a node, on a realistic block.

Four hospital validators, 256 patients and payers signing 10,000 transactions; the block is
assembled, committed by three of the four validators, and validated the way a peer would;
then one transaction's inclusion proof is checked offline, and tampering is caught.
"""

from __future__ import annotations

import time

from medledger import merkle
from medledger.block import ValidatorSet, assemble_block, make_commit, tx_hash, validate_block
from medledger.crypto import SigningKey
from medledger.errors import InvalidBlock
from medledger.tx import sign_transaction

CHAIN_ID = "medledger-tour"
TX_COUNT = 10_000


def main() -> None:
    hospitals = [SigningKey.generate() for _ in range(4)]
    validators = ValidatorSet([(key.public_key, 10) for key in hospitals])
    clients = [SigningKey.generate() for _ in range(256)]
    print(f"validators: {len(validators)} hospitals, total voting power {validators.total_power}")

    started = time.perf_counter()
    txs = [
        sign_transaction(clients[i % len(clients)], CHAIN_ID, b"transfer #%d: 1250000 micros" % i)
        for i in range(TX_COUNT)
    ]
    print(f"signed {TX_COUNT:,} transactions in {time.perf_counter() - started:.2f} s")

    block = assemble_block(
        chain_id=CHAIN_ID,
        height=1,
        parent_hash=bytes(32),
        txs=txs,
        proposer=hospitals[0].public_key,
        validators=validators,
        next_validators=validators,
        app_hash=bytes(32),
        time_unix_ms=int(time.time() * 1000),
    )
    commit = make_commit(
        chain_id=CHAIN_ID,
        header=block.header,
        round=0,
        signers=[(i, hospitals[i]) for i in range(3)],
    )
    block_bytes, commit_bytes = block.SerializeToString(), commit.SerializeToString()
    print(f"block 1: {len(block_bytes):,} bytes, commit signed by 3 of 4 validators (30 of 40)")

    started = time.perf_counter()
    validated = validate_block(
        block_bytes,
        commit_bytes,
        chain_id=CHAIN_ID,
        height=1,
        parent_hash=bytes(32),
        validators=validators,
    )
    elapsed = time.perf_counter() - started
    print(
        f"validated in {elapsed * 1000:.1f} ms "
        f"({TX_COUNT / elapsed:,.0f} tx/s): header links, Merkle root, "
        f"{validated.tx_signatures_verified:,} tx signatures, 3 commit signatures"
    )
    print(f"block hash {validated.block_hash.hex()}")

    leaves = [tx.SerializeToString() for tx in block.txs]
    index = 4242
    proof = merkle.inclusion_proof(leaves, index)
    ok = merkle.verify_inclusion(leaves[index], index, len(leaves), proof, block.header.tx_root)
    print(
        f"tx {tx_hash(leaves[index]).hex()[:16]}… inclusion proof: "
        f"{len(proof)} hashes, verifies offline: {ok}"
    )

    block.txs[index].body = b"transfer #4242: 9999999999 micros"
    try:
        validate_block(
            block.SerializeToString(),
            commit_bytes,
            chain_id=CHAIN_ID,
            height=1,
            parent_hash=bytes(32),
            validators=validators,
        )
    except InvalidBlock as error:
        print(f"tampered block rejected: {error} (field {error.field!r})")


if __name__ == "__main__":
    main()
