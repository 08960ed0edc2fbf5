"""shmipc.Queue and JoinableQueue: multiprocessing's interface, every start method, no leftovers.

The programs of tests/programs/queue_programs.py are everyday multiprocessing code (producers
and a consumer, a Pool and a ProcessPoolExecutor fed from a queue, a JoinableQueue with
task_done/join) with only the import changed; they run here under fork, spawn and forkserver
in a fresh interpreter each, and leave no file or semaphore behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from fractions import Fraction

import pytest

import shmipc
from conftest import ROOT, fork_run, join
from shmipc import sync
from shmipc.queue import is_held, queue_channel_id

PROGRAMS = ROOT / "tests" / "programs" / "queue_programs.py"


def leftovers(names: list[str]) -> list[str]:
    """Those of the given queue paths and semaphore names that still exist."""
    existing = set(sync.list_semaphores())
    return [n for n in names if (os.path.exists(n) if n.startswith("/dev/") else n in existing)]


@pytest.fixture
def make_queue():
    """A factory for queues, closed (and so removed) after the test."""
    made: list[shmipc.Queue] = []

    def make(cls=shmipc.Queue, *args, **kwargs):
        q = cls(*args, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


def test_put_and_get_as_multiprocessing_queue(make_queue):
    q = make_queue()
    assert q.empty() and q.qsize() == 0 and not q.full()
    for i in range(5):
        q.put({"name": "b", "age": i})
    q.put_nowait("six")
    q.put(7, block=False)
    q.put(8, True, 1.0)
    assert q.qsize() == 8 and not q.empty()
    got = [q.get() for _ in range(5)] + [q.get_nowait(), q.get(False), q.get(True, 1.0)]
    assert got == [{"name": "b", "age": i} for i in range(5)] + ["six", 7, 8]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get(False, 10)  # block=False ignores the timeout, as multiprocessing does
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)  # a negative timeout does not wait
    q.put(obj={"by": "keyword"}, timeout=-1)  # a negative timeout does not wait
    assert q.get(block=True, timeout=None) == {"by": "keyword"}
    with pytest.raises(TypeError):
        q.put()
    with pytest.raises(TypeError):
        q.get(True, 1, 2)
    with pytest.raises(TypeError):
        q.put(1, bogus=2)
    q.join_thread()
    q.cancel_join_thread()  # nothing to do: no feeder thread


def test_close_releases_the_handle_and_the_last_close_removes_the_queue(make_queue):
    q = make_queue()
    path = q.path
    sems = list(q._channel.semaphore_names.values())
    q.put(1)
    assert leftovers([path, *sems]) == [path, *sems]
    q.close()
    q.close()  # idempotent
    for call in (lambda: q.put(2), q.get, q.get_nowait, q.qsize):
        with pytest.raises(ValueError, match="is closed"):
            call()
    with pytest.raises(ValueError, match="is closed"):
        pickle.dumps(q)
    assert leftovers([path, *sems]) == []


def test_msgpack_by_default_and_pickle_on_request(make_queue):
    q = make_queue()
    q.put((1, 2))
    assert q.get() == [1, 2]  # msgpack has no tuples (documented)
    with pytest.raises(TypeError):  # shmipc.EncodeError, raised in the caller
        q.put(Fraction(1, 3))
    assert q.qsize() == 0
    p = make_queue(serializer="pickle")
    p.put((1, Fraction(1, 3), {"s": {1, 2}}))
    assert p.get(timeout=5) == (1, Fraction(1, 3), {"s": {1, 2}})
    with pytest.raises(ValueError, match="serializer"):
        shmipc.Queue(serializer="json")


def test_a_queue_with_its_own_codec_is_not_pickled(make_queue):
    q = make_queue(codec=shmipc.Codec())
    q.put(1)
    assert q.get() == 1
    with pytest.raises(TypeError, match="codec="):
        pickle.dumps(q)


def test_an_item_larger_than_half_the_ring_is_refused(make_queue):
    q = make_queue(capacity=4096)
    with pytest.raises(shmipc.MessageTooLarge):
        q.put(b"x" * 3000)
    with pytest.raises(ValueError):
        q.put(b"x" * 3000)
    assert q.qsize() == 0


def test_a_full_ring_blocks_the_put_until_its_timeout(make_queue):
    q = make_queue(capacity=4096)
    n = 0
    with pytest.raises(queue.Full):
        while True:
            q.put_nowait(b"x" * 500)
            n += 1
    assert n >= 6
    with pytest.raises(queue.Full):
        q.put(b"x" * 500, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put(b"x" * 500, False, 60)  # block=False ignores the timeout
    q.get()
    q.put(b"x" * 500, timeout=1)


def test_maxsize_bounds_the_items_waiting(make_queue):
    q = make_queue(maxsize=2)
    assert q.maxsize == 2
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert q.get() == 1 and not q.full()
    q.put(3, timeout=1)
    assert [q.get(), q.get()] == [2, 3]


def test_maxsize_put_waits_for_a_consumer_in_another_process(make_queue):
    q = make_queue(maxsize=1)
    q.put("first")

    def consume_slowly():
        time.sleep(0.2)
        assert q.get(timeout=10) == "first"
        assert q.get(timeout=10) == "second"

    pid = fork_run(consume_slowly)
    q.put("second", timeout=10)  # waits until the child took "first"
    assert join(pid) == 0


def test_a_queue_pickled_by_path_is_a_second_handle(make_queue):
    q = make_queue()
    other = pickle.loads(pickle.dumps(q))
    assert other.path == q.path
    q.put("via the first")
    assert other.get(timeout=5) == "via the first"
    q.close()
    other.put("after the first closed")
    assert other.get(timeout=5) == "after the first closed"
    data = pickle.dumps(other)
    path = other.path
    other.close()
    assert not os.path.exists(path)  # the last handle removed it
    with pytest.raises(shmipc.ChannelClosed, match="gone"):
        pickle.loads(data)


def put_square(q, n):
    q.put(n * n)
    return n


def test_a_queue_passed_as_a_pool_task_argument_is_reopened_by_path(make_queue):
    # multiprocessing.Queue refuses this (RuntimeError); a shmipc queue pickles by path.
    import multiprocessing

    q = make_queue()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.starmap(put_square, [(q, n) for n in range(6)], chunksize=1) == list(
            range(6))
    assert sorted(q.get(timeout=10) for _ in range(6)) == [n * n for n in range(6)]


def test_joinable_queue_counts_tasks(make_queue):
    q = make_queue(shmipc.JoinableQueue)
    assert q.join(timeout=0) is True
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    q.put("a")
    q.put("b")
    assert q.unfinished_tasks() == 2
    assert q.join(timeout=0.01) is False
    q.get()
    q.task_done()
    assert q.unfinished_tasks() == 1 and q.join(timeout=0) is False
    q.get()
    q.task_done()
    assert q.join() is True
    with pytest.raises(ValueError, match="too many"):
        q.task_done()


def test_join_waits_for_task_done_in_another_process(make_queue):
    q = make_queue(shmipc.JoinableQueue)
    for i in range(20):
        q.put(i)

    def worker():
        for _ in range(20):
            q.get(timeout=10)
            time.sleep(0.005)
            q.task_done()

    pid = fork_run(worker)
    try:
        assert q.join(timeout=30) is True
        assert q.unfinished_tasks() == 0 and q.qsize() == 0
    finally:
        assert join(pid) == 0


def test_join_is_interrupted_by_a_signal_handler_that_raises(make_queue):
    q = make_queue(shmipc.JoinableQueue)
    q.put(1)

    class Stop(Exception):
        pass

    def handler(signum, frame):
        raise Stop

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        with pytest.raises(Stop):
            q.join(timeout=30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_typical_multiprocessing_programs_run_unchanged(method):
    result = subprocess.run([sys.executable, str(PROGRAMS), method], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    lines = result.stdout.splitlines()
    results = [line for line in lines if not line.startswith("names:")]
    assert results == [
        f"producers/consumer: 1000 {sum(range(1000))} [0, 0, 0]",
        f"pool: 200 {sum(i * i for i in range(200))} executor: 100 "
        f"{sum(i * i for i in range(100))} True True",
        f"joinable: {sum(2 * i for i in range(300))} True [0, 0] extra task_done: ValueError",
    ]
    names = [name for line in lines if line.startswith("names:") for name in line.split()[1:]]
    assert len(names) == 6 * 5  # six queues: a file and four semaphores each
    assert leftovers(names) == []  # every process closed or exited: nothing is left


def test_a_process_that_exits_while_a_thread_waits_in_get_removes_its_queue():
    code = (
        "import shmipc, threading\n"
        "q = shmipc.Queue()\n"
        "print(q.path, *q._channel.semaphore_names.values(), flush=True)\n"
        "threading.Thread(target=q.get, daemon=True).start()\n"
        "while not q._channel.statistics().receivers_waiting: pass\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    names = result.stdout.split()
    assert len(names) == 5 and leftovers(names) == []


def test_a_parent_exiting_with_a_waiting_thread_leaves_the_queue_to_its_fork_child():
    # The parent lets go of its own lock only: the child holds one of its own since fork().
    code = (
        "import os, shmipc, threading\n"
        "q = shmipc.Queue()\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.close(w)\n"
        "    os.read(r, 1)  # end of file: the parent has exited\n"
        "    q.put('after the parent')\n"
        "    print('child', q.get(timeout=10), os.path.exists(q.path), flush=True)\n"
        "    q.close()\n"
        "    print('closed', os.path.exists(q.path), flush=True)\n"
        "    os._exit(0)\n"
        "print(q.path, *q._channel.semaphore_names.values(), flush=True)\n"
        "threading.Thread(target=q.get, daemon=True).start()\n"
        "while not q._channel.statistics().receivers_waiting: pass\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)  # returns once the child closed stdout too
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    names, child, closed = result.stdout.splitlines()
    assert child == "child after the parent True"
    assert closed == "closed False"
    assert leftovers(names.split()) == []


def test_cleanup_removes_a_queue_whose_every_user_was_killed(tmp_path):
    code = (
        "import shmipc, sys\n"
        "q = shmipc.Queue()\n"
        "q.put('unread')\n"
        "print(q.path, *q._channel.semaphore_names.values(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    names: list[str] = []
    try:
        names = proc.stdout.readline().split()
        path = names[0]
        channel_id = queue_channel_id(path).hex()
        assert is_held(path)
        alive = cli("cleanup", "--id", channel_id)
        assert f"in use        {path}" in alive.stdout and os.path.exists(path)
        proc.kill()
        proc.wait(timeout=30)
        assert leftovers(names) == names and not is_held(path)
        dry = cli("cleanup", "--dry-run", "--id", channel_id)
        assert f"would remove  {path}" in dry.stdout and leftovers(names) == names
        real = cli("cleanup", "--id", channel_id)
        assert f"removed       {path}" in real.stdout
        assert leftovers(names) == []
        # A file of another program that happens to carry the prefix is never removed.
        impostor = f"{shmipc.queue.QUEUE_DIR}/{shmipc.queue.FILE_PREFIX}{uuid.uuid4().hex}-x"
        names.append(impostor)
        with open(impostor, "wb") as f:
            f.write(b"not a channel" * 10)
        dry = cli("cleanup", "--dry-run")  # every queue file is listed; nothing is removed
        assert f"kept          {impostor}  (not a shmipc channel file)" in dry.stdout
        assert os.path.exists(impostor)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdin.close()
        proc.stdout.close()
        for name in names:
            if name.startswith("/dev/"):
                with contextlib.suppress(OSError):
                    os.unlink(name)
            else:
                sync.unlink_semaphore(name)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "shmipc", *args], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result
