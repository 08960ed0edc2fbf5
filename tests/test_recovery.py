"""Dead lock holders: producers and consumers SIGKILLed at every kill point of the compiled core,
pid reuse, and live holders (running or stopped) that must never be overridden.

The kill points are compiled into the core (``shmipc._core._killpoint(name, after, signal)``
arms one in the calling process only). A child opens the channel itself, arms a point and
calls into the channel; the parent then checks exactly what the protocol promises. Only the
position stores commit, so:

* a producer killed before its commit (``locked``: lock taken, nothing written;
  ``send_copied``: frame written, write position not stored) sent nothing, and one killed
  after it (``send_committed``: position stored, lock still held) sent its message whole;
* a consumer killed before its commit (``locked``, ``recv_copied``: message located, read
  position not stored) leaves the message to the next consumer, and one killed after it
  (``recv_committed``) took it with it;
* either way the dead holder's lock is taken over exactly once (``recoveries == 1``), and
  nothing torn or extra follows.

A lock is taken over only from a holder proven dead: a live one (running or SIGSTOPped) keeps
it however long it holds it, and the waiter gets Full/Empty at its own timeout.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from pathlib import Path

import pytest

import shmipc
from conftest import fork_run, join
from shmipc import _core, layout

BEFORE_COMMIT = {"locked", "send_copied", "recv_copied"}
PRODUCER_POINTS = ["locked", "send_copied", "send_committed"]
CONSUMER_POINTS = ["locked", "recv_copied", "recv_committed"]
LOCK_OFFSET = {"producer": layout.PRODUCER_LOCK, "consumer": layout.CONSUMER_LOCK}


# --- helpers -----------------------------------------------------------------------------


def die_at(path: Path, point: str, action, *, after: int = 1,
           kind: type[shmipc.Channel] = shmipc.Channel) -> None:
    """Fork a child that opens ``path``, arms ``point`` and runs ``action(channel)``; it must
    die of the kill point's SIGKILL."""

    def child() -> None:
        ch = kind.open(path)
        _core._killpoint(point, after)
        action(ch)
        raise AssertionError(f"kill point {point} (after={after}) was not reached")

    pid = fork_run(child)
    assert join(pid) == -signal.SIGKILL


def wait_stopped(pid: int, timeout: float = 30.0) -> None:
    """Wait until the child ``pid`` is stopped (SIGSTOP); fail if it ends instead."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if done:
            assert os.WIFSTOPPED(status), (
                f"child {pid} ended ({os.waitstatus_to_exitcode(status)}) instead of stopping")
            return
        assert time.monotonic() < deadline, f"child {pid} did not stop within {timeout} s"
        time.sleep(0.002)


def kill_quietly(pid: int) -> None:
    """SIGKILL and reap ``pid`` if it is still ours (the ``finally`` of every test with a child)."""
    try:
        os.kill(pid, signal.SIGKILL)
        join(pid)
    except (ProcessLookupError, ChildProcessError):
        pass


def holder_pid(ch: shmipc.Channel, role: str) -> int:
    return layout.identity_pid(ch._state()[f"{role}_lock"])


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: the start time in clock ticks (what identity words carry)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def drained(ch: shmipc.Channel | shmipc.RecordChannel) -> None:
    """Nothing torn or extra is left: the ring is empty and the positions agree."""
    with pytest.raises(shmipc.Empty):
        ch.recv_nowait()
    stats = (ch._ring if isinstance(ch, shmipc.RecordChannel) else ch).statistics()
    assert stats.read_position == stats.write_position


# --- single messages ---------------------------------------------------------------------


@pytest.mark.parametrize("at_ring_end", [False, True], ids=["middle", "wrapping"])
@pytest.mark.parametrize("point", PRODUCER_POINTS)
def test_producer_killed_at_each_point(channel_path, point, at_ring_end):
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        if at_ring_end:  # leave 368 bytes before the end: "doomed" needs a padding frame
            for _ in range(2):
                ch.send_bytes(b"f" * 8000)
                assert ch.recv_bytes(timeout=10) == b"f" * 8000
        ch.send("first")
        doomed = "doomed" * 100
        die_at(channel_path, point, lambda c: c.send(doomed))
        ch.send("after", timeout=30)  # the producer lock is taken over from the dead one
        got = [ch.recv(timeout=30) for _ in range(2 if point in BEFORE_COMMIT else 3)]
        if point in BEFORE_COMMIT:
            assert got == ["first", "after"]  # nothing of the uncommitted frame is visible
        else:
            assert got == ["first", doomed, "after"]
        drained(ch)
        assert ch.statistics().recoveries == 1


@pytest.mark.parametrize("point", CONSUMER_POINTS)
def test_consumer_killed_at_each_point(channel_path, point):
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send("one")
        ch.send("two")
        die_at(channel_path, point, lambda c: c.recv(timeout=30))
        got = [ch.recv(timeout=30)]  # the consumer lock is taken over from the dead one
        if point in BEFORE_COMMIT:
            got.append(ch.recv(timeout=30))
            assert got == ["one", "two"]  # the killed consumer lost nothing
        else:
            assert got == ["two"]  # it had committed "one": it took it with it
        drained(ch)
        assert ch.statistics().recoveries == 1
        ch.send("more", timeout=30)
        assert ch.recv(timeout=30) == "more"


def test_a_waiter_killed_just_after_its_takeover(channel_path):
    """Killed at ``takeover``: the dead holder's lock was just taken over, and the new holder
    dies holding it too; the next waiter takes it over again (two recoveries), nothing sent."""
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:

        def stop_holding() -> None:
            c = shmipc.Channel.open(channel_path)
            _core._killpoint("locked", 1, signal.SIGSTOP)
            c.send("from the first holder")

        first = fork_run(stop_holding)
        try:
            wait_stopped(first)
            assert holder_pid(ch, "producer") == first
            os.kill(first, signal.SIGKILL)
            assert join(first) == -signal.SIGKILL
            die_at(channel_path, "takeover", lambda c: c.send("from the second holder"))
            assert ch.statistics().recoveries == 1
            ch.send("after", timeout=30)
            assert ch.recv(timeout=30) == "after"
            drained(ch)
            assert ch.statistics().recoveries == 2
        finally:
            kill_quietly(first)


# --- batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("point", PRODUCER_POINTS)
def test_send_many_killed_at_each_point(channel_path, point):
    """A batch that fits is committed by one position store: all of it or nothing."""
    batch = [f"batch {i}" for i in range(10)]
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        die_at(channel_path, point, lambda c: c.send_many(batch))
        ch.send("after", timeout=30)
        expected = (["after"] if point in BEFORE_COMMIT else [*batch, "after"])
        assert ch.recv_many(100, timeout=30) == expected
        drained(ch)
        assert ch.statistics().recoveries == 1


def test_send_many_larger_than_the_ring_killed_at_its_second_commit(channel_path):
    """A batch that does not fit commits what is written each time it must wait for room.
    Killed before its second commit, the first part (the four 1000-byte frames that filled
    the empty 4 KiB ring) stays delivered, whole and in order, and nothing after it."""
    batch = [bytes([i]) * 1000 for i in range(10)]
    with shmipc.Channel.create(channel_path, 4096) as ch:

        def child() -> None:
            c = shmipc.Channel.open(channel_path)
            _core._killpoint("send_copied", 2)
            c.send_many_bytes(batch, timeout=30)
            raise AssertionError("not killed at its second commit")

        pid = fork_run(child)
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while os.waitpid(pid, os.WNOHANG) == (0, 0):  # receive while the child sends
                assert time.monotonic() < deadline, "the batch did not end"
                try:
                    got.append(ch.recv_bytes(timeout=0.05))
                except shmipc.Empty:
                    pass
            # (the child was reaped by the waitpid that returned its pid)
        finally:
            kill_quietly(pid)
        while True:
            try:
                got.append(ch.recv_bytes_nowait())
            except shmipc.Empty:
                break
        assert got == batch[:4]
        assert ch.statistics().sent == 4
        ch.send_bytes(b"after", timeout=30)
        assert ch.recv_bytes(timeout=30) == b"after"
        drained(ch)
        assert ch.statistics().recoveries == 1


@pytest.mark.parametrize("point", CONSUMER_POINTS)
def test_recv_many_killed_at_each_point(channel_path, point):
    batch = [f"batch {i}" for i in range(10)]
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send_many(batch)
        die_at(channel_path, point, lambda c: c.recv_many(10, timeout=30))
        if point in BEFORE_COMMIT:
            assert ch.recv_many(100, timeout=30) == batch  # all ten stayed
        drained(ch)  # after the commit the dead consumer took all ten
        assert ch.statistics().recoveries == 1


@pytest.mark.parametrize("point", ["locked", "recv_copied"])
def test_regression_recv_many_takes_its_whole_batch_under_one_lock(channel_path, point):
    """recv_many claimed at most 64 messages per lock acquisition, although documented as one:
    killed before its second commit it lost the first 64. Now one claim takes them all, and
    a consumer killed before its commit leaves all 200."""
    batch = [f"batch {i}" for i in range(200)]
    with shmipc.Channel.create(channel_path, 1 << 16) as ch:
        ch.send_many(batch)
        die_at(channel_path, point, lambda c: c.recv_many(200, timeout=30))
        assert ch.statistics().received == 0
        assert ch.recv_many(1000, timeout=30) == batch
        drained(ch)
        assert ch.statistics().recoveries == 1


# --- views -------------------------------------------------------------------------------


def _kill_self(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("where", ["recv_copied", "inside the block", "recv_committed"])
def test_recv_view_killed(channel_path, where):
    """Killed before the view's commit (in its claim or inside the block) the message stays
    for the next consumer; killed at the commit, it is gone with the dead consumer."""
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send_bytes(b"viewed")
        ch.send_bytes(b"next")

        def consume(c: shmipc.Channel) -> None:
            with c.recv_view(timeout=30) as view:
                assert bytes(view) == b"viewed"
                if where == "inside the block":
                    _kill_self()

        if where == "inside the block":
            pid = fork_run(lambda: consume(shmipc.Channel.open(channel_path)))
            assert join(pid) == -signal.SIGKILL
        else:
            die_at(channel_path, where, consume)
        expected = [b"next"] if where == "recv_committed" else [b"viewed", b"next"]
        assert ch.recv_many_bytes(10, timeout=30) == expected
        drained(ch)
        assert ch.statistics().recoveries == 1


@pytest.mark.parametrize("where", ["inside the block", "send_copied", "send_committed"])
def test_send_view_killed(channel_path, where):
    """Killed inside the block or before the commit, nothing of the message is visible;
    killed after the commit, it is delivered whole."""
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send_bytes(b"before")

        def produce(c: shmipc.Channel) -> None:
            with c.send_view(6, timeout=30) as view:
                view[:] = b"in it!"
                if where == "inside the block":
                    _kill_self()

        if where == "inside the block":
            pid = fork_run(lambda: produce(shmipc.Channel.open(channel_path)))
            assert join(pid) == -signal.SIGKILL
        else:
            die_at(channel_path, where, produce)
        ch.send_bytes(b"after", timeout=30)
        expected = ([b"before", b"in it!", b"after"] if where == "send_committed"
                    else [b"before", b"after"])
        assert ch.recv_many_bytes(10, timeout=30) == expected
        drained(ch)
        assert ch.statistics().recoveries == 1


# --- record channels ---------------------------------------------------------------------

POINT = shmipc.Record("point", [("x", "i"), ("y", "d")])


@pytest.mark.parametrize("role,point", [
    *(("producer", p) for p in PRODUCER_POINTS), *(("consumer", p) for p in CONSUMER_POINTS)])
def test_record_channel_killed_at_each_point(channel_path, role, point):
    with shmipc.RecordChannel.create(channel_path, POINT, 64) as ch:
        if role == "producer":
            ch.send_values(1, 1.5)
            die_at(channel_path, point, lambda c: c.send_values(2, 2.5),
                   kind=shmipc.RecordChannel)
            ch.send_values(3, 3.5, timeout=30)
            expected = [(1, 1.5), (3, 3.5)] if point in BEFORE_COMMIT else [
                (1, 1.5), (2, 2.5), (3, 3.5)]
        else:
            ch.send_values(1, 1.5)
            ch.send_values(2, 2.5)
            die_at(channel_path, point, lambda c: c.recv(timeout=30),
                   kind=shmipc.RecordChannel)
            expected = [(1, 1.5), (2, 2.5)] if point in BEFORE_COMMIT else [(2, 2.5)]
        got = [ch.recv_tuple(timeout=30) for _ in expected]
        assert got == expected
        drained(ch)
        assert ch.statistics().recoveries == 1


# --- who is dead, and who is not ---------------------------------------------------------


def held_word(ch: shmipc.Channel, role: str) -> int:
    """The identity word of this process, as the core stores it when it holds ``role``'s lock."""
    if role == "producer":
        ch._send_claim(8, None)
        word = ch._state()["producer_lock"]
        ch._send_finish(None)
    else:
        ch.send_bytes(b"probe")
        ch._recv_claim(None)
        word = ch._state()["consumer_lock"]
        ch._recv_finish(True)
    assert layout.identity_pid(word) == os.getpid()
    return word


@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_reused_pid_with_another_start_time_does_not_keep_the_lock(channel_path, role):
    """The lock word names a live process's pid, in our pid namespace, but another start
    time: the process that held the lock died and its pid was reused. The lock is taken
    over."""
    other = fork_run(lambda: time.sleep(60))
    try:
        with shmipc.Channel.create(channel_path, 1 << 14) as ch:
            namespace = held_word(ch, role) & (0x3F << layout.IDENTITY_NS_SHIFT)
            assert namespace  # this process's namespace is known to the channel
            start = start_time(other)
            true_word = other | namespace | (start << layout.IDENTITY_START_SHIFT)
            reused = other | namespace | (((start + 1) % (1 << 36)) << layout.IDENTITY_START_SHIFT)
            assert ch._holder_alive(true_word) and not ch._holder_alive(reused)
            struct.pack_into("<Q", ch._mapping.buffer, LOCK_OFFSET[role], reused)
            if role == "producer":
                ch.send("through", timeout=30)
                assert ch.recv(timeout=30) == "through"
            else:
                ch.send("queued")
                assert ch.recv(timeout=30) == "queued"
            assert ch.statistics().recoveries == 1
            assert ch._state()[f"{role}_lock"] == 0
    finally:
        kill_quietly(other)


@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_a_live_holder_is_never_overridden(channel_path, role):
    """A child holding a claim (the lock) and sleeping keeps the lock for seconds, through
    many of the waiter's judgements; once it is killed the lock is taken over."""
    read, write = os.pipe()

    def hold() -> None:
        c = shmipc.Channel.open(channel_path)
        if role == "producer":
            c._send_claim(8, None)
        else:
            c._recv_claim(None)
        os.write(write, b"h")
        time.sleep(60)

    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        if role == "consumer":
            ch.send("queued")
            ch.send("second")
        pid = fork_run(hold)
        try:
            assert os.read(read, 1) == b"h"
            word = ch._state()[f"{role}_lock"]
            assert layout.identity_pid(word) == pid
            t0 = time.monotonic()
            if role == "producer":
                with pytest.raises(shmipc.Full):
                    ch.send("mine", timeout=2.5)  # ten slices, ten judgements: all "alive"
            else:
                with pytest.raises(shmipc.Empty):
                    ch.recv(timeout=2.5)
            assert time.monotonic() - t0 >= 2.4
            assert ch._state()[f"{role}_lock"] == word
            assert ch.statistics().recoveries == 0
            os.kill(pid, signal.SIGKILL)
            assert join(pid) == -signal.SIGKILL
        finally:
            os.close(read)
            os.close(write)
            kill_quietly(pid)
        if role == "producer":
            ch.send("mine", timeout=30)
            assert ch.recv(timeout=30) == "mine"
        else:  # its claim was never committed
            assert [ch.recv(timeout=30), ch.recv(timeout=30)] == ["queued", "second"]
        drained(ch)
        assert ch.statistics().recoveries == 1


@pytest.mark.parametrize("role,point", [
    ("producer", "locked"), ("producer", "send_copied"),
    ("consumer", "locked"), ("consumer", "recv_copied")])
def test_a_stopped_holder_is_never_overridden(channel_path, role, point):
    """SIGSTOP inside the lock: the holder is alive. The waiter gets Full/Empty at its
    timeout; after SIGCONT the holder finishes and everything goes on, with no recovery."""

    def child() -> None:
        c = shmipc.Channel.open(channel_path)
        _core._killpoint(point, 1, signal.SIGSTOP)
        if role == "producer":
            c.send("from the stopped one")
        else:
            assert c.recv(timeout=30) == "queued"

    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        if role == "consumer":
            ch.send("queued")
            ch.send("second")
        pid = fork_run(child)
        try:
            wait_stopped(pid)
            word = ch._state()[f"{role}_lock"]
            assert layout.identity_pid(word) == pid
            if role == "producer":
                with pytest.raises(shmipc.Empty):
                    ch.recv_nowait()  # a frame written but not committed is invisible
                with pytest.raises(shmipc.Full):
                    ch.send("mine", timeout=1.0)
            else:
                with pytest.raises(shmipc.Empty):
                    ch.recv(timeout=1.0)
            assert ch._state()[f"{role}_lock"] == word
            assert ch.statistics().recoveries == 0
            os.kill(pid, signal.SIGCONT)
            assert join(pid) == 0
        finally:
            kill_quietly(pid)
        if role == "producer":
            ch.send("mine", timeout=30)
            assert [ch.recv(timeout=30), ch.recv(timeout=30)] == ["from the stopped one", "mine"]
        else:
            assert ch.recv(timeout=30) == "second"
        drained(ch)
        assert ch.statistics().recoveries == 0


# --- regressions -------------------------------------------------------------------------


def poll_until(condition, limit: float, step) -> bool:
    """Run ``step()`` until ``condition()`` holds or ``limit`` seconds have passed."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        step()
    return True


@pytest.mark.parametrize("how", ["kill point", "SIGKILL while blocked"])
def test_regression_a_consumer_killed_asleep_stays_registered_until_a_sleeper_repairs_it(
        channel_path, how):
    """A consumer killed while registered as a sleeper leaves its waiter slot and its bit in
    the receivers' mask behind (``receivers_waiting`` counted it forever, and every commit
    posted for it). Another consumer that sleeps a whole 0.25 s slice clears it."""
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        if how == "kill point":
            die_at(channel_path, "sleeping", lambda c: c.recv(timeout=30))
        else:
            pid = fork_run(lambda: shmipc.Channel.open(channel_path).recv(timeout=60))
            try:
                assert poll_until(lambda: ch.statistics().receivers_waiting == 1, 30,
                                  lambda: time.sleep(0.005))
                os.kill(pid, signal.SIGKILL)
                assert join(pid) == -signal.SIGKILL
            finally:
                kill_quietly(pid)
        assert ch.statistics().receivers_waiting == 1  # the dead one's registration

        def sleep_a_slice() -> None:
            with pytest.raises(shmipc.Empty):
                ch.recv(timeout=0.3)

        assert poll_until(lambda: ch.statistics().receivers_waiting == 0, 10, sleep_a_slice)
        ch.send("works")
        assert ch.recv(timeout=10) == "works"
        assert ch.statistics().recoveries == 0  # a sleeper holds no lock


def test_regression_a_producer_killed_asleep_on_a_full_ring_is_repaired(channel_path):
    """The same for a producer asleep on a full ring, which holds the producer lock while it
    waits for room: its lock is taken over and its registration cleared."""
    with shmipc.Channel.create(channel_path, 4096) as ch:
        ch.send_bytes(b"a" * 2000)
        ch.send_bytes(b"b" * 1900)
        die_at(channel_path, "sleeping", lambda c: c.send_bytes(b"c" * 2000, timeout=30))
        assert ch.statistics().senders_waiting == 1

        def sleep_a_slice() -> None:
            with pytest.raises(shmipc.Full):
                ch.send_bytes(b"d" * 2000, timeout=0.3)

        assert poll_until(lambda: ch.statistics().senders_waiting == 0, 10, sleep_a_slice)
        assert ch.statistics().recoveries == 1
        assert ch.recv_bytes(timeout=10) == b"a" * 2000
        ch.send_bytes(b"d" * 2000, timeout=10)
        assert ch.recv_many_bytes(10, timeout=10) == [b"b" * 1900, b"d" * 2000]
        drained(ch)


def test_regression_two_handles_in_one_process_exclude_each_other_in_a_takeover(channel_path):
    """Two threads of one process, each with its own handle, find a dead holder's lock: both
    judge it dead, one takes it over, and the other then finds the lock held by its own
    identity (same pid, same start time). It must wait for it - a live thread of its own
    process holds it - instead of taking it over again (two holders writing at the same
    position). Repeated with fresh dead holders, the threads starting together each time, so
    that their takeovers race; every message of both arrives once, in order, and each dead
    holder costs exactly one recovery."""
    rounds, batch = 20, 8
    with shmipc.Channel.create(channel_path, 1 << 16) as ch:
        handles = [shmipc.Channel.open(channel_path) for _ in range(2)]
        errors: list[BaseException] = []
        got: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
        try:
            for r in range(rounds):
                die_at(channel_path, "locked", lambda c: c.send("never"))  # dies holding it
                assert holder_pid(ch, "producer") not in (0, os.getpid())
                start = threading.Barrier(2)

                def send_all(name: str, h: shmipc.Channel, r: int = r,
                             start: threading.Barrier = start) -> None:
                    try:
                        start.wait(timeout=30)
                        for i in range(0, 4 * batch, batch):  # 2 KiB messages: a long hold
                            h.send_many([[name, r, j, b"x" * 2000] for j in range(i, i + batch)],
                                        timeout=30)
                    except BaseException as exc:  # reported by the main thread
                        errors.append(exc)

                threads = [threading.Thread(target=send_all, args=(name, h))
                           for name, h in zip("ab", handles, strict=True)]
                for t in threads:
                    t.start()
                try:
                    while sum(map(len, got.values())) < (r + 1) * 8 * batch and not errors:
                        try:
                            for name, rr, j, _ in ch.recv_many(100, timeout=10):
                                got[name].append((rr, j))
                        except shmipc.Empty:
                            break
                finally:
                    for t in threads:
                        t.join(timeout=60)
                assert not errors, errors
                assert ch.statistics().recoveries == r + 1
        finally:
            for h in handles:
                h.close()
        expected = [(r, j) for r in range(rounds) for j in range(4 * batch)]
        assert got == {"a": expected, "b": expected}
        drained(ch)


def test_regression_send_many_writes_its_batch_under_one_lock_acquisition(channel_path):
    """send_many is documented as "several objects in order under one lock acquisition" (and
    FORMAT.md: a batch is written under one lock acquisition), so nobody else's frames can
    come between its messages. A producer killed the instant it takes a lock for the second
    time (a try that found no room may have taken and released it once) has then sent
    nothing of its batch; one that is not killed sends all of it."""
    batch = [bytes([i]) * 1000 for i in range(10)]
    with shmipc.Channel.create(channel_path, 4096) as ch:

        def child() -> None:
            c = shmipc.Channel.open(channel_path)
            _core._killpoint("locked", 2)
            c.send_many_bytes(batch, timeout=30)

        pid = fork_run(child)
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    got.append(ch.recv_bytes(timeout=0.05))
                except shmipc.Empty:
                    if os.waitpid(pid, os.WNOHANG) != (0, 0):  # it ended (and was reaped)
                        pid = 0
                        break
        finally:
            if pid:
                kill_quietly(pid)
        assert pid == 0, "the batch did not end"
        assert got in ([], batch), f"{len(got)} of the batch were sent before another lock"


@pytest.mark.parametrize("where", ["recv_copied", "inside the block", "after an exception",
                                   "recv_committed"])
def test_recv_many_view_killed(channel_path, where):
    """A consumer killed holding a batch claim (in the claim, inside the block, or after an
    exception ended the block) leaves every message to the next consumer at the same
    positions; killed at the commit, the whole batch is gone with it."""
    batch = [f"m{i}".encode() for i in range(50)]
    with shmipc.Channel.create(channel_path, 1 << 14) as ch:
        ch.send_many_bytes(batch)
        ch.send_bytes(b"next")
        read, write = os.pipe()

        def consume(c: shmipc.Channel) -> None:
            claim = c.recv_many_view(50, timeout=30)
            try:
                with claim as views:
                    assert [bytes(v) for v in views] == batch
                    os.write(write, repr(claim.positions).encode())
                    if where == "inside the block":
                        _kill_self()
                    if where == "after an exception":
                        raise KeyError("a publication failed")
            except KeyError:
                _kill_self()

        try:
            if where in ("inside the block", "after an exception"):
                pid = fork_run(lambda: consume(shmipc.Channel.open(channel_path)))
                assert join(pid) == -signal.SIGKILL
            else:
                die_at(channel_path, where, consume)
            positions = eval(os.read(read, 1 << 16)) if where != "recv_copied" else None
        finally:
            os.close(read)
            os.close(write)
        if where == "recv_committed":
            assert ch.recv_many_bytes(100, timeout=30) == [b"next"]
        else:
            claim = ch.recv_many_view(100, timeout=30)
            with claim as views:
                assert [bytes(v) for v in views] == [*batch, b"next"]
                if positions is not None:
                    assert claim.positions[:50] == positions
        drained(ch)
        # after an exception the block aborted the claim and freed the lock before the kill
        assert ch.statistics().recoveries == (0 if where == "after an exception" else 1)
