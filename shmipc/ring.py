"""Frames in the ring: encoding, ring arithmetic, wrap and padding, over a plain memoryview.

A frame is an 8-byte header, then the payload, then zero to seven bytes of padding so that the
next frame starts 8-byte aligned. The header, read as one little-endian uint64, is
``length | tag << 32``. A frame never wraps: when the bytes left before the end of the data
area are fewer than the frame needs, a padding frame (tag ``TAG_PADDING``, its length the bytes
it skips after its own header) fills them and the frame starts at offset 0.

Tags: ``TAG_MESSAGE`` (1) is one message; ``TAG_PADDING`` (2) skips to the end of the data area;
``TAG_BATCH`` (3) is several messages in one frame, written by ``send_many``: its payload is one
msgpack array whose elements are the messages, in order. The array's elements lie back to back
after the array header, so any suffix of them is a plain msgpack stream. Several consumers may
take parts of one batch: the header's ``batch_cursor`` holds the absolute position (same counter
as the positions) of the first element not yet taken from the batch frame at the read position.
A cursor is valid only when it lies strictly inside that frame's payload; any other value (0,
or a cursor left by an earlier batch) means "nothing taken yet". So the two commits stay single
8-byte stores: a consumer that takes part of a batch stores the cursor; one that takes its rest
stores the read position past the frame, which leaves the old cursor stale without touching it.
A consumer killed between them leaves a cursor or a position, each consistent on its own.
Readers bound-check everything: the cursor must point inside the payload, and elements are
decoded only from the bytes of that payload.

Positions are monotonic byte counters modulo 2**64; the offset in the ring is
``position & (capacity - 1)`` (capacity is a power of two, so wrapping at 2**64 keeps offsets
continuous). ``write_position - read_position`` is the number of bytes in use.

Memory ordering (the argument every hand-off rests on):

* The position is the commit. A producer copies the payload, stores the frame header, and only
  then stores the new write position (one aligned 8-byte store, atomic on x86-64 and AArch64).
  A consumer loads the write position, and only then reads headers and payloads below it. On
  x86-64 (TSO) stores are seen in program order and loads are not reordered with older loads,
  so a consumer that sees the position sees the frame. A writer killed mid-copy never moved the
  position: its half-written frame is invisible and is overwritten by the next writer.
* The same holds for the read position in the other direction: a consumer copies a frame out
  before it stores the read position that lets a producer reuse the bytes.
* Registration for a wake-up (``sender_waiting``) is a Dekker pair (store the flag, then load
  the other side's position; the other side stores its position, then loads the flag). Each
  side puts a full barrier between its store and its load: the consumer's is the ``sem_post``
  that releases its lock; the producer's is :func:`full_fence`. So at least one side sees the
  other, and no wake-up is lost.
* ARM (AArch64) is weakly ordered: plain stores may be observed out of order. The semaphore
  operations are barriers there too, but the fast path (a consumer that finds data without
  sleeping) relies on TSO. Running on ARM needs release/acquire stores for the positions,
  which pure Python cannot express; shmipc targets x86-64 and says so.

This module knows nothing of processes or semaphores.
"""

from __future__ import annotations

import _thread

from .errors import CorruptChannel

__all__ = [
    "FRAME_HEADER",
    "TAG_BATCH",
    "TAG_MESSAGE",
    "TAG_PADDING",
    "frame_size",
    "full_fence",
    "max_message_size",
    "read_frame",
    "read_frame_tagged",
    "room_needed",
    "used_bytes",
    "write_frame",
]

FRAME_HEADER = 8
TAG_MESSAGE = 1
TAG_PADDING = 2
TAG_BATCH = 3
U64_MASK = (1 << 64) - 1
_LENGTH_MASK = 0xFFFFFFFF

_fence_lock = _thread.allocate_lock()


def full_fence() -> None:
    """A full memory barrier (a locked atomic instruction on x86-64), from pure Python."""
    _fence_lock.acquire()
    _fence_lock.release()


def frame_size(length: int) -> int:
    """Bytes a frame of ``length`` payload bytes occupies: header plus payload padded to 8."""
    return FRAME_HEADER + ((length + 7) & ~7)


def max_message_size(capacity: int) -> int:
    """The largest payload a ring of ``capacity`` bytes accepts.

    Half the capacity less a header: a frame that must wrap needs its padding plus itself, and
    that must fit into an empty ring whatever the offset.
    """
    return capacity // 2 - FRAME_HEADER


def used_bytes(write_position: int, read_position: int) -> int:
    """Bytes in use between the two positions (modulo 2**64)."""
    return (write_position - read_position) & U64_MASK


def room_needed(write_position: int, capacity: int, length: int) -> int:
    """Bytes the next frame of ``length`` takes at ``write_position``, padding included."""
    size = frame_size(length)
    tail = capacity - (write_position & (capacity - 1))
    return size if size <= tail else tail + size


def write_frame(data: memoryview, words: memoryview, capacity: int, write_position: int,
                payload: bytes | bytearray | memoryview, length: int,
                tag: int = TAG_MESSAGE) -> int:
    """Write one frame at ``write_position`` and return the position after it.

    The caller has checked that :func:`room_needed` bytes are free, and stores the returned
    position in the header only after this returns (the commit).

    Args:
        data: the data area as bytes; ``words`` the same memory cast to uint64 ('Q').
        tag: ``TAG_MESSAGE`` or ``TAG_BATCH``.
    """
    offset = write_position & (capacity - 1)
    size = frame_size(length)
    tail = capacity - offset
    if size > tail:
        words[offset >> 3] = (tail - FRAME_HEADER) | (TAG_PADDING << 32)
        write_position += tail
        offset = 0
    data[offset + FRAME_HEADER:offset + FRAME_HEADER + length] = payload
    words[offset >> 3] = length | (tag << 32)
    return (write_position + size) & U64_MASK


def read_frame(words: memoryview, capacity: int, read_position: int,
               write_position: int) -> tuple[int, int, int]:
    """Locate the frame at ``read_position``; return ``(start, length, next_read_position)``.

    As :func:`read_frame_tagged`, without the tag (a batch frame counts as one frame).
    """
    start, length, next_position, _ = read_frame_tagged(words, capacity, read_position,
                                                         write_position)
    return start, length, next_position


def read_frame_tagged(words: memoryview, capacity: int, read_position: int,
                      write_position: int) -> tuple[int, int, int, int]:
    """Locate the frame at ``read_position``; return ``(start, length, next_position, tag)``.

    ``start`` is the payload's byte offset in the data area; ``tag`` is ``TAG_MESSAGE`` or
    ``TAG_BATCH`` (padding is skipped). Everything read from shared memory
    is checked before use: a frame that claims more bytes than were committed, an unknown tag,
    or padding that does not end at the end of the ring raises :class:`CorruptChannel`.
    The caller has checked that the ring is not empty.
    """
    available = (write_position - read_position) & U64_MASK
    if available > capacity or read_position & 7:
        raise CorruptChannel(
            f"positions are impossible (read {read_position}, write {write_position}, "
            f"capacity {capacity})"
        )
    offset = read_position & (capacity - 1)
    header = words[offset >> 3]
    tag = header >> 32
    if tag == TAG_PADDING:
        skip = capacity - offset
        if (header & _LENGTH_MASK) != skip - FRAME_HEADER or skip >= available:
            raise CorruptChannel(f"a padding frame at offset {offset} is malformed")
        read_position = (read_position + skip) & U64_MASK
        available -= skip
        offset = 0
        header = words[0]
        tag = header >> 32
    length = header & _LENGTH_MASK
    size = FRAME_HEADER + ((length + 7) & ~7)
    if (tag != TAG_MESSAGE and tag != TAG_BATCH) or size > available or offset + size > capacity:
        raise CorruptChannel(
            f"a frame at offset {offset} is malformed (tag {tag}, length {length}, "
            f"{available} bytes committed)"
        )
    return offset + FRAME_HEADER, length, (read_position + size) & U64_MASK, tag
