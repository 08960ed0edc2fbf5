"""shmipc against its peers, side by side in one run, and a verdict on each of the design's bars.

    python benchmarks/run.py                 # the full run (~6-7 min on 2 quiet CPUs, longer
                                             # under load): table, bars, results.json, plot
    python benchmarks/run.py --quick         # a smoke run with tiny counts (a few seconds)
    python benchmarks/run.py --systems shmipc,iceoryx2,os.pipe   # a subset (name prefixes)
    python benchmarks/run.py --workloads 1m,pingpong --reps 5    # a subset of the workloads
    make bench                               # .venv with the bench extra, then the full run

What is measured (every figure for every system, in the same run):

* small: 200k objects ``{"name": "b", "age": 20}``, one producer to one consumer: msg/s, and
  the CPU time per message of the sending and of the receiving process (``getrusage`` of each
  process over its own part of the run, all its threads included);
* 4 KiB and 1 MiB byte payloads (msg/s, GB/s), received as a copy (``recv_bytes`` and the like);
  and a zero-copy 1 MiB row: shmipc ``send_view`` + ``recv_view`` against iceoryx2's
  loan + in-place write + in-place read;
* ping-pong round trips, p50/p99: every system, shmipc with its default spin and with
  ``spin = 0`` (pure blocking), and a hand-rolled spinning ring (two processes polling a shared
  mmap counter: the best a busy-poll can do from Python);
* batches of 64 distinct small dicts (shmipc ``send_many``/``recv_many``, faster-fifo
  ``put_many``/``get_many``, every other system one msgpack array per batch);
* 1, 2 and 4 producers into one consumer;
* an idle receiver: the CPU it uses while blocked 2 s on an empty channel;
* the one-process floor: pack, copy in, copy out, unpack, in one process, no IPC;
* bridge: a channel bridged through NATS JetStream end to end against nats-py publishing the
  same payloads directly (``benchmarks/bridge.py``; small objects and 64 KiB; full runs, or
  ``--workloads bridge``; n/a without nats-py and nats-server).

Every measurement forks a fresh consumer and fresh producer(s), consumer pinned to the first
CPU and producers to the second (``os.sched_setaffinity``). Producers build their endpoint and
report ready; the consumer builds its own, then starts its clock and releases them. The consumer
checks every message: a small object must compare equal; a byte payload must have the right
length and carry its sequence number in its first and its last 8 bytes. A wrong, lost or extra
message fails the measurement, which then shows as "—". Repetitions are interleaved across
systems (rep 1 of every workload and system, then rep 2, ...) and the table shows medians.

Peers that are not installed show as "n/a" with the reason (``pip install -e '.[bench]'``
installs pyzmq, faster-fifo, iceoryx2 and matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import mmap
import os
import platform
import resource
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

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_queue import ShmipcQueue, queue_bar  # noqa: E402

SMALL = {"name": "b", "age": 20}
PEOPLE = shmipc.Record("people", [("name", "4s"), ("age", "i")])  # the seed's C struct
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


def cpu_seconds() -> float:
    """CPU time of this whole process (every thread), user plus system."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --- systems -----------------------------------------------------------------------------------
# Each system is opened in the parent (before fork) and gives each child an endpoint with
# send/recv of objects and of bytes, and a batch form (its own batch API where it has one,
# else one message holding a msgpack array of the batch). A variant (`base` set) is a second way
# of using a system; the table shows it in its base's row, in its own column.


class System:
    name = "?"
    base: str | None = None  # for a variant: the row it is shown in
    column: str | None = None  # for a variant: the column it fills ("zerocopy", "spin0")
    only: tuple[str, ...] | None = None  # the plan labels (prefixes) it takes part in; None: all
    multi_producer = True
    max_size: int | None = None  # the largest byte payload it can carry

    def takes(self, label: str) -> bool:
        if self.only is None:
            return True
        return any(label.startswith(prefix) for prefix in self.only)

    def open(self, size: int) -> Any:
        raise NotImplementedError

    def close(self, state: Any) -> None:
        pass

    def tx(self, state: Any) -> Any:
        return state

    def rx(self, state: Any) -> Any:
        return state

    def release(self, ep: Any) -> None:
        """Called in the child when it is done with an endpoint (before os._exit)."""

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


class ShmipcSpin0(Shmipc):
    """shmipc with ``spin = 0``: a waiter registers and sleeps at once (pure blocking)."""

    name = "shmipc spin=0"
    base = "shmipc"
    column = "spin0"
    only = ("pingpong",)

    def tx(self, state: Any) -> Any:
        state.spin = 0  # in the child: its own copy of the handle
        return state

    rx = tx


class ShmipcZeroCopy(Shmipc):
    """shmipc zero copy: the producer writes into the ring, the consumer reads in place."""

    name = "shmipc send_view+recv_view"
    base = "shmipc"
    column = "zerocopy"
    only = ("1m", "sweep")

    def send_bytes(self, ep: Any, data: Any) -> None:
        with ep.send_view(len(data)) as buf:
            buf[:] = data

    def recv_bytes(self, ep: Any) -> Any:
        with ep.recv_view() as view:
            return probe(view)  # checked where it lies, never copied


class ShmipcRecords(Shmipc):
    """shmipc RecordChannel: the same fields as C records (``char name[4]; int age;``)."""

    name = "shmipc RecordChannel"
    base = "shmipc"
    column = "records"
    only = ("small",)
    small = None  # set below: a people record

    def open(self, size: int) -> Any:
        return shmipc.RecordChannel.anonymous(PEOPLE, (4 << 20) // 16)  # Shmipc's 4 MiB ring


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

    def close(self, state: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state.removeprefix("ipc://"))  # the socket file the PULL side bound

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


# iceoryx2 (PyPI `iceoryx2`): publish-subscribe over a Slice[c_uint8] service. Back-pressure
# instead of its default overwrite: safe overflow off and the publishers' strategy
# RetryUntilDelivered, so nothing is lost and every message can be checked. The subscriber
# busy-polls `receive()` (iceoryx2's pub/sub has no blocking receive; a WaitSet on an event
# service would add a second service and a notifier round per message).

_IOX_NODES: dict[int, Any] = {}  # one node per process; a forked child never drops its parent's
_IOX_ARRAYS: dict[int, Any] = {}  # ctypes array types by length


def _iox() -> Any:
    import iceoryx2

    iceoryx2.set_log_level_from_env_or(iceoryx2.LogLevel.Error)  # no "no config file" notice
    return iceoryx2


def _iox_node() -> Any:
    node = _IOX_NODES.get(os.getpid())
    if node is None:
        iox = _iox()
        node = (iox.NodeBuilder.new().signal_handling_mode(iox.SignalHandlingMode.Disabled)
                .create(iox.ServiceType.Ipc))
        _IOX_NODES[os.getpid()] = node
    return node


def _u8_array(n: int) -> Any:
    t = _IOX_ARRAYS.get(n)
    if t is None:
        t = _IOX_ARRAYS[n] = ctypes.c_uint8 * n
    return t


def _c_source(data: Any) -> Any:
    """Something ctypes.memmove copies from: bytes as they are, a bytearray without a copy."""
    if isinstance(data, bytes):
        return data
    return _u8_array(len(data)).from_buffer(data)


class _IoxEndpoint:
    __slots__ = ("port", "service")

    def __init__(self, port: Any, service: Any) -> None:
        self.port = port
        self.service = service


class Iceoryx2(System):
    name = "iceoryx2 pub/sub (busy-poll)"

    def open(self, size: int) -> Any:
        slice_len = max(size, 4096)
        state = {"name": f"shmipc-bench/{uuid.uuid4().hex}", "slice_len": slice_len,
                 "buffer": max(4, min(1024, (8 << 20) // slice_len))}
        # The parent creates the service and holds it while the children use it.
        state["service"] = self._service(state)
        return state

    def _service(self, state: dict[str, Any]) -> Any:
        iox = _iox()
        return (_iox_node().service_builder(iox.ServiceName.new(state["name"]))
                .publish_subscribe(iox.Slice[ctypes.c_uint8])
                .enable_safe_overflow(False)
                .history_size(0)
                .subscriber_max_buffer_size(state["buffer"])
                .subscriber_max_borrowed_samples(2)
                .max_publishers(8)
                .max_subscribers(2)
                .max_nodes(16)
                .open_or_create())

    def close(self, state: Any) -> None:
        state.pop("service", None)

    def tx(self, state: Any) -> Any:
        iox = _iox()
        service = self._service(state)
        publisher = (service.publisher_builder()
                     .initial_max_slice_len(state["slice_len"])
                     .allocation_strategy(iox.AllocationStrategy.PowerOfTwo)
                     .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)
                     .max_loaned_samples(2)
                     .create())
        return _IoxEndpoint(publisher, service)

    def rx(self, state: Any) -> Any:
        service = self._service(state)
        return _IoxEndpoint(service.subscriber_builder().create(), service)

    def release(self, ep: Any) -> None:
        # Drop ports, services and this child's node, so that iceoryx2 removes their files
        # (os._exit runs no destructor).
        for one in ep if isinstance(ep, tuple) else (ep,):
            one.port.delete()
            one.service = None
        _IOX_NODES.pop(os.getpid(), None)

    def send_bytes(self, ep: Any, data: Any) -> None:
        n = len(data)
        sample = ep.port.loan_slice_uninit(n)
        ctypes.memmove(sample.payload_ptr, _c_source(data), n)
        sample.assume_init().send()

    def _take(self, ep: Any) -> Any:
        receive = ep.port.receive
        sample = receive()
        while sample is None:
            sample = receive()
        return sample

    def recv_bytes(self, ep: Any) -> Any:
        sample = self._take(ep)
        data = ctypes.string_at(sample.payload_ptr, sample.header.number_of_elements)
        sample.delete()
        return data


class Iceoryx2ZeroCopy(Iceoryx2):
    """iceoryx2 zero copy: write into a loaned sample, read the received sample in place."""

    name = "iceoryx2 loan + in place"
    base = Iceoryx2.name
    column = "zerocopy"
    only = ("1m", "sweep")

    def send_bytes(self, ep: Any, data: Any) -> None:
        n = len(data)
        sample = ep.port.loan_slice_uninit(n)
        ctypes.memmove(sample.payload_ptr, _c_source(data), n)  # buf[:] = data, in the sample
        sample.assume_init().send()

    def recv_bytes(self, ep: Any) -> Any:
        sample = self._take(ep)
        got = probe(_u8_array(sample.header.number_of_elements).from_address(sample.payload_ptr))
        sample.delete()
        return got


class SpinRing(System):
    """Hand-rolled: one slot in a shared anonymous mmap, both sides polling its counters.

    The writer waits until the slot is free (ack == seq), copies the message in, then bumps
    seq; the reader polls seq, copies the message out, then bumps ack. No lock, no syscall, no
    sleep: the best a busy-poll can do from Python. (Relies on x86's store order: a stand-in for
    the bar, not a channel.)
    """

    name = "spinning ring (mmap poll)"
    multi_producer = False
    only = ("pingpong",)
    SEQ_AT, LEN_AT, ACK_AT, DATA_AT = 0, 8, 64, 128

    def open(self, size: int) -> Any:
        return mmap.mmap(-1, self.DATA_AT + max(size, 4096))  # MAP_SHARED: fork shares it

    def close(self, state: Any) -> None:
        state.close()

    def send_bytes(self, ep: Any, data: Any) -> None:
        seq = SEQ.unpack_from(ep, 0)[0]
        while SEQ.unpack_from(ep, 64)[0] != seq:
            pass
        n = len(data)
        ep[128:128 + n] = data
        SEQ.pack_into(ep, 8, n)
        SEQ.pack_into(ep, 0, seq + 1)

    def recv_bytes(self, ep: Any) -> Any:
        ack = SEQ.unpack_from(ep, 64)[0]
        while SEQ.unpack_from(ep, 0)[0] == ack:
            pass
        n = SEQ.unpack_from(ep, 8)[0]
        data = ep[128:128 + n]
        SEQ.pack_into(ep, 64, ack + 1)
        return data


ALL: list[System] = [Shmipc(), MpQueue(), MpPipe(), PosixMQ(), Zmq(), FasterFifo(), OsPipe(),
                     Iceoryx2(), SpinRing(), ShmipcQueue()]  # type: ignore[list-item]
ShmipcRecords.small = PEOPLE(b"b", 20)
VARIANTS: list[System] = [ShmipcSpin0(), ShmipcZeroCopy(), ShmipcRecords(), Iceoryx2ZeroCopy()]
SHMIPC, ICEORYX2, SPIN_RING = Shmipc.name, Iceoryx2.name, SpinRing.name


def unavailable_reason(system: System) -> str | None:
    """None if the system can be opened here, else why not (the exception, as printed)."""
    try:
        system.close(system.open(64))
    except Exception as e:  # an ImportError, or a peer that cannot run here
        hint = " (pip install -e '.[bench]')" if isinstance(e, ImportError) else ""
        return f"{type(e).__name__}: {e}{hint}"
    return None


# --- workloads ---------------------------------------------------------------------------------


def make_payload(size: int) -> bytearray:
    return bytearray(b"\xab" * size)


def stamp(buf: bytearray, seq: int) -> bytearray:
    """The sequence number in the first and in the last 8 bytes."""
    if len(buf) >= 8:
        SEQ.pack_into(buf, 0, seq)
    if len(buf) >= 16:
        SEQ.pack_into(buf, len(buf) - 8, seq)
    return buf


def probe(buf: Any) -> tuple[int, int, int]:
    """(length, first stamp, last stamp) of a byte payload, read where it lies."""
    n = len(buf)
    head = SEQ.unpack_from(buf, 0)[0] if n >= 8 else -1
    tail = SEQ.unpack_from(buf, n - 8)[0] if n >= 16 else -1
    return n, head, tail


def check_bytes(got: Any, seq: int, size: int) -> None:
    if not isinstance(got, tuple):  # a copy; zero-copy receivers probed in place already
        got = probe(got)
    want = (size, seq if size >= 8 else -1, seq if size >= 16 else -1)
    if got != want:
        raise AssertionError(f"message {seq}: (length, first, last stamp) {got}, not {want}")


def produce(system: System, ep: Any, workload: str, count: int, size: int, base: int,
            idle_s: float) -> None:
    if workload in ("small", "producers"):
        send, small = system.send, getattr(system, "small", SMALL)
        for _ in range(count):
            send(ep, small)
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
    elif workload == "idle":  # the receiver waits on an empty channel this long
        time.sleep(idle_s)
        system.send(ep, SMALL)
    flush = getattr(system, "flush", None)
    if flush is not None:
        flush(ep[1] if workload == "pingpong" else ep)


def consume(system: System, ep: Any, workload: str, count: int, size: int,
            release: Callable[[], None]) -> dict[str, Any]:
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
        warm = lat[len(lat) // 20:] if len(lat) > 100 else lat  # drop the first 5%: warm-up
        warm.sort()
        return {"count": count, "p50_us": warm[len(warm) // 2] / 1000,
                "p99_us": warm[int(len(warm) * 0.99)] / 1000}
    cpu0 = cpu_seconds()
    rss_before = rss_kib()
    faults_before = minor_faults()
    t0 = time.perf_counter()
    release()
    if workload == "idle":
        if system.recv(ep) != SMALL:
            raise AssertionError("the idle message arrived changed")
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        return {"count": 1, "seconds": elapsed, "cpu_s": cpu, "idle_cpu_pct": 100 * cpu / elapsed}
    if workload in ("small", "producers"):
        recv, small = system.recv, getattr(system, "small", SMALL)
        for _ in range(count):
            if recv(ep) != small:
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
        if got != total:
            raise AssertionError(f"{got} batched objects, not {total}")
        count = total
    elif workload == "bytes":
        recv_bytes = system.recv_bytes
        for seq in range(count):
            check_bytes(recv_bytes(ep), seq, size)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    return {
        "count": count,
        "seconds": elapsed,
        "msgs_per_s": count / elapsed,
        "bytes_per_s": count * size / elapsed,
        "cpu_s": cpu,
        "recv_cpu_us": cpu / max(count, 1) * 1e6,
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


def read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("a peer process went away")
        data += chunk
    return data


def measure(system: System, workload: str, count: int, size: int = 0, producers: int = 1,
            timeout: float = 120.0, idle_s: float = 2.0) -> dict[str, Any] | None:
    """One measurement in fresh processes; None if the system failed or timed out."""
    if system.max_size is not None and size > system.max_size:
        return None
    if producers > 1 and not system.multi_producer:
        return None
    system._large = size >= 65536  # type: ignore[attr-defined]
    wall0 = time.monotonic()
    states = [system.open(max(size, 64))]
    if workload == "pingpong":
        states.append(system.open(64))
    go_r, go_w = os.pipe()  # consumer -> producers: start
    ready_r, ready_w = os.pipe()  # producers -> consumer: endpoint built
    done_r, done_w = os.pipe()  # consumer -> producers: all received, you may tear down
    res_r, res_w = os.pipe()  # children -> parent: one JSON line each
    per_producer = count // producers
    count = per_producer * producers

    def producer(index: int) -> None:
        for fd in (go_w, ready_r, done_w, res_r):
            os.close(fd)
        pin(PRODUCER_CPU)
        if workload == "pingpong":
            ep = (system.rx(states[0]), system.tx(states[1]))
        else:
            ep = system.tx(states[0])
        os.write(ready_w, b"r")
        read_exactly(go_r, 1)
        cpu0 = cpu_seconds()
        produce(system, ep, workload, per_producer, size, index * per_producer, idle_s)
        cpu = cpu_seconds() - cpu0
        os.write(res_w, json.dumps({"role": "producer", "cpu_s": cpu}).encode() + b"\n")
        read_exactly(done_r, 1)  # keep the endpoint until the consumer has every message
        system.release(ep)

    def consumer() -> None:
        for fd in (go_r, ready_w, done_r, res_r):
            os.close(fd)
        pin(CONSUMER_CPU)
        if workload == "pingpong":
            ep = (system.tx(states[0]), system.rx(states[1]))
        else:
            ep = system.rx(states[0])
        read_exactly(ready_r, producers)
        result = consume(system, ep, workload, count, size,
                         lambda: os.write(go_w, b"g" * producers))
        result["role"] = "consumer"
        os.write(res_w, json.dumps(result).encode() + b"\n")
        os.write(done_w, b"d" * producers)
        system.release(ep)

    pids = [fork_child(lambda i=i: producer(i)) for i in range(producers)]
    pids.append(fork_child(consumer))
    for fd in (go_r, go_w, ready_r, ready_w, done_r, done_w, res_w):
        os.close(fd)
    deadline = time.monotonic() + timeout
    codes: dict[int, int] = {}
    raw = b""
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
        if not any(codes.values()):
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
    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    results = [r for r in lines if r.get("role") == "consumer"]
    if any(codes.values()) or len(results) != 1:
        print(f"  ! {system.name} {workload} {size}: exit codes {list(codes.values())}",
              file=sys.stderr)
        return None
    result = results[0]
    result["wall_s"] = time.monotonic() - wall0  # the whole measurement, forks included
    if workload not in ("pingpong", "idle"):
        sent_cpu = sum(r["cpu_s"] for r in lines if r.get("role") == "producer")
        result["send_cpu_us"] = sent_cpu / max(result["count"], 1) * 1e6
    return result  # type: ignore[no-any-return]


def floor(workload: str, count: int, size: int = 0) -> dict[str, Any]:
    """One process, no IPC: pack, copy in, copy out, unpack (the round trip to stay near)."""
    buf = bytearray(max(size, 1 << 16) + 64)
    view = memoryview(buf)
    t0 = time.perf_counter()
    if workload == "small":
        for _ in range(count):
            payload = pack(SMALL)
            n = len(payload)
            view[:n] = payload
            if unpack(bytes(view[:n])) != SMALL:
                raise AssertionError
    elif workload == "batch":
        batch = [dict(SMALL) for _ in range(64)]
        for _ in range(count // 64):
            payload = pack(batch)
            n = len(payload)
            view[:n] = payload
            if len(unpack(bytes(view[:n]))) != 64:
                raise AssertionError
    elif workload == "bytes":
        src = make_payload(size)
        for seq in range(count):
            view[:size] = stamp(src, seq)
            check_bytes(bytes(view[:size]), seq, size)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "msgs_per_s": count / elapsed,
            "bytes_per_s": count * size / elapsed}


# --- the run ------------------------------------------------------------------------------------

KEYS = ("msgs_per_s", "bytes_per_s", "p50_us", "p99_us", "cpu_s", "send_cpu_us", "recv_cpu_us",
        "idle_cpu_pct", "rss_growth_kib", "minor_faults_per_msg")


def median_of(runs: list[dict[str, Any] | None], key: str) -> float | None:
    values = [r[key] for r in runs if r is not None and r.get(key) is not None]
    return statistics.median(values) if values else None


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cleanup_iceoryx2() -> None:
    """Remove what iceoryx2 nodes of killed children left in /dev/shm and /tmp/iceoryx2."""
    with contextlib.suppress(Exception):
        _iox_node().try_cleanup_dead_nodes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3; 1 quick)")
    parser.add_argument("--systems", default="", help="comma-separated subset of system names, "
                        "matched by prefix (e.g. shmipc,iceoryx2,os.pipe); a system's variants "
                        "come with it")
    parser.add_argument("--workloads", default="", help="comma-separated subset of the table's "
                        "workloads: small,4k,1m,pingpong,batch64,producers,idle,sweep,bridge,"
                        "aio (prefixes; bridge and aio: the rows of benchmarks/bridge.py and "
                        "benchmarks/aio.py, in the full run and when named)")
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
    idle_s = 0.2 if quick else 2.0
    timeout = 30.0 if quick else 120.0
    sweep_sizes = [64, 1024, 16384, 262144, 1 << 20, 4 << 20]

    selected = ALL
    if args.systems:
        wanted = [w.strip().lower() for w in args.systems.split(",") if w.strip()]
        selected = [s for s in ALL if any(s.name.lower().startswith(w) for w in wanted)]
    unavailable = {s.name: reason for s in selected
                   if (reason := unavailable_reason(s)) is not None}
    systems = [s for s in selected if s.name not in unavailable]
    names = [s.name for s in systems]
    variants = [v for v in VARIANTS if v.base in names]

    # (label, workload, count, size, producers)
    plan: list[tuple[str, str, int, int, int]] = [
        ("small", "small", n_small, 0, 1),
        ("4k", "bytes", n_4k, 4096, 1),
        ("1m", "bytes", n_1m, 1 << 20, 1),
        ("pingpong", "pingpong", n_ping, 0, 1),
        ("batch64", "batch", n_small, 0, 1),
        ("producers1", "producers", n_small, 0, 1),
        ("producers2", "producers", n_small, 0, 2),
        ("producers4", "producers", n_small, 0, 4),
        ("idle", "idle", 1, 0, 1),
    ]
    if not args.no_sweep:
        for size in sweep_sizes:
            volume = (4 << 20) if quick else (128 << 20)
            plan.append((f"sweep{size}", "bytes", max(10, min(n_4k, volume // size)), size, 1))

    # The bridge rows (benchmarks/bridge.py) and the asyncio rows (benchmarks/aio.py): in a
    # full run, or when named.
    with_bridge = not quick and not args.systems
    run_aio = not quick
    if args.workloads:
        wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
        plan = [item for item in plan if any(item[0].startswith(w) for w in wanted)]
        with_bridge = any("bridge".startswith(w) for w in wanted)
        run_aio = any("aio".startswith(w) for w in wanted)

    raw: dict[str, dict[str, list[dict[str, Any] | None]]] = {}
    loads = [load()]
    started = time.time()
    print(f"# shmipc benchmarks: {len(systems)} systems (+{len(variants)} variants), {reps} "
          f"repetition(s); load {loads[0]}", file=sys.stderr)
    for name, reason in unavailable.items():
        print(f"# n/a: {name}: {reason}", file=sys.stderr)
    for rep in range(reps):
        for label, workload, count, size, producers in plan:
            for system in systems + variants:
                if not system.takes(label):
                    continue
                if label.startswith("producers") and not system.multi_producer:
                    continue
                if system.max_size is not None and size > system.max_size:
                    continue  # posix_ipc.MessageQueue: 8 KiB at most
                result = measure(system, workload, count, size, producers, timeout, idle_s)
                raw.setdefault(label, {}).setdefault(system.name, []).append(result)
            if workload in ("small", "batch", "bytes"):
                raw.setdefault(label, {}).setdefault("floor", []).append(
                    floor(workload, count, size))
        loads.append(load())
        print(f"# repetition {rep + 1}/{reps} done, {time.time() - started:.0f} s, load "
              f"{loads[-1]}", file=sys.stderr)
    if any(isinstance(s, Iceoryx2) for s in systems):
        cleanup_iceoryx2()
    bridge = None
    if with_bridge:
        bridge = run_bridge(quick, reps)
        loads.append(load())
    aio_rows = None
    if run_aio:
        import aio as aio_bench  # benchmarks/aio.py: the asyncio rows

        aio_rows = aio_bench.run(quick, reps)
        print(f"# asyncio rows done, {time.time() - started:.0f} s", file=sys.stderr)

    medians: dict[str, dict[str, dict[str, float | None]]] = {
        label: {name: {key: median_of(runs, key) for key in KEYS}
                for name, runs in per_system.items()}
        for label, per_system in raw.items()
    }
    rows = [s.name for s in ALL if s in systems or s.name in unavailable]
    table = render_table(medians, rows, unavailable) if plan else ""
    bars = judge(medians, unavailable) if plan else []
    if bridge is not None:
        table = "\n\n".join(t for t in (table, bridge["table"]) if t)
        bars += bridge["bars"]
    print(table)
    print()
    print(f"Bars (this run, load {loads[0]} at the start, {loads[-1]} at the end; compare rows "
          "within one run only):")
    for bar in bars:
        print(f"- {bar['bar']}: **{bar['verdict']}** — {bar['detail']}")
    if aio_rows is not None:
        print()
        print(aio_rows["table"])
        for name, reason in aio_rows["unavailable"].items():
            print(f"n/a — {name}: {reason}")
        print()
        print("asyncio bars (this run):")
        for bar in aio_rows["bars"]:
            print(f"- {bar['bar']}: **{bar['verdict']}** — {bar['detail']}")
    elapsed = time.time() - started
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "load_average": loads,
        "seconds": elapsed,
        "quick": quick,
        "repetitions": reps,
        "systems": names,
        "variants": {v.name: {"base": v.base, "column": v.column} for v in variants},
        "unavailable": unavailable,
        "medians": medians,
        "runs": raw,
        "table": table,
        "bars": bars,
        "bridge": bridge,
        "aio": aio_rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=1))
    print(f"# {elapsed:.0f} s; results in {args.json}", file=sys.stderr)
    if not args.no_plot and not args.no_sweep:
        try:
            draw(medians, sweep_sizes, args.plot)
            print(f"# plot in {args.plot}", file=sys.stderr)
        except ImportError:
            print("# matplotlib not installed: no plot", file=sys.stderr)
    return 0


def run_bridge(quick: bool, reps: int) -> dict[str, Any]:
    """The bridge workload: ``benchmarks/bridge.py``'s rows, its table and its bars (n/a with
    the reason when nats-py or nats-server is missing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_bridge",
                                                  ROOT / "benchmarks" / "bridge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reason = module.unavailable()
    if reason is not None:
        print(f"# n/a: bridge: {reason}", file=sys.stderr)
        return {"unavailable": reason, "results": {},
                "table": f"Bridge through NATS JetStream: n/a — {reason}",
                "bars": [{"bar": module.bar_text(name), "verdict": "n/a", "detail": reason}
                         for name, _, _ in module.workloads(quick)]}
    print(f"# bridge: {reps} repetition(s), load {load()}", file=sys.stderr)
    results = module.measure(module.workloads(quick), reps,
                             log=lambda line: print("# " + line.strip(), file=sys.stderr))
    return {"unavailable": None, "results": results, "table": module.table(results),
            "bars": module.bars(results)}


# --- the table and the bars ---------------------------------------------------------------------


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


def fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} %" if v < 10 else f"{v:.0f} %"


def variant_of(base: str, column: str) -> str | None:
    for v in VARIANTS:
        if v.base == base and v.column == column:
            return v.name
    return None


COLUMNS = ["small msg/s", "CPU µs/msg send / recv", "4 KiB msg/s", "1 MiB GB/s",
           "zero-copy 1 MiB GB/s", "ping-pong p50 / p99 µs", "ping-pong spin=0 p50 / p99 µs",
           "batch 64 msg/s", "1 / 2 / 4 producers msg/s", "idle receiver CPU",
           "records msg/s (CPU µs/msg)"]


def render_table(medians: dict[str, dict[str, dict[str, float | None]]], names: list[str],
                 unavailable: dict[str, str] | None = None) -> str:
    unavailable = unavailable or {}

    def get(label: str, name: str | None, key: str) -> float | None:
        return medians.get(label, {}).get(name or "", {}).get(key)

    def pair(a: str, b: str) -> str:
        return "—" if a == b == "—" else f"{a} / {b}"

    lines = ["| system | " + " | ".join(COLUMNS) + " |",
             "| --- |" + " --: |" * len(COLUMNS)]
    for name in names + ["floor"]:
        if name in unavailable:
            lines.append(f"| {name} |" + " n/a |" * len(COLUMNS))
            continue
        if not any(name in per for per in medians.values()):
            continue
        spin0 = variant_of(name, "spin0")
        producers = " / ".join(fmt_rate(get(f"producers{k}", name, "msgs_per_s"))
                               for k in (1, 2, 4))
        if all(get(f"producers{k}", name, "msgs_per_s") is None for k in (1, 2, 4)):
            producers = "—"
        cells = [
            fmt_rate(get("small", name, "msgs_per_s")),
            pair(fmt_us(get("small", name, "send_cpu_us")),
                 fmt_us(get("small", name, "recv_cpu_us"))),
            fmt_rate(get("4k", name, "msgs_per_s")),
            fmt_gb(get("1m", name, "bytes_per_s")),
            fmt_gb(get("1m", variant_of(name, "zerocopy"), "bytes_per_s")),
            pair(fmt_us(get("pingpong", name, "p50_us")), fmt_us(get("pingpong", name, "p99_us"))),
            pair(fmt_us(get("pingpong", spin0, "p50_us")),
                 fmt_us(get("pingpong", spin0, "p99_us"))),
            fmt_rate(get("batch64", name, "msgs_per_s")),
            producers,
            fmt_pct(get("idle", name, "idle_cpu_pct")),
            records_cell(get, variant_of(name, "records")),
        ]
        shown = f"**{name}**" if name == SHMIPC else name
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    for name, reason in unavailable.items():
        lines.append(f"\nn/a — {name}: {reason}")
    return "\n".join(lines)


def records_cell(get: Callable[[str, str | None, str], float | None],
                 name: str | None) -> str:
    rate = get("small", name, "msgs_per_s")
    cpu = [get("small", name, k) for k in ("send_cpu_us", "recv_cpu_us")]
    if rate is None:
        return "—"
    both = None if None in cpu else sum(c for c in cpu if c is not None)
    return f"{fmt_rate(rate)} ({fmt_us(both)})"


def judge(medians: dict[str, dict[str, dict[str, float | None]]],
          unavailable: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The design's bars, each met / NOT MET / n/a, with the figures it was judged on."""
    unavailable = unavailable or {}

    def get(label: str, name: str | None, key: str) -> float | None:
        return medians.get(label, {}).get(name or "", {}).get(key)

    peers = [s.name for s in ALL if s.name not in (SHMIPC, SPIN_RING, ShmipcQueue.name)]

    def measured(label: str, key: str, among: list[str]) -> tuple[dict[str, float], list[str]]:
        got = {p: v for p in among if (v := get(label, p, key)) is not None}
        return got, [p for p in among if p not in got]

    def missing_note(missing: list[str]) -> str:
        if not missing:
            return ""
        why = [f"{m} ({'n/a' if m in unavailable else 'not measured'})" for m in missing]
        return "; without " + ", ".join(why)

    bars: list[dict[str, str]] = []

    def bar(text: str, ok: bool | None, detail: str) -> None:
        verdict = "n/a" if ok is None else "met" if ok else "NOT MET"
        bars.append({"bar": text, "verdict": verdict, "detail": detail})

    def against_best(label: str, key: str, factor: float, text: str, fmt: Callable[[Any], str],
                     extra_floor: bool = False, size: int = 0) -> None:
        ours = get(label, SHMIPC, key)
        cannot = [s for s in ALL if s.name in peers and s.max_size is not None
                  and s.max_size < size]
        got, missing = measured(label, key, [p for p in peers if p not in
                                             {s.name for s in cannot}])
        if ours is None or not got:
            bar(text, None, "shmipc not measured" if ours is None else
                "no peer measured in this run" + missing_note(missing))
            return
        best = max(got, key=lambda p: got[p])
        ok = ours >= factor * got[best]
        detail = (f"shmipc {fmt(ours)} = {ours / got[best]:.2f}x the best peer "
                  f"({best} {fmt(got[best])})")
        if extra_floor:
            fl = get(label, "floor", key)
            if fl is None:
                ok = False
                detail += "; floor not measured"
            else:
                ok = ok and ours >= fl
                detail += f", {ours / fl:.2f}x the one-process round trip ({fmt(fl)})"
        for s in cannot:
            detail += f"; {s.name} cannot carry it ({s.max_size + 1} bytes max)"
        bar(text, ok, detail + missing_note(missing))

    against_best("small", "msgs_per_s", 1.5,
                 "small 1→1 ≥ 1.5x best peer and ≥ the one-process round trip",
                 lambda v: fmt_rate(v) + "/s", extra_floor=True)
    against_best("4k", "msgs_per_s", 1.5, "4 KiB ≥ 1.5x best peer",
                 lambda v: fmt_rate(v) + "/s", size=4096)
    against_best("batch64", "msgs_per_s", 1.0, "batch 64 ahead of every peer",
                 lambda v: fmt_rate(v) + "/s")
    against_best("1m", "bytes_per_s", 1.0, "1 MiB recv_bytes ≥ every copying peer",
                 lambda v: fmt_gb(v) + " GB/s", size=1 << 20)

    text = "send_view+recv_view ≥ iceoryx2 zero-copy (1 MiB)"
    ours = get("1m", ShmipcZeroCopy.name, "bytes_per_s")
    theirs = get("1m", Iceoryx2ZeroCopy.name, "bytes_per_s")
    if ours is None or theirs is None:
        why = unavailable.get(ICEORYX2, "not measured in this run")
        bar(text, None, f"shmipc {fmt_gb(ours)} GB/s, iceoryx2 zero-copy: {why}")
    else:
        bar(text, ours >= theirs, f"shmipc {fmt_gb(ours)} GB/s = {ours / theirs:.2f}x iceoryx2 "
            f"loan + in place ({fmt_gb(theirs)} GB/s)")

    text = ("ping-pong p50 (default spin) ≤ 0.5x iceoryx2 busy-poll and below every peer, "
            "the spinning ring included")
    ours = get("pingpong", SHMIPC, "p50_us")
    got, missing = measured("pingpong", "p50_us", peers + [SPIN_RING])
    if ours is None or not got:
        bar(text, None, "shmipc not measured" if ours is None else
            "no peer measured in this run" + missing_note(missing))
    else:
        best = min(got, key=lambda p: got[p])
        ok: bool | None = ours < got[best]
        detail = f"shmipc {ours:.1f} µs; fastest peer {best} {got[best]:.1f} µs"
        iox = got.get(ICEORYX2)
        if iox is None:
            ok = None if ok else False
            detail += f"; iceoryx2: {unavailable.get(ICEORYX2, 'not measured in this run')}"
        else:
            ok = ok and ours <= 0.5 * iox
            detail += f"; {ours / iox:.2f}x iceoryx2 busy-poll ({iox:.1f} µs)"
        bar(text, ok, detail + missing_note([m for m in missing if m != ICEORYX2]))

    text = "ping-pong p50 with spin=0 ≤ the best blocking peer (posix_ipc MQ, os.pipe)"
    ours = get("pingpong", ShmipcSpin0.name, "p50_us")
    got, missing = measured("pingpong", "p50_us", [PosixMQ.name, OsPipe.name])
    if ours is None or not got:
        bar(text, None, "shmipc spin=0 or both blocking peers missing from this run")
    else:
        best = min(got, key=lambda p: got[p])
        bar(text, ours <= got[best], f"shmipc spin=0 {ours:.1f} µs; {best} {got[best]:.1f} µs"
            + missing_note(missing))

    text = "records ≥ 2x msgpack dicts of the same fields (small), in msg/s and CPU per message"
    rec_rate, dict_rate = (get("small", n, "msgs_per_s") for n in (ShmipcRecords.name, SHMIPC))
    rec_cpu, dict_cpu = (
        None if None in (c := [get("small", n, k) for k in ("send_cpu_us", "recv_cpu_us")])
        else sum(x for x in c if x is not None) for n in (ShmipcRecords.name, SHMIPC))
    if None in (rec_rate, dict_rate, rec_cpu, dict_cpu):
        bar(text, None, "RecordChannel or shmipc small not measured in this run")
    else:
        assert rec_rate and dict_rate and rec_cpu and dict_cpu
        bar(text, rec_rate >= 2 * dict_rate and dict_cpu >= 2 * rec_cpu,
            f"RecordChannel {fmt_rate(rec_rate)}/s = {rec_rate / dict_rate:.2f}x msgpack dicts "
            f"({fmt_rate(dict_rate)}/s); CPU {rec_cpu:.2f} vs {dict_cpu:.2f} µs/msg = "
            f"{dict_cpu / rec_cpu:.2f}x less")

    bar(*queue_bar(get, MpQueue.name, FasterFifo.name, unavailable))  # type: ignore[arg-type]

    text = "idle blocked receiver < 1% of a CPU"
    ours = get("idle", SHMIPC, "idle_cpu_pct")
    if ours is None:
        bar(text, None, "not measured")
    else:
        bar(text, ours < 1.0, f"shmipc {ours:.3f} % of a CPU while blocked on an empty channel")
    return bars


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
