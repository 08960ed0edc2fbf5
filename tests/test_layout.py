"""layout: every header offset pinned, and validation of the fixed part."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from shmipc import _core, layout, sync
from shmipc.errors import CorruptChannel, IncompatibleChannel, NotAChannel


def test_offsets_are_pinned():
    # docs/FORMAT.md and any C reader depend on these: change them only with a new version.
    assert layout.MAGIC == b"SHMIPC\x1a\n"
    assert layout.FORMAT_VERSION == 2
    assert layout.HEADER_SIZE == 4096
    assert layout.FIXED.format == "<8sIIQII16sIIQI"
    assert layout.FIXED.size == 68
    offsets = {
        "magic": 0, "format_version": 8, "header_size": 12, "capacity": 16, "kind": 24,
        "record_size": 28, "channel_id": 32, "creator_pid": 48, "schema_length": 52,
        "created_ns": 56, "header_crc": 64,
    }
    codes = ["8s", "I", "I", "Q", "I", "I", "16s", "I", "I", "Q", "I"]
    at = 0
    for (name, expected), code in zip(offsets.items(), codes, strict=True):
        assert at == expected, name
        at += struct.calcsize("<" + code)
    assert layout.FIXED_CRC_OFFSET == 64
    assert layout.SCHEMA_OFFSET == 128 and layout.SCHEMA_MAX == 256
    assert (layout.WRITE_POSITION, layout.SENT_TOTAL, layout.PRODUCER_LOCK) == (384, 392, 400)
    assert (layout.READ_POSITION, layout.RECEIVED_TOTAL, layout.CONSUMER_LOCK) == (448, 456, 464)
    assert (layout.CLOSED, layout.SEMAPHORE_GENERATION, layout.RECOVERIES) == (512, 516, 520)
    assert (layout.SLEEPERS, layout.NAMESPACES, layout.WAITER_SLOTS) == (576, 640, 1024)
    assert (layout.READY_ARMED, layout.READY_OWNERS, layout.READY_EPOCHS) == (1536, 1600, 1824)
    assert layout.READY_EPOCHS + 8 * layout.READY_SLOT_COUNT == 2048  # the Queue starts there
    assert layout.READY_ARMED % 64 == 0  # the armed masks alone on their cache line
    assert (layout.TASKS_DONE, layout.QUEUE_MAXSIZE) == (2048, 2056)
    assert layout.LIVE.size == layout.RECOVERIES + 8 - layout.WRITE_POSITION
    # Each side's position on its own 64-byte cache line.
    assert layout.WRITE_POSITION // 64 != layout.READ_POSITION // 64
    assert layout.WRITE_POSITION % 64 == 0 and layout.READ_POSITION % 64 == 0


def test_the_c_compiler_lays_the_header_out_as_this_module_says():
    c = _core._header_offsets()
    assert {name: c[name] for name in (
        "magic", "format_version", "header_size", "capacity", "kind", "record_size",
        "channel_id", "creator_pid", "schema_length", "created_ns", "header_crc")} == {
        "magic": 0, "format_version": 8, "header_size": 12, "capacity": 16, "kind": 24,
        "record_size": 28, "channel_id": 32, "creator_pid": 48, "schema_length": 52,
        "created_ns": 56, "header_crc": 64}
    assert c["schema"] == layout.SCHEMA_OFFSET
    assert c["write_position"] == layout.WRITE_POSITION
    assert c["sent_total"] == layout.SENT_TOTAL
    assert c["producer_lock"] == layout.PRODUCER_LOCK
    assert c["read_position"] == layout.READ_POSITION
    assert c["received_total"] == layout.RECEIVED_TOTAL
    assert c["consumer_lock"] == layout.CONSUMER_LOCK
    assert c["closed"] == layout.CLOSED
    assert c["semaphore_generation"] == layout.SEMAPHORE_GENERATION
    assert c["recoveries"] == layout.RECOVERIES
    assert c["sleepers"] == layout.SLEEPERS
    assert c["namespaces"] == layout.NAMESPACES
    assert c["waiter_slots"] == layout.WAITER_SLOTS
    assert (c["ready_armed"], c["ready_owners"], c["ready_epochs"]) == (
        layout.READY_ARMED, layout.READY_OWNERS, layout.READY_EPOCHS)
    assert (c["tasks_done"], c["queue_maxsize"]) == (layout.TASKS_DONE, layout.QUEUE_MAXSIZE)
    assert (c["sequence_last"], c["sequence_previous"], c["sequence_end"]) == (
        layout.SEQUENCE_LAST, layout.SEQUENCE_PREVIOUS, layout.SEQUENCE_END)
    assert _core.FORMAT_VERSION == layout.FORMAT_VERSION
    assert _core.HEADER_SIZE == layout.HEADER_SIZE


def test_format_md_draws_the_same_offsets():
    text = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()
    for name, offset in (("write_position", layout.WRITE_POSITION),
                         ("producer_lock", layout.PRODUCER_LOCK),
                         ("read_position", layout.READ_POSITION),
                         ("consumer_lock", layout.CONSUMER_LOCK),
                         ("closed", layout.CLOSED),
                         ("semaphore_generation", layout.SEMAPHORE_GENERATION),
                         ("recoveries", layout.RECOVERIES),
                         ("sleepers", layout.SLEEPERS),
                         ("namespaces", layout.NAMESPACES),
                         ("sequence_last", layout.SEQUENCE_LAST),
                         ("sequence_end", layout.SEQUENCE_END),
                         ("waiter_slots", layout.WAITER_SLOTS),
                         ("ready_armed", layout.READY_ARMED),
                         ("ready_owners", layout.READY_OWNERS),
                         ("ready_epochs", layout.READY_EPOCHS),
                         ("tasks_done", layout.TASKS_DONE),
                         ("queue_maxsize", layout.QUEUE_MAXSIZE)):
        assert re.search(rf"\|\s*{offset}\s*\|[^|\n]*\|\s*`{name}`", text), name


def test_semaphore_names_agree_between_python_and_c():
    channel_id = bytes(range(16))
    for role in sync.ROLES:
        for generation in (0, 1, 4294967295):
            assert (sync.semaphore_name(channel_id, role, generation)
                    == _core.semaphore_name(channel_id, generation, role))


@pytest.mark.parametrize(("requested", "used"), [
    (1, 4096), (4096, 4096), (4097, 8192), (1 << 20, 1 << 20), (1_000_000, 1 << 20),
])
def test_capacity_rounds_up_to_a_power_of_two(requested, used):
    assert layout.capacity_for(requested) == used


@pytest.mark.parametrize("bad", [0, -1, 1 << 35])
def test_capacity_out_of_range(bad):
    with pytest.raises(ValueError):
        layout.capacity_for(bad)


def fresh_header(**kwargs) -> bytearray:
    buf = bytearray(layout.HEADER_SIZE + 4096)
    layout.initialize(memoryview(buf), 4096, **kwargs)
    return buf


def test_initialize_then_parse_roundtrip():
    buf = fresh_header(schema="people: 4s name, i age", kind=layout.ChannelKind.RECORDS,
                       record_size=8)
    info = layout.parse(bytes(buf[:layout.LIVE_OFFSET]), file_size=len(buf))
    assert info.capacity == 4096 and info.record_size == 8
    assert info.kind is layout.ChannelKind.RECORDS
    assert info.schema == "people: 4s name, i age"
    assert len(info.channel_id) == 16


def test_wrong_magic_is_not_a_channel():
    with pytest.raises(NotAChannel):
        layout.parse(b"hello world" * 100)


def test_short_header_is_corrupt():
    with pytest.raises(CorruptChannel, match="truncated"):
        layout.parse(bytes(fresh_header()[:100]))


def test_other_version_is_incompatible():
    buf = fresh_header()
    struct.pack_into("<I", buf, 8, 1)
    with pytest.raises(IncompatibleChannel, match="format version 1; .* drain it"):
        layout.parse(bytes(buf[:layout.LIVE_OFFSET]))


@pytest.mark.parametrize("offset", [12, 16, 24, 32, 47, 60, 130])
def test_any_flipped_fixed_byte_fails_the_checksum(offset):
    buf = fresh_header(schema="x" * 10)
    buf[offset] ^= 0x40
    with pytest.raises(CorruptChannel):
        layout.parse(bytes(buf[:layout.LIVE_OFFSET]))


def test_file_size_must_match():
    buf = fresh_header()
    with pytest.raises(CorruptChannel, match="truncated or extended"):
        layout.parse(bytes(buf[:layout.LIVE_OFFSET]), file_size=len(buf) - 1)
