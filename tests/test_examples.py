"""Run every example with real processes and check its output against its docstring."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, unlink_channel_names

EXAMPLES = ROOT / "examples"


class Proc:
    """A started example whose stdout lines are read by a thread, so reads can time out."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 30) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s") from None

    def finish(self, timeout: float = 30) -> tuple[int, list[str], str]:
        """Wait for exit; return (status, remaining stdout lines, stderr)."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(10)
        rest = []
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                break
            rest.append(line)
        assert self.popen.stderr is not None
        err = self.popen.stderr.read()
        self.kill()
        return self.popen.returncode, rest, err

    def kill(self) -> None:
        """Kill if still running, reap, and close the pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._reader.join(10)
        if not self._reader.is_alive():
            self.popen.stdout.close()  # type: ignore[union-attr]
        self.popen.stderr.close()  # type: ignore[union-attr]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount point in /proc/mounts)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            _, mount, fstype, *_ = line.split()
            mount = mount.replace("\\040", " ")
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


ALL_TEN = [f"name: {chr(ord('b') + i)} age {20 + i};" for i in range(10)]
FIVE_THEN_ZEROS = ALL_TEN[:5] + ["name:  age 0;"] * 5


def _demo_dirs(tmp_path: Path) -> list[Path]:
    dirs = [tmp_path]
    if os.path.isdir("/dev/shm") and filesystem_type(Path("/dev/shm")) == "tmpfs":
        dirs.append(Path("/dev/shm"))
    return dirs


@pytest.mark.parametrize("where", ["tmp_path", "dev_shm"])
def test_map_normalfile_reproduces_seed_004(tmp_path, where):
    if where == "dev_shm":
        if filesystem_type(Path("/dev/shm")) != "tmpfs":
            pytest.skip("/dev/shm is not a tmpfs here")
        directory = Path("/dev/shm")
    else:
        directory = tmp_path
    path = directory / f"mapdemo-{uuid.uuid4().hex}"
    fstype = filesystem_type(directory)
    one = EXAMPLES / "map_normalfile" / "map_normalfile1.py"
    two = EXAMPLES / "map_normalfile" / "map_normalfile2.py"
    writer = Proc(str(one), str(path), "--hold", "60")
    try:
        assert writer.line() == "initialize over"
        during = run(str(two), str(path))
        assert during.returncode == 0, during.stderr
        assert during.stdout.splitlines() == ALL_TEN
        assert path.stat().st_size == 5 * 8  # the mapping never grows the file
        writer.popen.send_signal(signal.SIGUSR1)  # end the hold now
        assert writer.line() == "umap ok"
        status, rest, err = writer.finish()
        assert (status, rest, err) == (0, [], "")
        after = run(str(two), str(path))
        assert after.returncode == 0, after.stderr
        if fstype == "tmpfs":
            # Nothing is written back on tmpfs: the tail survives in the page cache.
            assert after.stdout.splitlines() == ALL_TEN
        else:
            # Writeback (the msync before munmap) zeroed the part of the page past the file.
            assert after.stdout.splitlines() == FIVE_THEN_ZEROS, fstype
        assert path.stat().st_size == 5 * 8
        assert path.read_bytes() == b"".join(
            bytes([ord("b") + i]) + bytes(3) + (20 + i).to_bytes(4, "little") for i in range(5))
    finally:
        writer.kill()
        path.unlink(missing_ok=True)


def test_map_normalfile1_exits_cleanly_on_ctrl_c(tmp_path):
    path = tmp_path / "demo"
    writer = Proc(str(EXAMPLES / "map_normalfile" / "map_normalfile1.py"), str(path))
    try:
        assert writer.line() == "initialize over"
        writer.popen.send_signal(signal.SIGINT)
        status, rest, err = writer.finish()
    finally:
        writer.kill()
    assert status == 130 and "Traceback" not in err and rest == []


def test_map_normalfile2_without_the_file_says_what_to_do(tmp_path):
    out = run(str(EXAMPLES / "map_normalfile" / "map_normalfile2.py"), str(tmp_path / "none"))
    assert out.returncode == 1 and "map_normalfile1.py" in out.stderr


def test_fork_anonymous_records():
    out = run(str(EXAMPLES / "fork" / "anonymous_records.py"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        *(f"child read: the {i + 1} people's age is {20 + i}" for i in range(5)),
        "parent read: the first people's age is 100",
        "umap",
        "umap ok",
    ]


def test_fork_anonymous_channel():
    out = run(str(EXAMPLES / "fork" / "anonymous_channel.py"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        *(f"parent received: name {chr(ord('b') + i)} age {20 + i}" for i in range(5)),
        "child exited with status 0",
    ]


def test_mapping_kinds(tmp_path):
    out = run(str(EXAMPLES / "mapping_kinds.py"), str(tmp_path))
    assert out.returncode == 0, out.stderr
    b, z = "people(name=b'b', age=20)", "people(name=b'z', age=99)"
    assert out.stdout.splitlines() == [
        f"private anonymous: parent sees {b}, the child's write: not visible; no file",
        f"shared anonymous: parent sees {z}, the child's write: visible; no file",
        f"private file: parent sees {b}, the child's write: not visible; file holds {b}: "
        "not in the file",
        f"shared file: parent sees {z}, the child's write: visible; file holds {z}: in the file",
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def demo_channel(tmp_path):
    path = tmp_path / f"demo-{uuid.uuid4().hex}.shmipc"
    yield path
    unlink_channel_names(path)


def test_file_channel_consumer_first_then_two_producers_then_ctrl_c(demo_channel):
    producer = EXAMPLES / "file_channel" / "producer.py"
    consumer = Proc(str(EXAMPLES / "file_channel" / "consumer.py"), str(demo_channel))
    try:
        assert consumer.line() == "waiting for messages"
        first = run(str(producer), str(demo_channel), "--count", "3")
        assert first.returncode == 0, first.stderr
        pid = first.stdout.split()[-1]
        assert first.stdout.splitlines() == [f"sent {i}: hello from {pid}" for i in range(3)]
        assert [consumer.line() for _ in range(3)] == [
            f"received {i}: hello from {pid}" for i in range(3)]
        second = run(str(producer), str(demo_channel), "--count", "2")  # continues the channel
        assert second.returncode == 0, second.stderr
        pid2 = second.stdout.split()[-1]
        assert second.stdout.splitlines() == [f"sent {i}: hello from {pid2}" for i in (3, 4)]
        assert [consumer.line() for _ in range(2)] == [
            f"received {i}: hello from {pid2}" for i in (3, 4)]
        consumer.popen.send_signal(signal.SIGINT)
        status, rest, err = consumer.finish()
    finally:
        consumer.kill()
    assert status == 130, err
    assert "Traceback" not in err and rest == []


def test_file_channel_producer_first_messages_wait_in_the_file(demo_channel):
    producer = EXAMPLES / "file_channel" / "producer.py"
    sent = run(str(producer), str(demo_channel), "--count", "2")
    assert sent.returncode == 0, sent.stderr
    pid = sent.stdout.split()[-1]
    got = run(str(EXAMPLES / "file_channel" / "consumer.py"), str(demo_channel), "--count", "2")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == ["waiting for messages",
                                       *(f"received {i}: hello from {pid}" for i in range(2))]
    gone = run(str(producer), str(demo_channel), "--unlink")
    assert gone.returncode == 0 and not demo_channel.exists()


def test_producer_blocked_on_a_full_channel_exits_cleanly_on_ctrl_c(demo_channel):
    producer = Proc(str(EXAMPLES / "file_channel" / "producer.py"), str(demo_channel),
                    "--count", "100000")
    try:
        assert producer.line().startswith("sent 0:")
        # The 64 KiB channel fills up with nobody receiving; the producer blocks in send().
        while True:
            line = producer.line()
            assert line is not None
            if line.startswith("sent 1000:"):
                break
        producer.popen.send_signal(signal.SIGINT)
        status, _, err = producer.finish()
    finally:
        producer.kill()
    assert status == 130 and "Traceback" not in err, err


def test_asyncio_worker_and_blocking_client(tmp_path):
    directory = tmp_path / f"squares-{uuid.uuid4().hex}"
    worker = Proc(str(EXAMPLES / "asyncio" / "worker.py"), str(directory))
    try:
        assert worker.line() == "worker waiting for jobs"
        client = run(str(EXAMPLES / "asyncio" / "client.py"), str(directory))
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == [
            "sent 5 jobs", *(f"result: {n} squared is {n * n}" for n in range(5))]
        status, rest, err = worker.finish()
        assert status == 0, err
        assert rest == [*(f"job {n}: {n} squared is {n * n}" for n in range(5)),
                        "no more jobs after 5: worker done"]
        assert sorted(p.name for p in directory.iterdir()) == []  # the client removed both
    finally:
        worker.kill()
        for name in ("jobs", "results"):
            unlink_channel_names(directory / name)


def test_asyncio_worker_exits_cleanly_on_ctrl_c(tmp_path):
    directory = tmp_path / f"squares-{uuid.uuid4().hex}"
    worker = Proc(str(EXAMPLES / "asyncio" / "worker.py"), str(directory))
    try:
        assert worker.line() == "worker waiting for jobs"
        worker.popen.send_signal(signal.SIGINT)
        status, rest, err = worker.finish()
        assert status == 130 and rest == [] and "Traceback" not in err, err
    finally:
        worker.kill()
        for name in ("jobs", "results"):
            unlink_channel_names(directory / name)
