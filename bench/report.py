"""Print benchmark medians with the speed-up over each peer measured in the same run.

python bench/report.py bench/results/latest.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

PEER_PREFIX = "test_peer_"


def short_name(name: str) -> str:
    return name.removeprefix("test_").removeprefix("peer_")


def report(results: dict[str, object]) -> str:
    groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for bench in results["benchmarks"]:  # type: ignore[attr-defined]
        groups[bench["group"]].append((bench["name"], bench["stats"]["median"]))
    lines = []
    for group, rows in sorted(groups.items()):
        peers = [(name, median) for name, median in rows if name.startswith(PEER_PREFIX)]
        header = f"| {group} | median ms | " + " | ".join(f"x vs {short_name(p)}" for p, _ in peers)
        lines += [header + " |", "|" + "---|" * (2 + len(peers))]
        for name, median in sorted(rows, key=lambda row: row[1]):
            ratios = " | ".join(f"{peer_median / median:.2f}" for _, peer_median in peers)
            lines.append(f"| {short_name(name)} | {median * 1e3:.3f} | {ratios} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("bench/results/latest.json")
    print(report(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
