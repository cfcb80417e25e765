"""Whether a node is ready to serve, as a probe asks: each reason it is not, or none.

Ready means: no long-lived task has ended, the ledger's storage takes blocks, this node
is within `BLOCKS_BEHIND_MAX` blocks of what the other validators signed, and, in a
network, more than two thirds of the next height's voting power is reachable (its own
and that of the validators whose peer links are up). A node that is not ready still
runs and catches up; it is only taken out of a load balancer's rotation."""

from __future__ import annotations

from dataclasses import dataclass

from medledger.node.consensus_driver import ConsensusDriver
from medledger.node.ledger_node import LedgerNode
from medledger.node.supervisor import Supervisor

__all__ = ["BLOCKS_BEHIND_MAX", "Readiness"]

BLOCKS_BEHIND_MAX = 2


@dataclass
class Readiness:
    node: LedgerNode
    driver: ConsensusDriver | None
    supervisor: Supervisor

    def reasons(self) -> list[str]:
        """Why the node is not ready; empty when it is."""
        reasons = []
        if self.supervisor.failure is not None:
            reasons.append(f"a long-lived task ended: {self.supervisor.failure}")
        full = self.node.storage_full()
        if full is not None:
            reasons.append(f"storage: {full.reason}")
        if self.driver is not None:
            behind = self.driver.blocks_behind()
            if behind > BLOCKS_BEHIND_MAX:
                reasons.append(
                    f"catching up: {behind} blocks behind what the validators signed "
                    f"(ready within {BLOCKS_BEHIND_MAX})"
                )
            reached, total = self.driver.reachable_power()
            if 3 * reached <= 2 * total:
                reasons.append(
                    f"peers: reaches {reached} of {total} voting power (needs more than 2/3)"
                )
        return reasons
