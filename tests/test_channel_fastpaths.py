"""The fast paths: wake-ups only to sleepers, spinning, batches, zero-copy receive and send."""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import time

import pytest

import shmipc
from conftest import fork_run, join
from shmipc import layout


def receivers_waiting(ch: shmipc.Channel) -> int:
    return ch.statistics().receivers_waiting


@pytest.mark.parametrize("spin", [0.0, 50e-6, 0.002])
def test_slow_sender_wakes_sleeping_receiver(make_channel, spin):
    # The receiver really sleeps between messages (the sender pauses longer than any spin), so
    # every message goes through registration, re-check and the items semaphore.
    ch = make_channel(capacity=4096)
    ch.spin = spin
    count = 60

    def child() -> None:
        for i in range(count):
            if i % 3 == 0:
                time.sleep(0.003)
            ch.send(i)
        ch.close_send()

    pid = fork_run(child)
    got = list(ch)
    assert join(pid) == 0
    assert got == list(range(count))
    assert receivers_waiting(ch) == 0


@pytest.mark.parametrize("spin", [0.0, 50e-6])
def test_blocked_sender_is_woken(make_channel, spin):
    ch = make_channel(capacity=4096)
    ch.spin = spin
    payload = b"x" * 1000

    def child() -> None:
        ch.spin = spin
        for i in range(50):
            ch.send_bytes(payload + i.to_bytes(2, "little"))
        ch.close_send()

    pid = fork_run(child)
    got = []
    while True:
        time.sleep(0.002)  # a slow consumer: the sender fills the ring and sleeps
        try:
            got.append(ch.recv_bytes(timeout=10))
        except shmipc.EndOfChannel:
            break
    assert join(pid) == 0
    assert [int.from_bytes(m[-2:], "little") for m in got] == list(range(50))


def test_timeouts_leave_no_registration(make_channel):
    ch = make_channel()
    for _ in range(3):
        with pytest.raises(shmipc.Empty):
            ch.recv(timeout=0.01)
        with pytest.raises(shmipc.Empty):
            ch.recv_nowait()
    assert receivers_waiting(ch) == 0
    ch.send(1)
    assert ch.recv(timeout=1) == 1


def test_close_send_wakes_every_sleeping_consumer(make_channel):
    ch = make_channel()
    pids = [fork_run(lambda: list(ch)) for _ in range(3)]
    deadline = time.monotonic() + 10
    while receivers_waiting(ch) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert receivers_waiting(ch) == 3
    ch.close_send()
    assert [join(pid, timeout=10) for pid in pids] == [0, 0, 0]
    assert receivers_waiting(ch) == 0


def test_idle_blocked_receiver_uses_almost_no_cpu(make_channel):
    # A resource bound, not a speed assertion: a receiver blocked for a second sleeps.
    ch = make_channel()
    ch.spin = 50e-6
    result = make_channel()

    def child() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        with pytest.raises(shmipc.Empty):
            ch.recv(timeout=1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result.send([cpu, time.monotonic() - start])

    pid = fork_run(child)
    assert join(pid) == 0
    cpu, wall = result.recv(timeout=5)
    assert wall >= 0.9
    assert cpu < 0.1 * wall


# --- batches ---------------------------------------------------------------------------------


def test_send_many_writes_one_frame_per_message_back_to_back(make_channel):
    ch = make_channel()
    objs = [{"name": "b", "age": i} for i in range(64)]
    ch.send_many(objs)
    stats = ch.statistics()
    assert stats.sent == 64 and stats.messages == 64
    codec = shmipc.Codec()
    assert stats.used == sum(layout.frame_size(len(codec.encode(o))) for o in objs)
    assert ch.recv_many(64, timeout=1) == objs
    assert ch.statistics().messages == 0 and ch.statistics().used == 0


def test_regression_a_send_many_larger_than_the_ring_wakes_the_consumer_as_it_goes(
        make_channel):
    # 12 x 1500 B through a 4 KiB ring: the sender must commit and wake the sleeping consumer
    # each time it stops for room, not only when the batch ends. A wake-up it failed to post
    # would show as a consumer sleep that ended by its slice running out, not by a token.
    ch = make_channel(capacity=4096)
    ch.spin = 0
    messages = [bytes([i]) * 1500 for i in range(12)]
    result = make_channel()

    def consumer() -> None:
        ch.spin = 0
        got = [ch.recv_bytes(timeout=30) for _ in messages]
        result.send([got == messages, ch._sleeps()])

    pid = fork_run(consumer)
    time.sleep(0.05)  # the consumer is asleep before the batch starts
    ch.send_many_bytes(messages, timeout=30)
    assert join(pid) == 0
    same, (woken, expired) = result.recv(timeout=5)
    assert same
    assert woken >= 1 and expired == 0


def test_batch_taken_in_parts_by_every_receive(make_channel):
    ch = make_channel()
    ch.send_many(list(range(10)))
    ch.send(10)
    ch.send_many([11, 12])
    assert ch.recv(timeout=1) == 0
    assert ch.recv_many(3, timeout=1) == [1, 2, 3]
    assert ch.recv_bytes(timeout=1) == b"\x04"  # an element's msgpack bytes
    with ch.recv_view(timeout=1) as view:
        assert bytes(view) == b"\x05"
    assert ch.recv_many_bytes(2, timeout=1) == [b"\x06", b"\x07"]
    assert ch.statistics().messages == 5
    assert ch.recv_many(100, timeout=1) == [8, 9, 10, 11, 12]
    assert ch.statistics().messages == 0
    with pytest.raises(shmipc.Empty):
        ch.recv_nowait()


def test_batch_frames_wrap_around(make_channel):
    # A small ring and batches of changing sizes: frames pad at the end of the ring and wrap,
    # across several laps; every object arrives once, in order.
    ch = make_channel(capacity=4096)
    sent = 0
    expected: list[list[object]] = []
    got: list[list[object]] = []
    for lap in range(300):
        size = 1 + (lap * 7) % 40
        batch = [[n, "x" * (n % 23)] for n in range(sent, sent + size)]
        ch.send_many(batch, timeout=1)
        expected += batch
        sent += size
        while ch.statistics().messages > 30:
            got += ch.recv_many(1 + lap % 9, timeout=1)
    while ch.statistics().messages:
        got += ch.recv_many(5, timeout=1)
    assert got == expected
    assert ch.statistics().write_position > 10 * ch.capacity


def test_send_many_splits_a_batch_larger_than_half_the_ring(make_channel):
    ch = make_channel(capacity=4096)
    objs = [b"y" * 300 for _ in range(20)]  # 6 KB in all
    pid = fork_run(lambda: ch.send_many(objs, timeout=10))
    got: list[bytes] = []
    while len(got) < 20:
        got += ch.recv_many(64, timeout=10)
    assert join(pid) == 0
    assert got == objs
    with pytest.raises(shmipc.MessageTooLarge):
        ch.send_many([b"z" * 5000])
    with pytest.raises(shmipc.EncodeError):
        ch.send_many([1, object()])
    assert ch.statistics().messages == 0


def test_consumers_share_batches_exactly_once_in_producer_order(make_channel, tmp_path):
    ch = make_channel(capacity=1 << 14)
    producers, per_producer, consumers = 2, 3000, 3

    def produce(p: int) -> None:
        seq = 0
        while seq < per_producer:
            size = 1 + seq % 50
            ch.send_many([[p, s] for s in range(seq, min(seq + size, per_producer))], timeout=10)
            seq += size

    def consume(c: int) -> None:
        got = []
        mode = 0
        while True:
            mode += 1
            try:
                if mode % 3 == 0:
                    got.append(ch.recv(timeout=10))
                elif mode % 3 == 1:
                    got += ch.recv_many(1 + mode % 17, timeout=10)
                else:
                    with ch.recv_view(timeout=10) as view:
                        got.append(shmipc.Codec().decode(bytes(view)))
            except shmipc.EndOfChannel:
                break
        (tmp_path / f"c{c}.json").write_text(json.dumps(got))

    cpids = [fork_run(lambda c=c: consume(c)) for c in range(consumers)]
    ppids = [fork_run(lambda p=p: produce(p)) for p in range(producers)]
    assert [join(pid, timeout=60) for pid in ppids] == [0] * producers
    ch.close_send()
    assert [join(pid, timeout=60) for pid in cpids] == [0] * consumers
    seen = []
    for c in range(consumers):
        got = json.loads((tmp_path / f"c{c}.json").read_text())
        for p in range(producers):
            mine = [s for q, s in got if q == p]
            assert mine == sorted(mine), "a producer's messages arrived out of order"
        seen += [tuple(m) for m in got]
    assert sorted(seen) == [(p, s) for p in range(producers) for s in range(per_producer)]
    assert ch.statistics().received == producers * per_producer


# --- zero-copy receive -----------------------------------------------------------------------


def test_recv_view_yields_the_bytes_in_place_and_returns_the_space(make_channel):
    ch = make_channel()
    ch.send_bytes(b"hello")
    ch.send_bytes(b"world")
    with ch.recv_view(timeout=1) as view:
        assert view.readonly
        assert bytes(view) == b"hello"
        assert ch.statistics().messages == 2  # not returned before the block ends
        with pytest.raises(TypeError):
            view[0] = 0  # type: ignore[index]
        with pytest.raises(RuntimeError):
            ch.recv_bytes()  # would deadlock on this handle's own lock
    with pytest.raises(ValueError):
        bytes(view)  # released
    assert ch.statistics().messages == 1
    assert ch.recv_bytes(timeout=1) == b"world"
    assert ch.statistics().used == 0


def test_recv_view_after_exit_never_sees_reused_memory(make_channel):
    ch = make_channel(capacity=4096)
    ch.send_bytes(b"a" * 1000)
    with ch.recv_view(timeout=1) as view:
        kept = view
    for _ in range(10):  # reuse the same bytes of the ring several times over
        ch.send_bytes(b"b" * 1000)
        assert ch.recv_bytes(timeout=1) == b"b" * 1000
    with pytest.raises(ValueError):
        kept[0]


def test_recv_view_exception_inside_block_still_consumes(make_channel):
    ch = make_channel()
    ch.send_bytes(b"one")
    ch.send_bytes(b"two")
    with pytest.raises(KeyError), ch.recv_view(timeout=1) as view:
        assert bytes(view) == b"one"
        raise KeyError("boom")
    assert ch.recv_bytes(timeout=1) == b"two"


def test_recv_view_held_by_an_exporter_keeps_the_message(make_channel):
    ch = make_channel()
    ch.send_bytes(b"held")
    ch.send_bytes(b"next")
    exporter = None
    with pytest.raises(BufferError), ch.recv_view(timeout=1) as view:
        exporter = pickle.PickleBuffer(view)  # an export the view cannot be released under
    assert bytes(exporter.raw()) == b"held"  # still intact: the space was not returned
    assert ch.statistics().messages == 2
    with pytest.raises(RuntimeError):
        ch.recv_bytes(timeout=0)
    exporter.release()
    assert ch.recv_bytes(timeout=1) == b"next"
    assert ch.statistics().messages == 0


def test_recv_view_timeout_and_end(make_channel):
    ch = make_channel()
    with pytest.raises(shmipc.Empty), ch.recv_view(timeout=0.01):
        pass
    ch.close_send()
    with pytest.raises(shmipc.EndOfChannel), ch.recv_view(timeout=1):
        pass


def test_consumer_killed_holding_a_view_loses_nothing(make_channel):
    ch = make_channel()
    ch.send_bytes(b"precious")

    def child() -> None:
        with ch.recv_view(timeout=5) as view:
            assert bytes(view) == b"precious"
            os.kill(os.getpid(), signal.SIGKILL)

    pid = fork_run(child)
    assert join(pid) == -signal.SIGKILL
    assert ch.recv_bytes(timeout=5) == b"precious"  # the lock is taken over, the message kept
    assert ch.statistics().recoveries >= 1
    assert ch.statistics().messages == 0


def test_spin_is_validated(make_channel):
    ch = make_channel()
    assert ch.spin == shmipc.channel.DEFAULT_SPIN
    ch.spin = 0
    with pytest.raises(ValueError):
        ch.spin = -1


# --- zero-copy receive of a batch ------------------------------------------------------------


def test_recv_many_view_claims_in_place_and_commits_together(make_channel):
    ch = make_channel()
    ch.send_many_bytes([b"one", b"two", b"three"])
    ch.send_bytes(b"four")
    claim = ch.recv_many_view(3, timeout=1)
    with claim as views:
        assert [bytes(v) for v in views] == [b"one", b"two", b"three"]
        assert all(v.readonly for v in views)
        assert ch.statistics().messages == 4  # nothing committed inside the block
        with pytest.raises(RuntimeError):
            ch.recv_bytes(timeout=0)  # this handle's own claim holds the consumer lock
    for view in views:
        with pytest.raises(ValueError):
            bytes(view)  # released: nobody reads the bytes a producer may reuse now
    stats = ch.statistics()
    assert stats.messages == 1 and stats.received == 3
    assert ch.recv_bytes(timeout=1) == b"four"


def test_recv_many_view_positions_are_the_read_positions(make_channel):
    ch = make_channel(capacity=4096)
    payloads = [bytes([65 + i]) * (1 + 300 * (i % 3)) for i in range(40)]
    positions = []
    got = []
    sent = 0
    while len(got) < len(payloads):  # several laps: padding frames and wrapping
        while sent < len(payloads) and ch.statistics().free > 1000:
            ch.send_bytes(payloads[sent])
            sent += 1
        claim = ch.recv_many_view(3, timeout=1)
        with claim as views:
            assert claim.positions[0] == ch.statistics().read_position
            got += [bytes(v) for v in views]
            positions += claim.positions
    assert got == payloads
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    view_claim = ch.recv_view(timeout=0.01)
    ch.send_bytes(b"last")
    with view_claim as view:
        assert bytes(view) == b"last"
        assert view_claim.position == ch.statistics().read_position > positions[-1]
    assert view_claim.position == ch.statistics().read_position - 16  # kept after the block
    with pytest.raises(RuntimeError):
        _ = ch.recv_view(timeout=0).position  # outside a block


def test_recv_many_view_exception_commits_nothing(make_channel):
    ch = make_channel()
    ch.send_many_bytes([b"a", b"b", b"c"])
    claim = ch.recv_many_view(10, timeout=1)
    with pytest.raises(KeyError), claim as views:
        assert len(views) == 3
        kept = views[0]
        first = claim.positions
        raise KeyError("publication failed")
    with pytest.raises(ValueError):
        bytes(kept)
    assert ch.statistics().messages == 3 and ch.statistics().received == 0
    again = ch.recv_many_view(10, timeout=1)
    with again as views:  # the same messages, at the same positions
        assert [bytes(v) for v in views] == [b"a", b"b", b"c"]
        assert again.positions == first
    assert ch.statistics().messages == 0


def test_recv_many_view_takes_at_most_max_count_and_what_is_there(make_channel):
    ch = make_channel()
    with pytest.raises(ValueError):
        ch.recv_many_view(0)
    with pytest.raises(shmipc.Empty), ch.recv_many_view(5, timeout=0.01):
        pass
    ch.send_many_bytes([b"1", b"2"])
    with ch.recv_many_view(1, timeout=1) as views:
        assert [bytes(v) for v in views] == [b"1"]
    with ch.recv_many_view(100, timeout=1) as views:
        assert [bytes(v) for v in views] == [b"2"]
    ch.close_send()
    with pytest.raises(shmipc.EndOfChannel), ch.recv_many_view(5, timeout=1):
        pass


def test_recv_many_view_after_exit_never_sees_reused_memory(make_channel):
    ch = make_channel(capacity=4096)
    ch.send_many_bytes([b"a" * 500, b"c" * 500])
    with ch.recv_many_view(2, timeout=1) as views:
        kept = list(views)
    for _ in range(10):
        ch.send_bytes(b"b" * 1000)
        assert ch.recv_bytes(timeout=1) == b"b" * 1000
    for view in kept:
        with pytest.raises(ValueError):
            view[0]


def test_recv_many_view_held_by_an_exporter_keeps_the_claim(make_channel):
    ch = make_channel()
    ch.send_many_bytes([b"held", b"too", b"next"])
    exporter = None
    with pytest.raises(BufferError), ch.recv_many_view(2, timeout=1) as views:
        exporter = pickle.PickleBuffer(views[1])
    assert bytes(exporter.raw()) == b"too"  # intact: the claim, and its bytes, are held
    assert ch.statistics().messages == 3
    with pytest.raises(RuntimeError):
        ch.recv_bytes(timeout=0)
    exporter.release()
    assert ch.recv_bytes(timeout=1) == b"next"  # the finished claim was committed first
    assert ch.statistics().messages == 0


def test_recv_many_view_exception_with_an_exporter_aborts_once_released(make_channel):
    ch = make_channel()
    ch.send_many_bytes([b"x", b"y"])
    with pytest.raises(KeyError), ch.recv_many_view(2, timeout=1) as views:
        exporter = pickle.PickleBuffer(views[0])
        raise KeyError("the block's own exception wins")
    exporter.release()
    assert ch.recv_many_bytes(10, timeout=1) == [b"x", b"y"]  # aborted: both still there


def test_recv_many_view_with_a_producer_process(make_channel):
    # A producer process sends while this one takes batches in place: every message once,
    # in order, and the claims hold the ring's bytes (the producer waits for room).
    ch = make_channel(capacity=4096)
    count = 3000

    def produce() -> None:
        for i in range(0, count, 7):
            ch.send_many([[i + k, "p" * ((i + k) % 50)] for k in range(min(7, count - i))],
                         timeout=10)
        ch.close_send()

    pid = fork_run(produce)
    codec = shmipc.Codec()
    got = []
    try:
        while True:
            try:
                with ch.recv_many_view(1 + len(got) % 37, timeout=10) as views:
                    got += [codec.decode(bytes(v)) for v in views]
            except shmipc.EndOfChannel:
                break
    finally:
        assert join(pid) == 0
    assert got == [[i, "p" * (i % 50)] for i in range(count)]
