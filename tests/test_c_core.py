"""The compiled core from C: the C examples against Python peers, one small C program per
behaviour of the core (tests/c/), the same programs built with AddressSanitizer and
UndefinedBehaviorSanitizer over a debug build of the core, and a hostile-header fuzz through the
core's C entry points.

Everything is compiled here with ``cc`` into a temporary directory; channel files are made by
Python (C programs only open them) and removed with their semaphores after each test.

Programs named ``regression_*`` reproduce bugs this suite found in the core (fixed); each
names the bug it shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import shmipc
from conftest import ROOT, unlink_channel_names
from shmipc import layout, sync

C_TESTS = ROOT / "tests" / "c"
CORE_SOURCES = sorted((ROOT / "src").glob("*.c"))
WARNINGS = ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-pthread"]
FLAVORS = {
    "plain": ["-O2"],
    # A debug build of the core: every report is fatal, so a sanitizer finding fails the run.
    "sanitized": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=all"],
}
SANITIZER_REPORT = re.compile(r"ERROR: \w+Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
RUN_TIMEOUT = 60


# --- building -----------------------------------------------------------------------------

class CBuild:
    """Compiles the core once per flavor, then links test programs against its objects."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects: dict[str, list[Path]] = {}
        self._programs: dict[tuple[str, str], Path] = {}

    def objects(self, flavor: str) -> list[Path]:
        if flavor not in self._objects:
            out = self.root / flavor
            out.mkdir(exist_ok=True)
            objects = [out / (source.stem + ".o") for source in CORE_SOURCES]
            commands = [["cc", *WARNINGS, *FLAVORS[flavor], f"-I{ROOT / 'include'}", "-c",
                         str(source), "-o", str(obj)]
                        for source, obj in zip(CORE_SOURCES, objects, strict=True)]
            with ThreadPoolExecutor(max_workers=2) as pool:
                results = list(pool.map(_compile, commands))
            errors = [r.stderr for r in results if r.returncode != 0]
            assert not errors, "the core does not compile cleanly:\n" + "\n".join(errors)
            self._objects[flavor] = objects
        return self._objects[flavor]

    def program(self, source: Path, flavor: str, *, internal: bool = False) -> Path:
        """Link ``source`` with the core's objects; ``internal`` also puts src/ on the path."""
        key = (str(source), flavor)
        if key not in self._programs:
            binary = self.root / flavor / source.stem
            includes = [f"-I{ROOT / 'include'}"] + ([f"-I{ROOT / 'src'}"] if internal else [])
            result = _compile(["cc", *WARNINGS, *FLAVORS[flavor], *includes, "-o", str(binary),
                               str(source), *map(str, self.objects(flavor))])
            assert result.returncode == 0, f"{source.name} does not build:\n{result.stderr}"
            self._programs[key] = binary
        return self._programs[key]


def _compile(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def cbuild(tmp_path_factory: pytest.TempPathFactory) -> CBuild:
    return CBuild(tmp_path_factory.mktemp("c-core"))


@pytest.fixture(scope="session")
def sanitizer_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of sanitized runs: LeakSanitizer on where it can run (it cannot under
    some ptrace restrictions; then leaks are not checked, the rest is)."""
    where = tmp_path_factory.mktemp("lsan-probe")
    source = where / "leak.c"
    source.write_text("#include <stdlib.h>\nvoid *volatile p;\n"
                      "int main(void) { p = malloc(7); p = 0; return 0; }\n")
    subprocess.run(["cc", "-fsanitize=address", "-o", str(where / "leak"), str(source)],
                   check=True, capture_output=True, timeout=60)
    probe = subprocess.run([str(where / "leak")], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1"})
    leaks = int("LeakSanitizer: detected memory leaks" in probe.stderr)
    return {**os.environ,
            "ASAN_OPTIONS": f"detect_leaks={leaks}:halt_on_error=1:strict_string_checks=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


@dataclass
class Examples:
    producer: Path
    consumer: Path


@pytest.fixture(scope="session")
def c_examples(tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """examples/c built by the Makefile's own target (-Wall -Wextra -Werror), into a tmp dir."""
    out = tmp_path_factory.mktemp("c-examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    result = subprocess.run(["make", "-s", "-C", str(ROOT), "c-examples", f"C_BUILD={out}"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return Examples(out / "producer", out / "consumer")


# --- channels -----------------------------------------------------------------------------

@pytest.fixture
def make_file(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Creates channel files with Python (C programs only open them); all removed afterwards,
    with their semaphores."""
    made: list[Path] = []

    def make(capacity: int = 4096, record: shmipc.Record | None = None) -> Path:
        path = tmp_path / f"ch-{uuid.uuid4().hex}.shmipc"
        made.append(path)
        if record is None:
            shmipc.Channel.create(path, capacity).close()
        else:
            shmipc.RecordChannel.create(path, record, 16).close()
        return path

    yield make
    for path in made:
        unlink_channel_names(path)


def run_program(binary: Path, *args: object, env: dict[str, str] | None = None,
                timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# --- the examples against Python peers ----------------------------------------------------

def _start(*args: object, stdout: Path) -> subprocess.Popen[str]:
    with open(stdout, "w") as out:
        return subprocess.Popen([str(a) for a in args], stdout=out, stderr=subprocess.PIPE,
                                text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return proc.returncode, err


def test_c_producer_to_python_consumer(c_examples, make_file, tmp_path):
    count = 3000  # about 25 rings of 4 KiB: both sides block and wake many times
    path = make_file(4096)
    out = tmp_path / "producer.out"
    with shmipc.Channel.open(path) as channel:
        producer = _start(c_examples.producer, path, "--count", count, "--close",
                          "--timeout", 30, stdout=out)
        try:
            got = []
            while True:
                try:
                    got.append(channel.recv_bytes(timeout=30))
                except shmipc.EndOfChannel:
                    break
        finally:
            status, err = _finish(producer)
    assert status == 0, err
    pid = producer.pid
    assert got == [b"%d: hello from C %d" % (i, pid) for i in range(count)]
    assert out.read_text().splitlines() == [f"sent {i}: hello from C {pid}" for i in range(count)]


def _printed(message: bytes) -> str:
    """A message as the C consumer prints it: printable ASCII as is, other bytes as \\xNN."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in message)


def test_python_producer_to_c_consumer(c_examples, make_file, tmp_path):
    path = make_file(4096)
    out = tmp_path / "consumer.out"
    # Sizes around the consumer's first buffer (256 bytes: a larger message comes back as
    # SHMIPC_ETOOSMALL and is received again into a larger one), and every byte value.
    messages = [b"%d: hello from Python" % i + b"." * (i * 7 % 600) for i in range(2000)]
    messages[5:5] = [bytes(range(256)), b"", b"\\"]
    consumer = _start(c_examples.consumer, path, "--timeout", 30, stdout=out)
    try:
        with shmipc.Channel.open(path) as channel:
            for message in messages:
                channel.send_bytes(message, timeout=30)
            channel.close_send()
    finally:
        status, err = _finish(consumer)
    assert status == 0, err
    assert out.read_text().splitlines() == [
        *(f"received {_printed(m)}" for m in messages),
        f"end of channel after {len(messages)} messages",
    ]


PYTHON_PRODUCER = """
import os, sys
import shmipc
count = int(sys.argv[2])
with shmipc.Channel.open(sys.argv[1]) as channel:
    print("ready", flush=True)
    sys.stdin.readline()  # "go": the C producer has started
    for i in range(count):
        channel.send_bytes(b"%d: hello from Python %d" % (i, os.getpid()), timeout=30)
"""


def test_c_and_python_producers_at_once(c_examples, make_file, tmp_path):
    count = 2000
    path = make_file(4096)
    python = subprocess.Popen([sys.executable, "-c", PYTHON_PRODUCER, str(path), str(count)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    c_producer = None
    try:
        assert python.stdout is not None and python.stdin is not None
        assert python.stdout.readline() == "ready\n"
        c_producer = _start(c_examples.producer, path, "--count", count, "--timeout", 30,
                            stdout=tmp_path / "producer.out")
        python.stdin.write("go\n")
        python.stdin.flush()
        with shmipc.Channel.open(path) as channel:
            got = [channel.recv_bytes(timeout=30) for _ in range(2 * count)]
            with pytest.raises(shmipc.Empty):
                channel.recv_bytes(timeout=0.05)
    finally:
        c_status, c_err = _finish(c_producer) if c_producer else (None, "")
        py_status, py_err = _finish(python)
    assert c_status == 0, c_err
    assert py_status == 0, py_err
    sequences: dict[tuple[str, int], list[int]] = {}
    order = []
    for message in got:
        match = re.fullmatch(rb"(\d+): hello from (C|Python) (\d+)", message)
        assert match, message
        sequences.setdefault((match[2].decode(), int(match[3])), []).append(int(match[1]))
        order.append(match[2])
    # Each producer's messages exactly once and in the order sent.
    assert sequences == {("C", c_producer.pid): list(range(count)),
                         ("Python", python.pid): list(range(count))}
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    print(f"the consumer saw the producers alternate {switches} times")


def test_c_examples_as_their_comments_say(c_examples, tmp_path):
    # Terminal 1: `python -m shmipc create PATH --capacity 64K`, `build/consumer PATH`;
    # terminal 2: `build/producer PATH --count 5 --close`; then `python -m shmipc unlink PATH`.
    path = tmp_path / f"demo-{uuid.uuid4().hex}.shmipc"
    try:
        created = subprocess.run([sys.executable, "-m", "shmipc", "create", str(path),
                                  "--capacity", "64K"], capture_output=True, text=True,
                                 timeout=60, cwd=ROOT)
        assert created.returncode == 0, created.stderr
        consumer = _start(c_examples.consumer, path, stdout=tmp_path / "consumer.out")
        try:
            sent = run_program(c_examples.producer, path, "--count", 5, "--close")
        finally:
            status, err = _finish(consumer)
        assert sent.returncode == 0 and status == 0, sent.stderr + err
        pid = sent.stdout.split()[-1]
        assert sent.stdout.splitlines() == [f"sent {i}: hello from C {pid}" for i in range(5)]
        assert (tmp_path / "consumer.out").read_text().splitlines() == [
            *(f"received {i}: hello from C {pid}" for i in range(5)),
            "end of channel after 5 messages"]
        # The channel stays closed for sending: another producer is refused.
        again = run_program(c_examples.producer, path, "--count", 1)
        assert again.returncode == 1
        assert again.stderr == "producer: message 0: the channel was closed for sending\n"
        gone = subprocess.run([sys.executable, "-m", "shmipc", "unlink", str(path)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert gone.returncode == 0, gone.stderr
        assert not path.exists()
    finally:
        unlink_channel_names(path)


def test_c_consumer_of_the_python_cli(c_examples, make_file):
    path = make_file(1 << 16)
    fed = subprocess.run([sys.executable, "-m", "shmipc", "send", "--bytes", "--close",
                          str(path)], input="one\ntwo\n", capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert fed.returncode == 0, fed.stderr
    got = run_program(c_examples.consumer, path)
    assert (got.returncode, got.stderr) == (0, "")
    assert got.stdout.splitlines() == ["received one", "received two",
                                       "end of channel after 2 messages"]


def test_c_examples_exit_codes(c_examples, make_file, tmp_path):
    path = make_file(4096)
    # Nobody sends: the consumer gives up after --timeout (status 3).
    idle = run_program(c_examples.consumer, path, "--timeout", "0.1")
    assert idle.returncode == 3
    assert idle.stderr.startswith("consumer: no message before the timeout")
    # Nobody receives: the ring fills and the producer gives up (status 3) after what fit.
    full = run_program(c_examples.producer, path, "--count", 1000, "--timeout", "0.1")
    assert full.returncode == 3 and "no room in the ring" in full.stderr
    sent = full.stdout.splitlines()
    assert 50 < len(sent) < 1000
    # Ctrl-C while asleep in the core: status 130 and nothing said. The ring is full now, so
    # the producer sleeps for room (and sends nothing); then the consumer drains the ring,
    # every message whole, and sleeps for more.
    for program, args, sleeping in (
            (c_examples.producer, ["--count", 10, "--timeout", -1], "senders_waiting"),
            (c_examples.consumer, ["--count", 10**6, "--timeout", -1], "receivers_waiting")):
        out = tmp_path / f"{program.name}.out"
        proc = _start(program, path, *args, stdout=out)
        try:
            with shmipc.Channel.open(path) as channel:
                deadline = time.monotonic() + 30
                while not getattr(channel.statistics(), sleeping):
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
        finally:
            status, err = _finish(proc)
        assert (status, err) == (130, ""), program.name
    assert (tmp_path / "producer.out").read_text() == ""
    assert (tmp_path / "consumer.out").read_text().splitlines() == [
        line.replace("sent", "received", 1) for line in sent]
    # Usage errors and a missing file.
    assert run_program(c_examples.producer).returncode == 2
    assert run_program(c_examples.consumer, path, "--count", "x").returncode == 2
    missing = run_program(c_examples.consumer, tmp_path / "missing")
    assert missing.returncode == 1
    assert missing.stderr == f"consumer: cannot open {tmp_path / 'missing'}: no such file\n"



def test_c_open_without_semaphores_then_python_rebuilds_them(c_examples, make_file, tmp_path):
    # After a reboot (or systemd's RemoveIPC) the file is there and its semaphores are not: C
    # refuses (it never creates names), opening the channel once from Python rebuilds them.
    path = make_file(4096)
    with shmipc.Channel.open(path) as channel:
        channel.send_bytes(b"kept")
        channel_id = channel.info.channel_id
    assert len(sync.unlink_channel_semaphores(channel_id)) == 4
    refused = run_program(c_examples.consumer, path, "--count", 1)
    assert refused.returncode == 1
    assert refused.stderr == (f"consumer: cannot open {path}: a semaphore of the channel is "
                              "missing; open it from Python to rebuild them\n")
    with shmipc.Channel.open(path) as channel:
        assert channel.statistics().semaphore_generation == 1
    got = run_program(c_examples.consumer, path, "--count", 1)
    assert (got.returncode, got.stdout, got.stderr) == (0, "received kept\n", "")


def test_c_consumer_asleep_follows_rebuilt_semaphores(c_examples, make_file, tmp_path):
    # The C consumer sleeps on generation 0's semaphore; Python rebuilds them as generation 1
    # and posts that one. The sleeper is not woken by it, but re-checks at the end of its slice
    # (0.25 s), follows the new generation and receives the message.
    path = make_file(4096)
    out = tmp_path / "consumer.out"
    consumer = _start(c_examples.consumer, path, "--count", 2, "--timeout", 30, stdout=out)
    try:
        with shmipc.Channel.open(path) as channel:
            deadline = time.monotonic() + 30
            while not channel.statistics().receivers_waiting:
                assert consumer.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            sync.unlink_channel_semaphores(channel.info.channel_id)
        with shmipc.Channel.open(path) as channel:  # rebuilds: generation 1
            assert channel.statistics().semaphore_generation == 1
            channel.send_bytes(b"after the rebuild")
            deadline = time.monotonic() + 30
            while not channel.statistics().receivers_waiting:  # asleep on generation 1
                assert consumer.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            channel.send_bytes(b"woken")
    finally:
        status, err = _finish(consumer)
    assert (status, err) == (0, "")
    assert out.read_text().splitlines() == ["received after the rebuild", "received woken"]


# --- one C program per behaviour, plain and sanitized ---------------------------------------

PEOPLE = shmipc.Record("people", [("name", "4s"), ("age", "i")])

# program: the channels it takes (capacities; a Record for a record channel)
C_PROGRAMS: dict[str, list[int | shmipc.Record]] = {
    "test_timeouts": [4096],
    "test_close_send": [4096, 4096],
    "test_toobig": [4096],
    "test_toosmall": [4096],
    "test_claims": [4096],
    "test_claim_positions": [4096],
    "test_sendv": [4096, 4096],
    "test_fork": [4096],
    "test_format": [4096],
    "test_ready": [4096],
    "test_tasks": [4096],
    # Regressions: bugs these programs found in the core; each program's comment says which.
    "regression_open_record_channel": [PEOPLE],
    "regression_fork_close_releases_claim": [4096],
    "regression_internal_symbols": [4096],
    "regression_null_empty_message": [4096],
}


def _program_params() -> list[object]:
    return [pytest.param(name, channels, flavor, id=f"{name}-{flavor}")
            for flavor in FLAVORS for name, channels in C_PROGRAMS.items()]


def _channel_args(make_file: Callable[..., Path],
                  channels: list[int | shmipc.Record]) -> list[Path]:
    return [make_file(record=c) if isinstance(c, shmipc.Record) else make_file(c)
            for c in channels]


@pytest.mark.parametrize(("name", "channels", "flavor"), _program_params())
def test_core_behaviour_in_c(name, channels, flavor, cbuild, sanitizer_env, make_file):
    binary = cbuild.program(C_TESTS / f"{name}.c", flavor)
    result = run_program(binary, *_channel_args(make_file, channels),
                         env=sanitizer_env if flavor == "sanitized" else None)
    assert not SANITIZER_REPORT.search(result.stderr), result.stderr
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_c_examples_under_sanitizers(cbuild, sanitizer_env, make_file, tmp_path):
    producer = cbuild.program(ROOT / "examples" / "c" / "producer.c", "sanitized")
    consumer = cbuild.program(ROOT / "examples" / "c" / "consumer.c", "sanitized")
    path = make_file(4096)
    proc = _start(consumer, path, "--timeout", 30, stdout=tmp_path / "consumer.out")
    try:
        sent = run_program(producer, path, "--count", 500, "--close", "--timeout", 30,
                           env=sanitizer_env)
    finally:
        status, err = _finish(proc)
    assert (sent.returncode, sent.stderr, status, err) == (0, "", 0, "")
    lines = (tmp_path / "consumer.out").read_text().splitlines()
    assert len(lines) == 501 and lines[-1] == "end of channel after 500 messages"


def test_the_c_header_layout_agrees_with_layout_py_and_format_md(cbuild):
    binary = cbuild.program(C_TESTS / "layout_offsets.c", "plain", internal=True)
    result = run_program(binary)
    assert result.returncode == 0, result.stderr
    c = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
    assert {k: int(v) for k, v in c.items() if k not in ("semaphore_name",)} == {
        "magic": 0, "format_version": 8, "header_size": 12, "capacity": 16, "kind": 24,
        "record_size": 28, "channel_id": 32, "creator_pid": 48, "schema_length": 52,
        "created_ns": 56, "header_crc": layout.FIXED_CRC_OFFSET,
        "schema": layout.SCHEMA_OFFSET, "write_position": layout.WRITE_POSITION,
        "sent_total": layout.SENT_TOTAL, "producer_lock": layout.PRODUCER_LOCK,
        "read_position": layout.READ_POSITION, "received_total": layout.RECEIVED_TOTAL,
        "consumer_lock": layout.CONSUMER_LOCK, "closed": layout.CLOSED,
        "semaphore_generation": layout.SEMAPHORE_GENERATION, "recoveries": layout.RECOVERIES,
        "sleepers": layout.SLEEPERS, "namespaces": layout.NAMESPACES,
        "waiter_slots": layout.WAITER_SLOTS, "sizeof": layout.HEADER_SIZE,
        "ready_armed": layout.READY_ARMED, "ready_owners": layout.READY_OWNERS,
        "ready_epochs": layout.READY_EPOCHS, "tasks_done": layout.TASKS_DONE,
        "queue_maxsize": layout.QUEUE_MAXSIZE,
        "SHMIPC_HEADER_SIZE": layout.HEADER_SIZE, "SHMIPC_FORMAT_VERSION": layout.FORMAT_VERSION,
        "SHMIPC_KIND_FRAMES": int(layout.ChannelKind.FRAMES),
        "SHMIPC_KIND_RECORDS": int(layout.ChannelKind.RECORDS), "SHMIPC_SEM_NAME_MAX": 64,
    }
    assert c["semaphore_name"] == sync.semaphore_name(bytes(i * 17 for i in range(16)), "p", 7)
    # docs/FORMAT.md's tables say the same offsets.
    doc = (ROOT / "docs" / "FORMAT.md").read_text()
    for field in ("write_position", "read_position", "producer_lock", "consumer_lock",
                  "closed", "semaphore_generation", "sleepers", "namespaces", "waiter_slots",
                  "ready_armed", "ready_owners", "ready_epochs", "tasks_done",
                  "queue_maxsize"):
        assert re.search(rf"^\| {c[field]} \| \d+ \| `{field}` \|", doc, re.M), field


# --- the hostile-header fuzz ----------------------------------------------------------------

FUZZ_CASES = int(os.environ.get("SHMIPC_C_FUZZ_CASES", "3000"))


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_hostile_headers_through_the_c_entry_points(flavor, cbuild, sanitizer_env, make_file,
                                                    tmp_path):
    binary = cbuild.program(C_TESTS / "fuzz_header.c", flavor)
    seed = int.from_bytes(os.urandom(4), "little")
    result = run_program(binary, make_file(4096), seed, FUZZ_CASES, tmp_path,
                         env=sanitizer_env if flavor == "sanitized" else None, timeout=120)
    where = (f"seed {seed}; to rerun: {binary} CHANNEL {seed} {FUZZ_CASES} DIR, CHANNEL made by "
             "`python -m shmipc create CHANNEL --capacity 4K`")
    assert not SANITIZER_REPORT.search(result.stderr), f"{where}\n{result.stderr}"
    assert (result.returncode, result.stderr) == (0, ""), f"{where}\n{result.stderr}"
    counts = dict(re.findall(r"(\w+)=(\d+)", result.stdout.splitlines()[0]))
    cases, opened, received, sent = (int(counts[k]) for k in
                                     ("cases", "opened", "received", "sent"))
    # The fuzz means something only if it gets past validation and into the ring often.
    assert cases == FUZZ_CASES
    assert opened >= 0.3 * cases and received >= 0.15 * cases and sent >= 0.15 * cases, (
        result.stdout)
    assert "open -6 " in result.stdout  # and validation refuses the worst
