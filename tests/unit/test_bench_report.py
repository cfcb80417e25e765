"""The benchmark report: one self-contained HTML page whose tables carry the headline
figures and whose plots are embedded PNGs (no file beside it, no script)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

from medledger.bench.harness import latency_cdf, throughput_timeline
from medledger.bench.report import peers_section, render

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)]


def section() -> dict[str, object]:
    return {
        "name": "node",
        "title": "Committed <transfers>",
        "headline": {"committed tx/s": 12345.678, "transactions": 100000},
        "plots": [
            {
                "kind": "line",
                "title": "over time",
                "series": {"committed": throughput_timeline([(0.1, 500), (0.7, 1000)])},
            },
            {
                "kind": "cdf",
                "title": "latency",
                "series": {"latency": [[ms, q] for q, ms in latency_cdf([0.01, 0.02, 0.5])]},
            },
            {"kind": "bars", "title": "cost", "series": {"µs": {"verify": 8.0, "apply": 9.0}}},
        ],
    }


def test_the_page_embeds_every_plot_and_escapes_names() -> None:
    page = render([section()])
    assert len(images(page)) == 3
    assert all(image.startswith(PNG_MAGIC) for image in images(page))
    assert "12,345.68" in page
    assert "100,000" in page
    assert "Committed &lt;transfers&gt;" in page
    assert "<script" not in page


def test_throughput_and_latency_series() -> None:
    timeline = throughput_timeline([(0.0, 100), (1.0, 300), (2.9, 600)], buckets=3)
    assert [round(x, 3) for x, _ in timeline] == [0.0, 0.967, 1.933, 2.9]
    assert round(sum(rate for _, rate in timeline) * (2.9 / 3)) == 1000  # all counted
    cdf = latency_cdf([0.003, 0.001, 0.002, 0.004], points=4)
    assert cdf == [[0.25, 2.0], [0.5, 3.0], [0.75, 4.0], [1.0, 4.0]]


def test_the_peer_libraries_appear_beside_ours() -> None:
    results = {
        "benchmarks": [
            {"group": "verify", "name": "test_verify_batch", "stats": {"median": 0.001}},
            {"group": "verify", "name": "test_peer_pynacl", "stats": {"median": 0.004}},
        ]
    }
    peers = peers_section(results)
    assert peers["headline"] == {"verify: verify_batch vs pynacl": "1.000 ms vs 4.000 ms (x4.00)"}


def test_the_command_renders_every_benchmark_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "node.data.json").write_text(json.dumps(section()))
    other = {**section(), "name": "records", "title": "Records"}
    (tmp_path / "records.data.json").write_text(json.dumps(other))
    subprocess.run(
        [sys.executable, "-m", "medledger.bench.report", str(tmp_path)], check=True, timeout=120
    )
    page = (tmp_path / "report.html").read_text()
    assert len(images(page)) == 6
    assert page.index("id='node'") < page.index("id='records'")
