"""`medledger bench node --report DIR` as a user types it: a real node, a short run, and
the HTML page with its three plots and the figures the JSON result holds."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path


def test_bench_node_writes_a_report_with_its_plots(tmp_path: Path) -> None:
    result_path = tmp_path / "node.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "medledger",
            "bench",
            "node",
            "--txs",
            "3000",
            "--batch",
            "500",
            "--payers",
            "10",
            "--json",
            str(result_path),
            "--report",
            str(tmp_path / "report"),
        ],
        check=True,
        timeout=240,
        capture_output=True,
    )
    result = json.loads(result_path.read_text())
    page = (tmp_path / "report" / "report.html").read_text()
    pngs = [base64.b64decode(b) for b in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)]
    assert len(pngs) == 3
    assert all(png.startswith(b"\x89PNG") for png in pngs)
    assert f"{result['committed_tx_per_s']:,.2f}" in page
    assert "submit-to-commit latency (CDF)" in page
