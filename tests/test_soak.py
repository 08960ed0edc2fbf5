"""A 10-second soak (``make soak`` runs 60 s): 2 producers x 2 consumers mixing single sends,
batches and views, random sizes, every message checksummed; nothing lost, duplicated,
invented or reordered per producer, with spinning off and with the default spin
(``tests/torture.py`` with no kill or stall rounds).
"""

from __future__ import annotations

from test_crash import run_torture


def test_soak_two_by_two_random_sizes_nothing_lost():
    report = run_torture("--duration", "10", "--rounds", "0")
    assert report["kills"] == {} and report["stalls"] == {}
    assert report["lost"] == 0 and report["loss_allowance"] == 0
    assert report["recoveries"] == 0
    for phase in report["phases"]:
        assert phase["messages"] == phase["committed_known"] == phase["sent_counter"]
