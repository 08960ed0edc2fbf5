"""sync: holder tokens, pid reuse, and recovery of a lock whose holder was SIGKILLed."""

from __future__ import annotations

import os
import signal
import time

import posix_ipc
import pytest

import shmipc
from conftest import fork_run, join, run_python
from shmipc import layout, sync


def test_token_names_this_process_and_is_alive():
    token = sync.next_holder_value()
    assert sync.token_pid(token) == os.getpid()
    assert sync.token_alive(token)
    assert not sync.token_released(token)
    assert sync.token_alive(token | sync.RELEASED)


def test_a_reused_pid_with_another_start_time_is_dead():
    start = sync.process_start_time(os.getpid())
    assert start is not None
    impostor = sync.make_token(os.getpid(), start + 12345)
    assert not sync.token_alive(impostor)


def test_a_dead_process_is_dead():
    pid = fork_run(lambda: None)
    token = sync.make_token(pid, sync.process_start_time(pid) or 0)
    assert join(pid) == 0
    assert not sync.token_alive(token)
    assert sync.process_start_time(pid) is None


def test_every_acquisition_stores_a_new_value():
    values = {sync.next_holder_value() for _ in range(1000)}
    assert len(values) == 1000


def kill_while_holding(ch: shmipc.Channel, role: str, *, store_holder: bool) -> None:
    """Fork a child that takes ``role``'s lock (storing its holder value or not) and dies."""
    read, write = os.pipe()

    def child() -> None:
        sem = ch._sems[role]
        sem.acquire()
        if store_holder:
            slot = layout.Q_PRODUCER_HOLDER if role == "p" else layout.Q_CONSUMER_HOLDER
            ch._hq[slot] = sync.next_holder_value()
        os.write(write, b"x")
        time.sleep(60)

    pid = fork_run(child)
    assert os.read(read, 1) == b"x"
    os.close(read)
    os.close(write)
    os.kill(pid, signal.SIGKILL)
    assert join(pid) == -signal.SIGKILL


@pytest.mark.parametrize("store_holder", [True, False], ids=["holding", "in-the-window"])
@pytest.mark.parametrize("role", ["p", "c"])
def test_lock_of_a_killed_holder_is_recovered(make_channel, role, store_holder):
    ch = make_channel()
    ch.send("before")
    kill_while_holding(ch, role, store_holder=store_holder)
    if role == "p":
        ch.send("after", timeout=10)
        assert ch.recv(timeout=1) == "before"
        assert ch.recv(timeout=1) == "after"
    else:
        assert ch.recv(timeout=10) == "before"
    assert ch.statistics().recoveries == 1


def test_a_live_holder_is_never_overridden(make_channel):
    ch = make_channel()
    ch._sems["p"].acquire()  # this live process holds the producer lock
    ch._hq[layout.Q_PRODUCER_HOLDER] = sync.next_holder_value()
    try:
        with pytest.raises(shmipc.Full, match="producer lock"):
            ch.send("x", timeout=1.0)  # four liveness intervals: it must not take over
    finally:
        ch._hq[layout.Q_PRODUCER_HOLDER] |= sync.RELEASED
        ch._sems["p"].release()
    assert ch.statistics().recoveries == 0
    ch.send("x", timeout=1)


def test_semaphore_names_derive_from_the_channel_id():
    cid = bytes(range(16))
    assert sync.semaphore_name(cid, "p") == "/shmipc-000102030405060708090a0b0c0d0e0f-p"
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.Semaphore(sync.semaphore_name(os.urandom(16), "p"))


def test_regression_a_truncated_semaphore_file_is_refused_not_sigbus(channel_path):
    with shmipc.Channel.create(channel_path) as ch:
        ch.send("kept")
        name = ch.semaphore_names["i"]
    os.truncate(f"/dev/shm/sem.{name[1:]}", 0)  # sem_open would map it and fault on use
    result = run_python("""
        import sys, shmipc
        try:
            shmipc.Channel.open(sys.argv[1])
        except shmipc.CorruptChannel as exc:
            print("CorruptChannel:", exc)
    """, str(channel_path))
    assert result.returncode == 0, result.stderr  # not killed by SIGBUS
    assert "is not a semaphore" in result.stdout
    assert sync.unlink_semaphore(name)  # removed, as the message says: open rebuilds it
    with shmipc.Channel.open(channel_path) as ch:
        assert ch.recv(timeout=1) == "kept"
