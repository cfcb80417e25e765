"""`medledger demo`, the README's main job: the whole story on four validator processes
(a shorter workload than `make run`), and a step with the wrong outcome failing it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from medledger.demo import DemoFailed, run_demo
from medledger.demo.story import Story
from tests.e2e.cli_runner import medledger


def test_the_demo_tells_the_whole_story_on_four_validators(tmp_path: Path) -> None:
    result = medledger(
        "demo", "--home", str(tmp_path / "demo"), "--transfers", "2000", "--channel-payments", "400"
    )
    out = result.stdout
    # Payments on the ledger, each way a payment can go wrong.
    assert "✓ 4 validator process(es) on 127.0.0.1" in out
    assert "committed as INSUFFICIENT_FUNDS" in out
    assert "paid once: True" in out
    assert "refused ALREADY_EXISTS" in out
    assert "one flipped bit: refused" in out
    assert "✓ 2,000 micropayments committed: 2,000 in" in out
    # Records: consent scopes the researcher's reads, revocation ends them, all audited.
    assert "✓ the researcher fetches the Observation: released under consent" in out
    assert (
        "✓ the researcher fetches the Condition (not consented): refused PERMISSION_DENIED" in out
    )
    assert "✓ the researcher fetches the Observation again: refused PERMISSION_DENIED" in out
    assert "3 accesses, each with who, when, why and outcome: RELEASED, REFUSED, REFUSED" in out
    assert "The patient's access log" in out
    # Channels through the hub, settled on the ledger.
    assert "✓ the insurer pays 400 billing lines to the hospital through the hub" in out
    assert "✓ both hops agree off the ledger" in out
    assert "✓ the hospital exports its remittance: 400 lines over 40 claims" in out
    assert "✓ the accounts moved by what was paid" in out
    # After shutdown, from the files alone.
    for node in range(4):
        assert f"✓ verify-chain node{node} after shutdown: OK" in out
    assert "✓ all 4 node(s) hold the same blocks: True" in out
    assert "✓ no protected health information on the chain" in out
    assert "✗" not in out
    assert "demo OK:" in out


def test_a_step_with_the_wrong_outcome_fails_the_demo_and_stops_its_processes(
    tmp_path: Path,
) -> None:
    """A real refusal the story does not expect (the hub refuses an invoice request for
    no payments) ends the demo with DemoFailed, the summary naming the failed step, and
    no process it started left running."""
    out = io.StringIO()
    console = Console(file=out, width=120, soft_wrap=True)
    with pytest.raises(DemoFailed, match="invoices"):
        run_demo(tmp_path / "demo", 1, transfers=100, channel_payments=0, console=console)
    text = out.getvalue()
    assert "✗ unexpected error" in text
    assert "failed: unexpected error" in text  # the summary's row for the channels
    assert "demo FAILED" in text
    assert not _processes_under(tmp_path)


def test_the_cli_refuses_a_workload_of_nothing(tmp_path: Path) -> None:
    result = medledger("demo", "--home", str(tmp_path / "d"), "--transfers", "0", check=False)
    assert result.returncode == 1
    assert "--transfers must be at least 1" in result.stderr


def test_a_step_checks_its_outcome() -> None:
    story = Story(Console(file=io.StringIO()))
    story.section("part")
    story.check("good", "as expected", ok=True)
    with pytest.raises(DemoFailed, match="part / bad: 2 \\(expected 1, got 2\\)"):
        story.expect_equal("bad", 2, 1, "2")
    assert not story.ok
    assert [s.ok for s in story.steps] == [True, False]


def _processes_under(root: Path) -> list[str]:
    """Command lines of live processes that name a path under `root`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(root) in command and state != "Z":
            found.append(command)
    return found
