"""The out-bridge's outbox: a small append-only file of messages taken from the local channel
whose publication JetStream has not acknowledged yet.

Why it exists: the channel's public API commits (removes) a message when its ``recv_view`` block
ends, and shows one message at a time. Waiting inside each block for JetStream's acknowledgement
would allow one publication in flight (one network round trip per message). Instead each message
is appended here *before* its block ends, so that the bridge can keep many publications in
flight and still lose nothing when it is killed: a message is always in the channel, in this
file, or acknowledged by JetStream (usually two of them), never in none.

Layout (all little-endian)::

    header   0  8s  magic b"SHMBRJ2\0"
             8  16s source id (the channel id)
            24  Q   acked_through: every record at or before this key was acknowledged
            32  Q   journaled_through: the last key ever appended (survives compaction)
            40  I   flags: bit 0 = acked_through is valid, bit 1 = journaled_through is valid
            44  I   epoch: records of another epoch are stale
            48  16x reserved
    records     Q position, I length, I epoch, I crc32 of those 16 bytes, 4x; then the payload

A record is written payload first, then its 24-byte header: both are in the page cache when the
``pwrite`` returns, so the record survives a ``kill -9`` (``fsync`` is not needed for that; it
is what a machine crash would need). A kill before the header is written leaves no record (the
bytes there are of an older epoch or none), a kill during it a header whose CRC fails: either
way its message was not yet committed in the channel, so nothing is lost.

Compaction, once every record is acknowledged and the file has grown past ``compact_size``,
draws a new random epoch into the header and starts writing at the front again: the file keeps
its size and its pages (no truncation, no page churn), and the old records become stale.

Keys are the channel's read positions, monotonic modulo 2**64: compared by signed difference.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from dataclasses import dataclass

HEADER = struct.Struct("<8s16sQQII16x")
RECORD = struct.Struct("<QIII4x")
RECORD_KEY = struct.Struct("<QII")
MAGIC = b"SHMBRJ2\0"
ACKED_VALID = 1
JOURNALED_VALID = 2
U64 = (1 << 64) - 1
DEFAULT_COMPACT_SIZE = 16 << 20
MAX_RECORD = 1 << 34


def after(a: int, b: int) -> bool:
    """True if position ``a`` comes after ``b`` (modulo 2**64)."""
    return 0 < ((a - b) & U64) < (1 << 63)


class JournalError(RuntimeError):
    """The outbox file is not an outbox, or another bridge holds it."""


@dataclass(frozen=True)
class Entry:
    """One journaled message: its position in the source and its bytes."""

    position: int
    payload: bytes


class Outbox:
    """The outbox file of one out-bridge (see the module docstring). Not thread-safe: one
    thread at a time (the bridge hands it between its event loop and one worker thread)."""

    def __init__(self, path: str, fd: int, source_id: bytes, acked: int | None,
                 journaled: int | None, epoch: int, tail: int, pending: list[Entry],
                 compact_size: int) -> None:
        """Private: use :meth:`open`."""
        self.path = path
        self._fd = fd
        self.source_id = source_id
        self.acked_through = acked
        self.journaled_through = journaled
        self._written_acked = acked
        self._epoch = epoch
        self._tail = tail
        self.recovered = pending
        self.compact_size = compact_size

    @classmethod
    def open(cls, path: str, source_id: bytes, *,
             compact_size: int = DEFAULT_COMPACT_SIZE) -> Outbox:
        """Open (or create) the outbox at ``path``, lock it, and read back what it holds.

        :attr:`recovered` lists the records after ``acked_through``: messages that may not have
        reached JetStream and must be published again (with the same ids) before anything new.
        :attr:`source_id` is the id they belong to, which may differ from ``source_id`` when the
        channel was made anew; :meth:`reset` adopts the new one once they are acknowledged.

        Raises:
            JournalError: another process holds the file, or it is not an outbox.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalError(f"{path}: another bridge is using this outbox; run one "
                                   "out-bridge per outbox (--outbox)") from None
            head = os.pread(fd, HEADER.size, 0)
            if len(head) < HEADER.size:
                # New, or a header torn at creation; anything else is somebody's file.
                if head[:8] != MAGIC[:len(head[:8])]:
                    raise JournalError(f"{path}: not a shmipc bridge outbox (wrong magic); "
                                       "give another --outbox path")
                os.ftruncate(fd, 0)
                epoch = _new_epoch(0)
                os.pwrite(fd, HEADER.pack(MAGIC, source_id, 0, 0, 0, epoch), 0)
                return cls(path, fd, source_id, None, None, epoch, HEADER.size, [],
                           compact_size)
            magic, sid, acked, journaled, flags, epoch = HEADER.unpack(head)
            if magic != MAGIC:
                raise JournalError(f"{path}: not a shmipc bridge outbox (wrong magic); give "
                                   "another --outbox path")
            acked_v = acked if flags & ACKED_VALID else None
            journaled_v = journaled if flags & JOURNALED_VALID else None
            pending, tail, last = _scan(fd, acked_v, epoch)
            if last is not None and (journaled_v is None or after(last, journaled_v)):
                journaled_v = last
            return cls(path, fd, sid, acked_v, journaled_v, epoch, tail, pending, compact_size)
        except BaseException:
            os.close(fd)
            raise

    def holds(self, position: int) -> bool:
        """True if the message at ``position`` of this source was journaled already (its
        channel commit may not have happened when the previous bridge was killed)."""
        return self.journaled_through is not None and not after(position,
                                                                  self.journaled_through)

    def append(self, position: int, payload: bytes | memoryview) -> None:
        """Append one message; when this returns it survives the process being killed."""
        length = len(payload)
        written = os.pwrite(self._fd, payload, self._tail + RECORD.size) if length else 0
        key = RECORD_KEY.pack(position, length, self._epoch)
        written += os.pwrite(self._fd, RECORD.pack(position, length, self._epoch,
                                                   zlib.crc32(key)), self._tail)
        if written != RECORD.size + length:
            raise OSError(f"{self.path}: short write to the outbox ({written} bytes); is the "
                          "disk full?")
        self._tail += written
        self.journaled_through = position

    def acknowledge(self, position: int) -> None:
        """Note that every record up to ``position`` is acknowledged (kept in memory; written
        by :meth:`flush`)."""
        self.acked_through = position

    @property
    def size(self) -> int:
        """Bytes in use (header and records of the current epoch)."""
        return self._tail

    def all_acknowledged(self) -> bool:
        """True if no record is waiting for an acknowledgement."""
        return self.journaled_through is None or self.acked_through == self.journaled_through

    def flush(self) -> None:
        """Write ``acked_through`` to the header, so that a restart republishes less."""
        if self.acked_through != self._written_acked:
            self._write_header()
            self._written_acked = self.acked_through

    def compact(self, force: bool = False) -> bool:
        """Start over at the front (a new epoch) if every record is acknowledged and more than
        ``compact_size`` bytes are in use (or ``force``). Returns True if it did."""
        if not self.all_acknowledged() or self._tail == HEADER.size:
            return False
        if not force and self._tail < self.compact_size:
            return False
        self._epoch = _new_epoch(self._epoch)
        self._write_header()  # one pwrite: the keys and the epoch that makes the records stale
        self._written_acked = self.acked_through
        self._tail = HEADER.size
        return True

    def reset(self, source_id: bytes) -> None:
        """Adopt a new source (the channel was made anew) once every record is acknowledged."""
        if not self.all_acknowledged():
            raise JournalError("records of the previous source are not acknowledged yet")
        self.source_id = source_id
        self.acked_through = self.journaled_through = self._written_acked = None
        self._epoch = _new_epoch(self._epoch)
        self._write_header()
        self._tail = HEADER.size
        self.recovered = []

    def _write_header(self) -> None:
        flags = (ACKED_VALID if self.acked_through is not None else 0) | \
            (JOURNALED_VALID if self.journaled_through is not None else 0)
        os.pwrite(self._fd, HEADER.pack(MAGIC, self.source_id, self.acked_through or 0,
                                        self.journaled_through or 0, flags, self._epoch), 0)

    def close(self) -> None:
        """Write the header and release the file (and its lock). Idempotent."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            self.flush()
        os.close(self._fd)
        self._fd = -1


def _new_epoch(old: int) -> int:
    """A random epoch, not 0 and not ``old``: stale bytes (or a message's payload crafted to
    look like a record header) would have to guess it."""
    while True:
        epoch = int.from_bytes(os.urandom(4), "little")
        if epoch not in (0, old):
            return epoch


def _scan(fd: int, acked: int | None, epoch: int) -> tuple[list[Entry], int, int | None]:
    """Read the records of ``epoch``: those after ``acked``, the offset after the last one,
    and the last one's position."""
    pending: list[Entry] = []
    offset = HEADER.size
    last: int | None = None
    size = os.fstat(fd).st_size
    while offset + RECORD.size <= size:
        position, length, record_epoch, crc = RECORD.unpack(os.pread(fd, RECORD.size, offset))
        if record_epoch != epoch or crc != zlib.crc32(RECORD_KEY.pack(position, length,
                                                                      record_epoch)):
            break
        if length > MAX_RECORD or offset + RECORD.size + length > size or \
                (last is not None and not after(position, last)):
            break
        if acked is None or after(position, acked):
            payload = os.pread(fd, length, offset + RECORD.size)
            if len(payload) != length:
                break
            pending.append(Entry(position, payload))
        offset += RECORD.size + length
        last = position
    return pending, offset, last
