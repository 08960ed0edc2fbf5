"""The channel header (format version 2): one page in front of the ring, and the frame format.

All integers are little-endian and fixed-width; every field is aligned to its size and each
side's position sits on its own 64-byte cache line, so a C program reads the file with the
struct of ``src/core.h`` (``docs/FORMAT.md`` draws the same; ``tests/test_layout.py`` checks
that this module, the C compiler's layout and the document agree). The fixed part (bytes
0..383) is written once, when the channel is created, and guarded by a CRC-32; the live part
(from byte 384) is the compiled core's, which validates every value it reads.

::

    offset size  field             fixed part, written once, CRC-32 over 0..63 (crc as 0) + schema
    ------ ----  ----------------  -------------------------------------------------------------
         0    8  magic             b"SHMIPC\\x1a\\n"
         8    4  format_version    2
        12    4  header_size       4096: the data area starts here
        16    8  capacity          bytes in the data area, a power of two
        24    4  kind              1 = byte frames (bytes and msgpack), 2 = fixed-size records
        28    4  record_size       bytes a record (kind 2), else 0
        32   16  channel_id        random; the semaphore names derive from it
        48    4  creator_pid
        52    4  schema_length     bytes of schema text at 128
        56    8  created_ns        time.time_ns() at creation
        64    4  header_crc        crc32 of bytes 0..63 with this field as 0, then the schema text
        68   60  reserved          zero
       128  256  schema            UTF-8 text, NUL-padded (record channels: the record schema)
                                   live part (the core's; C11 atomics)
       384    8  write_position    bytes ever committed by producers (monotonic, mod 2**64)
       392    8  sent_total        messages ever committed
       400    8  producer_lock     identity of the holder, 0 = free (see IDENTITY below)
       448    8  read_position     bytes ever consumed by consumers (monotonic, mod 2**64)
       456    8  received_total    messages ever consumed
       464    8  consumer_lock     identity of the holder, 0 = free
       512    4  closed            1 once close_send() was called
       516    4  semaphore_generation  in the semaphore names; raised when they are rebuilt
       520    8  recoveries        locks taken over from holders proven dead
       576   32  sleepers          4 x u64 masks, one per role (items, space, producer lock,
                                   consumer lock): bit i = waiter slot i sleeps on that role
       640  128  namespaces        16 x u64: inode of each pid namespace seen, 0 = free
       768    8  sequence_last     send_sequenced: the sequence of its last message...
       776    8  sequence_previous ...the one before it...
       784    8  sequence_end      ...and the position after that message: the applied
                                   sequence is sequence_last once write_position reached it
      1024  512  waiter_slots      64 x u64: identity of each slot's owner, 0 = free
      1536   32  ready_armed       4 x u64 masks, by role as sleepers: bit i = ready slot i
                                   (a waiter on a file descriptor) wants a signal for that role
      1600  224  ready_owners      28 x u64: identity of each ready slot's owner, 0 = free
      1824  224  ready_epochs      28 x u64: raised by a slot's owner each time it arms
      2048    8  tasks_done        shmipc.JoinableQueue: task_done() calls ever made; the
                                   unfinished tasks are sent_total - tasks_done
      2056    8  queue_maxsize     shmipc.Queue: its maxsize (0 = no bound but the ring)
      4096       data area         ``capacity`` bytes of frames

A frame is an 8-byte header (``length | tag << 32`` as one little-endian uint64), the payload,
and padding to 8 bytes; a padding frame fills the tail of the data area when the next frame
does not fit before its end. The write position is the commit: a frame is visible only once it
moves past it.

An identity word names a process: bits 0..21 the pid, 22..27 the index+1 of its pid namespace
in ``namespaces`` (0 = unknown), 28..63 its start time in clock ticks modulo 2**36.

This module knows nothing of processes or semaphores.
"""

from __future__ import annotations

import enum
import os
import struct
import time
import zlib
from dataclasses import dataclass

from .errors import CorruptChannel, IncompatibleChannel, NotAChannel

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "ChannelKind",
    "HeaderInfo",
    "capacity_for",
    "frame_size",
    "identity_pid",
    "max_message_size",
]

MAGIC = b"SHMIPC\x1a\n"
FORMAT_VERSION = 2
HEADER_SIZE = 4096
MIN_CAPACITY = 4096
MAX_CAPACITY = 1 << 34  # keeps the message count below SEM_VALUE_MAX (2**31 - 1)
SCHEMA_MAX = 256

# The fixed part, as one struct: magic, version, header size, capacity, kind, record size,
# channel id, creator pid, schema length, created_ns, crc.
FIXED = struct.Struct("<8sIIQII16sIIQI")
FIXED_CRC_OFFSET = 64
SCHEMA_OFFSET = 128
LIVE_OFFSET = 384

# Byte offsets of the live fields.
WRITE_POSITION = 384
SENT_TOTAL = 392
PRODUCER_LOCK = 400
READ_POSITION = 448
RECEIVED_TOTAL = 456
CONSUMER_LOCK = 464
CLOSED = 512
SEMAPHORE_GENERATION = 516
RECOVERIES = 520
SLEEPERS = 576
NAMESPACES = 640
NAMESPACE_SLOTS = 16
SEQUENCE_LAST = 768
SEQUENCE_PREVIOUS = 776
SEQUENCE_END = 784
WAITER_SLOTS = 1024
WAITER_SLOT_COUNT = 64
READY_ARMED = 1536
READY_OWNERS = 1600
READY_EPOCHS = 1824
READY_SLOT_COUNT = 28
TASKS_DONE = 2048
QUEUE_MAXSIZE = 2056
LIVE = struct.Struct("<QQQ40xQQQ40xIIQ")
"""The live fields from WRITE_POSITION to RECOVERIES, for readers of a snapshot (inspect)."""

U64_MASK = (1 << 64) - 1

# Frames.
FRAME_HEADER = 8
TAG_MESSAGE = 1
TAG_PADDING = 2

# Identity words.
IDENTITY_PID_MASK = (1 << 22) - 1
IDENTITY_NS_SHIFT = 22
IDENTITY_START_SHIFT = 28


def identity_pid(word: int) -> int:
    """The pid inside an identity word (a lock holder or a registered sleeper)."""
    return word & IDENTITY_PID_MASK


def frame_size(length: int) -> int:
    """Bytes a frame of ``length`` payload bytes occupies: header plus payload padded to 8."""
    return FRAME_HEADER + ((length + 7) & ~7)


def max_message_size(capacity: int) -> int:
    """The largest payload a ring of ``capacity`` bytes accepts: half of it less a header, so
    that a frame that must wrap (padding plus itself) fits an empty ring at any offset."""
    return capacity // 2 - FRAME_HEADER


class ChannelKind(enum.IntEnum):
    """What the data area holds."""

    FRAMES = 1
    RECORDS = 2


def capacity_for(requested: int) -> int:
    """Return the data capacity used for a request: the next power of two, at least 4096.

    A power of two keeps ring offsets continuous when the 64-bit positions wrap.
    """
    if not isinstance(requested, int) or isinstance(requested, bool):
        raise TypeError(f"capacity must be an int, not {type(requested).__name__}")
    if requested <= 0:
        raise ValueError(f"capacity must be positive (got {requested})")
    if requested > MAX_CAPACITY:
        raise ValueError(f"capacity {requested} is above the maximum of {MAX_CAPACITY} bytes")
    return max(MIN_CAPACITY, 1 << (requested - 1).bit_length())


@dataclass(frozen=True)
class HeaderInfo:
    """The fixed part of a channel header, parsed and validated."""

    format_version: int
    header_size: int
    capacity: int
    kind: ChannelKind
    record_size: int
    channel_id: bytes
    creator_pid: int
    schema: str
    created_ns: int

    @property
    def file_size(self) -> int:
        """The size a channel file with this header must have."""
        return self.header_size + self.capacity


def _crc(fixed: bytes, schema: bytes) -> int:
    return zlib.crc32(schema, zlib.crc32(fixed[:FIXED_CRC_OFFSET])) & 0xFFFFFFFF


def initialize(
    buf: memoryview,
    capacity: int,
    *,
    kind: ChannelKind = ChannelKind.FRAMES,
    record_size: int = 0,
    schema: str = "",
    channel_id: bytes | None = None,
    initial_position: int = 0,
) -> HeaderInfo:
    """Write a fresh header into ``buf`` (a zeroed mapping of HEADER_SIZE + capacity bytes).

    ``initial_position`` starts both positions at that value (tests use values near 2**64).
    """
    if capacity != capacity_for(capacity):
        raise ValueError(f"capacity {capacity} is not a power of two >= {MIN_CAPACITY}")
    if len(buf) < HEADER_SIZE + capacity:
        raise ValueError("buffer is smaller than header + capacity")
    schema_bytes = schema.encode("utf-8")
    if len(schema_bytes) > SCHEMA_MAX:
        raise ValueError(f"schema text is {len(schema_bytes)} bytes; at most {SCHEMA_MAX} fit")
    if channel_id is None:
        channel_id = os.urandom(16)
    created_ns = time.time_ns()
    fields = [MAGIC, FORMAT_VERSION, HEADER_SIZE, capacity, int(kind), record_size,
              channel_id, os.getpid(), len(schema_bytes), created_ns, 0]
    fixed = FIXED.pack(*fields)
    fields[-1] = _crc(fixed, schema_bytes)
    buf[:HEADER_SIZE] = bytes(HEADER_SIZE)
    FIXED.pack_into(buf, 0, *fields)
    buf[SCHEMA_OFFSET:SCHEMA_OFFSET + len(schema_bytes)] = schema_bytes
    position = (initial_position & U64_MASK).to_bytes(8, "little")
    buf[WRITE_POSITION:WRITE_POSITION + 8] = position
    buf[READ_POSITION:READ_POSITION + 8] = position
    return HeaderInfo(FORMAT_VERSION, HEADER_SIZE, capacity, kind, record_size, channel_id,
                      os.getpid(), schema, created_ns)


def parse(header: bytes, *, path: str | None = None, file_size: int | None = None) -> HeaderInfo:
    """Validate the fixed part of a header and return it.

    Args:
        header: at least the first LIVE_OFFSET bytes of the file (fewer means truncated).
        path: named in error messages.
        file_size: when given, must equal header size + capacity.

    Raises:
        NotAChannel: wrong magic, or too short to hold a header at all.
        IncompatibleChannel: another format version.
        CorruptChannel: a bad CRC, an impossible size or kind, or a file of the wrong size.
    """
    where = f"{path!r}" if path else "the buffer"
    if len(header) < len(MAGIC) or header[: len(MAGIC)] != MAGIC:
        raise NotAChannel(
            f"{where} is not a shmipc channel (no shmipc magic at its start); "
            "check the path, or create a channel there with Channel.create",
            path=path,
        )
    if len(header) < LIVE_OFFSET:
        raise CorruptChannel(
            f"{where} is truncated: {len(header)} bytes, less than a channel header; "
            "it cannot be recovered, remove it and create the channel again",
            path=path,
        )
    (magic, version, header_size, capacity, kind, record_size, channel_id, creator_pid,
     schema_length, created_ns, crc) = FIXED.unpack_from(header, 0)
    if version != FORMAT_VERSION:
        raise IncompatibleChannel(
            f"{where} is a shmipc channel of format version {version}; this shmipc reads "
            f"version {FORMAT_VERSION} only: drain it with the shmipc release that created it "
            "(0.1 for version 1), then create it again with this one",
            path=path,
        )
    if schema_length > SCHEMA_MAX:
        raise CorruptChannel(f"{where}: schema length {schema_length} is above {SCHEMA_MAX}",
                             path=path)
    schema_bytes = bytes(header[SCHEMA_OFFSET:SCHEMA_OFFSET + schema_length])
    unsummed = bytearray(header[:FIXED.size])
    unsummed[FIXED_CRC_OFFSET:FIXED_CRC_OFFSET + 4] = bytes(4)
    if _crc(bytes(unsummed), schema_bytes) != crc:
        raise CorruptChannel(
            f"{where}: the header checksum does not match, so its fields cannot be trusted; "
            "the file was overwritten by something else than shmipc",
            path=path,
        )
    if header_size != HEADER_SIZE:
        raise CorruptChannel(f"{where}: header size {header_size}, expected {HEADER_SIZE}",
                             path=path)
    if capacity < MIN_CAPACITY or capacity > MAX_CAPACITY or capacity & (capacity - 1):
        raise CorruptChannel(f"{where}: capacity {capacity} is not a power of two in range",
                             path=path)
    try:
        channel_kind = ChannelKind(kind)
    except ValueError:
        raise CorruptChannel(f"{where}: unknown channel kind {kind}", path=path) from None
    if channel_kind is ChannelKind.RECORDS and not 0 < record_size <= max_message_size(capacity):
        raise CorruptChannel(f"{where}: record size {record_size} is impossible", path=path)
    try:
        schema = schema_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptChannel(f"{where}: schema text is not UTF-8", path=path) from None
    info = HeaderInfo(version, header_size, capacity, channel_kind, record_size,
                      bytes(channel_id), creator_pid, schema, created_ns)
    if file_size is not None and file_size != info.file_size:
        raise CorruptChannel(
            f"{where} is {file_size} bytes but its header says {info.file_size} "
            f"({header_size} header + {capacity} capacity): the file was truncated or "
            "extended by another program; its messages cannot be trusted",
            path=path,
        )
    return info
