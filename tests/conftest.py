"""Shared fixtures: unique channel names, real child processes joined with timeouts, and a
session-wide check that no test leaves shmipc semaphores behind in /dev/shm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# The suite runs with spinning off: a blocked receive or send sleeps on its semaphore at once, so
# every wake-up path is exercised and nothing passes only because a waiter happened to poll.
# (Set before shmipc is imported; child interpreters inherit it. Tests of spinning set it.)
os.environ.setdefault("SHMIPC_SPIN", "0")

import pytest  # noqa: E402

import shmipc  # noqa: E402
from shmipc import sync  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def shmipc_entries() -> set[str]:
    """shmipc names in /dev/shm now (semaphores and shared-memory objects)."""
    try:
        return {e for e in os.listdir("/dev/shm") if "shmipc" in e}
    except OSError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def no_leaked_names() -> Iterator[None]:
    """Fail the session if the tests leave shmipc names in /dev/shm.

    Asserted where the suite runs alone (CI=true, as .ci/run is run, or SHMIPC_LEAK_CHECK=1):
    on a developer machine other suites may be creating names at the same time.
    """
    before = shmipc_entries()
    yield
    if not (os.environ.get("CI") or os.environ.get("SHMIPC_LEAK_CHECK")):
        return
    leaked = shmipc_entries() - before
    assert not leaked, f"tests leaked names in /dev/shm: {sorted(leaked)}"


TEST_TIMEOUT = 300
"""Seconds any one test may take before it fails (faulthandler_timeout only dumps stacks)."""


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """Fail a hung test (a parent iterating a channel whose child died, say) instead of letting
    it eat the CI budget. The alarm's exception ends a blocked wait in the core (PEP 475);
    forked children do not inherit the alarm."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the test ran longer than {TEST_TIMEOUT} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def channel_path(tmp_path: Path) -> Iterator[Path]:
    """A unique path for a channel file; its file and semaphores are removed after the test."""
    path = tmp_path / f"ch-{uuid.uuid4().hex}.shmipc"
    yield path
    unlink_channel_names(path)


def unlink_channel_names(path: Path) -> None:
    """Remove the semaphores of the channel at ``path`` (read from its header) and the file."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
    except OSError:
        return
    if len(header) >= 48 and header[:8] == shmipc.layout.MAGIC:
        sync.unlink_channel_semaphores(header[32:48])
    try:
        os.unlink(path)
    except OSError:
        pass


@pytest.fixture(params=["file", "anonymous"])
def make_channel(request: pytest.FixtureRequest,
                 tmp_path: Path) -> Iterator[Callable[..., shmipc.Channel]]:
    """A factory for channels over every backing (file and anonymous), cleaned up afterwards."""
    made: list[shmipc.Channel] = []

    def make(capacity: int = 1 << 16, **kwargs: object) -> shmipc.Channel:
        if request.param == "file":
            ch = shmipc.Channel.create(tmp_path / f"ch-{uuid.uuid4().hex}", capacity, **kwargs)
        else:
            ch = shmipc.Channel.anonymous(capacity, **kwargs)
        made.append(ch)
        return ch

    yield make
    for ch in made:
        ch.unlink()
        try:
            ch.close()
        except BufferError:
            pass


def fork_run(fn: Callable[[], object]) -> int:
    """Fork a child that runs ``fn`` and exits 0, or 1 with the traceback on stderr."""
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


def join(pid: int, timeout: float = 30.0) -> int:
    """Wait for a forked child with a timeout; kill it on expiry. Returns its exit status code."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not finish within {timeout} s; killed")
        time.sleep(0.005)


def run_python(code: str, *args: str, timeout: float = 60.0,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (an unrelated process) and return its result."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, input=input, cwd=ROOT,
    )


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter without waiting; the caller joins with a timeout."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
