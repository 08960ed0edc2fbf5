"""A 10-second soak (``make soak`` runs 60 s): 2 producers x 2 consumers, random sizes, every
message checksummed, nothing lost, duplicated or reordered per producer (``tests/torture.py``).
"""

from __future__ import annotations

from test_crash import run_torture


def test_soak_two_by_two_random_sizes():
    report = run_torture("--duration", "10", "--kills", "0", "--producers", "2",
                         "--consumers", "2")
    assert report["kills"] == {}
    assert report["messages"] > 1000
    assert report["lost_with_killed_consumers"] == 0
    assert report["messages"] >= report["sent_logged"]
