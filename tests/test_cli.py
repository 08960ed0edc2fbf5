"""The command line (``python -m shmipc``), run as a subprocess against real channels."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

import shmipc
from conftest import ROOT, fork_run, join, run_python
from shmipc import cli, layout, sync


def cli_run(*args: object, input: str | bytes | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``python -m shmipc ARGS`` and return its result (text unless ``input`` is bytes)."""
    return subprocess.run(
        [sys.executable, "-m", "shmipc", *map(str, args)],
        capture_output=True, input=input, text=not isinstance(input, bytes), timeout=timeout,
        cwd=ROOT,
    )


def cli_start(*args: object, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    """Start ``python -m shmipc ARGS`` without waiting; join it with :func:`finish`."""
    return subprocess.Popen(
        [sys.executable, "-m", "shmipc", *map(str, args)], stdin=subprocess.PIPE,
        stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def finish(proc: subprocess.Popen, input: str | None = None,
           timeout: float = 30.0) -> tuple[int, str, str]:
    """Feed ``input``, wait with a timeout (killing the process on expiry), return its result."""
    try:
        out, err = proc.communicate(input, timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def assert_failure(result: subprocess.CompletedProcess, path: Path | str, *words: str) -> None:
    """Exit 1 with one line on stderr that names the path and the problem, no traceback."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in lines[0]
    for word in words:
        assert word in lines[0]


def channel_id(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(48)[32:48]


def names_of(path: Path) -> list[str]:
    """The semaphore names of generation 0, in the order of sync.ROLES (i, s, p, c)."""
    return list(sync.semaphore_names(channel_id(path)).values())


def existing(names: list[str]) -> set[str]:
    return set(names) & set(sync.list_semaphores())


# --- create, send, recv, unlink -----------------------------------------------------------------


def test_create_send_recv_unlink(channel_path):
    assert cli_run("create", channel_path, "--capacity", "64K").returncode == 0
    messages = ['{"name":"b","age":20}', "[1,2.5,null,true]", '"é ✓"',
                '{"blob":{"$bytes":"AAEC/w=="},"n":-3}']
    sent = cli_run("send", channel_path, input="\n".join(messages) + "\n\n")
    assert sent.returncode == 0, sent.stderr
    state = json.loads(cli_run("inspect", channel_path, "--json").stdout)
    assert (state["capacity"], state["messages"], state["sent"]) == (65536, 4, 4)
    received = cli_run("recv", channel_path)
    assert received.returncode == 0, received.stderr
    assert received.stdout.splitlines() == messages
    with shmipc.Channel.open(channel_path) as ch:  # what send wrote is msgpack, bytes as bin
        ch.send({"blob": b"\x00\x01\x02\xff"})
        assert cli_run("recv", channel_path).stdout == '{"blob":{"$bytes":"AAEC/w=="}}\n'
    names = names_of(channel_path)
    assert existing(names) == set(names)
    assert cli_run("unlink", channel_path).returncode == 0
    assert not channel_path.exists()
    assert not existing(names)


def test_create_rounds_capacity_and_sets_mode(channel_path):
    assert cli_run("create", channel_path, "--capacity", "5000", "--mode", "0640").returncode == 0
    state = json.loads(cli_run("inspect", channel_path, "--json").stdout)
    assert state["capacity"] == 8192
    assert state["file_mode"] == "0640"
    assert os.stat(channel_path).st_mode & 0o777 == 0o640
    for name in names_of(channel_path):
        assert os.stat(f"/dev/shm/sem.{name[1:]}").st_mode & 0o777 == 0o640


def test_create_existing_path_fails(channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    assert_failure(cli_run("create", channel_path), channel_path, "exists")


def test_size_and_mode_parsing():
    assert cli.parse_size("65536") == 65536
    assert cli.parse_size("64K") == cli.parse_size("64k") == cli.parse_size("64KiB") == 65536
    assert cli.parse_size("16M") == 16 << 20
    assert cli.parse_size("1G") == 1 << 30
    for bad in ("", "0", "-4K", "12Q", "1.5M", "K", f"{layout.MAX_CAPACITY + 1}"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_size(bad)
    assert cli.parse_mode("0600") == cli.parse_mode("600") == cli.parse_mode("0o600") == 0o600
    for bad in ("0800", "rw", "01777"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_mode(bad)


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["create"], ["create", "x", "--capacity", "12Q"], ["create", "x", "--mode", "9"],
    ["recv", "x", "--count", "0"], ["recv", "x", "--timeout", "-1"], ["inspect"],
    ["cleanup", "--id", "nothex"], ["send", "x", "--bogus"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_usage_error_exit_2_as_a_process():
    result = cli_run("recv")
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_help_documents_the_json_forms():
    result = cli_run("recv", "--help")
    assert result.returncode == 0
    assert '{"$bytes": "<base64>"}' in result.stdout
    assert "--follow" in result.stdout and "--count" in result.stdout


def test_console_script_is_installed():
    script = shutil.which("shmipc", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the package is not installed with its console script here")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert shmipc.__version__ in result.stdout


# --- errors: missing, not a channel, corrupt, truncated -----------------------------------------


def test_runtime_errors_exit_1_with_one_line(tmp_path, channel_path):
    missing = tmp_path / "missing"
    for command in ("inspect", "recv", "send", "unlink"):
        assert_failure(cli_run(command, missing, input=""), missing, "no such file")

    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    for command in ("inspect", "recv", "send", "unlink"):
        assert_failure(cli_run(command, text, input=""), text, "not a shmipc channel")
    assert text.exists()  # unlink refuses what is not a channel

    assert_failure(cli_run("inspect", tmp_path), tmp_path, "directory")

    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    header = bytearray(channel_path.read_bytes()[:64])
    with open(channel_path, "r+b") as f:  # one flipped bit of the capacity field
        f.seek(17)
        f.write(bytes([header[17] ^ 0x01]))
    for command in ("inspect", "recv"):
        assert_failure(cli_run(command, channel_path), channel_path, "checksum")
    with open(channel_path, "r+b") as f:
        f.seek(17)
        f.write(bytes([header[17]]))
    assert cli_run("inspect", channel_path).returncode == 0

    with open(channel_path, "r+b") as f:
        f.truncate(layout.HEADER_SIZE + 1024)
    assert_failure(cli_run("inspect", channel_path), channel_path, "truncated")
    with open(channel_path, "r+b") as f:
        f.truncate(layout.HEADER_SIZE + 8192)
    assert_failure(cli_run("inspect", channel_path, "--json"), channel_path, "extended")

    with open(channel_path, "r+b") as f:  # another format version
        f.seek(8)
        f.write((1).to_bytes(4, "little"))
    assert_failure(cli_run("inspect", channel_path), channel_path, "version 1")


# --- inspect ----------------------------------------------------------------------------------


def test_inspect_json_keys_and_counters(channel_path):
    assert cli_run("create", channel_path, "--capacity", "16K").returncode == 0
    lines = "".join(f'{{"i":{i}}}\n' for i in range(10))
    assert cli_run("send", channel_path, "--close", input=lines).returncode == 0
    assert cli_run("recv", channel_path, "--count", "4").returncode == 0
    result = cli_run("inspect", channel_path, "--json")
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    for key in ("format_version", "kind", "capacity", "used", "messages", "sent", "received",
                "closed"):
        assert key in state
    assert state["format_version"] == layout.FORMAT_VERSION
    assert state["kind"] == "frames"
    assert (state["sent"], state["received"], state["messages"]) == (10, 4, 6)
    assert state["closed"] is True
    assert state["used"] == state["write_position"] - state["read_position"] == 6 * 16
    assert state["file_size"] == layout.HEADER_SIZE + 16384
    assert {role: s["exists"] for role, s in state["semaphores"].items()} == dict.fromkeys(
        sync.ROLES, True)
    # items holds wake-ups for registered sleepers only: nobody sleeps, so none is pending.
    assert state["semaphores"]["i"]["value"] == 0
    text = cli_run("inspect", channel_path).stdout
    for label in ("format version", "capacity", "used", "messages", "closed", "write position",
                  "producer lock", "consumer lock", "semaphores"):
        assert label in text
    assert "6 waiting" in text and "yes: closed for sending" in text


def test_inspect_changes_nothing_and_reports_missing_semaphores(channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    assert cli_run("send", channel_path, input='"a"\n"b"\n').returncode == 0
    names = names_of(channel_path)
    for name in names[2:]:  # the lock wake-ups gone, as after removal by hand
        sync.unlink_semaphore(name)
    before = channel_path.read_bytes(), os.stat(channel_path).st_mtime_ns
    state = json.loads(cli_run("inspect", channel_path, "--json").stdout)
    assert (channel_path.read_bytes(), os.stat(channel_path).st_mtime_ns) == before
    assert existing(names) == set(names[:2])  # nothing created or rebuilt
    assert [state["semaphores"][r]["exists"] for r in sync.ROLES] == [True, True, False, False]
    assert "missing" in cli_run("inspect", channel_path).stdout
    # The next open rebuilds them from the header; the messages are all there.
    assert cli_run("recv", channel_path).stdout == '"a"\n"b"\n'


def test_inspect_survives_a_truncated_semaphore_file(channel_path):
    # sem_open maps such a file unchecked; reading its value would fault with SIGBUS.
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    space = names_of(channel_path)[1]
    sync.unlink_semaphore(space)
    bogus = Path(f"/dev/shm/sem.{space[1:]}")
    bogus.write_bytes(b"")
    try:
        result = cli_run("inspect", channel_path, "--json")
        assert result.returncode == 0, result.stderr
        assert "not a semaphore (0 bytes)" in json.loads(result.stdout)["semaphores"]["s"][
            "problem"]
    finally:
        bogus.unlink()


def test_inspect_decodes_lock_holders(channel_path):
    ch = shmipc.Channel.create(channel_path, 4096)
    try:
        ch.send("x")
        ch._send_claim(8, None)  # this process holds the producer lock, running
        holders = json.loads(cli_run("inspect", channel_path, "--json").stdout)["holders"]
        producer = holders["producer"]
        assert (producer["pid"], producer["held"], producer["verdict"]) == (os.getpid(), True,
                                                                            "alive")
        assert holders["consumer"] == {"raw": 0, "pid": 0, "held": False, "verdict": "free",
                                       "state": "?"}
        assert f"held by pid {os.getpid()} (running)" in cli_run("inspect", channel_path).stdout
        ch._send_finish(None)

        def die_holding_the_consumer_lock() -> None:
            ch._recv_claim(None)
            os._exit(0)  # as a SIGKILL at that instant would

        dead = fork_run(die_holding_the_consumer_lock)
        assert join(dead) == 0
        consumer = json.loads(cli_run("inspect", channel_path, "--json").stdout)["holders"][
            "consumer"]
        assert (consumer["pid"], consumer["held"], consumer["verdict"]) == (dead, True, "dead")
        assert "which has exited" in cli_run("inspect", channel_path).stdout
        assert ch.recv(timeout=10) == "x"  # taken over: the message was not lost

        def hold_the_producer_lock() -> None:
            ch._send_claim(8, None)
            time.sleep(60)

        stopped = fork_run(hold_the_producer_lock)
        try:
            deadline = time.monotonic() + 10
            while ch._state()["producer_lock"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(stopped, signal.SIGSTOP)
            text = cli_run("inspect", channel_path).stdout
            assert f"held by pid {stopped} (stopped" in text
        finally:
            os.kill(stopped, signal.SIGKILL)
            join(stopped)
    finally:
        ch.close()


def test_inspect_a_sender_blocked_on_a_full_ring(tmp_path, channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    sender = cli_start("send", channel_path, "--close")
    try:
        sender.stdin.write("".join(f'"{i:0100d}"\n' for i in range(200)))  # ~6 ring-fulls
        sender.stdin.close()
        deadline = time.monotonic() + 30
        while True:  # polled, not timed: wait until the sender sleeps on the full ring
            state = json.loads(cli_run("inspect", channel_path, "--json").stdout)
            if state["senders_waiting"] or time.monotonic() > deadline:
                break
        assert state["senders_waiting"] == 1
        assert state["used"] > 4096 - 120 and state["used_percent"] > 97
        producer = state["holders"]["producer"]
        assert (producer["pid"], producer["held"], producer["verdict"]) == (sender.pid, True,
                                                                            "alive")
        assert state["semaphores"]["p"]["value"] == 0
        text = cli_run("inspect", channel_path).stdout
        assert f"held by pid {sender.pid} (running)" in text
        with open(tmp_path / "drained", "w+") as output:
            drained = subprocess.run(
                [sys.executable, "-m", "shmipc", "recv", str(channel_path), "--follow"],
                stdout=output, stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT)
            assert drained.returncode == 0, drained.stderr
            output.seek(0)
            assert len(output.read().splitlines()) == 200
        assert sender.wait(timeout=30) == 0
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.wait(timeout=30)
        sender.stdout.close()
        sender.stderr.close()


def test_inspect_record_channel_from_header_alone(tmp_path):
    capacity = 4096
    buf = bytearray(layout.HEADER_SIZE + capacity)
    view = memoryview(buf)
    info = layout.initialize(view, capacity, kind=layout.ChannelKind.RECORDS, record_size=8,
                             schema="name:4s age:i")
    view.release()
    path = tmp_path / "people.shmipc"
    path.write_bytes(buf)
    result = cli_run("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert (state["kind"], state["record_size"], state["schema"]) == ("records", 8,
                                                                       "name:4s age:i")
    assert state["channel_id"] == info.channel_id.hex()
    assert not any(s["exists"] for s in state["semaphores"].values())
    assert "records of 8 bytes" in cli_run("inspect", path).stdout
    assert_failure(cli_run("recv", path), path, "record channel")
    assert cli_run("unlink", path).returncode == 0
    assert not path.exists()


def test_create_record_channel(channel_path):
    result = cli_run("create", channel_path, "--record", "people{name:4s;age:i}",
                     "--capacity", "4K")
    assert result.returncode == 0, result.stderr
    state = json.loads(cli_run("inspect", channel_path, "--json").stdout)
    assert (state["kind"], state["record_size"]) == ("records", 8)
    people = shmipc.Record("people", [("name", "4s"), ("age", "i")])
    with shmipc.RecordChannel.open(channel_path, people) as ch:
        ch.send(people.type(b"b", 20))
        assert ch.recv(timeout=1) == people.type(b"b", 20)


def test_create_record_channel_with_a_bad_schema(channel_path):
    result = cli_run("create", channel_path, "--record", "name:4s age:i")
    assert_failure(result, channel_path, "invalid record schema")
    assert not channel_path.exists()


# --- recv modes -----------------------------------------------------------------------------


def test_recv_follow_with_a_concurrent_producer(tmp_path, channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    count = 2000  # ~30 ring-fulls: the producer blocks on the consumer many times
    # The follower writes to a file: a pipe nobody reads yet would block it, then the producer.
    with open(tmp_path / "followed", "w+") as output:
        follower = cli_start("recv", channel_path, "--follow", stdout=output)
        producer = cli_start("send", channel_path, "--close")
        try:
            lines = "".join(f'{{"i":{i},"pad":"{"x" * (i % 50)}"}}\n' for i in range(count))
            rc, _, err = finish(producer, lines, timeout=60)
            assert rc == 0, err
            rc, _, err = finish(follower, timeout=60)
            assert rc == 0, err
        finally:
            for proc in (producer, follower):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        output.seek(0)
        out = output.read()
    assert [json.loads(line)["i"] for line in out.splitlines()] == list(range(count))


def test_ctrl_c_stops_follow_quietly(channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    follower = cli_start("recv", channel_path, "--follow")
    try:
        assert cli_run("send", channel_path, input='"first"\n').returncode == 0
        assert follower.stdout.readline() == '"first"\n'  # it runs, and waits for more
        follower.send_signal(signal.SIGINT)
        rc, out, err = finish(follower, timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert (rc, out) == (130, "")
    assert "Traceback" not in err, err


def test_recv_waiting_rules(channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    empty = cli_run("recv", channel_path)  # plain recv: what is waiting now, maybe nothing
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "")
    timed_out = cli_run("recv", channel_path, "--count", "1", "--timeout", "0.1")
    assert_failure(timed_out, channel_path, "no message within 0.1 s", "0 of 1")
    assert_failure(cli_run("recv", channel_path, "--follow", "--timeout", "0"), channel_path,
                   "no message")
    assert cli_run("send", channel_path, input="1\n2\n3\n").returncode == 0
    two = cli_run("recv", channel_path, "-n", "2")
    assert (two.returncode, two.stdout) == (0, "1\n2\n")
    assert cli_run("send", channel_path, "--close", input="").returncode == 0
    # closed and drained after one more: the end of the channel ends recv normally
    rest = cli_run("recv", channel_path, "--count", "5")
    assert (rest.returncode, rest.stdout) == (0, "3\n")
    assert cli_run("recv", channel_path, "--follow").returncode == 0
    assert_failure(cli_run("send", channel_path, input="4\n"), channel_path, "closed")


def test_raw_bytes_and_copying_between_channels(tmp_path, channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    raw = b"plain text\n\xff\xfe binary\n\n"
    assert cli_run("send", channel_path, "--bytes", input=raw).returncode == 0
    assert cli_run("send", channel_path, input='{"k":[1,{"$bytes":"AQ=="}]}\n').returncode == 0
    out = cli_run("recv", channel_path, "--count", "4").stdout.splitlines()
    assert out[0] == '{"$raw":"cGxhaW4gdGV4dA=="}'  # not msgpack: the whole frame in base64
    assert out[3] == '{"k":[1,{"$bytes":"AQ=="}]}'
    # recv | send copies frames faithfully, raw ones included
    assert cli_run("send", channel_path, "--bytes", input=raw).returncode == 0
    copy = tmp_path / "copy.shmipc"
    try:
        assert cli_run("create", copy, "--capacity", "4K").returncode == 0
        dumped = cli_run("recv", channel_path).stdout
        assert cli_run("send", copy, input=dumped).returncode == 0
        result = cli_run("recv", copy, "--bytes", input=b"")
        assert result.stdout == raw
    finally:
        cli_run("unlink", copy)


def test_send_reports_the_bad_line(channel_path):
    assert cli_run("create", channel_path, "--capacity", "4K").returncode == 0
    result = cli_run("send", channel_path, input='1\n{"a": \n3\n')
    assert_failure(result, channel_path, "line 2", "not a JSON message")
    assert cli_run("recv", channel_path).stdout == "1\n"
    big = '"' + "x" * 3000 + '"\n'
    assert_failure(cli_run("send", channel_path, input=big), channel_path, "line 1",
                   "does not fit")
    full = cli_run("send", channel_path, "--timeout", "0", input=('"' + "y" * 1000 + '"\n') * 5)
    assert_failure(full, channel_path, "full")


def test_json_forms_roundtrip():
    value = {"b": b"\x00\xff", "t": msgpack.Timestamp(5, 7), "e": msgpack.ExtType(3, b"xy"),
             "m": {1: "one", b"k": [None, 1.5]}, "s": "é"}
    line = json.dumps(cli.to_jsonable(value))
    raw, back = cli.from_jsonable(line)
    assert raw is False
    assert back == value
    assert cli.from_jsonable('{"$raw":"AAE="}') == (True, b"\x00\x01")
    with pytest.raises(ValueError):
        cli.from_jsonable('{"$bytes":"not base64!"}')


# --- cleanup ----------------------------------------------------------------------------------


def unreadable_pids() -> list[int]:
    """Processes whose memory maps this test cannot read (none of them knows our names)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/maps", "rb") as f:
                    f.read(1)
            except PermissionError:
                pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_cleanup_removes_only_unused_names(tmp_path):
    stale = tmp_path / "stale.shmipc"
    live = tmp_path / "live.shmipc"
    holder = None
    try:
        # A channel whose creator exited without unlinking: 3 unread messages, names unused.
        made = run_python("""
            import sys, shmipc
            ch = shmipc.Channel.create(sys.argv[1], 4096)
            for i in range(3):
                ch.send(i)
            """, str(stale))
        assert made.returncode == 0, made.stderr
        # A channel held open by a live process.
        assert cli_run("create", live, "--capacity", "4K").returncode == 0
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, shmipc\nch = shmipc.Channel.open(sys.argv[1])\n"
             "print('ready', flush=True)\nsys.stdin.read()\nch.close()", str(live)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert holder.stdout.readline() == "ready\n"
        stale_names, live_names = names_of(stale), names_of(live)
        ids = ["--id", channel_id(stale).hex(), "--id", channel_id(live).hex()]
        blind = cli_run("cleanup", "--dry-run", *ids)
        assert blind.returncode == 0, blind.stderr
        unreadable = unreadable_pids()
        if unreadable:  # e.g. a sandbox's init: every name is kept, and cleanup says why
            for name in stale_names:
                assert f"kept          {name}  (cannot tell whether it is in use)" in blind.stdout
            assert "--ignore-pid" in blind.stderr
            for pid in unreadable:
                ids += ["--ignore-pid", str(pid)]

        dry = cli_run("cleanup", "--dry-run", *ids)
        assert dry.returncode == 0, dry.stderr
        if any(f"kept          {n}" in dry.stdout for n in stale_names):
            pytest.skip("processes became unreadable meanwhile")
        for name in stale_names:
            assert f"would remove  {name}\n" in dry.stdout
        for name in live_names:
            assert f"in use        {name}  (pid {holder.pid})" in dry.stdout
        unfiltered = cli_run("cleanup", "--dry-run")  # all runs' names: listed, none removed
        assert unfiltered.returncode == 0
        for name in live_names:
            assert f"in use        {name}" in unfiltered.stdout
        assert existing(stale_names + live_names) == set(stale_names + live_names)

        real = cli_run("cleanup", *ids)
        assert real.returncode == 0, real.stderr
        for name in stale_names:
            assert f"removed       {name}\n" in real.stdout
        assert not existing(stale_names)
        assert existing(live_names) == set(live_names)
        assert "missing" in cli_run("inspect", stale).stdout

        # The stale channel still delivers its unread messages: open rebuilds its names (a new
        # set, generation 1).
        assert cli_run("recv", stale).stdout == "0\n1\n2\n"
        rebuilt = list(sync.semaphore_names(channel_id(stale), 1).values())
        assert existing(rebuilt) == set(rebuilt)
        assert cli_run("send", live, input='"still works"\n').returncode == 0
        assert cli_run("recv", live).stdout == '"still works"\n'
        rc, _, _ = finish(holder, "")
        assert rc == 0
        holder = None
        nothing = cli_run("cleanup", *ids, "--id", "0" * 32, "--dry-run")
        assert "in use" not in nothing.stdout
    finally:
        if holder is not None:
            if holder.poll() is None:
                holder.send_signal(signal.SIGKILL)
            holder.communicate(timeout=30)  # reaps it and closes its pipes
        for path in (stale, live):
            if path.exists():
                cli_run("unlink", path)


def test_inspect_shows_the_in_bridges_applied_sequence(channel_path):
    """The applied sequence of send_sequenced (what an in-bridge committed) is read from the
    header without a lock; a sequenced send caught between its stores and its commit still
    reads as the sequence before it."""
    with shmipc.Channel.create(channel_path, 4096) as ch:
        state = json.loads(cli_run("inspect", channel_path, "--json").stdout)
        assert state["applied_sequence"] == 0
        assert "none (no in-bridge" in cli_run("inspect", channel_path).stdout
        assert ch.send_sequenced(b"from the stream", 41)
        ch.send_bytes(b"a plain message after it")
        state = json.loads(cli_run("inspect", channel_path, "--json").stdout)
        assert state["applied_sequence"] == 41 == ch.applied_sequence()
        assert "41: the last JetStream stream sequence" in cli_run("inspect", channel_path).stdout
        # What send_sequenced stores before its commit, by hand: previous, end, last; the
        # write position not yet moved past the message.
        buf = ch._mapping.buffer
        w = ch.statistics().write_position
        for offset, value in ((layout.SEQUENCE_PREVIOUS, 41), (layout.SEQUENCE_END, w + 24),
                              (layout.SEQUENCE_LAST, 42)):
            buf[offset:offset + 8] = value.to_bytes(8, "little")
        assert json.loads(cli_run("inspect", channel_path, "--json").stdout)[
            "applied_sequence"] == 41 == shmipc._core.applied_sequence(buf)
        buf[layout.WRITE_POSITION:layout.WRITE_POSITION + 8] = (w + 24).to_bytes(8, "little")
        assert shmipc._core.applied_sequence(buf) == 42  # the commit makes it the answer
        buf[layout.WRITE_POSITION:layout.WRITE_POSITION + 8] = w.to_bytes(8, "little")
