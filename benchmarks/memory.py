"""Receiver memory and idle CPU: RSS growth over a million small or a thousand 1 MiB messages.

    python benchmarks/memory.py [--quick]

A producer process sends; the receiver (this process's child, pinned to another CPU) samples its
VmRSS after a warm-up and at the end, and counts minor page faults per message. Then a receiver
blocked on an empty channel for 5 s reports the CPU time it used (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import shmipc  # noqa: E402


def rss_kib(field: str = "VmRSS") -> int:
    """A resident-set figure of this process in KiB: VmRSS, RssAnon (private heap) or RssShmem
    (pages of shared mappings touched, i.e. the ring)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pin(cpu: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu]})


def run(kind: str, count: int, size: int) -> dict[str, float]:
    ch = shmipc.Channel.anonymous(max(4 << 20, 4 * size + 64))
    result = shmipc.Channel.anonymous(1 << 16)
    pid = os.fork()
    if pid == 0:
        try:
            pin(1)
            if kind == "small":
                obj = {"name": "b", "age": 20}
                for _ in range(count):
                    ch.send(obj)
            else:
                payload = b"\xab" * size
                for _ in range(count):
                    ch.send_bytes(payload)
        finally:
            os._exit(0)
    pin(0)
    warm = min(max(count // 100, 10), count // 2)  # --quick sends only 10 messages
    for i in range(count):
        if i == warm:
            rss0 = rss_kib()
            anon0 = rss_kib("RssAnon")
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if kind == "small":
            if ch.recv() != {"name": "b", "age": 20}:
                raise AssertionError
        elif kind == "bytes":
            if len(ch.recv_bytes()) != size:
                raise AssertionError
        else:
            with ch.recv_view() as view:
                if len(view) != size:
                    raise AssertionError
    capacity = ch.capacity
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    growth = rss_kib() - rss0
    anon_growth = rss_kib("RssAnon") - anon0
    shmem = rss_kib("RssShmem")
    os.waitpid(pid, 0)
    ch.close()
    result.close()
    return {"messages": count, "size": size, "rss_growth_kib": growth,
            "anon_growth_kib": anon_growth, "shmem_resident_kib": shmem,
            "ring_kib": capacity // 1024,
            "minor_faults_per_msg": faults / (count - warm)}


def idle(seconds: float) -> dict[str, float]:
    ch = shmipc.Channel.anonymous(1 << 16)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    with contextlib.suppress(shmipc.Empty):
        ch.recv(timeout=seconds)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    spin = ch.spin
    ch.close()
    return {"wall_s": wall, "cpu_s": cpu, "cpu_percent": 100 * cpu / wall, "spin_s": spin}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 100 if args.quick else 1
    out = {
        "small_recv": run("small", 1_000_000 // scale, 0),
        "1MiB_recv_bytes": run("bytes", 1000 // scale, 1 << 20),
        "1MiB_recv_view": run("view", 1000 // scale, 1 << 20),
        "idle_receiver": idle(0.5 if args.quick else 5.0),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
