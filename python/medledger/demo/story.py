"""The demo's narration: one line per step, each step checked against the outcome it
must have, and a summary table at the end. A step whose outcome is not the expected one
stops the story with `DemoFailed`, so `medledger demo` exits non-zero."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["DemoFailed", "Story"]


class DemoFailed(Exception):
    """A step of the demo did not have the outcome it must have."""


@dataclass(frozen=True)
class Step:
    section: str
    name: str
    outcome: str
    ok: bool


@dataclass
class Section:
    title: str
    figures: list[str] = field(default_factory=list)


PIPE_WIDTH = 120
"""Columns when the output is not a terminal (a log, CI): tables stay readable."""


class Story:
    def __init__(self, console: Console | None = None) -> None:
        # soft_wrap: a step's line is never broken, so scripts can grep the output.
        width = None if sys.stdout.isatty() else PIPE_WIDTH
        self.console = console or Console(soft_wrap=True, highlight=False, width=width)
        self.steps: list[Step] = []
        self.sections: list[Section] = []
        self._section = ""

    def section(self, title: str) -> None:
        self._section = title
        self.sections.append(Section(title))
        self.console.print()
        self.console.rule(Text(title, style="bold"))

    def figure(self, text: str) -> None:
        """A figure of the current part, for the summary (a rate, a count)."""
        self.sections[-1].figures.append(text)

    def note(self, text: str) -> None:
        """Context that is not a checked step."""
        self.console.print(Text(f"  {text}", style="dim"))

    def check(self, name: str, outcome: str, *, ok: bool, expected: str = "") -> None:
        """Records and prints one step; raises `DemoFailed` when `ok` is false."""
        self.steps.append(Step(self._section, name, outcome, ok))
        if ok:
            self.console.print(Text.assemble(("✓ ", "green"), (name, "bold"), ": ", outcome))
            return
        why = f"{outcome} (expected {expected})" if expected else outcome
        self.console.print(Text.assemble(("✗ ", "bold red"), (name, "bold"), ": ", (why, "red")))
        raise DemoFailed(f"{self._section} / {name}: {why}")

    def expect_equal(self, name: str, observed: object, expected: object, outcome: str) -> None:
        self.check(
            name, outcome, ok=observed == expected, expected=f"{expected!r}, got {observed!r}"
        )

    def failed(self, error: BaseException) -> None:
        """An error no step expected (a refusal, a timeout) ends the story as a failure."""
        if isinstance(error, DemoFailed):
            return
        self.steps.append(Step(self._section, "unexpected error", repr(error), ok=False))
        self.console.print(Text.assemble(("✗ unexpected error: ", "bold red"), repr(error)))

    def summary(self) -> Table:
        """One row per part: its steps as expected out of those run, and its figures."""
        table = Table(title="medledger demo: summary")
        for column in ("part", "steps as expected", "figures"):
            table.add_column(column)
        for section in self.sections:
            steps = [s for s in self.steps if s.section == section.title]
            good = sum(s.ok for s in steps)
            failed = [s.name for s in steps if not s.ok]
            verdict = Text(f"{good}/{len(steps)}", style="green" if not failed else "bold red")
            if failed:
                verdict.append(f" — failed: {'; '.join(failed)}")
            table.add_row(section.title, verdict, "\n".join(section.figures))
        return table

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)
