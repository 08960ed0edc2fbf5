"""Hostile and corrupt channel files: a property-based fuzz of header and frame bytes, and the
odd things that can sit at a channel's path (too short, a directory, a FIFO, another version).

Every fuzz case builds a real channel file (messages sent and partly received, so that frames
wrap and padding exists), overwrites fields of it with hostile values, and opens it, receives
from it, sends to it and reads its statistics in a forked child. The child must end normally:
each operation either works or raises a ``ShmipcError``; any other exception, a signal
(SIGBUS, SIGSEGV) or a hang fails the case. The child receives through the compiled core's
zero-copy claim, which hands out where the message lies: it checks that every message lies
inside the data area, and that every message it gets is one that was sent or a run of bytes of
the (mutated) data area: never bytes from elsewhere. The report asserts that the fuzz reached
the receive path often enough to mean something.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import uuid
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmipc
from conftest import fork_run, join, unlink_channel_names
from shmipc import layout, sync

CAPACITY = 4096
FUZZ_EXAMPLES = int(os.environ.get("SHMIPC_FUZZ_EXAMPLES", "300"))
FUZZ_STATS = {"cases": 0, "opened": 0, "refused": 0, "received": 0}
REFUSED, OPENED, RECEIVED = 10, 11, 12  # child exit codes: open() refused the file, opened
# (nothing received), received at least one message

# (name, offset, struct format) of every header field worth corrupting.
FIELDS = [
    ("version", 8, "<I"), ("header_size", 12, "<I"), ("capacity", 16, "<Q"),
    ("kind", 24, "<I"), ("record_size", 28, "<I"), ("creator_pid", 48, "<I"),
    ("schema_length", 52, "<I"), ("crc", 64, "<I"),
    ("write_position", layout.WRITE_POSITION, "<Q"), ("sent", layout.SENT_TOTAL, "<Q"),
    ("producer_lock", layout.PRODUCER_LOCK, "<Q"),
    ("read_position", layout.READ_POSITION, "<Q"), ("received", layout.RECEIVED_TOTAL, "<Q"),
    ("consumer_lock", layout.CONSUMER_LOCK, "<Q"),
    ("closed", layout.CLOSED, "<I"), ("semaphore_generation", layout.SEMAPHORE_GENERATION, "<I"),
    ("recoveries", layout.RECOVERIES, "<Q"),
    ("items_sleepers", layout.SLEEPERS, "<Q"), ("space_sleepers", layout.SLEEPERS + 8, "<Q"),
    ("plock_sleepers", layout.SLEEPERS + 16, "<Q"),
    ("clock_sleepers", layout.SLEEPERS + 24, "<Q"),
    ("namespace0", layout.NAMESPACES, "<Q"), ("namespace15", layout.NAMESPACES + 120, "<Q"),
    ("waiter_slot0", layout.WAITER_SLOTS, "<Q"), ("waiter_slot63", layout.WAITER_SLOTS + 504, "<Q"),
]

interesting = st.one_of(
    st.sampled_from([0, 1, 2, 3, 7, 8, 9, 255, 4088, 4095, 4096, 4097, 8192, 1 << 31,
                     (1 << 32) - 1, 1 << 32, (1 << 63), (1 << 64) - 8, (1 << 64) - 1]),
    st.integers(0, 1 << 16),
    st.integers(0, (1 << 64) - 1),
)


def _fit(value: int, fmt: str) -> int:
    return value & ((1 << (8 * struct.calcsize(fmt))) - 1)


field_mutation = st.tuples(st.just("field"), st.sampled_from(FIELDS), interesting)
position_shift = st.tuples(st.just("shift"),
                           st.sampled_from(["write_position", "read_position"]),
                           st.integers(-CAPACITY - 64, CAPACITY + 64))
frame_mutation = st.tuples(st.just("frame"), st.integers(0, 40),  # which frame header
                           st.sampled_from(["length", "tag"]), interesting)
byte_mutation = st.tuples(st.just("byte"), st.integers(0, layout.HEADER_SIZE + CAPACITY - 1),
                          st.integers(0, 255))
schema_mutation = st.tuples(st.just("schema"), st.binary(max_size=300))
size_mutation = st.tuples(st.just("size"), st.sampled_from(
    [0, 7, 8, 383, 384, 4095, 4096, 4097, layout.HEADER_SIZE + CAPACITY - 1,
     layout.HEADER_SIZE + CAPACITY + 1, layout.HEADER_SIZE + 2 * CAPACITY]))

mutations = st.lists(st.one_of(field_mutation, position_shift, frame_mutation, byte_mutation,
                               schema_mutation, size_mutation), min_size=1, max_size=4)


def frame_offsets(data: bytes, read: int, write: int) -> list[int]:
    """Offsets of the frame headers (padding included) between the positions of an intact
    file, walked as docs/FORMAT.md describes the frames."""
    out, r = [], read
    while r != write:
        offset = r & (CAPACITY - 1)
        out.append(offset)
        length, tag = struct.unpack_from("<II", data, offset)
        r += (CAPACITY - offset) if tag == layout.TAG_PADDING else layout.frame_size(length)
        r &= layout.U64_MASK
    return out


def build(path, sizes: list[int], taken: int, start: int) -> list[bytes]:
    sent = []
    with shmipc.Channel._create(path, CAPACITY, mode=0o600, codec=None,
                                initial_position=start) as ch:
        for i, size in enumerate(sizes):
            payload = bytes([i & 0xFF]) * size
            while True:
                try:
                    ch.send_bytes_nowait(payload)
                    break
                except shmipc.Full:
                    ch.recv_bytes_nowait()
            sent.append(payload)
        for _ in range(taken):
            try:
                ch.recv_bytes_nowait()
            except shmipc.Empty:
                break
    return sent


def mutate(path, muts, fix_crc: bool) -> list[bytes]:
    """Apply the mutations to the file; return the byte strings they wrote (for the check)."""
    with open(path, "r+b") as f:
        blob = bytearray(f.read())
    w, r = struct.unpack_from("<Q", blob, layout.WRITE_POSITION)[0], \
        struct.unpack_from("<Q", blob, layout.READ_POSITION)[0]
    frames = frame_offsets(blob[layout.HEADER_SIZE:layout.HEADER_SIZE + CAPACITY], r, w) or [0]
    written: list[bytes] = []
    size = len(blob)
    by_name = {name: (off, fmt) for name, off, fmt in FIELDS}
    for m in muts:
        kind = m[0]
        if kind == "field":
            (_, off, fmt), value = m[1], m[2]
            struct.pack_into(fmt, blob, off, _fit(value, fmt))
        elif kind == "shift":
            off, fmt = by_name[m[1]]
            old = struct.unpack_from(fmt, blob, off)[0]
            struct.pack_into(fmt, blob, off, (old + m[2]) & ((1 << 64) - 1))
        elif kind == "frame":
            at = layout.HEADER_SIZE + frames[m[1] % len(frames)] + (0 if m[2] == "length" else 4)
            struct.pack_into("<I", blob, at, _fit(m[3], "<I"))
        elif kind == "byte":
            blob[m[1]] = m[2]
            written.append(bytes([m[2]]))
        elif kind == "schema":
            text = m[1][:layout.SCHEMA_MAX]
            blob[layout.SCHEMA_OFFSET:layout.SCHEMA_OFFSET + len(text)] = text
            struct.pack_into("<I", blob, 52, len(m[1]))
            written.append(text)
        elif kind == "size":
            size = m[1]
    if fix_crc:  # a hostile writer that knows the format: the checksum does not save us
        schema_length = struct.unpack_from("<I", blob, 52)[0]
        if schema_length <= layout.SCHEMA_MAX:
            fixed = bytearray(blob[:layout.FIXED.size])
            fixed[64:68] = bytes(4)
            schema = bytes(blob[layout.SCHEMA_OFFSET:layout.SCHEMA_OFFSET + schema_length])
            crc = zlib.crc32(schema, zlib.crc32(bytes(fixed[:64]))) & 0xFFFFFFFF
            struct.pack_into("<I", blob, 64, crc)
    if size < len(blob):
        del blob[size:]
    else:
        blob.extend(bytes(size - len(blob)))
    with open(path, "wb") as f:
        f.write(blob)
    return written


def child_exercise(path, sent: list[bytes], live_muts=None) -> None:
    """Open, receive, send and inspect; only ShmipcError may come out. Runs in a child.

    With ``live_muts`` the file is mutated after the child opened it (a hostile peer writing
    into a validated, mapped channel): only the checks made on every use can catch that.
    """
    allowed = set(sent)
    try:
        ch = shmipc.Channel.open(path)
    except shmipc.ShmipcError:
        os._exit(REFUSED)  # refused cleanly
    if live_muts:
        mutate(path, live_muts[0], live_muts[1])
    with open(path, "rb") as f:  # the data area as the mutations left it
        ring_bytes = f.read()[layout.HEADER_SIZE:]
    code = OPENED
    try:
        for n in range(len(sent) + 4):
            try:
                if n % 2:
                    got = ch.recv_bytes(timeout=0.02)
                else:  # the core's claim says where the message lies: inside the ring
                    offset, length = ch._recv_claim(0.02)
                    if not (offset >= layout.FRAME_HEADER and offset + length <= CAPACITY):
                        os._exit(7)
                    got = bytes(ch._data[offset:offset + length])
                    ch._recv_finish(True)
            except shmipc.ShmipcError:
                break
            if got not in allowed and got not in ring_bytes:
                print(f"received bytes that are not in the ring: {got[:40]!r}", file=sys.stderr)
                os._exit(8)
            code = RECEIVED
        for size in (0, 100, 1500):
            with contextlib.suppress(shmipc.ShmipcError):
                ch.send_bytes_nowait(b"z" * size)
        with contextlib.suppress(shmipc.ShmipcError):
            ch.statistics()
    finally:
        with contextlib.suppress(shmipc.ShmipcError):
            ch.close()
    os._exit(code)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 1500), min_size=0, max_size=12),
       taken=st.integers(0, 12), start=st.sampled_from([0, 4000, (1 << 64) - 2048]),
       muts=mutations, fix_crc=st.sampled_from([True, True, True, False]),
       live=st.booleans())
def test_fuzzed_channel_files_fail_cleanly(tmp_path, sizes, taken, start, muts, fix_crc,
                                           live):
    path = tmp_path / f"fuzz-{uuid.uuid4().hex}"
    original_id = None
    try:
        sent = build(path, sizes, taken, start)
        with open(path, "rb") as f:
            original_id = f.read(48)[32:48]
        if live:  # a truncated live mapping faults with SIGBUS: the documented hazard
            muts = [m for m in muts if m[0] != "size"]
            pid = fork_run(lambda: child_exercise(path, sent, (muts, fix_crc)))
        else:
            mutate(path, muts, fix_crc)
            pid = fork_run(lambda: child_exercise(path, sent))
        code = join(pid, timeout=60)
        assert code >= 0, f"the child died of signal {-code} on {muts}"
        assert code in (REFUSED, OPENED, RECEIVED), \
            f"child exit {code} on {muts} (fix_crc={fix_crc})"
        FUZZ_STATS["cases"] += 1
        FUZZ_STATS["refused" if code == REFUSED else "opened"] += 1
        FUZZ_STATS["received"] += code == RECEIVED
    finally:
        unlink_channel_names(path)
        if original_id is not None:
            sync.unlink_channel_semaphores(original_id)


def test_fuzz_report():
    """The fuzz meant something: a good share of its cases got past open() and received."""
    print(f"fuzz cases: {FUZZ_STATS}")
    cases = FUZZ_STATS["cases"]
    assert cases >= FUZZ_EXAMPLES // 2, FUZZ_STATS  # hypothesis may drop duplicates
    assert FUZZ_STATS["opened"] >= cases // 4, FUZZ_STATS
    assert FUZZ_STATS["received"] >= cases // 10, FUZZ_STATS


# --- odd things at a channel's path ----------------------------------------------------------


def test_empty_and_too_short_files(tmp_path):
    for size in (0, 7, 8, 100, layout.LIVE_OFFSET - 1):
        path = tmp_path / f"short-{size}"
        path.write_bytes((layout.MAGIC + bytes(size))[:size])
        with pytest.raises((shmipc.NotAChannel, shmipc.CorruptChannel)):
            shmipc.Channel.open(path)


def test_a_channel_file_cut_short_is_corrupt(channel_path):
    shmipc.Channel.create(channel_path, CAPACITY).close()
    for size in (layout.HEADER_SIZE, layout.HEADER_SIZE + CAPACITY - 4096,
                 layout.HEADER_SIZE + CAPACITY - 1):
        os.truncate(channel_path, size)
        with pytest.raises(shmipc.CorruptChannel, match="truncated or extended"):
            shmipc.Channel.open(channel_path)


def test_a_directory_is_not_a_channel(tmp_path):
    with pytest.raises(shmipc.NotAChannel, match="directory"):
        shmipc.Channel.open(tmp_path)


def test_a_fifo_is_not_a_channel_and_does_not_block(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def child() -> None:
        with pytest.raises(shmipc.NotAChannel, match="not a regular file"):
            shmipc.Channel.open(fifo)

    assert join(fork_run(child), timeout=30) == 0  # a hang would be killed and fail here


def test_a_device_is_not_a_channel():
    with pytest.raises(shmipc.NotAChannel):
        shmipc.Channel.open("/dev/zero")


def test_another_format_version_is_incompatible(channel_path):
    shmipc.Channel.create(channel_path, CAPACITY).close()
    for version in (0, 1, 3, 0xFFFFFFFF):
        with open(channel_path, "r+b") as f:
            f.seek(8)
            f.write(struct.pack("<I", version))
        with pytest.raises(shmipc.IncompatibleChannel, match=f"version {version}"):
            shmipc.Channel.open(channel_path)


def test_regression_corrupt_frames_while_rebuilding_semaphores_leak_no_names(channel_path):
    """Bug (format 1): open() rebuilt the p and c semaphores, then failed counting the corrupt
    frames for the items semaphore and left the two new names in /dev/shm. Now a rebuild
    counts nothing (the semaphores are wake-ups that start at 0): open succeeds, the corrupt
    frame is refused where it is read, and exactly one set of names is left."""
    with shmipc.Channel.create(channel_path, CAPACITY) as ch:
        ch.send_bytes(b"x" * 100)
        names = ch.semaphore_names
    for name in names.values():
        sync.unlink_semaphore(name)
    with open(channel_path, "r+b") as f:  # the frame now claims more than was committed
        f.seek(layout.HEADER_SIZE)
        f.write(struct.pack("<I", 3000))
    with shmipc.Channel.open(channel_path) as ch:
        with pytest.raises(shmipc.CorruptChannel):
            ch.recv_bytes(timeout=1)
        rebuilt = ch.semaphore_names
    prefix = f"/shmipc-{bytes.fromhex(names['i'][8:40]).hex()}-"
    assert sorted(n for n in sync.list_semaphores() if n.startswith(prefix)) == sorted(
        rebuilt.values())
