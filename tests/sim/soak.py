"""A long soak of the simulation, outside pytest: `python -m tests.sim.soak --count
100000 --jobs 2`. Prints the failing seeds (replay one with `pytest tests/sim --seed S`),
the counts of safety and liveness failures, and the heights decided per simulated second.
"""

from __future__ import annotations

import argparse
import collections
import logging
import multiprocessing
import time

from tests.sim.harness import Scenario, Simulation


def run_seeds(bounds: tuple[int, int]) -> tuple[collections.Counter[str], list[str]]:
    logging.disable(logging.WARNING)  # the guard's refusals are expected under faults
    totals: collections.Counter[str] = collections.Counter()
    failures = []
    for seed in range(*bounds):
        scenario = Scenario.from_seed(seed)
        simulation = Simulation(scenario)
        try:
            simulation.run()
        except AssertionError as failure:
            kind = str(failure).split(":", 1)[0]
            totals[kind] += 1
            failures.append(f"seed {seed} ({scenario.byzantine}): {failure}")
            continue
        totals["passed"] += 1
        totals["heights"] += scenario.target_height
        totals["simulated_ms"] += simulation.now
        totals[f"byzantine={scenario.byzantine}"] += 1
        totals["unbound_proposals_dropped"] += sum(
            p.replica.unbound_proposals for p in simulation.nodes
        )
    return totals, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    chunk = 500
    bounds = [
        (s, min(s + chunk, args.start + args.count))
        for s in range(args.start, args.start + args.count, chunk)
    ]
    began = time.monotonic()
    totals: collections.Counter[str] = collections.Counter()
    with multiprocessing.Pool(args.jobs) as pool:
        for part, failures in pool.imap_unordered(run_seeds, bounds):
            totals.update(part)
            for failure in failures:
                print(failure, flush=True)
    elapsed = time.monotonic() - began
    per_second = totals["heights"] / (totals["simulated_ms"] / 1000) if totals["passed"] else 0
    print(f"seeds {args.start}..{args.start + args.count - 1} in {elapsed:.0f} s")
    for key in sorted(totals):
        print(f"  {key}: {totals[key]}")
    print(f"  heights decided per simulated second: {per_second:.2f}")


if __name__ == "__main__":
    main()
