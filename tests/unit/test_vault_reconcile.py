"""A vault that crashed between storing a version and seeing its anchor commit: at start
it makes the version visible if the anchor committed, and discards it if the anchor can
no longer commit. A real lone-validator LedgerNode over real LMDB files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from medledger.client import TxBuilder
from medledger.config import Home
from medledger.crypto import SigningKey
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.node.ledger_node import LedgerNode
from medledger.run.homes import init_home
from medledger.vault import envelope
from medledger.vault.kek import FileKek
from medledger.vault.service import Vault
from medledger.vault.store import VaultStore
from medledger.wire.v1 import envelope_pb2, records_pb2, tx_pb2

CHAIN_ID = "vault-reconcile"
FAR_MS = 2**62


async def commit(node: LedgerNode, tx: envelope_pb2.SignedTransaction) -> tx_pb2.Receipt:
    (admitted,) = node.submit([tx])
    return await admitted.result(30)


def test_a_vault_settles_what_a_crash_left_pending(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    init_home(home, CHAIN_ID, listen="127.0.0.1:0")
    custodian = load_key(home.keys_dir / "client.json")
    builder = TxBuilder(custodian, CHAIN_ID)
    kek = FileKek.load_or_create(home.keys_dir / "vault-kek.json")
    patient = SigningKey.generate().public_key

    async def scenario() -> None:
        node = LedgerNode(
            home, home.load_config(), Genesis.load(home.genesis), load_key(home.validator_key)
        )
        node.start()
        try:
            issued = await commit(
                node,
                builder.issue_credential(
                    subject=custodian.public_key,
                    role=tx_pb2.ROLE_CUSTODIAN,
                    organisation="org-0",
                    expires_ms=FAR_MS,
                    expiry_height=node.head.height + 10,
                ),
            )
            assert issued.code == tx_pb2.RESULT_CODE_OK
            store = VaultStore(home.root / "vault", kek)
            material = (envelope.new_data_key(), envelope.new_salt())
            anchored_id, lost_id = b"a" * 16, b"l" * 16
            # Both stored; the process "dies" before either anchor is seen committed.
            store.put_pending(anchored_id, 1, material, b"sealed", (b"c" * 32, 100))
            store.put_pending(lost_id, 1, material, b"sealed", (b"d" * 32, node.head.height))
            anchor = records_pb2.AnchorRecord(
                record_id=anchored_id,
                version=1,
                patient=patient,
                commitment=b"c" * 32,
                resource_type="Observation",
            )
            receipt = await commit(
                node,
                builder.sign(
                    tx_pb2.TransactionBody(anchor_record=anchor),
                    expiry_height=node.head.height + 10,
                ),
            )
            assert receipt.code == tx_pb2.RESULT_CODE_OK
            assert store.key_material(anchored_id, 1) is None  # still pending
            Vault(node, custodian, store)  # the restart
            assert store.pending() == []
            assert store.key_material(anchored_id, 1) == material  # its anchor committed
            assert store.key_material(lost_id, 1) is None  # past its expiry, never anchored
            assert store.body(lost_id, 1) is None
            store.close()
        finally:
            await node.stop()

    asyncio.run(scenario())
