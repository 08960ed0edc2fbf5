"""shmipc against its peers: throughput, latency and batches, in one run, side by side.

    python benchmarks/run.py            # the full run (~10 minutes on 2 CPUs), table + JSON + plot
    python benchmarks/run.py --quick    # a smoke run with tiny counts
    make bench                          # sets up .venv with the bench extra, then the full run

Every measurement runs a fresh consumer process and fresh producer process(es), forked from this
one and pinned to different CPUs (consumer on the first CPU, producers on the second). The
consumer checks every message (small objects compare equal; byte payloads carry their sequence
number in their first 8 bytes and have the right length) and times from the moment it releases
the producer(s) to the last message. Repetitions are interleaved across systems and the table
shows medians. Results go to benchmarks/results.json; the plot to docs/throughput.png.

Peers that are not installed are skipped (pyzmq, faster-fifo: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import posix_ipc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shmipc  # noqa: E402

SMALL = {"name": "b", "age": 20}
CONSUMER_CPU = 0
PRODUCER_CPU = 1
SEQ = struct.Struct("<Q")

pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def unpack(b: Any) -> Any:
    return msgpack.unpackb(b, raw=False)


def pin(cpu: int) -> None:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


# --- systems -----------------------------------------------------------------------------------
# Each system is opened in the parent (before fork) and gives each child an endpoint with
# send/recv of objects and of bytes, and a batch form (its own batch API where it has one,
# else one message holding a msgpack array of the batch).


class System:
    name = "?"
    multi_producer = True
    max_size: int | None = None  # the largest byte payload it can carry

    def open(self, size: int) -> Any:
        raise NotImplementedError

    def close(self, state: Any) -> None:
        pass

    def tx(self, state: Any) -> Any:
        return state

    def rx(self, state: Any) -> Any:
        return state

    # endpoint operations (endpoint = what tx/rx returned)
    def send(self, ep: Any, obj: Any) -> None:
        self.send_bytes(ep, pack(obj))

    def recv(self, ep: Any) -> Any:
        return unpack(self.recv_bytes(ep))

    def send_bytes(self, ep: Any, data: Any) -> None:
        raise NotImplementedError

    def recv_bytes(self, ep: Any) -> Any:
        raise NotImplementedError

    def send_batch(self, ep: Any, objs: list[Any]) -> None:
        self.send_bytes(ep, pack(objs))

    def recv_batch(self, ep: Any) -> list[Any]:
        return unpack(self.recv_bytes(ep))  # type: ignore[no-any-return]


class Shmipc(System):
    name = "shmipc"

    def open(self, size: int) -> Any:
        capacity = max(4 << 20, 1 << (4 * size + 64).bit_length())
        return shmipc.Channel.anonymous(capacity)

    def close(self, state: Any) -> None:
        state.close()

    def send(self, ep: Any, obj: Any) -> None:
        ep.send(obj)

    def recv(self, ep: Any) -> Any:
        return ep.recv()

    def send_bytes(self, ep: Any, data: Any) -> None:
        ep.send_bytes(data)

    def recv_bytes(self, ep: Any) -> Any:
        return ep.recv_bytes()

    def send_batch(self, ep: Any, objs: list[Any]) -> None:
        ep.send_many(objs)

    def recv_batch(self, ep: Any) -> list[Any]:
        return ep.recv_many(64)  # type: ignore[no-any-return]


class ShmipcView(Shmipc):
    """shmipc with the zero-copy receive: the check reads the message where it lies."""

    name = "shmipc recv_view"

    def recv_bytes(self, ep: Any) -> Any:
        with ep.recv_view() as view:
            return (SEQ.unpack_from(view)[0] if len(view) >= 8 else -1), len(view)


class MpQueue(System):
    name = "multiprocessing.Queue"

    def open(self, size: int) -> Any:
        import multiprocessing

        return multiprocessing.get_context("fork").Queue()

    def close(self, state: Any) -> None:
        state.close()
        state.join_thread()

    def send(self, ep: Any, obj: Any) -> None:
        ep.put(obj)

    def recv(self, ep: Any) -> Any:
        return ep.get()

    def send_bytes(self, ep: Any, data: Any) -> None:
        ep.put(bytes(data))

    def recv_bytes(self, ep: Any) -> Any:
        return ep.get()

    def send_batch(self, ep: Any, objs: list[Any]) -> None:
        ep.put(objs)

    def recv_batch(self, ep: Any) -> list[Any]:
        return ep.get()  # type: ignore[no-any-return]

    def tx(self, state: Any) -> Any:
        return state

    def flush(self, ep: Any) -> None:
        ep.close()
        ep.join_thread()  # the feeder thread must deliver before the producer exits


class MpPipe(System):
    name = "multiprocessing.Pipe"
    multi_producer = False

    def open(self, size: int) -> Any:
        import multiprocessing

        return multiprocessing.get_context("fork").Pipe(duplex=False)

    def close(self, state: Any) -> None:
        for c in state:
            c.close()

    def tx(self, state: Any) -> Any:
        return state[1]

    def rx(self, state: Any) -> Any:
        return state[0]

    def send_bytes(self, ep: Any, data: Any) -> None:
        ep.send_bytes(data)

    def recv_bytes(self, ep: Any) -> Any:
        return ep.recv_bytes()


class PosixMQ(System):
    name = "posix_ipc.MessageQueue"
    max_size = 8192 - 1  # the default msgsize_max of Linux

    def open(self, size: int) -> Any:
        name = f"/shmipc-bench-{uuid.uuid4().hex[:12]}"
        mq = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_message_size=8192)
        mq.unlink()  # the forked children inherit the descriptor
        return mq

    def close(self, state: Any) -> None:
        state.close()

    def send_bytes(self, ep: Any, data: Any) -> None:
        ep.send(data)

    def recv_bytes(self, ep: Any) -> Any:
        return ep.receive()[0]


class Zmq(System):
    name = "pyzmq PUSH/PULL ipc"

    def open(self, size: int) -> Any:
        import zmq  # noqa: F401

        return f"ipc://{tempfile.gettempdir()}/shmipc-bench-{uuid.uuid4().hex[:12]}"

    def tx(self, state: Any) -> Any:
        import zmq

        sock = zmq.Context().socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 100000)
        sock.connect(state)
        return sock

    def rx(self, state: Any) -> Any:
        import zmq

        sock = zmq.Context().socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 100000)
        sock.bind(state)
        return sock

    def send_bytes(self, ep: Any, data: Any) -> None:
        # A bytes copy: pyzmq sends large frames zero-copy, and the caller reuses its buffer.
        ep.send(bytes(data))

    def recv_bytes(self, ep: Any) -> Any:
        if getattr(self, "_large", False):
            return ep.recv(copy=False).buffer
        return ep.recv()

    def flush(self, ep: Any) -> None:
        ep.close(linger=-1)  # deliver everything queued before exiting


class FasterFifo(System):
    name = "faster-fifo (pickle)"

    def open(self, size: int) -> Any:
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=max(64 << 20, 4 * size))

    def close(self, state: Any) -> None:
        state.close()

    def send(self, ep: Any, obj: Any) -> None:
        ep.put(obj, timeout=60)

    def recv(self, ep: Any) -> Any:
        return ep.get(timeout=60)

    def send_bytes(self, ep: Any, data: Any) -> None:
        ep.put(bytes(data), timeout=60)

    def recv_bytes(self, ep: Any) -> Any:
        return ep.get(timeout=60)

    def send_batch(self, ep: Any, objs: list[Any]) -> None:
        ep.put_many(objs, timeout=60)

    def recv_batch(self, ep: Any) -> list[Any]:
        return ep.get_many(max_messages_to_get=64, timeout=60)  # type: ignore[no-any-return]


class OsPipe(System):
    name = "os.pipe + framing"
    multi_producer = False
    HEADER = struct.Struct("<I")

    def open(self, size: int) -> Any:
        return os.pipe()

    def close(self, state: Any) -> None:
        for fd in state:
            with contextlib.suppress(OSError):
                os.close(fd)

    def tx(self, state: Any) -> Any:
        return state[1]

    def rx(self, state: Any) -> Any:
        return os.fdopen(state[0], "rb", buffering=1 << 16, closefd=False)

    def send_bytes(self, ep: Any, data: Any) -> None:
        view = memoryview(self.HEADER.pack(len(data)) + bytes(data))
        while view:
            view = view[os.write(ep, view):]

    def recv_bytes(self, ep: Any) -> Any:
        (n,) = self.HEADER.unpack(ep.read(4))
        return ep.read(n)


ALL: list[System] = [Shmipc(), MpQueue(), MpPipe(), PosixMQ(), Zmq(), FasterFifo(), OsPipe()]
VIEW = ShmipcView()


def available(system: System) -> bool:
    try:
        system.close(system.open(64))
    except ImportError:
        return False
    return True


# --- workloads ---------------------------------------------------------------------------------


def make_payload(size: int) -> bytearray:
    return bytearray(b"\xab" * size)


def stamp(buf: bytearray, seq: int) -> bytearray:
    if len(buf) >= 8:
        SEQ.pack_into(buf, 0, seq)
    return buf


def check_bytes(system: System, got: Any, seq: int, size: int) -> None:
    if isinstance(got, tuple):  # recv_view: (sequence, length) read in place
        if got != (seq if size >= 8 else -1, size):
            raise AssertionError(f"message {seq}: got {got}")
        return
    if len(got) != size or (size >= 8 and SEQ.unpack_from(got)[0] != seq):
        raise AssertionError(f"message {seq}: wrong length or sequence")


def produce(system: System, ep: Any, workload: str, count: int, size: int, base: int) -> None:
    if workload in ("small", "producers"):
        send = system.send
        for _ in range(count):
            send(ep, SMALL)
    elif workload == "batch":
        # 64 distinct (equal) dicts: a list of one object 64 times would let pickle send it
        # once and refer to it 63 times, which real batches never allow.
        batch = [dict(SMALL) for _ in range(64)]
        for _ in range(count // 64):
            system.send_batch(ep, batch)
    elif workload == "bytes":
        buf = make_payload(size)
        send_bytes = system.send_bytes
        for seq in range(base, base + count):
            send_bytes(ep, stamp(buf, seq))
    elif workload == "pingpong":  # the echo side
        for _ in range(count):
            system.send(ep[1], system.recv(ep[0]))
    flush = getattr(system, "flush", None)
    if flush is not None:
        flush(ep[1] if workload == "pingpong" else ep)


def consume(system: System, ep: Any, workload: str, count: int, size: int,
            release: Callable[[], None]) -> dict[str, Any]:
    before = os.times()
    rss_before = rss_kib()
    faults_before = minor_faults()
    if workload == "pingpong":
        tx, rx = ep
        lat = []
        release()
        for _ in range(count):
            t = time.perf_counter_ns()
            system.send(tx, SMALL)
            if system.recv(rx) != SMALL:
                raise AssertionError("ping-pong reply differs")
            lat.append(time.perf_counter_ns() - t)
        lat.sort()
        warm = lat[len(lat) // 20:] if len(lat) > 100 else lat
        warm.sort()
        return {"p50_us": warm[len(warm) // 2] / 1000, "p99_us": warm[int(len(warm) * 0.99)] / 1000}
    t0 = time.perf_counter()
    release()
    if workload in ("small", "producers"):
        recv = system.recv
        for _ in range(count):
            if recv(ep) != SMALL:
                raise AssertionError("a small object arrived changed")
    elif workload == "batch":
        got = 0
        total = count // 64 * 64
        while got < total:
            objs = system.recv_batch(ep)
            for o in objs:
                if o != SMALL:
                    raise AssertionError("a batched object arrived changed")
            got += len(objs)
        count = total
    elif workload == "bytes":
        recv_bytes = system.recv_bytes
        for seq in range(count):
            check_bytes(system, recv_bytes(ep), seq, size)
    elapsed = time.perf_counter() - t0
    after = os.times()
    return {
        "seconds": elapsed,
        "msgs_per_s": count / elapsed,
        "bytes_per_s": count * size / elapsed,
        "cpu_s": (after.user - before.user) + (after.system - before.system),
        "rss_growth_kib": rss_kib() - rss_before,
        "minor_faults_per_msg": (minor_faults() - faults_before) / max(count, 1),
    }


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def fork_child(fn: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def measure(system: System, workload: str, count: int, size: int = 0, producers: int = 1,
            timeout: float = 120.0) -> dict[str, Any] | None:
    """One measurement in fresh processes; None if the system failed or timed out."""
    if system.max_size is not None and size > system.max_size:
        return None
    if workload == "producers" and producers > 1 and not system.multi_producer:
        return None
    is_large = size >= 65536
    system._large = is_large  # type: ignore[attr-defined]
    states = [system.open(max(size, 64))]
    if workload == "pingpong":
        states.append(system.open(64))
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    per_producer = count // producers
    count = per_producer * producers

    def producer(index: int) -> None:
        os.close(go_w)
        os.close(res_r)
        pin(PRODUCER_CPU)
        if workload == "pingpong":
            ep = (system.rx(states[0]), system.tx(states[1]))
        else:
            ep = system.tx(states[0])
        os.read(go_r, 1)
        produce(system, ep, workload, per_producer, size, index * per_producer)

    def consumer() -> None:
        os.close(go_r)
        os.close(res_r)
        pin(CONSUMER_CPU)
        if workload == "pingpong":
            ep = (system.tx(states[0]), system.rx(states[1]))
        else:
            ep = system.rx(states[0])
        time.sleep(0.05)  # let the producers reach their start line
        result = consume(system, ep, workload, count, size,
                         lambda: os.write(go_w, b"g" * producers))
        os.write(res_w, json.dumps(result).encode())

    pids = [fork_child(lambda i=i: producer(i)) for i in range(producers)]
    pids.append(fork_child(consumer))
    os.close(go_r)
    os.close(go_w)
    os.close(res_w)
    deadline = time.monotonic() + timeout
    codes = {}
    try:
        while len(codes) < len(pids):
            for pid in pids:
                if pid not in codes:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        codes[pid] = os.waitstatus_to_exitcode(status)
            if any(codes.values()):
                break  # one side failed: the other would wait forever
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.002)
        raw = b""
        while chunk := os.read(res_r, 65536):
            raw += chunk
    except TimeoutError:
        print(f"  ! {system.name} {workload} {size}: timed out", file=sys.stderr)
        return None
    finally:
        for pid in pids:
            if pid not in codes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(res_r)
        for state in states:
            with contextlib.suppress(Exception):
                system.close(state)
    if any(codes.values()) or not raw:
        print(f"  ! {system.name} {workload} {size}: exit codes {list(codes.values())}",
              file=sys.stderr)
        return None
    return json.loads(raw)  # type: ignore[no-any-return]


def floor(workload: str, count: int, size: int = 0) -> dict[str, Any]:
    """One process: msgpack and one copy into a buffer, no IPC (the bar to stay near)."""
    buf = bytearray(max(size, 1 << 16) + 64)
    view = memoryview(buf)
    t0 = time.perf_counter()
    if workload == "small":
        for _ in range(count):
            payload = pack(SMALL)
            n = len(payload)
            view[:n] = payload
            if unpack(view[:n]) != SMALL:
                raise AssertionError
    elif workload == "batch":
        batch = [dict(SMALL) for _ in range(64)]
        for _ in range(count // 64):
            payload = pack(batch)
            n = len(payload)
            view[:n] = payload
            if len(unpack(view[:n])) != 64:
                raise AssertionError
    elif workload == "bytes":
        src = make_payload(size)
        for seq in range(count):
            stamp(src, seq)
            view[:size] = src
            if size >= 8 and SEQ.unpack_from(view)[0] != seq:
                raise AssertionError
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "msgs_per_s": count / elapsed,
            "bytes_per_s": count * size / elapsed}


# --- the run ------------------------------------------------------------------------------------


def median_of(runs: list[dict[str, Any] | None], key: str) -> float | None:
    values = [r[key] for r in runs if r is not None and key in r]
    return statistics.median(values) if values else None


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 quick)")
    parser.add_argument("--systems", default="", help="comma-separated subset of system names "
                        "(matched by prefix, e.g. shmipc,multiprocessing,os.pipe)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "throughput.png"))
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--no-sweep", action="store_true", help="skip the size sweep")
    args = parser.parse_args(argv)

    quick = args.quick
    reps = args.reps or (1 if quick else 3)
    n_small = 2000 if quick else 200_000
    n_4k = 500 if quick else 50_000
    n_1m = 20 if quick else 1000
    n_ping = 200 if quick else 10_000
    sweep_sizes = [64, 1024, 16384, 262144, 1 << 20, 4 << 20]

    systems = [s for s in ALL if available(s)]
    if args.systems:
        wanted = [w.strip().lower() for w in args.systems.split(",") if w.strip()]
        systems = [s for s in systems if any(s.name.lower().startswith(w) for w in wanted)]
    skipped = [s.name for s in ALL if s not in systems]
    view_too = any(s.name == "shmipc" for s in systems)

    # (label, workload, count, size, producers, systems)
    plan: list[tuple[str, str, int, int, int, list[System]]] = [
        ("small", "small", n_small, 0, 1, systems),
        ("4k", "bytes", n_4k, 4096, 1, systems),
        ("1m", "bytes", n_1m, 1 << 20, 1, systems + ([VIEW] if view_too else [])),
        ("pingpong", "pingpong", n_ping, 0, 1, systems),
        ("batch64", "batch", n_small, 0, 1, systems),
    ]
    for k in (1, 2, 4):
        plan.append((f"producers{k}", "producers", n_small, 0, k,
                     [s for s in systems if s.multi_producer]))
    if not args.no_sweep:
        for size in sweep_sizes:
            volume = (4 << 20) if quick else (128 << 20)
            n = max(10, min(n_4k, volume // size))
            plan.append((f"sweep{size}", "bytes", n, size, 1,
                         systems + ([VIEW] if view_too else [])))

    raw: dict[str, dict[str, list[dict[str, Any] | None]]] = {}
    loads = [load()]
    started = time.time()
    print(f"# shmipc benchmarks: {len(systems)} systems, {reps} repetition(s); load {loads[0]}",
          file=sys.stderr)
    if skipped:
        print(f"# not installed, skipped: {', '.join(skipped)}", file=sys.stderr)
    for rep in range(reps):
        for label, workload, count, size, producers, members in plan:
            for system in members:
                result = measure(system, workload, count, size, producers)
                raw.setdefault(label, {}).setdefault(system.name, []).append(result)
            if workload != "pingpong" and not label.startswith("producers"):
                raw[label].setdefault("floor", []).append(
                    floor(workload, count, size) if label != "pingpong" else None)
        loads.append(load())
        print(f"# repetition {rep + 1}/{reps} done, {time.time() - started:.0f} s, load "
              f"{loads[-1]}", file=sys.stderr)

    medians: dict[str, dict[str, dict[str, float | None]]] = {}
    for label, per_system in raw.items():
        for name, runs in per_system.items():
            medians.setdefault(label, {})[name] = {
                key: median_of(runs, key)
                for key in ("msgs_per_s", "bytes_per_s", "p50_us", "p99_us", "cpu_s",
                            "rss_growth_kib", "minor_faults_per_msg")
            }

    table = render_table(medians, [s.name for s in systems] + (
        [VIEW.name] if view_too else []) + ["floor"])
    print(table)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "load_average": loads,
        "quick": quick,
        "repetitions": reps,
        "skipped": skipped,
        "medians": medians,
        "runs": raw,
        "table": table,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=1))
    print(f"# results in {args.json}", file=sys.stderr)
    if not args.no_plot and not args.no_sweep:
        try:
            draw(medians, sweep_sizes, args.plot)
            print(f"# plot in {args.plot}", file=sys.stderr)
        except ImportError:
            print("# matplotlib not installed: no plot", file=sys.stderr)
    return 0


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    return f"{v / 1e3:.0f} k"


def fmt_gb(v: float | None) -> str:
    return "—" if v is None else f"{v / 1e9:.1f}"


def fmt_us(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def render_table(medians: dict[str, dict[str, dict[str, float | None]]],
                 names: list[str]) -> str:
    def get(label: str, name: str, key: str) -> float | None:
        return medians.get(label, {}).get(name, {}).get(key)

    lines = [
        "| system | small msg/s | 4 KiB msg/s | 1 MiB GB/s | ping-pong p50 / p99 µs "
        "| batch 64 msg/s | 1 / 2 / 4 producers msg/s |",
        "| --- | --: | --: | --: | --: | --: | --: |",
    ]
    for name in names:
        if not any(name in per for per in medians.values()):
            continue
        p50, p99 = get("pingpong", name, "p50_us"), get("pingpong", name, "p99_us")
        ping = "—" if p50 is None else f"{fmt_us(p50)} / {fmt_us(p99)}"
        producers = " / ".join(fmt_rate(get(f"producers{k}", name, "msgs_per_s"))
                               for k in (1, 2, 4))
        if all(get(f"producers{k}", name, "msgs_per_s") is None for k in (1, 2, 4)):
            producers = "—"
        lines.append(
            f"| {name} | {fmt_rate(get('small', name, 'msgs_per_s'))} "
            f"| {fmt_rate(get('4k', name, 'msgs_per_s'))} "
            f"| {fmt_gb(get('1m', name, 'bytes_per_s'))} | {ping} "
            f"| {fmt_rate(get('batch64', name, 'msgs_per_s'))} | {producers} |"
        )
    return "\n".join(lines)


def draw(medians: dict[str, dict[str, dict[str, float | None]]], sizes: list[int],
         path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    names: list[str] = []
    for size in sizes:
        for name in medians.get(f"sweep{size}", {}):
            if name not in names:
                names.append(name)
    for name in names:
        xs, ys = [], []
        for size in sizes:
            v = medians.get(f"sweep{size}", {}).get(name, {}).get("bytes_per_s")
            if v:
                xs.append(size)
                ys.append(v / 1e9)
        if xs:
            style = "-" if name.startswith("shmipc") else "--"
            width = 2.5 if name.startswith("shmipc") else 1.2
            ax.plot(xs, ys, style, marker="o", linewidth=width, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("throughput (GB/s)")
    ax.set_title("Two processes on two CPUs, one producer, one consumer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
