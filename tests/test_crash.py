"""Kill-and-stall torture in the test suite: a shorter run of ``tests/torture.py``
(``make torture`` runs 120 s).

Producers and consumers on a 64 KiB file channel are SIGKILLed at random instants and inside
the compiled core at every kill point (``shmipc._core._killpoint``), alone or among the
others, and lock holders are stopped with SIGSTOP for 0.3-2 s; once with spinning off and
once with the library's default spin. The script checks as it goes (progress after every
death, recoveries equal to the dead lock holders, nothing taken over from a stopped holder)
and at the end (no message torn, duplicated, invented or reordered; losses only what killed
consumers had taken). The module docstring of ``tests/torture.py`` gives the exact oracle.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

TORTURE = str(ROOT / "tests" / "torture.py")
KILL_POINTS = ("locked", "send_copied", "send_committed", "recv_copied", "recv_committed",
               "sleeping", "takeover")


def run_torture(*args: str, timeout: float = 240) -> dict:
    """Run the torture script; return its JSON report after asserting it found nothing."""
    result = subprocess.run([sys.executable, TORTURE, *args], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no report; stderr:\n{result.stderr[-4000:]}"
    report = json.loads(lines[-1])
    print(json.dumps(report, indent=1))  # shown with -s, or on failure
    assert report["violations"] == [], report["violations"]
    assert result.returncode == 0, result.stderr[-4000:]
    assert [phase["spin"] for phase in report["phases"]] == ["0", "default", "records:0"]
    for phase in report["phases"]:
        assert phase["messages"] > 1000, phase
        assert phase["verified"] >= phase["messages"]
        assert phase["lost"] <= phase["loss_allowance"]
    return report


def test_kills_at_every_point_and_stalls_lose_nothing_unaccounted():
    report = run_torture("--duration", "24")
    by_point = report["kills_by_point"]
    for point in (*KILL_POINTS, "random"):
        assert by_point.get(point, 0) >= 1, by_point
    kills = report["kills"]
    for side in ("producer", "consumer"):
        assert sum(n for k, n in kills.items() if k.endswith(side)) >= 3, kills
    # Lock holders were stopped (every takeover round stops one first), and every phase died
    # and stalled: recoveries, counted by the phases, match their dead holders.
    assert report["stalls"].get("holders", 0) >= 2, report["stalls"]
    for phase in report["phases"]:
        assert phase["kills"] and phase["stalls"], phase
        assert phase["recoveries"] >= 1
    assert all(phase["solo_deaths"] for phase in report["phases"]), report["phases"]
