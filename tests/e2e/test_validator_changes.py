"""Validator-set changes by governance, on real processes (issue 16).

Four validators (4 organisations, power 10 each) run as processes. A fifth node joins
with `medledger node join`: it follows the chain, signing nothing. Proposals that would
leave fewer than 4 validators or move a third of the power at once are refused. Approved
by three organisations, the fifth validator is added; from the height the change names
(H+2) blocks carry the new set's hash and its signatures, and with an original validator
SIGKILLed the chain goes on only because the newcomer votes (4 of 5 needed). Then a
running validator is removed: from H+2 no certificate carries its signature, it keeps
following the chain as an observer, and the four left commit on. `verify-chain` replays
all of it from every node's files, the follower's included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from medledger.block import ValidatorSet, block_hash, validate_block
from medledger.chain import ChainStore
from medledger.client import LedgerClient, TxBuilder
from medledger.client.proofs import ProofError, verify_transaction_proof
from medledger.config import Home
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.run.launcher import NodeProcess, start_node
from medledger.wire.v1 import envelope_pb2, ledger_pb2, tx_pb2
from tests.e2e.cli_runner import init_network_as_typed, medledger
from tests.integration.conftest import stop_all

CHAIN_ID = "e2e-validators-1"
POWER = 10
WAIT_S = 60.0


def _wait(what: str, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _height(address: str) -> int:
    with LedgerClient(address) as client:
        return client.status().height


def _govern(tmp: Path, name: str, signers: list[list[str]], *propose: str) -> dict[str, object]:
    """A proposal written by the first signer's organisation, signed by each, submitted."""
    path = tmp / f"{name}.json"
    medledger("gov", "propose", *propose, "--out", str(path), *signers[0])
    for home in signers:
        medledger("gov", "sign", str(path), *home)
    submitted = medledger("gov", "submit", str(path), *signers[0], check=False)
    receipt: dict[str, object] = json.loads(submitted.stdout[: submitted.stdout.rindex("}") + 1])
    return receipt


def _transfer_commits(home: Home, address: str, to: bytes) -> ledger_pb2.GetTransactionResponse:
    """A transfer that commits, and its proof as its signer reads it."""
    key = load_key(home.keys_dir / "client.json")
    with LedgerClient(address, reader=key) as client:
        builder = TxBuilder(key, CHAIN_ID)
        height = client.status().height
        tx = builder.transfer(to=to, amount_micros=1, expiry_height=height + 100)
        receipt = client.submit(tx, wait=True)
        assert receipt.status == tx_pb2.TX_STATUS_COMMITTED
        assert receipt.code == tx_pb2.RESULT_CODE_OK
        return client.get_transaction(tx_id=receipt.tx_id)


def test_a_validator_joins_votes_and_another_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "net"
    port = init_network_as_typed(root, CHAIN_ID, monkeypatch, ports=10)
    # Client APIs on port..port+3 and PeerServices on port+4..port+7 (init); the
    # newcomer's on port+8 and port+9.
    addresses = [*(f"127.0.0.1:{port + i}" for i in range(4)), f"127.0.0.1:{port + 8}"]
    peers = [*(f"127.0.0.1:{port + 4 + i}" for i in range(4)), f"127.0.0.1:{port + 9}"]
    homes = [Home(root / f"node{i}") for i in range(5)]
    # Organisation 1 runs the newcomer: its CA certifies the new node.
    joined = medledger(
        "node", "join", "--home", str(homes[4].root), "--genesis", str(homes[0].genesis),
        "--peers", ",".join(peers[:4]), "--listen", addresses[4], "--peer-listen", peers[4],
        "--org-ca-dir", str(homes[1].tls_dir),
    )  # fmt: skip
    newcomer = load_key(homes[4].validator_key).public_key
    assert newcomer.hex() in joined.stdout
    leaving = load_key(homes[3].validator_key).public_key
    payee = load_key(homes[1].keys_dir / "client.json").public_key
    genesis = Genesis.load(homes[0].genesis)
    original = [(v.public_key, v.power) for v in genesis.validators]
    five = ValidatorSet([*original, (newcomer, POWER)])
    four = ValidatorSet([m for m in five.members() if m[0] != leaving])
    orgs = [["--home", str(home.root)] for home in homes[:4]]
    nodes: list[NodeProcess | None] = []
    try:
        nodes = [
            start_node(home.root, address) for home, address in zip(homes, addresses, strict=True)
        ]
        _wait("the follower to commit blocks", lambda: _height(addresses[4]) >= 3)

        # Refused: fewer than 4 validators left; a third of the power moved at once.
        refused = _govern(tmp_path, "too-few", orgs[:3], "--remove-validator", leaving.hex())
        assert refused["code"] == "RESULT_CODE_VALIDATOR_CHANGE_REFUSED"
        assert "would leave 3 validators" in str(refused["message"])
        refused = _govern(
            tmp_path, "too-much", orgs[:3], "--add-validator", newcomer.hex(), "--power",
            str(2 * POWER), "--org", "org-1", "--address", peers[4],
        )  # fmt: skip
        assert "moves 20 of 40 power" in str(refused["message"])

        added = _govern(
            tmp_path, "add", orgs[1:4], "--add-validator", newcomer.hex(), "--power",
            str(POWER), "--org", "org-1", "--address", peers[4],
        )  # fmt: skip
        assert added["code"] == "RESULT_CODE_OK", added
        effective = int(str(added["height"])) + 2
        _wait("the change to take effect", lambda: _height(addresses[4]) >= effective + 3)

        # Validator 1 dies: 4 of 5 are needed, so every block from now on carries the
        # newcomer's vote.
        killed = nodes[1]
        assert killed is not None
        killed.kill()
        nodes[1] = None
        stopped_at = _height(addresses[0])
        _transfer_commits(homes[0], addresses[0], payee)
        _wait("blocks without validator 1", lambda: _height(addresses[4]) >= stopped_at + 5)
        nodes[1] = start_node(homes[1].root, addresses[1])

        removed = _govern(tmp_path, "remove", orgs[:3], "--remove-validator", leaving.hex())
        assert removed["code"] == "RESULT_CODE_OK", removed
        dropped = int(str(removed["height"])) + 2
        _wait("blocks after the removal", lambda: _height(addresses[0]) >= dropped + 5)
        # The removed validator follows the chain, signing nothing.
        _wait("the removed node to follow", lambda: _height(addresses[3]) >= dropped + 5)
        late = _transfer_commits(homes[2], addresses[2], payee)
    finally:
        stop_all(*nodes)

    store = ChainStore(homes[2].data, 1 << 30, 1 << 30)
    try:
        head = store.head.height
        assert head >= dropped + 5
        newcomer_signed = 0
        for height in range(1, head + 1):
            expected = (
                four
                if height >= dropped
                else five
                if height >= effective
                else ValidatorSet(original)
            )
            block, commit = store.block(height), store.commit(height)
            assert block is not None
            assert commit is not None
            header = envelope_pb2.Block.FromString(block).header
            assert header.validators_hash == expected.hash, height
            validate_block(
                block,
                commit,
                chain_id=CHAIN_ID,
                height=height,
                parent_hash=header.parent_hash,
                validators=expected,
                app_hash=header.app_hash,
            )
            signers = {
                expected.members()[s.validator_index][0]
                for s in envelope_pb2.CommitCertificate.FromString(commit).signatures
            }
            newcomer_signed += newcomer in signers
            if height >= dropped:
                assert leaving not in signers, height
        assert newcomer_signed >= 5
    finally:
        store.close()
    # An auditor trusting only the genesis follows both changes to the set that signed.
    assert len(late.transitions) == 2
    assert verify_transaction_proof(late, ValidatorSet(original), CHAIN_ID) == block_hash(
        late.header.SerializeToString(deterministic=True)
    )
    del late.transitions[1]
    with pytest.raises(ProofError, match=r"header\.validators_hash"):
        verify_transaction_proof(late, ValidatorSet(original), CHAIN_ID)
    for home in homes:
        verified = medledger("verify-chain", "--home", str(home.root))
        assert "chain OK" in verified.stdout, verified.stdout
