"""After shutdown, from the LMDB files alone: every node's chain re-verified from genesis,
all nodes holding the same blocks, and no byte of the patient's identity in any block."""

from __future__ import annotations

from medledger.chain import ChainStore
from medledger.chain.verify import verify_chain
from medledger.config import Home
from medledger.demo.story import Story
from medledger.genesis import Genesis
from medledger.wire.v1 import envelope_pb2

__all__ = ["verify_after_shutdown"]


def verify_after_shutdown(
    story: Story, homes: list[Home], genesis: Genesis, phi: tuple[str, ...]
) -> None:
    chains: list[list[bytes]] = []
    needles = [text.encode() for text in phi]
    leaked: set[str] = set()
    for home in homes:
        store = ChainStore(home.data, home.load_config().lmdb_map_size_bytes)
        try:
            report = verify_chain(store, genesis)
            chains.append(
                [
                    envelope_pb2.CommitCertificate.FromString(store.commit(h) or b"").block_hash
                    for h in range(1, report.height + 1)
                ]
            )
            for height in range(1, report.height + 1):
                block = store.block(height) or b""
                leaked.update(t for t, n in zip(phi, needles, strict=True) if n in block)
        finally:
            store.close()
        verdict = "OK" if report.ok else f"BROKEN at {report.broken_height}: {report.reason}"
        story.check(
            f"verify-chain {home.root.name} after shutdown",
            f"{verdict} ({report.height} blocks, {report.transactions} transactions)",
            ok=report.ok and report.height > 0,
            expected="OK",
        )
    common = min(len(chain) for chain in chains)
    story.figure(f"{len(homes)} chain(s) re-verified from genesis, {common} blocks in common")
    same = len({tuple(chain[:common]) for chain in chains}) == 1
    story.check(
        f"all {len(homes)} node(s) hold the same blocks",
        f"{same} for the {common} blocks every node has",
        ok=same and common > 0,
        expected="the same block hash at every height",
    )
    story.figure(f"no PHI in any block: {not leaked}")
    story.check(
        "no protected health information on the chain",
        f"none of the patient's name, MRN, birth date or city in any block: {not leaked}",
        ok=not leaked,
        expected=f"nothing found, found {sorted(leaked)}",
    )
