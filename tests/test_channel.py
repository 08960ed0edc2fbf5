"""Channel: the bytes and object APIs over file and anonymous backings, with real processes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import random
import stat
import struct
import sys
import time
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shmipc
from conftest import fork_run, join, run_python, start_python, unlink_channel_names
from shmipc import layout, sync

SMALL = {"name": "b", "age": 20}


def test_send_recv_roundtrip(make_channel):
    ch = make_channel()
    ch.send(SMALL)
    ch.send_bytes(b"raw")
    ch.send_bytes(bytearray(b"ba"))
    ch.send_bytes(memoryview(struct.pack("<3i", 1, 2, 3)).cast("i"))
    assert ch.recv(timeout=1) == SMALL
    assert ch.recv_bytes(timeout=1) == b"raw"
    assert ch.recv_bytes_nowait() == b"ba"
    assert ch.recv_bytes() == struct.pack("<3i", 1, 2, 3)
    stats = ch.statistics()
    assert (stats.sent, stats.received, stats.messages, stats.used) == (4, 4, 0, 0)


def test_parent_and_child_after_fork(make_channel):
    ch = make_channel(capacity=4096)
    count = 5000

    def child() -> None:
        for i in range(count):
            ch.send({"i": i})
        ch.close_send()

    pid = fork_run(child)
    got = [obj["i"] for obj in ch]
    assert join(pid) == 0
    assert got == list(range(count))


def test_unrelated_processes_over_a_file(channel_path):
    shmipc.Channel.create(channel_path, 8192).close()
    consumer = start_python("""
        import sys, shmipc
        with shmipc.Channel.open(sys.argv[1]) as ch:
            total = 0
            for obj in ch:
                total += obj["i"]
            print(total)
    """, str(channel_path))
    producer = run_python("""
        import sys, shmipc
        with shmipc.Channel.open(sys.argv[1]) as ch:
            for i in range(3000):
                ch.send({"i": i, "pad": "x" * (i % 50)})
            ch.close_send()
    """, str(channel_path))
    assert producer.returncode == 0, producer.stderr
    out, err = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, err
    assert int(out) == sum(range(3000))


def test_two_producers_two_consumers_exactly_once_in_order(make_channel):
    ch = make_channel(capacity=4096)
    per_producer = 3000
    results = make_channel(capacity=1 << 20)  # consumers report what they got here

    def producer(tag: int) -> None:
        for i in range(per_producer):
            ch.send([tag, i, "y" * random.randrange(0, 40)])

    def consumer() -> None:
        got = []
        for tag, i, _pad in ch:
            got.append((tag, i))
        results.send(got)

    consumers = [fork_run(consumer) for _ in range(2)]
    producers = [fork_run(lambda t=t: producer(t)) for t in range(2)]
    for pid in producers:
        assert join(pid, 60) == 0
    ch.close_send()
    for pid in consumers:
        assert join(pid, 60) == 0
    lists = [results.recv(timeout=10) for _ in range(2)]
    everything = sorted(tuple(x) for got in lists for x in got)
    assert everything == sorted((t, i) for t in range(2) for i in range(per_producer))
    for got in lists:  # each consumer saw each producer's messages in the order sent
        for tag in range(2):
            seq = [i for t, i in got if t == tag]
            assert seq == sorted(seq)


def test_wrap_around_random_sizes_across_processes(make_channel):
    ch = make_channel(capacity=4096)
    rng = random.Random(7)
    sizes = [rng.randrange(0, ch.max_message_size + 1) for _ in range(2000)]

    def producer() -> None:
        for n, size in enumerate(sizes):
            body = bytes([n & 0xFF]) * size
            ch.send_bytes(struct.pack("<I", zlib.crc32(body)) + body[4:] if size >= 4 else body)

    pid = fork_run(producer)
    for n, size in enumerate(sizes):
        got = ch.recv_bytes(timeout=30)
        body = bytes([n & 0xFF]) * size
        assert got == (struct.pack("<I", zlib.crc32(body)) + body[4:] if size >= 4 else body)
    assert join(pid) == 0
    assert ch.statistics().used == 0


def test_messages_outlive_their_writer(channel_path):
    done = run_python("""
        import sys, shmipc
        ch = shmipc.Channel.create(sys.argv[1], 1 << 16)
        for i in range(100):
            ch.send({"i": i})
    """, str(channel_path))  # exits without close(): nothing must depend on a clean exit
    assert done.returncode == 0, done.stderr
    read = run_python("""
        import sys, shmipc
        with shmipc.Channel.open(sys.argv[1]) as ch:
            print(sum(ch.recv_nowait()["i"] for _ in range(100)))
            try:
                ch.recv_nowait()
            except shmipc.Empty:
                print("empty")
    """, str(channel_path))
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == [str(sum(range(100))), "empty"]


def test_semaphores_are_rebuilt_after_removal(channel_path):
    with shmipc.Channel.create(channel_path, 1 << 16) as ch:
        for i in range(10):
            ch.send(i)
        names = ch.semaphore_names
    for name in names.values():  # as after a reboot
        assert sync.unlink_semaphore(name)
    read = run_python("""
        import sys, shmipc
        with shmipc.Channel.open(sys.argv[1]) as ch:
            print([ch.recv(timeout=5) for _ in range(10)])
    """, str(channel_path))
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == str(list(range(10)))
    with shmipc.Channel.open(channel_path) as ch:
        rebuilt = ch.semaphore_names
        assert ch.statistics().semaphore_generation == 1  # a new set, under new names
    assert set(rebuilt.values()).isdisjoint(names.values())
    for name in names.values():
        assert not os.path.exists(f"/dev/shm/sem.{name[1:]}")
    for name in rebuilt.values():
        st = os.stat(f"/dev/shm/sem.{name[1:]}")
        assert st.st_mode & 0o777 == 0o600


def test_regression_live_handles_follow_semaphores_rebuilt_under_them(channel_path):
    # systemd's RemoveIPC or a cleanup removes the names while processes use the channel; the
    # next open rebuilds a new set. A consumer asleep on the old set must still be woken: it
    # follows the header's semaphore generation on its next sleep.
    ch = shmipc.Channel.create(channel_path, 1 << 16)
    ch.spin = 0
    child_done = fork_run(lambda: ch.recv(timeout=20) == "wake" or sys.exit(3))
    deadline = time.monotonic() + 10
    while ch.statistics().receivers_waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    for name in ch.semaphore_names.values():
        assert sync.unlink_semaphore(name)
    with shmipc.Channel.open(channel_path) as other:
        assert other.statistics().semaphore_generation == 1
        time.sleep(0.6)  # the sleeper's slice ends: it moves to the new set
        other.send("wake")
    assert join(child_done, timeout=20) == 0
    ch.close()


def test_files_and_semaphores_are_private_by_default(channel_path):
    old = os.umask(0)
    try:
        ch = shmipc.Channel.create(channel_path)
    finally:
        os.umask(old)
    with ch:
        assert stat.S_IMODE(os.stat(channel_path).st_mode) == 0o600
        for name in ch.semaphore_names.values():
            assert stat.S_IMODE(os.stat(f"/dev/shm/sem.{name[1:]}").st_mode) == 0o600


def test_open_or_create_race(tmp_path):
    path = tmp_path / "raced"
    code = """
        import sys, shmipc
        ch = shmipc.Channel.open_or_create(sys.argv[1], 1 << 14)
        print(ch.info.channel_id.hex())
        ch.close()
    """
    procs = [start_python(code, str(path)) for _ in range(4)]
    try:
        ids = set()
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            ids.add(out.strip())
        assert len(ids) == 1
        assert [f for f in os.listdir(tmp_path)] == ["raced"]  # no file left aside
    finally:
        unlink_channel_names(path)


# --- errors -----------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        shmipc.Channel.open(tmp_path / "nope")


def test_not_a_channel(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"just some text\n" * 1000)
    with pytest.raises(shmipc.NotAChannel, match="not a shmipc channel"):
        shmipc.Channel.open(junk)
    with pytest.raises(shmipc.NotAChannel, match="directory"):
        shmipc.Channel.open(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(shmipc.NotAChannel, match="regular file"):
        shmipc.Channel.open(fifo)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(shmipc.NotAChannel):
        shmipc.Channel.open(empty)


def test_create_refuses_an_existing_path(channel_path):
    shmipc.Channel.create(channel_path).close()
    with pytest.raises(FileExistsError, match="open_or_create"):
        shmipc.Channel.create(channel_path)


def corrupt(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_truncated_channel_is_corrupt(channel_path):
    shmipc.Channel.create(channel_path, 8192).close()
    os.truncate(channel_path, 4096 + 100)
    with pytest.raises(shmipc.CorruptChannel, match="truncated"):
        shmipc.Channel.open(channel_path)
    os.truncate(channel_path, 200)
    with pytest.raises(shmipc.CorruptChannel, match="truncated"):
        shmipc.Channel.open(channel_path)


def test_other_format_version_is_incompatible(channel_path):
    shmipc.Channel.create(channel_path, 8192).close()
    header = bytearray(channel_path.read_bytes()[:layout.LIVE_OFFSET])
    struct.pack_into("<I", header, 8, 99)
    corrupt(channel_path, 0, bytes(header))
    with pytest.raises(shmipc.IncompatibleChannel, match="version 99"):
        shmipc.Channel.open(channel_path)


def test_impossible_positions_are_corrupt(channel_path):
    shmipc.Channel.create(channel_path, 8192).close()
    corrupt(channel_path, layout.WRITE_POSITION, struct.pack("<Q", 1 << 40))
    with pytest.raises(shmipc.CorruptChannel, match="positions"):
        shmipc.Channel.open(channel_path)


def test_corrupted_header_fails_cleanly_in_a_subprocess(channel_path):
    with shmipc.Channel.create(channel_path, 8192) as ch:
        ch.send("hello")
    corrupt(channel_path, 16, struct.pack("<Q", 1 << 30))  # capacity: the CRC catches it
    result = run_python("""
        import sys, shmipc
        try:
            shmipc.Channel.open(sys.argv[1])
        except shmipc.CorruptChannel as exc:
            print("CorruptChannel:", exc)
    """, str(channel_path))
    assert result.returncode == 0, result.stderr  # no signal, no traceback
    assert result.stdout.startswith("CorruptChannel:")


def test_corrupted_frame_fails_cleanly_in_a_subprocess(channel_path):
    with shmipc.Channel.create(channel_path, 8192) as ch:
        ch.send_bytes(b"hello")
    corrupt(channel_path, layout.HEADER_SIZE, struct.pack("<Q", 5000 | 1 << 32))
    result = run_python("""
        import sys, shmipc
        with shmipc.Channel.open(sys.argv[1]) as ch:
            try:
                ch.recv_bytes(timeout=1)
            except shmipc.CorruptChannel as exc:
                print("CorruptChannel:", exc)
    """, str(channel_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CorruptChannel:")


def test_message_too_large(make_channel):
    ch = make_channel(capacity=4096)
    ch.send_bytes(bytes(ch.max_message_size))
    with pytest.raises(shmipc.MessageTooLarge) as info:
        ch.send_bytes(bytes(ch.max_message_size + 1))
    assert isinstance(info.value, ValueError)
    assert (info.value.size, info.value.max_size) == (ch.max_message_size + 1, ch.max_message_size)
    assert "capacity=" in str(info.value)


def test_unencodable_object_sends_nothing(make_channel):
    ch = make_channel()
    with pytest.raises(shmipc.EncodeError) as info:
        ch.send({"when": object()})
    assert isinstance(info.value, TypeError)
    with pytest.raises(shmipc.EncodeError):
        ch.send_many([1, 2, object()])
    assert ch.statistics().sent == 0
    ch.send({"ok": True})  # the codec recovers from the failure
    assert ch.recv_nowait() == {"ok": True}


def test_invalid_msgpack_keeps_its_bytes(make_channel):
    ch = make_channel()
    ch.send_bytes(b"\xc1")  # 0xc1 is never used by msgpack
    with pytest.raises(shmipc.DecodeError) as info:
        ch.recv(timeout=1)
    assert info.value.payload == b"\xc1"
    assert isinstance(info.value, ValueError)


def test_a_message_must_be_exactly_one_msgpack_object(make_channel):
    # recv decodes small messages as one stream (an incremental unpacker fed back to back): a
    # message that holds two objects, half of one, or nothing must still be its own error, and
    # must not shift the messages after it.
    ch = make_channel()
    two, half = msgpack.packb(1) + msgpack.packb(2), msgpack.packb("abcdef")[:3]
    for bad in (two, half, b""):
        ch.send_bytes(bad)
        ch.send({"after": bad.hex()})
        with pytest.raises(shmipc.DecodeError) as info:
            ch.recv(timeout=1)
        assert info.value.payload == bad
        assert ch.recv(timeout=1) == {"after": bad.hex()}
    # In a batch: every message is consumed and none is lost; the error carries them all.
    ch.send(1)
    ch.send_bytes(half)
    ch.send_bytes(two)
    ch.send([3])
    with pytest.raises(shmipc.DecodeError) as info:
        ch.recv_many(10, timeout=1)
    received = info.value.received
    assert received[0] == 1 and received[3] == [3]
    assert [e.payload for e in received[1:3]] == [half, two]
    assert ch.statistics().messages == 0
    ch.send_many([{"i": i} for i in range(200)])
    assert ch.recv_many(500, timeout=1) == [{"i": i} for i in range(200)]


def test_empty_and_full_are_queue_exceptions(make_channel):
    ch = make_channel(capacity=4096)
    with pytest.raises(queue.Empty):
        ch.recv_nowait()
    with pytest.raises(shmipc.Empty):
        ch.recv(timeout=0.05)
    payload = bytes(1000)
    sent = 0
    with pytest.raises(queue.Full):
        while True:
            ch.send_bytes_nowait(payload)
            sent += 1
    assert sent == 4096 // 1008
    with pytest.raises(shmipc.Full) as info:
        ch.send_bytes(payload, timeout=0.05)
    assert info.value.free < info.value.size
    assert [len(ch.recv_bytes_nowait()) for _ in range(sent)] == [1000] * sent


@pytest.mark.parametrize("timeout", [0.05, 0.3])
def test_timeouts_are_honoured(make_channel, timeout):
    ch = make_channel(capacity=4096)
    start = time.monotonic()
    with pytest.raises(shmipc.Empty):
        ch.recv(timeout=timeout)
    waited = time.monotonic() - start
    assert timeout <= waited < timeout * 10
    while True:
        try:
            ch.send_bytes_nowait(bytes(500))
        except shmipc.Full:
            break
    start = time.monotonic()
    with pytest.raises(shmipc.Full):
        ch.send_bytes(bytes(500), timeout=timeout)
    waited = time.monotonic() - start
    assert timeout <= waited < timeout * 10


def test_regression_one_deadline_covers_the_lock_wait_and_the_room_wait(make_channel):
    # Format 1 restarted the deadline after waiting for the producer lock: send(timeout=1.0)
    # raised Full after 1.8 s. The lock is held here for 0.6 s by a live producer, then the
    # ring stays full: the call must give up one timeout after it started, not later.
    ch = make_channel(capacity=4096)
    for _ in range(7):
        ch.send_bytes_nowait(bytes(500))  # 7 frames of 512 bytes
    ch.send_bytes_nowait(bytes(496))  # a frame of 504: 8 bytes stay free, room for one header
    assert ch.statistics().free == 8
    read, write = os.pipe()

    def holder() -> None:
        ch._send_claim(0, None)  # the producer lock, held by a live process
        os.write(write, b"h")
        time.sleep(0.6)
        ch._send_finish(None)

    pid = fork_run(holder)
    try:
        assert os.read(read, 1) == b"h"
        start = time.monotonic()
        with pytest.raises(shmipc.Full):
            ch.send_bytes(bytes(500), timeout=1.0)
        waited = time.monotonic() - start
        assert 1.0 <= waited < 1.4, waited
        assert join(pid) == 0
    finally:
        os.close(read)
        os.close(write)


def test_blocked_sender_resumes_when_room_is_made(make_channel):
    ch = make_channel(capacity=4096)
    total = 200

    def producer() -> None:
        for i in range(total):
            ch.send_bytes(struct.pack("<I", i) * 100)  # 400 bytes: the ring holds 9

    pid = fork_run(producer)
    time.sleep(0.3)  # let the producer fill the ring and go to sleep on it
    assert ch.statistics().free < 408
    got = []
    for _ in range(total):
        got.append(struct.unpack_from("<I", ch.recv_bytes(timeout=10))[0])
        time.sleep(0.001 if len(got) % 50 else 0.05)  # a slow consumer: the sender sleeps
    assert join(pid) == 0
    assert got == list(range(total))


def test_receiver_sleeps_until_a_slow_sender_sends(make_channel):
    ch = make_channel()

    def producer() -> None:
        for i in range(5):
            time.sleep(0.1)
            ch.send(i)

    pid = fork_run(producer)
    assert [ch.recv(timeout=10) for _ in range(5)] == list(range(5))
    assert join(pid) == 0


def test_close_send_drains_then_ends(make_channel):
    ch = make_channel()
    ch.send_many(range(5))
    ch.close_send()
    with pytest.raises(shmipc.ChannelClosed):
        ch.send(6)
    assert list(ch) == [0, 1, 2, 3, 4]
    with pytest.raises(shmipc.EndOfChannel):
        ch.recv(timeout=1)
    assert ch.statistics().closed


def test_close_send_wakes_every_sleeping_consumer(make_channel):
    ch = make_channel()
    pids = [fork_run(lambda: list(ch)) for _ in range(3)]
    time.sleep(0.2)  # the consumers sleep on the empty channel
    ch.close_send()
    for pid in pids:
        assert join(pid, 10) == 0


def test_send_many_recv_many(make_channel):
    ch = make_channel()
    ch.send_many([{"i": i} for i in range(100)])
    got = []
    while len(got) < 100:
        batch = ch.recv_many(64, timeout=1)
        assert 1 <= len(batch) <= 64
        got.extend(batch)
    assert got == [{"i": i} for i in range(100)]
    with pytest.raises(shmipc.Empty):
        ch.recv_many(10, timeout=0)
    ch.send_many_bytes([b"a", b"bc"])
    assert ch.recv_many_bytes(10) == [b"a", b"bc"]


def test_closed_handle(make_channel):
    ch = make_channel()
    ch.close()
    ch.close()
    assert ch.closed
    for call in (lambda: ch.send(1), lambda: ch.recv_nowait(), ch.statistics):
        with pytest.raises(shmipc.ChannelClosed):
            call()


def test_anonymous_channel_refuses_spawn():
    ch = shmipc.Channel.anonymous(4096)
    try:
        with pytest.raises(shmipc.WrongStartMethod, match="file channel"):
            pickle.dumps(ch)
    finally:
        ch.close()


def spawned_consumer(ch: shmipc.Channel) -> None:
    ch.send(ch.recv(timeout=10) + 1)


def test_file_channel_works_with_spawn(channel_path):
    with shmipc.Channel.create(channel_path) as ch:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=spawned_consumer, args=(ch,))
        proc.start()
        try:
            ch.send(41)
            proc.join(60)
            assert proc.exitcode == 0
            assert ch.recv(timeout=1) == 42
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def test_flush_writes_the_file(channel_path):
    with shmipc.Channel.create(channel_path, 8192) as ch:
        ch.send_bytes(b"persist me")
        ch.flush()
        assert b"persist me" in channel_path.read_bytes()


def test_a_dropped_handle_releases_its_descriptor(channel_path):
    shmipc.Channel.create(channel_path, 8192).close()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        shmipc.Channel.open(channel_path)  # never closed: garbage collection must clean up
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_sequenced_sends_are_idempotent_and_commit_with_their_message(make_channel):
    ch = make_channel(capacity=4096)
    assert ch.applied_sequence() == 0
    assert ch.send_sequenced(b"one", 1) is True
    ch.send_bytes(b"plain")  # other producers may send meanwhile
    assert ch.send_sequenced(b"five", 5) is True
    assert ch.send_sequenced(b"again", 5) is False  # a redelivery: nothing sent
    assert ch.send_sequenced(b"older", 3) is False
    assert ch.applied_sequence() == 5
    assert ch.recv_many_bytes(10, timeout=1) == [b"one", b"plain", b"five"]
    with pytest.raises(ValueError):
        ch.send_sequenced(b"x", 0)


@pytest.mark.parametrize("point", ["send_copied", "send_committed"])
def test_a_sequenced_send_killed_midway_leaves_both_or_neither(channel_path, point):
    with shmipc.Channel.create(channel_path, 4096) as ch:
        ch.send_sequenced(b"seven", 7)

        def child() -> None:
            shmipc._core._killpoint(point)
            ch.send_sequenced(b"eight", 8)

        pid = fork_run(child)
        assert join(pid) == -9
        committed = point == "send_committed"
        assert ch.applied_sequence(timeout=10) == (8 if committed else 7)
        assert ch.recv_many_bytes(10, timeout=1) == ([b"seven", b"eight"] if committed
                                                     else [b"seven"])
        assert ch.send_sequenced(b"eight", 8) is not committed  # the redelivery is idempotent


# Any msgpack object: the batch paths find where each one ends in C (send_many packs the list
# as one array and sends its elements; recv_many unpacks its messages as one array).
msgpack_objects = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=300) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20)
    | st.dictionaries(st.text(max_size=10), inner, max_size=20),
    max_leaves=60)


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(msgpack_objects, min_size=1, max_size=70), take=st.integers(1, 80))
def test_batches_of_any_msgpack_objects_round_trip(batch, take):
    with shmipc.Channel.anonymous(1 << 20) as ch:
        ch.send_many(batch)
        assert ch.statistics().messages == len(batch)
        got: list[object] = []
        while len(got) < len(batch):
            got += ch.recv_many(take, timeout=1)
        assert got == batch
        ch.send_many(batch)
        assert [ch.recv(timeout=1) for _ in batch] == batch  # each element is one message


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.binary(max_size=40), min_size=1, max_size=20))
def test_recv_many_of_arbitrary_bytes_decodes_as_recv_would(messages):
    # Hostile or plain wrong payloads: recv_many must decode exactly what recv would, message
    # by message, and report failures the same way, whatever bytes it is given.
    expected: list[object] = []
    for m in messages:
        try:
            expected.append(shmipc.Codec().decode(m))
        except shmipc.DecodeError:
            expected.append(shmipc.DecodeError)
    with shmipc.Channel.anonymous(1 << 16) as ch:
        ch.send_many_bytes(messages)
        try:
            got = ch.recv_many(len(messages), timeout=1)
        except shmipc.DecodeError as exc:
            got = exc.received
        assert len(got) == len(messages)
        for g, e in zip(got, expected, strict=True):
            if e is shmipc.DecodeError:
                assert isinstance(g, shmipc.DecodeError)
            else:
                assert g == e or (g != g and e != e)
