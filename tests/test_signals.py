"""Signals that arrive while a channel call sleeps (found by the kill torture, which stops its
producers with SIGUSR1): a handler that returns must not end the call, a handler that raises
(SIGINT's KeyboardInterrupt) must end it with its own exception, and nothing is lost either way.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import shmipc
from conftest import fork_run, join


def sleeps_through_signals(ch: shmipc.Channel, call, satisfy) -> None:
    """Fork a child that runs ``call(ch)`` with a SIGUSR1 handler installed; signal it while it
    sleeps, then ``satisfy(ch)`` in the parent so that the call can finish."""
    read, write = os.pipe()

    def child() -> None:
        handled = []
        signal.signal(signal.SIGUSR1, lambda *_: handled.append(1))
        os.write(write, b"r")
        call(ch)
        assert handled, "the signals did not arrive while the call slept"

    pid = fork_run(child)
    try:
        assert os.read(read, 1) == b"r"
        time.sleep(0.1)
        for _ in range(5):
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.05)
        satisfy(ch)
        assert join(pid, timeout=60) == 0
    finally:
        os.close(read)
        os.close(write)
        try:
            os.kill(pid, signal.SIGKILL)
            join(pid)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_regression_signal_during_recv_wait_escaped_as_posix_ipc_signalerror(make_channel):
    ch = make_channel()
    sleeps_through_signals(ch, lambda c: (c.recv(timeout=60) == "late") or os._exit(5),
                           lambda c: c.send("late"))


def test_regression_signal_during_recv_with_no_timeout(make_channel):
    ch = make_channel()
    sleeps_through_signals(ch, lambda c: (c.recv() == "late") or os._exit(5),
                           lambda c: c.send("late"))


def test_regression_signal_during_send_on_a_full_ring(make_channel):
    ch = make_channel(capacity=4096)
    while True:
        try:
            ch.send_bytes_nowait(b"f" * 1000)
        except shmipc.Full:
            break
    last = b"last" * 250  # as large as the others: it does not fit until one is received
    sleeps_through_signals(ch, lambda c: c.send_bytes(last, timeout=60),
                           lambda c: c.recv_bytes(timeout=10))
    received = []
    while True:
        try:
            received.append(ch.recv_bytes_nowait())
        except shmipc.Empty:
            break
    assert received[-1] == last


@pytest.mark.parametrize("role", ["p", "c"])
def test_regression_signal_during_a_lock_wait(make_channel, role):
    ch = make_channel()
    ch.send("waiting")
    # This live process holds the lock: a claim keeps it until finished.
    if role == "p":
        ch._send_claim(8, None)
    else:
        ch._recv_claim(None)

    def release(c: shmipc.Channel) -> None:
        if role == "p":
            c._send_finish(None)  # nothing sent
        else:
            c._recv_finish(False)  # the message stays for the child

    if role == "p":
        sleeps_through_signals(ch, lambda c: c.send("second", timeout=60), release)
        assert [ch.recv(timeout=10), ch.recv(timeout=10)] == ["waiting", "second"]
    else:
        sleeps_through_signals(ch, lambda c: (c.recv(timeout=60) == "waiting") or os._exit(5),
                               release)
    assert ch.statistics().recoveries == 0


def test_sigint_still_interrupts_a_waiting_recv(make_channel):
    ch = make_channel()
    read, write = os.pipe()

    def child() -> None:
        os.write(write, b"r")
        with pytest.raises(KeyboardInterrupt):
            ch.recv()
        ch.send("still usable")

    pid = fork_run(child)
    try:
        assert os.read(read, 1) == b"r"
        time.sleep(0.2)
        os.kill(pid, signal.SIGINT)
        assert join(pid, timeout=60) == 0
        assert ch.recv(timeout=10) == "still usable"
    finally:
        os.close(read)
        os.close(write)


@pytest.mark.parametrize(("signum", "handler_raises"), [
    (signal.SIGTERM, SystemExit), (signal.SIGALRM, TimeoutError), (signal.SIGUSR2, RuntimeError),
])
def test_regression_a_handler_that_raises_ends_the_wait_with_its_own_exception(
        make_channel, signum, handler_raises):
    # posix_ipc runs the handler inside its wait and replaces what it raised with SignalError;
    # swallowing that as a wake-up made `signal(SIGTERM, lambda *a: sys.exit())` unable to stop
    # a process blocked in recv().
    ch = make_channel()
    read, write = os.pipe()

    def child() -> None:
        def handler(*_: object) -> None:
            raise handler_raises("from the handler")

        signal.signal(signum, handler)
        os.write(write, b"r")
        with pytest.raises(handler_raises, match="from the handler"):
            ch.recv(timeout=60)
        ch.send("still usable")

    pid = fork_run(child)
    try:
        assert os.read(read, 1) == b"r"
        time.sleep(0.2)
        os.kill(pid, signum)
        assert join(pid, timeout=30) == 0
        assert ch.recv(timeout=10) == "still usable"
    finally:
        os.close(read)
        os.close(write)


def test_regression_an_exception_in_a_wait_leaves_no_lock_held(make_channel):
    # A producer waits for room holding the producer lock; KeyboardInterrupt (from a SIGINT
    # handler) ends the wait. Format 1 could keep the lock when the exception landed at the
    # wrong moment. Now the core releases it before the exception reaches Python: the same
    # process and others send on at once, and nothing was taken over.
    ch = make_channel(capacity=4096)
    while True:
        try:
            ch.send_bytes_nowait(bytes(1000))
        except shmipc.Full:
            break
    read, write = os.pipe()

    def child() -> None:
        os.write(write, b"r")
        with pytest.raises(KeyboardInterrupt):
            ch.send_bytes(bytes(1000))  # waits for room, holding the producer lock
        assert ch._state()["producer_lock"] == 0
        assert ch.recv_bytes(timeout=5) == bytes(1000)
        ch.send_bytes(b"after", timeout=5)

    pid = fork_run(child)
    try:
        assert os.read(read, 1) == b"r"
        deadline = time.monotonic() + 10
        while ch.statistics().senders_waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(pid, signal.SIGINT)
        assert join(pid, timeout=30) == 0
    finally:
        os.close(read)
        os.close(write)
    assert ch._state()["producer_lock"] == 0
    ch.send_bytes(b"parent", timeout=5)
    assert ch.statistics().recoveries == 0
