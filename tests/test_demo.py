"""The `make demo` script runs real processes and says what happened."""

import subprocess
import sys

from conftest import ROOT


def test_demo_runs_and_reports_both_uses():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "received 100000 messages in order" in out
    assert "received by a later process: {'note': 'still here'}" in out
    assert "answered 5 requests: [1, 4, 9, 16, 25]" in out
    assert out.rstrip().endswith("no message lost")
