"""The bridge's bars with real processes: numbered messages host A -> NATS -> host B while each
bridge is SIGKILLed and restarted at random moments, and a 3-node cluster losing the node the
bridges talk to. Every number must arrive exactly once.

The suite runs 20,000 messages and 4 kills of each bridge; ``make bridge-torture`` runs
100,000 messages and 8 kills each (tests/bridge_torture.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nats")

import bridge_torture  # noqa: E402


def test_kill_both_bridges_at_random_nothing_lost_nothing_doubled(tmp_path: Path) -> None:
    # Paced so that the flow lasts about as long as the kills (~6 s).
    report = bridge_torture.run(20_000, 4, tmp_path, kill_every=(0.3, 1.2), pace=0.03,
                                timeout=240)
    assert report.problems == []
    assert (report.kills_out, report.kills_in) == (4, 4)
    assert report.kills_during_flow >= 6  # almost all while messages were on their way
    assert report.missing == 0 and report.duplicates == 0
    assert report.received == 20_000
    assert report.out_of_order == 0  # a restart republishes the outbox before anything new


def test_cluster_failover_of_the_node_the_bridges_talk_to(tmp_path: Path) -> None:
    """Both bridges are given node 0 only (they learn the others from it); node 0 is killed
    while messages flow, the bridges reconnect to another node and go on, nothing lost."""
    report = bridge_torture.run(10_000, 0, tmp_path, cluster=True, node_kills=1, pace=0.01,
                                timeout=240)
    assert report.problems == []
    assert report.node_kills == 1
    assert report.flowed_without_node > 0  # it went on while node 0 was down
    assert report.reconnects_out >= 1 and report.reconnects_in >= 1
    assert report.missing == 0 and report.duplicates == 0
    assert report.received == 10_000
