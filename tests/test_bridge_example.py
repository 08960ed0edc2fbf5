"""examples/bridge/: the five commands of its docstrings, run as real processes, output checked."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nats")

from test_examples import Proc  # noqa: E402

from conftest import ROOT, unlink_channel_names  # noqa: E402

EXAMPLE = ROOT / "examples" / "bridge"


def test_two_hosts_joined_by_two_bridges(tmp_path: Path) -> None:
    host_a, host_b = tmp_path / "host-a.shmipc", tmp_path / "host-b.shmipc"
    server = Proc(str(EXAMPLE / "server.py"), "--port", "0")
    procs = [server]
    try:
        line = server.line(30)
        assert line is not None and line.startswith("NATS JetStream at nats://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        out = Proc("-m", "shmipc", "bridge", "out", str(host_a), "demo.orders", "--server", url)
        inn = Proc("-m", "shmipc", "bridge", "in", str(host_b), "demo.orders", "--server", url)
        consumer = Proc(str(EXAMPLE / "consumer.py"), str(host_b))
        procs += [out, inn, consumer]
        producer = subprocess.run([sys.executable, str(EXAMPLE / "producer.py"), str(host_a)],
                                  capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert producer.returncode == 0, producer.stderr
        assert producer.stdout == "sent 1000 orders\n"
        status, lines, err = consumer.finish(90)
        assert status == 0, err
        assert lines == [
            "order 0: 1 x widget-0",
            "order 1: 2 x widget-1",
            "order 2: 3 x widget-2",
            "received 1000 orders, numbers 0..999, each exactly once, in order",
        ]
        for bridge in (out, inn):  # Ctrl-C: a clean stop
            bridge.popen.send_signal(signal.SIGINT)
            status, lines, err = bridge.finish(30)
            assert status == 130 and lines == [] and "Traceback" not in err, err
        server.popen.send_signal(signal.SIGINT)
        status, lines, err = server.finish(30)
        assert status == 130 and "Traceback" not in err
    finally:
        for proc in procs:
            proc.kill()
        for path in (host_a, host_b):
            unlink_channel_names(path)


def test_bridge_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/bridge.py --smoke: both paths end to end, every message received."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bridge.py"), "--smoke",
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                          timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "small object x 300: direct" in done.stdout and "64 KiB x 20: direct" in done.stdout
    assert "bridge adds" in done.stdout
