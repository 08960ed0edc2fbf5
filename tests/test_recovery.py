"""Dead lock holders: a producer or consumer SIGKILLed at every point of the lock protocol,
pid reuse, and live holders (running or stopped) that must never be overridden.

Each child opens the channel file itself and installs ``shmipc._killpoints``, which SIGKILLs it
at the named point (see that module for the points). The parent then checks exactly what the
protocol promises: a message is committed only by its position store, so a producer killed
before it (window, held, frame) sent nothing, one killed after it (releasing, unposted) sent it;
a consumer killed before its commit leaves the message for the next consumer, one killed after
it took the message with it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import shmipc
from conftest import fork_run, join
from shmipc import _killpoints, layout, sync

BEFORE_COMMIT = ("window", "held", "frame")
AFTER_COMMIT = ("releasing", "unposted")


def die_at(path, point: str, action) -> int:
    """Fork a child that opens ``path``, runs ``action(channel)``, SIGKILLs itself at ``point``."""

    def child() -> None:
        _killpoints.install(
            lambda where: os.kill(os.getpid(), signal.SIGKILL) if where == point else None)
        ch = shmipc.Channel.open(path)
        action(ch)
        raise AssertionError(f"kill point {point} was not reached")

    pid = fork_run(child)
    assert join(pid) == -signal.SIGKILL
    return pid


@pytest.mark.parametrize("point", _killpoints.POINTS)
def test_producer_killed_at_each_point(channel_path, point):
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send("first")
        die_at(channel_path, point, lambda c: c.send("doomed"))
        ch.send("after", timeout=30)  # the producer lock is recovered
        got = [ch.recv(timeout=30) for _ in range(2 if point in BEFORE_COMMIT else 3)]
        expected = ["first", "after"] if point in BEFORE_COMMIT else ["first", "doomed", "after"]
        assert got == expected
        with pytest.raises(shmipc.Empty):
            ch.recv(timeout=0.6)  # nothing torn or extra behind them
        stats = ch.statistics()
        assert stats.recoveries == 1
        assert stats.read_position == stats.write_position


@pytest.mark.parametrize("point", _killpoints.POINTS)
def test_consumer_killed_at_each_point(channel_path, point):
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send("one")
        ch.send("two")
        die_at(channel_path, point, lambda c: c.recv(timeout=30))
        got = [ch.recv(timeout=30)]  # the consumer lock is recovered
        if point in BEFORE_COMMIT:
            got.append(ch.recv(timeout=30))
            assert got == ["one", "two"]  # the killed consumer lost nothing
        else:
            assert got == ["two"]  # it had committed "one": it took it with it
        with pytest.raises(shmipc.Empty):
            ch.recv(timeout=0.6)
        assert ch.statistics().recoveries == 1
        ch.send("more", timeout=30)
        assert ch.recv(timeout=30) == "more"


def test_reused_pid_with_another_start_time_does_not_keep_the_lock(channel_path):
    """The holder slot names a live process (same pid) that started at another time."""
    sleeper = fork_run(lambda: time.sleep(60))
    try:
        with shmipc.Channel.create(channel_path, 1 << 14) as ch:
            start = sync.process_start_time(sleeper)
            assert start is not None
            impostor = sync.make_token(sleeper, start + 1)  # the pid, reused by another start
            assert sync.token_pid(impostor) == sleeper and not sync.token_alive(impostor)
            ch._sems["p"].acquire()  # the dead holder's acquisition
            ch._hq[layout.Q_PRODUCER_HOLDER] = impostor | (7 << 23)
            ch.send("through", timeout=30)
            assert ch.recv(timeout=30) == "through"
            assert ch.statistics().recoveries == 1
    finally:
        os.kill(sleeper, signal.SIGKILL)
        join(sleeper)


def test_a_holder_with_the_right_token_is_never_overridden(channel_path):
    """A live process recorded with its true pid and start time keeps the lock for seconds."""
    sleeper = fork_run(lambda: time.sleep(60))
    try:
        with shmipc.Channel.create(channel_path, 1 << 14) as ch:
            start = sync.process_start_time(sleeper)
            ch._sems["p"].acquire()
            ch._hq[layout.Q_PRODUCER_HOLDER] = sync.make_token(sleeper, start) | (3 << 23)
            with pytest.raises(shmipc.Full, match="producer lock"):
                ch.send("x", timeout=1.5)  # six liveness intervals: no take-over
            assert ch.statistics().recoveries == 0
            os.kill(sleeper, signal.SIGKILL)
            join(sleeper)
            ch.send("after its death", timeout=30)
            assert ch.recv(timeout=30) == "after its death"
            assert ch.statistics().recoveries == 1
    finally:
        try:
            os.kill(sleeper, signal.SIGKILL)
            join(sleeper)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_a_stopped_holder_is_not_overridden(channel_path, role):
    """SIGSTOP inside the lock: the holder is alive; the others wait, then go on after SIGCONT."""
    read, write = os.pipe()

    def hook(where: str) -> None:
        if where == "held":
            os.write(write, b"h")
            os.kill(os.getpid(), signal.SIGSTOP)

    def child() -> None:
        _killpoints.install(hook)
        c = shmipc.Channel.open(channel_path)
        if role == "producer":
            c.send("from the stopped one")
        else:
            assert c.recv(timeout=30) == "queued"

    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        if role == "consumer":
            ch.send("queued")
        pid = fork_run(child)
        try:
            assert os.read(read, 1) == b"h"
            if role == "producer":
                with pytest.raises(shmipc.Full):
                    ch.send("mine", timeout=1.5)
            else:
                ch.send("second")
                with pytest.raises(shmipc.Empty):
                    ch.recv(timeout=1.5)
            assert ch.statistics().recoveries == 0
            os.kill(pid, signal.SIGCONT)
            assert join(pid) == 0
        finally:
            os.close(read)
            os.close(write)
            try:
                os.kill(pid, signal.SIGKILL)
                join(pid)
            except (ProcessLookupError, ChildProcessError):
                pass
        if role == "producer":
            assert ch.recv(timeout=30) == "from the stopped one"
        else:
            assert ch.recv(timeout=30) == "second"
        assert ch.statistics().recoveries == 0


def poll(call, limit: float = 30.0):
    """Call ``call()`` until it stops raising Empty/Full, for at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            return call()
        except (shmipc.Empty, shmipc.Full):
            pass
    raise AssertionError(f"no success within {limit} s of polling")


@pytest.mark.parametrize("point", ["window", "unposted"])
@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_regression_callers_polling_with_short_timeouts_recover_a_silent_lock(
        channel_path, role, point):
    """Bug: the "released but never posted / taken but never recorded" observation was kept in
    one acquire() call, which a short timeout ends before a whole interval has passed; a
    process polling with timeout=0.1 never took the lock over."""
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send("queued")
        if role == "producer":
            die_at(channel_path, point, lambda c: c.send("doomed"))
            poll(lambda: ch.send("polled", timeout=0.1))
        else:
            die_at(channel_path, point, lambda c: c.recv(timeout=30))
            ch.send("polled")
        got = []
        while True:
            try:
                got.append(poll(lambda: ch.recv(timeout=0.1), limit=30 if not got else 1))
            except AssertionError:
                break
        assert got[-1] == "polled"
        assert ch.statistics().recoveries == 1
