"""benchmarks/run.py runs end to end and checks every message (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_quick_run_checks_messages(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--no-sweep",
         "--no-plot", "--systems", "shmipc,multiprocessing.Pipe,os.pipe", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| shmipc |" in proc.stdout
    medians = json.loads(out.read_text())["medians"]
    # A measurement whose consumer found a wrong, missing or extra message is recorded as None.
    for label in ("small", "4k", "1m", "batch64", "producers1", "producers2", "producers4"):
        assert medians[label]["shmipc"]["msgs_per_s"], label
    assert medians["1m"]["shmipc recv_view"]["msgs_per_s"]
    assert medians["pingpong"]["shmipc"]["p50_us"]
    for peer in ("multiprocessing.Pipe", "os.pipe + framing"):
        assert medians["small"][peer]["msgs_per_s"], peer
