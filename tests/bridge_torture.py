"""Bridge torture: numbered messages host A -> NATS JetStream -> host B while both bridges are
SIGKILLed and restarted at random moments; every number must arrive exactly once, in order.

Two "hosts" on one machine: channel A (a producer process sends 0..N-1 into it), an out-bridge
A -> SUBJECT, an in-bridge SUBJECT -> channel B, and a consumer draining B. Both bridges are
real ``shmipc bridge`` processes, killed with SIGKILL at random moments (uniform in
``--kill-every``) and started again at once, ``--kills`` times each. Then they run undisturbed
until B has received everything.

    python tests/bridge_torture.py --messages 100000 --kills 8     # make bridge-torture

Also imported by tests/test_bridge_kill.py with a smaller default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shmipc  # noqa: E402
from shmipc.bridge.server import NatsCluster, NatsServer  # noqa: E402

PRODUCER = """
import sys, time, shmipc
path, n, pace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with shmipc.Channel.open(path) as ch:
    i = 0
    while i < n:
        batch = [b"%d" % k for k in range(i, min(n, i + 100))]
        ch.send_many_bytes(batch)
        i += len(batch)
        if pace:
            time.sleep(pace)
print("produced", n)
"""


class Bridge:
    """One bridge direction as a process that can be killed and restarted."""

    def __init__(self, direction: str, path: Path, subject: str, urls: list[str],
                 logs: Path, extra: list[str]) -> None:
        self.args = [sys.executable, "-m", "shmipc", "bridge", direction, str(path), subject,
                     "--no-progress", "--stats", "--verbose", *extra]
        for url in urls:
            self.args += ["--server", url]
        self.direction = direction
        self.logs = logs
        self.starts = 0
        self.kills = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        with open(self.logs / f"{self.direction}-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=ROOT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.kills += 1

    def stop(self) -> int | None:
        """SIGINT (a clean stop), then SIGKILL after 15 s; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def final_stats(self) -> dict[str, object]:
        """The last --stats line of the last run."""
        log = self.logs / f"{self.direction}-{self.starts}.log"
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.startswith("{"):
                return dict(json.loads(line))
        return {}

    def output(self) -> str:
        parts = []
        for log in sorted(self.logs.glob(f"{self.direction}-*.log")):
            text = log.read_text(errors="replace").strip()
            if text:
                parts.append(f"--- {log.name}\n{text}")
        return "\n".join(parts)


@dataclass
class Report:
    messages: int
    received: int = 0
    duplicates: int = 0
    missing: int = 0
    out_of_order: int = 0
    kills_out: int = 0
    kills_in: int = 0
    kills_during_flow: int = 0
    node_kills: int = 0
    flowed_without_node: int = 0
    reconnects_out: int = 0
    reconnects_in: int = 0
    seconds: float = 0.0
    exit_out: int | None = None
    exit_in: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.received == self.messages and not self.duplicates and not self.missing
                and not self.problems)


class Consumer(threading.Thread):
    """Drains channel B, keeping every number received."""

    def __init__(self, path: Path, expected: int) -> None:
        super().__init__(daemon=True)
        self.channel = shmipc.Channel.open(path)
        self.expected = expected
        self.got: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and len(self.got) < self.expected:
            try:
                batch = self.channel.recv_many_bytes(1000, timeout=0.2)
            except shmipc.Empty:
                continue
            self.got.extend(int(m) for m in batch)


def run(messages: int, kills: int, workdir: Path, *, kill_every: tuple[float, float] = (0.3, 1.5),
        cluster: bool = False, node_kills: int = 0, pace: float = 0.0,
        capacity_b: int = 1 << 20, timeout: float = 600.0, seed: int | None = None,
        verbose: bool = False) -> Report:
    """Run one torture (see the module docstring) and return what the consumer saw."""
    rng = random.Random(seed)
    report = Report(messages)
    tag = uuid.uuid4().hex[:8]
    subject = f"torture.{tag}"
    path_a = workdir / f"a-{tag}.shmipc"
    path_b = workdir / f"b-{tag}.shmipc"
    logs = workdir / f"logs-{tag}"
    logs.mkdir()
    servers: NatsCluster | NatsServer
    if cluster:
        servers = NatsCluster.start(workdir / f"cluster-{tag}", 3)
        urls = [servers.nodes[0].url]  # the bridges learn the other nodes from it
        extra = ["--replicas", "3"]
    else:
        servers = NatsServer.start(workdir / f"nats-{tag}")
        urls = [servers.url]
        extra = []
    channel_a = shmipc.Channel.create(path_a, 1 << 20)
    channel_b = shmipc.Channel.create(path_b, capacity_b)
    out = Bridge("out", path_a, subject, urls, logs, extra)
    inn = Bridge("in", path_b, subject, urls, logs, extra + ["--ack-wait", "5"])
    consumer = Consumer(path_b, messages)
    producer = None
    start = time.monotonic()
    try:
        out.start()
        inn.start()
        consumer.start()
        with open(logs / "producer.log", "wb") as producer_log:
            producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(path_a),
                                         str(messages), str(pace)], cwd=ROOT,
                                        stdout=producer_log, stderr=subprocess.STDOUT)
        # The kills: each bridge its own schedule, both during the flow.
        plan = sorted(_schedule(rng, kills, kill_every, out) +
                      _schedule(rng, kills, kill_every, inn), key=lambda x: x[0])
        # Node kills: when a share of the messages has arrived, so that traffic flows.
        node_plan = [messages * (i + 1) // (node_kills + 1) for i in range(node_kills)] \
            if cluster else []
        while plan or node_plan:
            if node_plan and len(consumer.got) >= node_plan[0]:
                node_plan.pop(0)
                _kill_node(servers, report, verbose, consumer)
            if plan and time.monotonic() >= start + plan[0][0]:
                bridge = plan.pop(0)[1]
                if len(consumer.got) < messages:
                    report.kills_during_flow += 1
                bridge.kill()
                if verbose:
                    print(f"  {time.monotonic() - start:6.2f}s kill {bridge.direction} "
                          f"(received {len(consumer.got)})", flush=True)
                bridge.start()
            if node_plan and len(consumer.got) >= messages:
                break  # too late for the remaining node kills
            time.sleep(0.01)
        deadline = start + timeout
        while len(consumer.got) < messages and time.monotonic() < deadline:
            for bridge in (out, inn):
                if not bridge.alive():
                    code = bridge.process.returncode if bridge.process else None
                    report.problems.append(f"{bridge.direction}-bridge exited with status "
                                           f"{code}")
                    bridge.start()
            time.sleep(0.1)
        if len(consumer.got) >= messages:
            time.sleep(1.0)  # anything doubled after the last one would show up now
            extra_got = channel_b.recv_many_bytes(10**6, timeout=0) if \
                channel_b.statistics().messages else []
            consumer.got.extend(int(m) for m in extra_got)
        else:
            report.problems.append(f"timed out after {timeout} s")
    finally:
        report.seconds = time.monotonic() - start
        consumer.halt.set()
        consumer.join(5)
        report.exit_out = out.stop()
        report.exit_in = inn.stop()
        if producer is not None:
            try:
                producer.wait(10)
            except subprocess.TimeoutExpired:
                producer.kill()
                producer.wait(10)
        servers.stop()
        for ch in (channel_a, channel_b, consumer.channel):
            ch.unlink()
            ch.close()
    got = consumer.got
    report.received = len(got)
    seen = set()
    for n in got:
        if n in seen:
            report.duplicates += 1
        seen.add(n)
    report.missing = sum(1 for n in range(messages) if n not in seen)
    report.out_of_order = sum(1 for a, b in zip(got, got[1:], strict=False) if b < a)
    report.kills_out, report.kills_in = out.kills, inn.kills
    report.reconnects_out = int(out.final_stats().get("reconnects", 0))  # type: ignore[call-overload]
    report.reconnects_in = int(inn.final_stats().get("reconnects", 0))  # type: ignore[call-overload]
    for code, name in ((report.exit_out, "out"), (report.exit_in, "in")):
        if code not in (0, 130):
            report.problems.append(f"{name}-bridge stopped with status {code}")
    for bridge in (out, inn):
        text = bridge.output()
        if "Traceback" in text:
            report.problems.append(f"{bridge.direction}-bridge printed a traceback:\n{text}")
    if not report.ok and verbose:
        print(out.output(), inn.output(), sep="\n")
    return report


def _schedule(rng: random.Random, kills: int, every: tuple[float, float],
              bridge: Bridge) -> list[tuple[float, Bridge]]:
    """``kills`` moments, each a random interval in ``every`` after the previous one."""
    at, plan = 0.0, []
    for _ in range(kills):
        at += rng.uniform(*every)
        plan.append((at, bridge))
    return plan


def _kill_node(cluster: NatsCluster | NatsServer, report: Report, verbose: bool,
               consumer: Consumer) -> None:
    """Kill node 0 (the one the bridges were given); once messages flow again through the
    other nodes (or after 20 s), start it again."""
    assert isinstance(cluster, NatsCluster)
    node = cluster.nodes[0]
    node.kill()
    report.node_kills += 1
    before = len(consumer.got)
    if verbose:
        print(f"  killed node 0 (received {before})", flush=True)
    deadline = time.monotonic() + 20
    while len(consumer.got) < min(before + 1000, consumer.expected) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    report.flowed_without_node = len(consumer.got) - before
    if verbose:
        print(f"  {report.flowed_without_node} more arrived without node 0; restarting it",
              flush=True)
    node.restart()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of each bridge")
    parser.add_argument("--cluster", action="store_true", help="a 3-node cluster")
    parser.add_argument("--node-kills", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0,
                        help="seconds the producer sleeps after each 100 messages")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(0.3, 1.5),
                        metavar=("MIN", "MAX"), help="seconds between kills of one bridge")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shmipc-bridge-torture-") as tmp:
        report = run(args.messages, args.kills, Path(tmp), cluster=args.cluster,
                     node_kills=args.node_kills, pace=args.pace, seed=args.seed, verbose=True,
                     kill_every=tuple(args.kill_every))
    print(json.dumps({k: v for k, v in report.__dict__.items() if k != "problems"}))
    for problem in report.problems:
        print("PROBLEM:", problem[:4000])
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("SHMIPC_SPIN", "0")
    sys.exit(main())
