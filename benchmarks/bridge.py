"""Bridged throughput against nats-py publishing the same payloads directly.

    python benchmarks/bridge.py            # or: make bridge-bench
    python benchmarks/bridge.py --quick    # smaller counts, one repetition
    python benchmarks/run.py --workloads bridge   # the same rows in the main table (make bench)

Two end-to-end paths through one local ``nats-server -js`` (file storage, one node):

* **direct**: a nats-py publisher (``publish_async``, 1024 in flight, a ``Nats-Msg-Id`` on each
  message as the bridge sets, and a chance for nats-py to send every 256 KiB as the out-bridge
  gives it: left to buffer up to its 2 MiB, nats-py joins each flush into a fresh buffer and
  64 KiB messages cost it nearly twice the CPU) -> stream -> a nats-py pull consumer (batches
  of 256, one AckAll acknowledgement per batch, as the in-bridge does);
* **bridged**: a producer ``send_bytes`` into channel A -> ``shmipc bridge out`` -> stream ->
  ``shmipc bridge in`` -> channel B -> a consumer ``recv_many_bytes``.

Payloads: the small object ``{"name": "b", "age": 20}`` in msgpack (15 bytes) and 64 KiB.
Reported: messages per second end to end (first send to last receipt) and the CPU time per
message of every process involved, the server's included, from the first send on (start-up,
imports and connecting are left out). The bridge's added cost is
bridged CPU / direct CPU - 1: on a loaded 2-CPU machine CPU time is the fairer measure, since
the processes compete for the same cores. Medians over the repetitions. The shmipc processes
run with ``SHMIPC_SPIN=0`` (no polling before sleeping: at full throughput a spin buys nothing
and its CPU time is waiting, not work).

``benchmarks/run.py`` imports :func:`measure`, :func:`table` and :func:`bars` (its ``bridge``
workload, run when nats-py and nats-server are installed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BAR = 0.20  # the bridge may add this much to the CPU time of publishing through NATS directly

PUBLISHER = r"""
import asyncio, collections, sys, nats
url, subject, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
payload = PAYLOAD(size)
async def main():
    nc = await nats.connect(url)
    js = nc.jetstream()
    print("ready", flush=True)
    sys.stdin.readline()
    window = collections.deque()
    unflushed = 0
    for i in range(n):
        window.append(await js.publish_async(subject, payload,
                                             headers={"Nats-Msg-Id": "bench:%d" % i}))
        unflushed += len(payload)
        if unflushed >= 256 << 10:  # as the out-bridge does: nats-py sends every 256 KiB
            unflushed = 0
            await asyncio.sleep(0)
        if len(window) >= 1024:
            await window.popleft()
    for f in window:
        await f
    await nc.close()
asyncio.run(main())
"""

CONSUMER = r"""
import asyncio, sys, time, nats
from nats.js import api
url, subject, stream, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
async def main():
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_consumer(stream, api.ConsumerConfig(durable_name="bench", filter_subject=subject,
                          ack_policy=api.AckPolicy.ALL, max_ack_pending=4096))
    sub = await js.pull_subscribe_bind(durable="bench", stream=stream)
    print("ready", flush=True)
    got = 0
    while got < n:
        try:
            msgs = await sub.fetch(256, timeout=1)
        except Exception:
            continue
        for m in msgs:
            m.metadata
        got += len(msgs)
        await msgs[-1].ack()
    print(time.monotonic(), flush=True)
    await nc.close()
asyncio.run(main())
"""

PRODUCER = r"""
import sys, shmipc
path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = PAYLOAD(size)
with shmipc.Channel.open(path) as ch:
    print("ready", flush=True)
    sys.stdin.readline()
    step = 64 if size < 4096 else 4
    for i in range(0, n, step):
        ch.send_many_bytes([payload] * min(step, n - i))
"""

RECEIVER = r"""
import sys, time, shmipc
path, n = sys.argv[1], int(sys.argv[2])
with shmipc.Channel.open(path) as ch:
    print("ready", flush=True)
    got = 0
    while got < n:
        got += len(ch.recv_many_bytes(1024))
    print(time.monotonic(), flush=True)
"""

PAYLOAD_DEF = r"""
def PAYLOAD(size):
    import msgpack
    if size == 0:
        return msgpack.packb({"name": "b", "age": 20})
    return bytes(range(256)) * (size // 256)
"""


def _script(body: str) -> str:
    return PAYLOAD_DEF + body


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A child process whose CPU time is taken from wait4 when it ends."""

    def __init__(self, args: list[str], *, stdout: int | None = subprocess.PIPE,
                 stdin: int | None = None) -> None:
        env = {**os.environ, "SHMIPC_SPIN": "0"}  # see the module docstring
        self.popen = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                      cwd=ROOT, stdin=stdin, env=env)
        self.cpu = 0.0
        self.start_cpu = 0.0

    def mark(self) -> None:
        """Note the CPU time used so far (start-up), to leave it out."""
        self.start_cpu = _cpu_of(self.popen.pid)

    def go(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write("go\n")
        self.popen.stdin.flush()

    def wait(self, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                self.cpu = usage.ru_utime + usage.ru_stime - self.start_cpu
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                self.popen.kill()
                raise TimeoutError(f"{self.popen.args} did not finish")
            time.sleep(0.01)
        out = self.popen.stdout.read() if self.popen.stdout else ""
        err = self.popen.stderr.read() if self.popen.stderr else ""
        for stream in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if stream:
                stream.close()
        if self.popen.returncode != 0:
            raise RuntimeError(f"{self.popen.args[:4]} failed ({self.popen.returncode}): {err}")
        return out


def _ready(child: Child) -> None:
    assert child.popen.stdout is not None
    line = child.popen.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"not ready: {line!r} {child.popen.stderr.read()}")  # type: ignore[union-attr]


def _delete_stream(url: str, stream: str) -> None:
    subprocess.run([sys.executable, "-c", "import asyncio, sys, nats\n"
                    "async def m():\n nc = await nats.connect(sys.argv[1])\n"
                    " await nc.jetstream().delete_stream(sys.argv[2])\n await nc.close()\n"
                    "asyncio.run(m())", url, stream], check=False, capture_output=True)


def _make_stream(url: str, stream: str, subject: str) -> None:
    subprocess.run([sys.executable, "-c", "import asyncio, sys, nats\n"
                    "async def m():\n nc = await nats.connect(sys.argv[1])\n"
                    " await nc.jetstream().add_stream(name=sys.argv[2], subjects=[sys.argv[3]])\n"
                    " await nc.close()\n"
                    "asyncio.run(m())", url, stream, subject], check=True, capture_output=True)


def direct(server: Any, n: int, size: int) -> dict[str, float]:
    subject = f"bench.{uuid.uuid4().hex[:8]}"
    stream = "B" + uuid.uuid4().hex[:8]
    _make_stream(server.url, stream, subject)
    assert server.pid is not None
    consumer = Child([sys.executable, "-c", _script(CONSUMER), server.url, subject, stream,
                      str(n)])
    _ready(consumer)
    publisher = Child([sys.executable, "-c", _script(PUBLISHER), server.url, subject, str(n),
                       str(size)], stdin=subprocess.PIPE)
    _ready(publisher)
    for child in (consumer, publisher):
        child.mark()
    cpu0 = _cpu_of(server.pid)
    t0 = time.monotonic()
    publisher.go()
    end = float(consumer.wait().split()[-1])
    publisher.wait()
    server_cpu = _cpu_of(server.pid) - cpu0
    _delete_stream(server.url, stream)
    return {"rate": n / (end - t0), "cpu_us": 1e6 * (consumer.cpu + publisher.cpu +
                                                      server_cpu) / n,
            "server_us": 1e6 * server_cpu / n, "publisher_us": 1e6 * publisher.cpu / n,
            "consumer_us": 1e6 * consumer.cpu / n}


def bridged(server: Any, n: int, size: int, workdir: Path) -> dict[str, float]:
    import shmipc

    subject = f"bench.{uuid.uuid4().hex[:8]}"
    a, b = workdir / f"a-{subject}.shmipc", workdir / f"b-{subject}.shmipc"
    capacity = 8 << 20
    chans = [shmipc.Channel.create(a, capacity), shmipc.Channel.create(b, capacity)]
    for ch in chans:  # touch every page of the rings once: first-touch faults are not the bridge's
        block = b"\0" * (ch.max_message_size // 2)
        for _ in range(2 * capacity // len(block)):
            ch.send_bytes(block)
            ch.recv_bytes()
    assert server.pid is not None
    try:
        common = [subject, "--server", server.url, "--count", str(n), "--no-progress"]
        out = Child([sys.executable, "-m", "shmipc", "bridge", "out", str(a), *common],
                    stdout=subprocess.DEVNULL)
        inn = Child([sys.executable, "-m", "shmipc", "bridge", "in", str(b), *common],
                    stdout=subprocess.DEVNULL)
        receiver = Child([sys.executable, "-c", _script(RECEIVER), str(b), str(n)])
        _ready(receiver)
        producer = Child([sys.executable, "-c", _script(PRODUCER), str(a), str(n), str(size)],
                         stdin=subprocess.PIPE)
        _ready(producer)
        time.sleep(1.5)  # the bridges connect and set up the stream and the consumer
        for child in (receiver, producer, out, inn):
            child.mark()
        cpu0 = _cpu_of(server.pid)
        t0 = time.monotonic()
        producer.go()
        end = float(receiver.wait().split()[-1])
        producer.wait()
        out.wait()
        inn.wait()
        server_cpu = _cpu_of(server.pid) - cpu0
        _delete_stream(server.url, "SHMIPC_" + subject.replace(".", "_"))
        clients = receiver.cpu + producer.cpu + out.cpu + inn.cpu
        return {"rate": n / (end - t0), "cpu_us": 1e6 * (clients + server_cpu) / n,
                "server_us": 1e6 * server_cpu / n,
                "bridges_us": 1e6 * (out.cpu + inn.cpu) / n, "out_us": 1e6 * out.cpu / n,
                "in_us": 1e6 * inn.cpu / n, "producer_us": 1e6 * producer.cpu / n,
                "receiver_us": 1e6 * receiver.cpu / n}
    finally:
        for ch in chans:
            ch.unlink()
            ch.close()


def unavailable() -> str | None:
    """Why the bridge cannot be measured here (nats-py or nats-server missing), or None."""
    try:
        import nats  # noqa: F401

        from shmipc.bridge.server import find_nats_server
        find_nats_server()
    except Exception as exc:  # ImportError, ServerError
        return f"{type(exc).__name__}: {exc} (pip install -e '.[nats]')"
    return None


def workloads(quick: bool = False, smoke: bool = False) -> list[tuple[str, int, int]]:
    """(name, payload size (0: the small object), messages) of each row."""
    if smoke:
        return [("small object", 0, 300), ("64 KiB", 64 << 10, 20)]
    return [("small object", 0, 5_000 if quick else 50_000),
            ("64 KiB", 64 << 10, 300 if quick else 2_000)]


def measure(rows: list[tuple[str, int, int]], repeat: int,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every row ``repeat`` times, direct and bridged interleaved; medians per row:
    ``{name: {"messages", "direct", "bridged", "overhead": {"cpu", "rate"}}}``."""
    from shmipc.bridge.server import NatsServer

    results: dict[str, Any] = {}
    # Channels in tmpfs when there is one (as channels for speed are): on a disk filesystem
    # the kernel's writeback of dirty pages throttles every writer at high byte rates. The
    # server's store stays on disk, as in production.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="shmipc-bridge-bench-") as tmp, \
            tempfile.TemporaryDirectory(prefix="shmipc-bridge-bench-", dir=shm) as chans, \
            NatsServer.start(Path(tmp) / "nats") as server:
        for name, size, n in rows:
            runs: dict[str, list[dict[str, float]]] = {"direct": [], "bridged": []}
            for _ in range(repeat):  # interleaved
                runs["direct"].append(direct(server, n, size))
                runs["bridged"].append(bridged(server, n, size, Path(chans)))
            row: dict[str, Any] = {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
                                   for k, v in runs.items()}
            row["overhead"] = {"cpu": row["bridged"]["cpu_us"] / row["direct"]["cpu_us"] - 1,
                               "rate": row["direct"]["rate"] / row["bridged"]["rate"] - 1}
            results[name] = {"messages": n, **row}
            d, b = row["direct"], row["bridged"]
            log(f"{name:>12} x {n}: direct {d['rate']:9,.0f} msg/s {d['cpu_us']:7.1f} "
                f"CPU us/msg | bridged {b['rate']:9,.0f} msg/s {b['cpu_us']:7.1f} CPU "
                f"us/msg (bridges {b['bridges_us']:.1f}) | bridge adds "
                f"{100 * row['overhead']['cpu']:+.0f}% CPU, "
                f"{100 * row['overhead']['rate']:+.0f}% time")
            log("             CPU us/msg: direct " + ", ".join(
                f"{k[:-3]} {v:.1f}" for k, v in d.items() if k.endswith("_us")
                and k != "cpu_us") + " | bridged " + ", ".join(
                f"{k[:-3]} {v:.1f}" for k, v in b.items() if k.endswith("_us")
                and k not in ("cpu_us", "bridges_us")))
    return results


def table(results: dict[str, Any]) -> str:
    """The rows as a markdown table (end to end through one local nats-server)."""
    lines = ["| bridged through NATS JetStream | direct nats-py msg/s | bridged msg/s | direct "
             "CPU µs/msg | bridged CPU µs/msg (bridges) | the bridge adds |",
             "| --- | --: | --: | --: | --: | --: |"]
    for name, r in results.items():
        d, b, o = r["direct"], r["bridged"], r["overhead"]
        lines.append(f"| {name} x {r['messages']:,} | {d['rate']:,.0f} | {b['rate']:,.0f} | "
                     f"{d['cpu_us']:.1f} | {b['cpu_us']:.1f} ({b['bridges_us']:.1f}) | "
                     f"{100 * o['cpu']:+.0f} % CPU, {100 * o['rate']:+.0f} % time |")
    return "\n".join(lines)


def bar_text(name: str) -> str:
    """The text of the bar of one row."""
    return f"bridge adds ≤ {100 * BAR:.0f}% CPU to NATS's own cost, end to end ({name})"


def bars(results: dict[str, Any]) -> list[dict[str, str]]:
    """One bar per row: the bridged path's CPU time per message (every process, the server's
    included) at most ``BAR`` above nats-py publishing and consuming the same payloads."""
    out = []
    for name, r in results.items():
        cpu = r["overhead"]["cpu"]
        out.append({"bar": bar_text(name), "verdict": "met" if cpu <= BAR else "NOT MET",
                    "detail": f"bridged {r['bridged']['cpu_us']:.1f} CPU µs/msg against direct "
                              f"{r['direct']['cpu_us']:.1f}: {100 * cpu:+.0f} %"})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts: only checks that it runs (the test suite uses it)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    repeat = 1 if args.quick or args.smoke else args.repeat
    load = os.getloadavg()
    print(f"# {os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
          " (a shared machine: compare rows of one run only)")
    results = measure(workloads(args.quick, args.smoke), repeat,
                      log=lambda line: print(line, flush=True))
    load = os.getloadavg()
    print(f"# load {load[0]:.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
