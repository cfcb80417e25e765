"""Safety, liveness and agreement of the real engine and application under seeded
network faults, crashes and Byzantine validators. `pytest tests/sim --seeds N` soaks
with more seeds; a failure names its seed, and `--seed S` replays it alone."""

from __future__ import annotations

from tests.sim.harness import Scenario, Simulation


def test_seed(seed: int) -> None:
    scenario = Scenario.from_seed(seed)
    simulation = Simulation(scenario)
    try:
        simulation.run()
    except AssertionError as failure:
        raise AssertionError(f"seed {seed} ({scenario}): {failure}") from failure
