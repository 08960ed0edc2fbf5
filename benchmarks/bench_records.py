"""Record channel against msgpack dicts through Channel: the same people records, two processes.

Run::

    python benchmarks/bench_records.py [--count 200000] [--repeat 3]

A forked producer sends ``count`` records of ``people`` (``char name[4]; int age;``) and the
parent receives them; the time is from just before the fork until the parent has received the
last one (best of ``--repeat``). Producer and consumer are pinned to different CPUs when there
are two. Rows:

* ``RecordChannel send(record) / recv()``: record values in, record values out (no msgpack).
* ``RecordChannel send_values / recv_tuple``: the raw forms, no value objects.
* ``Channel send(dict) / recv()``: ``{"name": "b", "age": 20}`` as msgpack (the baseline).
* ``Channel send(record) / recv()``: records as a msgpack ext type.

Besides messages per second (wall clock), each row gives the CPU time both processes spent per
message (user + system, from ``getrusage``): on a shared or loaded machine the wall-clock rate
swings with scheduling, while the CPU cost per message stays comparable.

The last lines time the same calls in one process with nobody waiting (send a batch, then
receive it): the cost of the calls themselves, without scheduling, spinning or wake-ups.

Not a timed test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import uuid

import shmipc

people = shmipc.Record("people", [("name", "4s"), ("age", "i")])


def _pin(cpu: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _run(make, send, recv, count: int) -> tuple[float, float]:
    """Return (wall seconds, CPU seconds of both processes) for one run."""
    ch = make()
    try:
        cpu_self, cpu_children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _pin(1)
                send(ch, count)
                code = 0
            finally:
                os._exit(code)
        _pin(0)
        recv(ch, count)
        elapsed = time.perf_counter() - start
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("producer failed")
        cpu = (_cpu(resource.RUSAGE_SELF) - cpu_self
               + _cpu(resource.RUSAGE_CHILDREN) - cpu_children)
        return elapsed, cpu
    finally:
        ch.unlink()
        ch.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    codec = shmipc.Codec(records=[people])

    def rc() -> shmipc.RecordChannel:
        return shmipc.RecordChannel.create(os.path.join(tmp, uuid.uuid4().hex), people, 8192)

    def fc() -> shmipc.Channel:
        return shmipc.Channel.create(os.path.join(tmp, uuid.uuid4().hex), 1 << 20, codec=codec)

    def send_records(ch, n):
        rec = people(b"b", 20)
        send = ch.send
        for _ in range(n):
            send(rec)

    def recv_records(ch, n):
        recv = ch.recv
        for _ in range(n):
            recv()

    def send_values(ch, n):
        send = ch.send_values
        for _ in range(n):
            send(b"b", 20)

    def recv_tuples(ch, n):
        recv = ch.recv_tuple
        for _ in range(n):
            recv()

    def send_dicts(ch, n):
        send = ch.send
        for _ in range(n):
            send({"name": "b", "age": 20})

    rows = [
        ("RecordChannel send(record) / recv()", rc, send_records, recv_records),
        ("RecordChannel send_values / recv_tuple", rc, send_values, recv_tuples),
        ("Channel send(dict) / recv()  [msgpack]", fc, send_dicts, recv_records),
        ("Channel send(record) / recv() [ext type]", fc, send_records, recv_records),
    ]
    rates, costs = {}, {}
    for label, make, send, recv in rows:
        runs = [_run(make, send, recv, args.count) for _ in range(args.repeat)]
        rates[label] = args.count / min(wall for wall, _ in runs)
        costs[label] = min(cpu for _, cpu in runs) / args.count * 1e6
        print(f"{label:44s} {rates[label]:12,.0f} msgs/s {costs[label]:8.2f} us CPU/msg",
              flush=True)
    base = rows[2][0]
    print(f"record channel / msgpack dicts: {rates[rows[0][0]] / rates[base]:.2f}x msgs/s, "
          f"{costs[base] / costs[rows[0][0]]:.2f}x less CPU per message "
          f"(raw forms {rates[rows[1][0]] / rates[base]:.2f}x, "
          f"{costs[base] / costs[rows[1][0]]:.2f}x)")
    # One process, nobody waiting: the cost of the calls themselves (best of 5 batches).
    batch = 8192
    single = {}
    for label, make, send, recv in (rows[0], rows[2]):
        ch = make()
        try:
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                send(ch, batch)
                recv(ch, batch)
                best = min(best, time.perf_counter() - start)
        finally:
            ch.unlink()
            ch.close()
        single[label] = best / batch * 1e9
        print(f"one process, send + recv: {label:44s} {single[label]:8.0f} ns")
    print(f"record channel / msgpack dicts in one process: "
          f"{single[rows[2][0]] / single[rows[0][0]]:.2f}x less time per message")
    os.rmdir(tmp)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
