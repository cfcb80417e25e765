"""Renders the benchmarks' figures as one self-contained HTML page with plots.

    python -m medledger.bench.report DIR [--peers bench/results/latest.json]

reads every DIR/*.data.json (what `medledger bench … --report DIR` writes: a headline
table and plots) and, with `--peers`, pytest-benchmark's results (each of our functions
beside the peer libraries measured in the same run), and writes DIR/report.html: tables,
and PNG plots drawn with matplotlib, embedded, so the page travels as one file.

A separate program on purpose: plotting libraries take a second to load, and nothing
else in `medledger` needs them."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

__all__ = ["main", "render"]

PEER_PREFIX = "test_peer_"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5rem; } figcaption { font-size: 0.9rem; color: #555; }
"""


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def plot(spec: dict[str, Any]) -> str:
    """One plot as a base64 PNG: "line" and "cdf" draw each series' points, "bars"
    draws each series' bars side by side."""
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    series: dict[str, Any] = spec["series"]
    if spec["kind"] == "bars" and spec.get("horizontal"):
        # Long labels and values of different magnitudes: one row per label, log scale.
        labels = list(dict.fromkeys(bar for values in series.values() for bar in values))
        figure.set_size_inches(6.4, 0.6 + 0.45 * len(labels) * max(1, len(series)) / 2 + 0.8)
        height = 0.8 / max(1, len(series))
        for offset, (name, values) in enumerate(series.items()):
            positions = [i + offset * height for i in range(len(labels))]
            axes.barh(positions, [values.get(bar, 0) for bar in labels], height, label=name)
        axes.set_yticks(
            [i + height * (len(series) - 1) / 2 for i in range(len(labels))], labels, fontsize=8
        )
        axes.invert_yaxis()
        axes.set_xscale("log")
        axes.set_xlabel(spec.get("x", ""))
    elif spec["kind"] == "bars":
        labels = list(dict.fromkeys(bar for values in series.values() for bar in values))
        width = 0.8 / max(1, len(series))
        for offset, (name, values) in enumerate(series.items()):
            positions = [i + offset * width for i in range(len(labels))]
            axes.bar(positions, [values.get(bar, 0) for bar in labels], width, label=name)
        axes.set_xticks(
            [i + width * (len(series) - 1) / 2 for i in range(len(labels))], labels, fontsize=8
        )
    else:
        for name, points in series.items():
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            if spec["kind"] == "line":
                axes.step(xs, ys, where="post", label=name)
            else:
                axes.plot(xs, ys, label=name)
        values = [p[0] for points in series.values() for p in points if p[0] > 0]
        if spec["kind"] == "cdf" and values and max(values) > 20 * min(values):
            axes.set_xscale("log")  # a long tail: read it in orders of magnitude
        axes.set_ylim(bottom=0)
        axes.set_xlabel(spec.get("x", ""))
    axes.set_title(spec["title"], fontsize=10)
    axes.set_ylabel(spec.get("y", ""))
    axes.grid(alpha=0.3)
    if len(series) > 1 or spec["kind"] != "bars":
        axes.legend(fontsize=8)
    return _png(figure)


def _table(rows: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_number(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table><tr><th>figure</th><th>value</th></tr>{cells}</table>"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def peers_section(results: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's results as a section: per group, each function's median and its
    speed-up over each peer measured in the same run, and a plot of the medians."""
    groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for bench in results["benchmarks"]:
        groups[bench["group"] or bench["name"]].append((bench["name"], bench["stats"]["median"]))
    headline: dict[str, Any] = {}
    bars: dict[str, dict[str, float]] = {"ours": {}, "peer": {}}
    for group, rows in sorted(groups.items()):
        peers = [(n, m) for n, m in rows if n.startswith(PEER_PREFIX)]
        ours = [(n, m) for n, m in rows if not n.startswith(PEER_PREFIX)]
        for name, median in ours:
            for peer, peer_median in peers:
                short = peer.removeprefix(PEER_PREFIX)
                headline[f"{group}: {name.removeprefix('test_')} vs {short}"] = (
                    f"{median * 1e3:.3f} ms vs {peer_median * 1e3:.3f} ms "
                    f"(x{peer_median / median:.2f})"
                )
        if ours and peers:
            bars["ours"][group] = min(m for _, m in ours) * 1e3
            bars["peer"][group] = min(m for _, m in peers) * 1e3
    return {
        "name": "peers",
        "title": "Rust core beside the peer libraries (same run)",
        "headline": headline,
        "plots": [
            {
                "kind": "bars",
                "horizontal": True,
                "title": "ours beside the fastest peer, median (lower is better)",
                "x": "ms (log scale)",
                "series": bars,
            }
        ],
    }


def render(sections: Sequence[dict[str, Any]]) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>medledger benchmarks</title><style>{STYLE}</style></head><body>",
        "<h1>medledger benchmarks</h1>",
    ]
    for section in sections:
        parts.append(
            f"<h2 id='{html.escape(section['name'])}'>{html.escape(section['title'])}</h2>"
        )
        parts.append(_table(section["headline"]))
        for spec in section["plots"]:
            parts.append(
                f"<figure><img alt='{html.escape(spec['title'])}' "
                f"src='data:image/png;base64,{plot(spec)}'>"
                f"<figcaption>{html.escape(spec['title'])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medledger.bench.report")
    parser.add_argument("directory", type=Path, help="where the *.data.json files are")
    parser.add_argument("--peers", type=Path, help="pytest-benchmark's JSON results")
    args = parser.parse_args(argv)
    sections = [json.loads(p.read_text()) for p in sorted(args.directory.glob("*.data.json"))]
    if args.peers is not None:
        sections.insert(0, peers_section(json.loads(args.peers.read_text())))
    out = args.directory / "report.html"
    out.write_text(render(sections))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
