"""asyncio rows: shmipc's asyncio face against its blocking calls and pyzmq's zmq.asyncio.

    python benchmarks/run.py --workloads aio --reps 3      # these rows alone (run.py imports
                                                           # this module; make bench runs it)

Workloads, each in two fresh forked processes pinned to the two CPUs as run.py does:

* ping-pong: one side sends a small object and awaits the echo; p50/p99 of the round trip.
  shmipc blocking (default spin) / shmipc asyncio / shmipc uvloop / zmq.asyncio PAIR over ipc://.
* throughput: 200k small objects ``{"name": "b", "age": 20}`` one way; msg/s at the consumer.
  shmipc blocking / shmipc asyncio / shmipc uvloop / zmq.asyncio PUSH/PULL over ipc://.
* idle: the CPU an asyncio receiver parked on an empty channel uses (default re-check on).

Every received object is compared with what was sent; a wrong or lost one fails the row ("—").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack

import shmipc
from shmipc.aio import AsyncChannel

SMALL = {"name": "b", "age": 20}
CPUS = (0, 1)
KINDS = ("shmipc blocking", "shmipc asyncio", "shmipc uvloop", "shmipc asyncio spin=50us",
         "zmq.asyncio")


def unavailable(kind: str) -> str | None:
    """Why a kind cannot run here, or None."""
    module = {"shmipc uvloop": "uvloop", "zmq.asyncio": "zmq"}.get(kind)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed (pip install -e '.[bench]')"
    return None


def _pin(cpu: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        if cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})


def _run_loop(kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    if kind == "shmipc uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def _fork(fn: Callable[[], dict[str, Any] | None], out_w: int, cpu: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _pin(cpu)
            result = fn()
            if result is not None:
                os.write(out_w, json.dumps(result).encode() + b"\n")
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _two(kind: str, driver: Callable[[Any], dict[str, Any]], other: Callable[[Any], None],
         timeout: float) -> dict[str, Any] | None:
    """Run `driver` and `other` in two processes over fresh endpoints of `kind`."""
    tmp = tempfile.mkdtemp(prefix="shmipc-aio-bench-")
    ends: Any
    if kind.startswith("shmipc"):
        ends = (shmipc.Channel.anonymous(1 << 20), shmipc.Channel.anonymous(1 << 20))
    else:
        ends = (f"ipc://{tmp}/a-{uuid.uuid4().hex}", f"ipc://{tmp}/b-{uuid.uuid4().hex}")
    out_r, out_w = os.pipe()
    pids = [_fork(lambda: driver(ends), out_w, CPUS[0]),
            _fork(lambda: (other(ends), None)[1], out_w, CPUS[1])]
    os.close(out_w)
    deadline = time.monotonic() + timeout
    codes = {}
    try:
        while len(codes) < 2 and time.monotonic() < deadline:
            for pid in pids:
                if pid not in codes:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        codes[pid] = os.waitstatus_to_exitcode(status)
            if any(codes.values()):
                break
            time.sleep(0.002)
        raw = b""
        if len(codes) == 2 and not any(codes.values()):
            while chunk := os.read(out_r, 65536):
                raw += chunk
    finally:
        for pid in pids:
            if pid not in codes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(out_r)
        if kind.startswith("shmipc"):
            for ch in ends:
                ch.close()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    return json.loads(raw) if raw else None


# --- ping-pong ---------------------------------------------------------------------------------

def pingpong(kind: str, n: int, timeout: float = 120.0) -> dict[str, Any] | None:
    """p50/p99 round trip in microseconds."""
    def summary(rtts: list[float]) -> dict[str, Any]:
        rtts.sort()
        return {"p50_us": rtts[len(rtts) // 2] * 1e6, "p99_us": rtts[int(len(rtts) * 0.99)] * 1e6}

    if kind == "shmipc blocking":
        def driver(ends: Any) -> dict[str, Any]:
            a, b = ends
            rtts = []
            for i in range(n):
                t = time.perf_counter()
                a.send(i)
                if b.recv(timeout=30) != i:
                    raise AssertionError("wrong echo")
                rtts.append(time.perf_counter() - t)
            a.send(None)
            return summary(rtts)

        def echo(ends: Any) -> None:
            a, b = ends
            while (x := a.recv(timeout=60)) is not None:
                b.send(x)
        return _two(kind, driver, echo, timeout)

    if kind.startswith("shmipc"):
        def driver(ends: Any) -> dict[str, Any]:
            async def main() -> dict[str, Any]:
                a, b = AsyncChannel(ends[0]), AsyncChannel(ends[1])
                a.spin = b.spin = 50e-6 if kind.endswith("spin=50us") else 0.0
                rtts = []
                for i in range(n):
                    t = time.perf_counter()
                    await a.send(i)
                    if await b.recv(timeout=30) != i:
                        raise AssertionError("wrong echo")
                    rtts.append(time.perf_counter() - t)
                await a.send(None)
                return summary(rtts)
            return _run_loop(kind, main())  # type: ignore[no-any-return]

        def echo(ends: Any) -> None:
            async def main() -> None:
                a, b = AsyncChannel(ends[0]), AsyncChannel(ends[1])
                a.spin = b.spin = 50e-6 if kind.endswith("spin=50us") else 0.0
                while (x := await a.recv(timeout=60)) is not None:
                    await b.send(x)
            _run_loop(kind, main())
        return _two(kind, driver, echo, timeout)

    import zmq
    import zmq.asyncio

    def zdriver(ends: Any) -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            ctx = zmq.asyncio.Context()
            a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
            a.bind(ends[0])
            b.bind(ends[1])
            await b.recv()  # the echo side is connected
            rtts = []
            for i in range(n):
                t = time.perf_counter()
                await a.send(msgpack.packb(i))
                if msgpack.unpackb(await b.recv()) != i:
                    raise AssertionError("wrong echo")
                rtts.append(time.perf_counter() - t)
            await a.send(msgpack.packb(None))
            ctx.destroy(linger=0)
            return summary(rtts)
        return asyncio.run(main())

    def zecho(ends: Any) -> None:
        async def main() -> None:
            ctx = zmq.asyncio.Context()
            a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
            a.connect(ends[0])
            b.connect(ends[1])
            await b.send(b"hello")
            while (x := msgpack.unpackb(await a.recv())) is not None:
                await b.send(msgpack.packb(x))
            ctx.destroy(linger=1000)
        asyncio.run(main())
    return _two(kind, zdriver, zecho, timeout)


# --- throughput --------------------------------------------------------------------------------

def throughput(kind: str, n: int, timeout: float = 120.0) -> dict[str, Any] | None:
    """Small objects one way: msg/s measured at the consumer (first to last message)."""
    if kind == "shmipc blocking":
        def consumer(ends: Any) -> dict[str, Any]:
            a, b = ends
            b.send("ready")
            if a.recv(timeout=30) != SMALL:
                raise AssertionError("wrong object")
            t = time.perf_counter()
            for _ in range(n - 1):
                if a.recv(timeout=30) != SMALL:
                    raise AssertionError("wrong object")
            return {"msgs_per_s": (n - 1) / (time.perf_counter() - t)}

        def producer(ends: Any) -> None:
            a, b = ends
            b.recv(timeout=30)
            for _ in range(n):
                a.send(SMALL)
        return _two(kind, consumer, producer, timeout)

    if kind.startswith("shmipc"):
        def aconsumer(ends: Any) -> dict[str, Any]:
            async def main() -> dict[str, Any]:
                a, b = AsyncChannel(ends[0]), AsyncChannel(ends[1])
                await b.send("ready")
                if await a.recv(timeout=30) != SMALL:
                    raise AssertionError("wrong object")
                t = time.perf_counter()
                for _ in range(n - 1):
                    if await a.recv(timeout=30) != SMALL:
                        raise AssertionError("wrong object")
                return {"msgs_per_s": (n - 1) / (time.perf_counter() - t)}
            return _run_loop(kind, main())  # type: ignore[no-any-return]

        def aproducer(ends: Any) -> None:
            async def main() -> None:
                a, b = AsyncChannel(ends[0]), AsyncChannel(ends[1])
                await b.recv(timeout=30)
                for _ in range(n):
                    await a.send(SMALL)
            _run_loop(kind, main())
        return _two(kind, aconsumer, aproducer, timeout)

    import zmq
    import zmq.asyncio

    def zconsumer(ends: Any) -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            ctx = zmq.asyncio.Context()
            pull, ctl = ctx.socket(zmq.PULL), ctx.socket(zmq.PAIR)
            pull.setsockopt(zmq.RCVHWM, 100000)
            pull.bind(ends[0])
            ctl.bind(ends[1])
            await ctl.recv()
            if msgpack.unpackb(await pull.recv()) != SMALL:
                raise AssertionError("wrong object")
            t = time.perf_counter()
            for _ in range(n - 1):
                if msgpack.unpackb(await pull.recv()) != SMALL:
                    raise AssertionError("wrong object")
            rate = (n - 1) / (time.perf_counter() - t)
            await ctl.send(b"done")
            ctx.destroy(linger=0)
            return {"msgs_per_s": rate}
        return asyncio.run(main())

    def zproducer(ends: Any) -> None:
        async def main() -> None:
            ctx = zmq.asyncio.Context()
            push, ctl = ctx.socket(zmq.PUSH), ctx.socket(zmq.PAIR)
            push.setsockopt(zmq.SNDHWM, 100000)
            push.connect(ends[0])
            ctl.connect(ends[1])
            await ctl.send(b"ready")
            for _ in range(n):
                await push.send(msgpack.packb(SMALL))
            await ctl.recv()
            ctx.destroy(linger=0)
        asyncio.run(main())
    return _two(kind, zconsumer, zproducer, timeout)


# --- idle --------------------------------------------------------------------------------------

def idle(seconds: float) -> dict[str, Any] | None:
    """CPU share of an asyncio receiver parked on an empty channel (default re-check)."""
    def parked(ends: Any) -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            ch = AsyncChannel(ends[0])
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            with contextlib.suppress(shmipc.Empty):
                await ch.recv(timeout=seconds)
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            return {"idle_cpu_pct": 100 * cpu / (t1 - t0)}
        return asyncio.run(main())

    return _two("shmipc asyncio", parked, lambda ends: None, seconds + 60)


# --- the rows and the bars ---------------------------------------------------------------------

def run(quick: bool, reps: int) -> dict[str, Any]:
    """Measure every row `reps` times (interleaved), return medians, a table and the bars."""
    n_ping = 300 if quick else 10_000
    n_small = 3000 if quick else 200_000
    idle_s = 0.3 if quick else 2.0
    missing = {kind: why for kind in KINDS if (why := unavailable(kind)) is not None}
    kinds = [kind for kind in KINDS if kind not in missing]
    raw: dict[str, dict[str, list[dict[str, Any] | None]]] = {"pingpong": {}, "small": {},
                                                               "idle": {}}
    for _ in range(reps):
        for kind in kinds:
            raw["pingpong"].setdefault(kind, []).append(pingpong(kind, n_ping))
            raw["small"].setdefault(kind, []).append(throughput(kind, n_small))
        raw["idle"].setdefault("shmipc asyncio", []).append(idle(idle_s))

    def median(label: str, kind: str, key: str) -> float | None:
        values = [r[key] for r in raw[label].get(kind, []) if r is not None and key in r]
        return statistics.median(values) if values else None

    medians = {label: {kind: {key: median(label, kind, key)
                              for key in ("p50_us", "p99_us", "msgs_per_s", "idle_cpu_pct")}
                       for kind in raw[label]} for label in raw}

    def cell(label: str, kind: str, key: str, fmt: str) -> str:
        if kind in missing:
            return "n/a"
        value = medians[label].get(kind, {}).get(key)
        return "—" if value is None else format(value, fmt)

    lines = ["| asyncio rows | ping-pong p50 µs | p99 µs | small objects msg/s |",
             "| --- | --: | --: | --: |"]
    for kind in KINDS:
        lines.append(f"| {kind} | {cell('pingpong', kind, 'p50_us', '.1f')} | "
                     f"{cell('pingpong', kind, 'p99_us', '.1f')} | "
                     f"{cell('small', kind, 'msgs_per_s', ',.0f')} |")
    idle_pct = medians["idle"].get("shmipc asyncio", {}).get("idle_cpu_pct")
    lines.append(f"\nIdle asyncio receiver: {'—' if idle_pct is None else f'{idle_pct:.3f}'} % "
                 "of a CPU")

    def p50(kind: str) -> float | None:
        return medians["pingpong"].get(kind, {}).get("p50_us")

    def rate(kind: str) -> float | None:
        return medians["small"].get(kind, {}).get("msgs_per_s")

    def bar(name: str, ok: bool | None, detail: str) -> dict[str, str]:
        return {"bar": name, "verdict": "n/a" if ok is None else "met" if ok else "NOT MET",
                "detail": detail}

    a, blocking, z = p50("shmipc asyncio"), p50("shmipc blocking"), p50("zmq.asyncio")
    spun = p50("shmipc asyncio spin=50us")
    ra, rb, rz = rate("shmipc asyncio"), rate("shmipc blocking"), rate("zmq.asyncio")
    bars = [
        bar("async ping-pong p50 <= 2x blocking ping-pong p50",
            None if a is None or blocking is None else a <= 2 * blocking,
            f"{a} µs against {blocking} µs"),
        bar("async ping-pong p50 with spin=50us (opt-in) <= 2x blocking ping-pong p50",
            None if spun is None or blocking is None else spun <= 2 * blocking,
            f"{spun} µs against {blocking} µs"),
        bar("async ping-pong p50 <= zmq.asyncio ping-pong p50",
            None if a is None or z is None else a <= z, f"{a} µs against {z} µs"),
        bar("async small-object throughput >= 50 % of blocking",
            None if ra is None or rb is None else ra >= 0.5 * rb, f"{ra} against {rb} msg/s"),
        bar("async small-object throughput >= 2x zmq.asyncio PUSH/PULL",
            None if ra is None or rz is None else ra >= 2 * rz, f"{ra} against {rz} msg/s"),
        bar("blocked asyncio receiver < 1 % of a CPU",
            None if idle_pct is None else idle_pct < 1.0, f"{idle_pct} %"),
    ]
    return {"medians": medians, "runs": raw, "unavailable": missing,
            "table": "\n".join(lines), "bars": bars}
