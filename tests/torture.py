"""Kill torture and soak for shmipc: producers and consumers SIGKILLed at random instants.

Run it directly (``make torture`` / ``make soak``) or through ``tests/test_crash.py`` and
``tests/test_soak.py``::

    python tests/torture.py --duration 120 --kills 400          # torture: kill, restart, check
    python tests/torture.py --duration 60 --kills 0             # soak: 2 x 2, random sizes

One orchestrator process creates a channel file and forks ``--producers`` producers and
``--consumers`` consumers. Every message is ``incarnation u32 | seq u32 | random bytes | crc32``
of a random size: a consumer verifies the checksum of each one (a torn message is a violation).
Each worker appends a record to its own log file with one ``write`` after each completed
``send_bytes`` (the producer: ``seq``) or ``recv_bytes`` (the consumer: ``incarnation, seq``).

Kill rounds, one at a time until ``--kills`` are done or ``--duration`` has passed:

* ``random``: a running worker, picked at random, is SIGKILLed after a random delay.
* ``hook-<point>``: a new worker is started that installs :mod:`shmipc._killpoints` and
  SIGKILLs itself at its N-th pass through ``<point>`` (``window``: between the lock
  semaphore and the holder store; ``held``: lock held; ``frame``: frame copied/located, not
  committed; ``releasing``: committed, lock still recorded as held; ``unposted``: recorded as
  released, semaphore not posted).

A killed worker is replaced by a new incarnation at once. After each kill the orchestrator
waits until both the sent and the received counters of the channel move again (progress),
records how long that took, and fails the run if it does not happen before ``--progress-limit``
seconds (a generous bound: the run asserts progress, not speed).

At the end the producers are stopped (SIGUSR1: they finish the send in progress), the channel
is closed for sending, the consumers drain it and exit, and the logs are checked:

* no message is torn (checksums, verified by the consumers as they receive);
* none is duplicated (an ``(incarnation, seq)`` received twice);
* none is invented (received but never sent: a killed producer may have committed one message
  it never logged, its last seq + 1, which counts as sent);
* each consumer saw the messages of each producer in the order sent;
* lost = logged as sent and never logged as received. A consumer killed after its receive
  committed and before it logged loses that one message: the run allows at most one lost
  message per killed consumer, and none at all when no consumer was killed.

It prints a JSON report on its last line of stdout; the exit status is 0 only with no
violation.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shmipc  # noqa: E402
from shmipc import _killpoints  # noqa: E402

HEAD = struct.Struct("<II")
CRC = struct.Struct("<I")
RECV_LOG = struct.Struct("<III")
SEND_LOG = struct.Struct("<I")
HOOK_POINTS = _killpoints.POINTS


# --- workers (forked children) -----------------------------------------------------------


def _payload(rng: random.Random, incarnation: int, seq: int, max_size: int) -> bytes:
    size = rng.choice((0, rng.randrange(0, 64), rng.randrange(0, max_size)))
    body = HEAD.pack(incarnation, seq) + rng.randbytes(size)
    return body + CRC.pack(zlib.crc32(body))


def _install_suicide(point: str | None, nth: int, hits: Counter[str]) -> None:
    def hook(where: str) -> None:
        hits[where] += 1
        if where == point and hits[where] >= nth:
            os.kill(os.getpid(), signal.SIGKILL)

    _killpoints.install(hook)


def producer(path: str, logdir: str, incarnation: int, max_size: int, seed: int,
             point: str | None, nth: int, poll: float) -> int:
    stop = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    if point:
        _install_suicide(point, nth, Counter())
    rng = random.Random(seed)
    log = os.open(f"{logdir}/p{incarnation}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    ch = shmipc.Channel.open(path)
    seq = 0
    while not stop:
        try:
            ch.send_bytes(_payload(rng, incarnation, seq, max_size), timeout=poll)
        except shmipc.Full:
            continue  # retry the same seq: nothing of it was sent
        os.write(log, SEND_LOG.pack(seq))
        seq += 1
    return 0


def consumer(path: str, logdir: str, incarnation: int, point: str | None, nth: int,
             poll: float) -> int:
    if point:
        _install_suicide(point, nth, Counter())
    log = os.open(f"{logdir}/c{incarnation}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    ch = shmipc.Channel.open(path)
    while True:
        try:
            message = ch.recv_bytes(timeout=poll)
        except shmipc.Empty:
            continue
        except shmipc.EndOfChannel:
            return 0
        body, crc = message[:-4], message[-4:]
        if len(message) < HEAD.size + CRC.size or CRC.unpack(crc)[0] != zlib.crc32(body):
            with open(f"{logdir}/torn-{incarnation}-{uuid.uuid4().hex}", "wb") as f:
                f.write(message)
            return 3
        os.write(log, RECV_LOG.pack(*HEAD.unpack_from(message), len(message)))


def _die_with_parent() -> None:
    """SIGKILL this worker if the orchestrator dies (a CI timeout must not leave it running)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _fork(fn, *args) -> int:  # type: ignore[no-untyped-def]
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _die_with_parent()
            if os.getppid() != parent:  # it died before the prctl took effect
                os._exit(4)
            code = fn(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


# --- the orchestrator ----------------------------------------------------------------------


class Abort(Exception):
    """A worker failed on its own: stop the run and report."""


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = tempfile.mkdtemp(prefix="shmipc-torture-")
        self.logdir = f"{self.dir}/logs"
        os.mkdir(self.logdir)
        self.path = f"{self.dir}/channel-{uuid.uuid4().hex}"
        self.channel = shmipc.Channel.create(self.path, args.capacity)
        self.max_size = min(args.max_size, self.channel.max_message_size - 12)
        self.incarnations = 0
        self.workers: dict[int, tuple[str, int]] = {}  # pid -> (kind, incarnation)
        self.killed: Counter[str] = Counter()  # "producer"/"consumer" -> kills
        self.kills: Counter[str] = Counter()  # kill kind -> count
        self.progress: list[float] = []
        self.progress_by_kind: dict[str, float] = {}  # slowest progress after each kill kind
        self.last_kind = ""
        self.slow: list[str] = []  # kills followed by more than a second without progress
        self.violations: list[str] = []
        self.hook_unreached: Counter[str] = Counter()

    def start(self, kind: str, point: str | None = None, nth: int = 1) -> int:
        self.incarnations += 1
        inc = self.incarnations
        if kind == "producer":
            pid = _fork(producer, self.path, self.logdir, inc, self.max_size,
                        self.rng.randrange(1 << 30), point, nth, self.args.poll)
        else:
            pid = _fork(consumer, self.path, self.logdir, inc, point, nth, self.args.poll)
        self.workers[pid] = (kind, inc)
        return pid

    def reap(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.002)
        return None

    def kill(self, pid: int) -> None:
        kind, inc = self.workers.pop(pid)
        os.kill(pid, signal.SIGKILL)
        code = self.reap(pid, 30)
        if code is None:
            self.violations.append(f"{kind} {inc} (pid {pid}) did not die of SIGKILL")
        elif code != -signal.SIGKILL:  # it had exited on its own before the kill
            self.violations.append(f"{kind} {inc} exited with {code} before it was killed")
        else:
            self.killed[kind] += 1

    def wait_progress(self) -> None:
        """Wait until the channel's sent and received counters both move."""
        t0 = time.monotonic()
        before = self.channel.statistics()
        deadline = t0 + self.args.progress_limit
        while time.monotonic() < deadline:
            now = self.channel.statistics()
            if now.sent != before.sent and now.received != before.received:
                took = time.monotonic() - t0
                self.progress.append(took)
                kind = self.last_kind
                slowest = max(took, self.progress_by_kind.get(kind, 0.0))
                self.progress_by_kind[kind] = round(slowest, 3)
                if took > 1.0:
                    self.slow.append(f"{kind} kill {len(self.progress)}: {took:.2f} s")
                return
            self.check_workers()
            time.sleep(0.005)
        self.violations.append(
            f"no progress within {self.args.progress_limit} s after kill {sum(self.kills.values())}"
            f" (sent {before.sent}, received {before.received})"
        )

    def check_workers(self) -> None:
        for pid, (kind, inc) in list(self.workers.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del self.workers[pid]
                self.violations.append(
                    f"{kind} {inc} exited on its own with {os.waitstatus_to_exitcode(status)}")
                raise Abort(self.violations[-1])

    def hook_round(self, point: str) -> None:
        kind = self.rng.choice(("producer", "consumer"))
        pid = self.start(kind, point, self.rng.randrange(1, 40))
        code = self.reap(pid, self.args.progress_limit)
        if code is None:  # not reached within the limit (e.g. a ring that stayed full)
            self.hook_unreached[point] += 1
            self.kill(pid)
        else:
            kind, inc = self.workers.pop(pid)
            if code != -signal.SIGKILL:
                self.violations.append(f"{kind} {inc} with hook {point} exited with {code}")
                return
            self.killed[kind] += 1
            self.kills[f"hook-{point}"] += 1
            self.last_kind = f"hook-{point}-{kind}"
        # The hooked worker came in addition to the running ones: no replacement.

    def random_round(self) -> None:
        pid = self.rng.choice(sorted(self.workers))
        kind = self.workers[pid][0]
        time.sleep(self.rng.uniform(0, self.args.max_delay))
        self.kill(pid)
        self.kills["random"] += 1
        self.last_kind = f"random-{kind}"
        self.start(kind)

    def run(self) -> dict[str, object]:
        args = self.args
        t0 = time.monotonic()
        report: dict[str, object] = {}
        try:
            for _ in range(args.producers):
                self.start("producer")
            for _ in range(args.consumers):
                self.start("consumer")
            end = t0 + args.duration
            done = 0
            while time.monotonic() < end and done < args.kills:
                if self.rng.random() < args.hook_share:
                    self.hook_round(HOOK_POINTS[done % len(HOOK_POINTS)])
                else:
                    self.random_round()
                done += 1
                self.wait_progress()
                self.check_workers()
            while time.monotonic() < end:  # soak: no kills, just run and watch
                time.sleep(min(0.1, max(0.0, end - time.monotonic())))
                self.check_workers()
            self.finish()
            report = self.check()
        except Abort:
            pass
        finally:
            for pid in list(self.workers):
                os.kill(pid, signal.SIGKILL)
                self.reap(pid, 30)
            stats = self.channel.statistics()
            self.channel.unlink()
            self.channel.close()
            kept = self.violations and args.keep
            if not kept:
                shutil.rmtree(self.dir, ignore_errors=True)
        report.update(
            seconds=round(time.monotonic() - t0, 1),
            kills=dict(self.kills), killed=dict(self.killed), recoveries=stats.recoveries,
            hooks_not_reached=dict(self.hook_unreached),
            progress_max_s=round(max(self.progress, default=0.0), 3),
            progress_max_by_kind_s=self.progress_by_kind, slow_progress=self.slow[:20],
            progress_mean_s=round(sum(self.progress) / len(self.progress), 3)
            if self.progress else 0.0,
            kept=self.dir if kept else None,
        )
        report["violations"] = self.violations
        return report

    def finish(self) -> None:
        producers = [pid for pid, (kind, _) in self.workers.items() if kind == "producer"]
        for pid in producers:
            os.kill(pid, signal.SIGUSR1)
        for pid in producers:
            kind, inc = self.workers.pop(pid)
            code = self.reap(pid, 60)
            if code != 0:
                self.violations.append(f"producer {inc} ended with {code} when stopped")
        self.channel.close_send(timeout=60)
        for pid in list(self.workers):
            kind, inc = self.workers.pop(pid)
            code = self.reap(pid, 60)
            if code != 0:
                self.violations.append(f"consumer {inc} ended with {code} when draining")
                if code is None:
                    os.kill(pid, signal.SIGKILL)
                    self.reap(pid, 30)

    def check(self) -> dict[str, object]:
        logs = Path(self.logdir)
        if not logs.exists():
            return {}
        for torn in logs.glob("torn-*"):
            self.violations.append(f"torn message received: {torn.name}")
        sent: dict[int, list[int]] = {}
        for f in logs.glob("p*.log"):
            data = f.read_bytes()
            sent[int(f.stem[1:])] = [s for (s,) in SEND_LOG.iter_unpack(data)]
        for inc, seqs in sent.items():
            if seqs != list(range(len(seqs))):
                self.violations.append(f"producer {inc} logged seqs out of order")
        received: Counter[tuple[int, int]] = Counter()
        nbytes = 0
        for f in logs.glob("c*.log"):
            last: dict[int, int] = {}
            for inc, seq, size in RECV_LOG.iter_unpack(f.read_bytes()):
                nbytes += size
                received[(inc, seq)] += 1
                if last.get(inc, -1) >= seq:
                    self.violations.append(
                        f"consumer {f.stem} got producer {inc}'s {seq} after {last[inc]}")
                last[inc] = seq
        duplicated = [m for m, n in received.items() if n > 1]
        if duplicated:
            self.violations.append(f"{len(duplicated)} duplicated, e.g. {duplicated[:5]}")
        invented = [(inc, seq) for (inc, seq) in received
                    if seq > len(sent.get(inc, ()))]  # seq == len: committed, not yet logged
        if invented:
            self.violations.append(f"{len(invented)} received but never sent: {invented[:5]}")
        lost = [(inc, seq) for inc, seqs in sent.items() for seq in seqs
                if (inc, seq) not in received]
        allowed = self.killed["consumer"]
        if len(lost) > allowed:
            self.violations.append(
                f"{len(lost)} messages lost, more than the {allowed} that killed consumers may "
                f"have taken with them: {lost[:10]}")
        return {
            "messages": sum(received.values()),
            "bytes": nbytes,
            "sent_logged": sum(len(s) for s in sent.values()),
            "lost_with_killed_consumers": len(lost),
            "producers_started": len(sent),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    p.add_argument("--kills", type=int, default=1000, help="kill rounds at most (0: soak)")
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--capacity", type=int, default=1 << 16)
    p.add_argument("--max-size", type=int, default=3000, help="largest random payload")
    p.add_argument("--hook-share", type=float, default=0.4,
                   help="share of kill rounds made by a kill point inside the lock protocol")
    p.add_argument("--max-delay", type=float, default=0.2,
                   help="random kills wait up to this many seconds before the kill")
    p.add_argument("--progress-limit", type=float, default=20.0,
                   help="fail if the channel does not progress this long after a kill")
    p.add_argument("--poll", type=float, default=0.5,
                   help="timeout= of each send/recv call of the workers (they retry on expiry)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the logs of a failed run")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    report = Run(args).run()
    report["seed"] = args.seed
    report["checks"] = ["checksum of every message", "no duplicate", "nothing invented",
                        "per-producer order", "lost <= killed consumers",
                        "progress after every kill"]
    kills = report.get("kills") or {}
    print(f"{report.get('seconds')} s, seed {args.seed}: {report.get('messages', 0)} messages "
          f"({report.get('bytes', 0)} bytes) received and checksum-verified; "
          f"{sum(kills.values())} kills {kills}; "  # type: ignore[union-attr]
          f"lost with killed consumers: {report.get('lost_with_killed_consumers', 0)}; "
          f"recoveries {report.get('recoveries')}; slowest progress after a kill "
          f"{report.get('progress_max_s')} s", flush=True)
    for violation in report["violations"]:  # type: ignore[union-attr]
        print(f"VIOLATION: {violation}", flush=True)
    print("OK: no violation" if not report["violations"] else "FAILED", flush=True)
    print(json.dumps(report), flush=True)
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
