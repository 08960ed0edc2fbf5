"""``RecordChannel``: fixed-size records through fixed slots, the textbook bounded buffer.

A record channel is a :class:`~shmipc.channel.Channel` file (or anonymous mapping) of kind
``RECORDS``: the header stores the record size and the schema text (:attr:`Record.schema`), and
the data area is an array of ``slots`` records, where ``slots`` is the largest power of two of
records that fits the capacity. Records are written with ``struct.pack_into`` straight into
their slot and read with ``struct.unpack_from``: no msgpack, no frame headers.

Positions count **slots**, not bytes: ``write_position`` is the number of records ever
committed, ``read_position`` the number ever consumed (monotonic modulo 2**64); the slot of a
position is ``position % slots`` (a power of two, so the wrap at 2**64 stays continuous), and
``write_position - read_position`` is the number of records waiting. As positions start at 0,
the header's ``sent_total``/``received_total`` equal them and are stored as copies of them (one
store, no read-modify-write). :meth:`statistics` reports
``used``/``free``/``capacity`` in bytes (slots times the record size) and ``messages`` in
records, so an inspecting tool sees the same meaning as for a frame channel.

The semaphores of the four roles serve the bounded buffer:

======  ==============================================================================
role    use here
======  ==============================================================================
s       ``empty``: free slots (initial value = slots); a producer waits on it
i       ``full``: committed records; a consumer waits on it
p, c    robust producer / consumer locks, for many producers and many consumers
======  ==============================================================================

A producer takes an ``empty`` token, the producer lock, writes the slot at the write position,
commits by storing the new write position, releases the lock and posts ``full``; a consumer
mirrors it. As in a frame channel the positions are the truth and the semaphores only count:
the check for a free slot (or a waiting record) is made again under the lock from the
positions, a waiter re-checks every ``sync.LIVENESS_INTERVAL`` even without a token, and a token
that does not match the positions is dropped. So a token lost with a killed process delays one
record by at most that interval and corrects itself; nothing is torn, duplicated or overwritten
unread, because only the position stores commit.

``send_record``/``recv_record`` without a timeout first try the whole protocol without waiting
(token, lock, slot; inlined: no helper calls); anything that would wait (no token, a lock held,
a full or empty ring) goes the general way, which waits in liveness slices after a short spin
on the semaphore's value. The holder slots are written as ``sync.RobustLock`` writes them, so a
process killed inside either path is recovered from the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from operator import attrgetter
from typing import Any

import posix_ipc

from . import layout, sync
from .channel import Channel, ChannelStatistics
from .errors import (
    ChannelClosed,
    CorruptChannel,
    Empty,
    EndOfChannel,
    Full,
    IncompatibleChannel,
)
from .layout import (
    HEADER_SIZE,
    I_CLOSED,
    Q_CONSUMER_HOLDER,
    Q_PRODUCER_HOLDER,
    Q_READ,
    Q_RECEIVED,
    Q_RECOVERIES,
    Q_SENT,
    Q_WRITE,
    U64_MASK,
    ChannelKind,
    HeaderInfo,
)
from .mapping import Mapping
from .records import Record, RecordError

__all__ = ["DEFAULT_SLOTS", "RecordChannel", "slots_for"]

DEFAULT_SLOTS = 4096
"""Default number of slots of a new record channel."""

_holder = sync.next_holder_value
_RELEASED = sync.RELEASED
_LOCK_GRACE = 0.005  # a *_nowait call still waits this long for a lock held by a running peer


def slots_for(info: HeaderInfo) -> int:
    """Slots of the record channel described by ``info``: the largest power of two that fits."""
    fit = info.capacity // info.record_size
    if fit < 1:
        raise CorruptChannel(f"record size {info.record_size} is above capacity {info.capacity}")
    return 1 << (fit.bit_length() - 1)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None (got {timeout})")
    return time.monotonic() + timeout


def _lock_deadline(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline, time.monotonic() + _LOCK_GRACE)


_SPIN = 200
"""Times a waiter reads the semaphore's value (``sem_getvalue``: no system call) before it
sleeps in the kernel: a running peer usually posts within that time, and a futex sleep and
wake-up cost far more than the spin."""


def _wait_token(sem: posix_ipc.Semaphore, deadline: float | None) -> bool:
    """Take one token of a counting semaphore, waiting one liveness slice at most."""
    try:
        sem.acquire(0)
        return True
    except posix_ipc.BusyError:
        pass
    for _ in range(_SPIN):
        if sem.value:
            try:
                sem.acquire(0)
                return True
            except posix_ipc.BusyError:
                pass  # another waiter took it
    wait = sync.LIVENESS_INTERVAL
    if deadline is not None:
        wait = min(wait, deadline - time.monotonic())
        if wait <= 0:
            return False
    return sync.timed_wait(sem, wait)


class RecordChannel(Channel):
    """A multi-producer, multi-consumer channel of fixed-size records (no msgpack).

    Make one with :meth:`create`, :meth:`open`, :meth:`open_or_create` or :meth:`anonymous`.
    :meth:`send_record` takes a value of the record type, a tuple or a dict and packs it
    straight into a slot; :meth:`recv_record` returns a value of the record type
    (:meth:`recv_tuple` a plain tuple, a little faster). ``send``/``recv`` are the same calls,
    and iterating yields records until the channel is closed for sending and drained. The
    semantics are those of :class:`~shmipc.channel.Channel`: exactly once, per-producer order,
    back-pressure, ``timeout=``, ``*_nowait``, :meth:`close_send` then :class:`EndOfChannel`,
    durability of a file channel. The bytes calls (``send_bytes``, ``recv_bytes``) raise
    :class:`TypeError`: a record channel carries only its records.

    Attributes:
        record: the :class:`~shmipc.records.Record` type, rebuilt from the header.
        slots: how many records the ring holds.
    """

    __slots__ = ("record", "slots", "_smask", "_rsize", "_struct", "_rq", "_ri", "_rdata",
                 "_rsems", "_rplock", "_rclock", "_getter", "_text", "_prepare", "_decode_record",
                 "_type", "_nfields", "_text_sizes", "_ssem", "_isem", "_psem", "_csem")

    _expected_kind = ChannelKind.RECORDS

    def __init__(self, mapping: Mapping, info: HeaderInfo, sems: dict[str, posix_ipc.Semaphore],
                 *, path: str | None, fd: int, codec: Any = None) -> None:
        """Private: use :meth:`create`, :meth:`open`, :meth:`open_or_create`, :meth:`anonymous`."""
        try:
            record = Record.from_schema(info.schema)
        except RecordError as exc:
            raise CorruptChannel(f"{path!r}: the record schema {info.schema!r} cannot be "
                                 f"read ({exc})", path=path) from None
        if record.size != info.record_size:
            raise CorruptChannel(f"{path!r}: schema {info.schema!r} is {record.size} bytes but "
                                 f"the header says {info.record_size}", path=path)
        super().__init__(mapping, info, sems, path=path, fd=fd, codec=codec)
        self._use_record(record)
        self.slots = slots_for(info)
        self._smask = self.slots - 1
        buf = mapping.buffer
        # Own views and locks, so that this class relies on Channel only through its hooks.
        self._rq = buf[:HEADER_SIZE].cast("Q")
        self._ri = buf[:HEADER_SIZE].cast("I")
        self._rdata = buf[HEADER_SIZE:HEADER_SIZE + self.slots * record.size]
        self._rsems = sems
        self._ssem, self._isem, self._psem, self._csem = sems["s"], sems["i"], sems["p"], sems["c"]
        # The robust locks are Channel's: one repair lock per handle, and a recovery callback
        # that holds no reference to self (a dropped handle is closed at once).
        self._rplock = self._plock
        self._rclock = self._clock

    def _use_record(self, record: Record) -> None:
        # The caller's own Record (same schema as the header's), so that values come back as
        # instances of the caller's class.
        self.record = record
        self._rsize = record.size
        self._struct = record.struct
        self._getter = (attrgetter(*record.fields) if len(record.fields) > 1
                        else (lambda v, _g=attrgetter(record.fields[0]): (_g(v),)))
        self._text = record._text
        self._prepare = record._prepare
        self._decode_record = record._decode
        self._type = record.type
        self._nfields = len(record.fields)
        self._text_sizes = tuple((i, f.size) for i, f in record._text)

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], record: Record,  # type: ignore[override]
               slots: int = DEFAULT_SLOTS, *, mode: int = 0o600) -> RecordChannel:
        """Create a new record channel file at ``path`` for records of type ``record``.

        Args:
            path: where the channel file goes; it must not exist.
            record: the record type; its schema is stored in the header.
            slots: records the ring holds at least (rounded up to a power of two; the data
                area is at least 4096 bytes, so small records get more slots).
            mode: permissions of the file and the semaphores.

        Raises:
            FileExistsError: ``path`` exists; use :meth:`open` or :meth:`open_or_create`.
        """
        ch: RecordChannel = cls._create(
            path, cls._capacity_for(record, slots), mode=mode, codec=None,
            kind=ChannelKind.RECORDS, record_size=record.size, schema=record.schema)
        ch._use_record(record)
        return ch

    @staticmethod
    def _capacity_for(record: Record, slots: int) -> int:
        if not isinstance(record, Record):
            raise TypeError(f"record must be a shmipc.Record, not {type(record).__name__}")
        if slots < 1:
            raise ValueError(f"slots must be at least 1 (got {slots})")
        return layout.capacity_for((1 << (slots - 1).bit_length()) * record.size)

    @classmethod
    def open(cls, path: str | os.PathLike[str],  # type: ignore[override]
             record: Record | None = None) -> RecordChannel:
        """Open an existing record channel file.

        Args:
            path: the channel file.
            record: the record type this process expects; None takes the header's.

        Raises:
            IncompatibleChannel: the file is a frame channel, or its schema is not
                ``record.schema`` (another type, or the same name with other fields).
            FileNotFoundError, NotAChannel, CorruptChannel: as :meth:`Channel.open`.
        """
        ch: RecordChannel = super().open(path)  # type: ignore[assignment]
        if record is not None and record.schema != ch.record.schema:
            ch.close()
            raise IncompatibleChannel(
                f"{os.fspath(path)!r} carries records {ch.record.schema!r}, not "
                f"{record.schema!r}; open it with the same record type (or record=None)",
                path=os.fspath(path))
        if record is not None:
            ch._use_record(record)
        return ch

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], record: Record,  # type: ignore[override]
                       slots: int = DEFAULT_SLOTS, *, mode: int = 0o600) -> RecordChannel:
        """Open the record channel at ``path``, creating it first if there is none.

        Safe when several processes race: one creates, the others open. Raises
        :class:`IncompatibleChannel` if the existing channel carries another schema.
        """
        try:
            return cls.open(path, record)
        except FileNotFoundError:
            pass
        try:
            return cls.create(path, record, slots, mode=mode)
        except FileExistsError:
            return cls.open(path, record)

    @classmethod
    def anonymous(cls, record: Record,  # type: ignore[override]
                  slots: int = DEFAULT_SLOTS) -> RecordChannel:
        """Create a record channel in a shared anonymous mapping, to use across ``fork()``.

        As :meth:`Channel.anonymous`: create it before forking; its semaphore names are removed
        at once; a process started by ``spawn``/``forkserver`` cannot use it.
        """
        ch: RecordChannel = cls._anonymous(
            cls._capacity_for(record, slots), codec=None, kind=ChannelKind.RECORDS,
            record_size=record.size, schema=record.schema)
        ch._use_record(record)
        return ch

    @classmethod
    def _initial_value(cls, role: str, info: HeaderInfo) -> int:
        if role == "s":
            # Every slot is empty when created. When only this semaphore is rebuilt while
            # records wait, it over-counts; producers drop tokens the positions contradict.
            return slots_for(info)
        return sync.INITIAL_VALUES[role]

    @classmethod
    def _count_items(cls, mapping: Mapping, info: HeaderInfo) -> int:
        hq = mapping.buffer[:HEADER_SIZE].cast("Q")
        try:
            return min((hq[Q_WRITE] - hq[Q_READ]) & U64_MASK, slots_for(info))
        finally:
            hq.release()

    @classmethod
    def _validate_positions(cls, mapping: Mapping, info: HeaderInfo, path: str) -> None:
        hq = mapping.buffer[:HEADER_SIZE].cast("Q")
        try:
            w, r = hq[Q_WRITE], hq[Q_READ]
        finally:
            hq.release()
        if (w - r) & U64_MASK > slots_for(info):
            raise CorruptChannel(
                f"{path!r}: positions are impossible (write {w}, read {r}, {slots_for(info)} "
                "slots); the file was overwritten by something else than shmipc", path=path)

    def close(self) -> None:
        """Release this process's handle (see :meth:`Channel.close`). Idempotent."""
        if self._closed:
            return
        for view in (self._rdata, self._ri, self._rq):
            view.release()
        super().close()

    # --- sending -------------------------------------------------------------------------------

    def _values(self, value: Any) -> Any:
        if type(value) is self.record.type:
            return self._getter(value)
        return self.record._values(value)

    def send_record(self, value: Any, timeout: float | None = None) -> None:
        """Send one record: a value of the record type, a tuple or a dict of its fields.

        Blocks while every slot is full, up to ``timeout`` seconds (None: forever).

        Raises:
            FieldTooLong, RecordError: the value does not fit the record type; nothing is sent.
            Full: no free slot before the timeout.
            ChannelClosed: this handle was closed, or the channel was closed for sending.
        """
        values = self._getter(value) if type(value) is self._type else self._values(value)
        if len(values) != self._nfields:
            values = self._prepare(values)  # raises RecordError
        for i, size in self._text_sizes:
            v = values[i]
            if type(v) is not bytes or len(v) > size:
                values = self._prepare(values)  # converts str, or raises FieldTooLong
                break
        if timeout is None and not self._closed:
            # The fast path: a free slot and a free lock right now; anything else goes the
            # general way. Same protocol as _put_values, inlined.
            space = self._ssem
            try:
                space.acquire(0)
            except posix_ipc.BusyError:
                pass
            else:
                lock = self._psem
                try:
                    lock.acquire(0)
                except posix_ipc.BusyError:
                    space.release()
                else:
                    hq = self._rq
                    hq[Q_PRODUCER_HOLDER] = _holder()
                    committed = False
                    try:
                        if not self._ri[I_CLOSED]:
                            w = hq[Q_WRITE]
                            if (w - hq[Q_READ]) & U64_MASK < self.slots:
                                self._struct.pack_into(self._rdata, (w & self._smask) * self._rsize,
                                                       *values)
                                w = (w + 1) & U64_MASK
                                hq[Q_WRITE] = w  # the commit
                                hq[Q_SENT] = w  # records ever sent: the position itself
                                committed = True
                    finally:
                        hq[Q_PRODUCER_HOLDER] |= _RELEASED
                        lock.release()
                    if committed:
                        self._isem.release()
                        return
                    space.release()  # closed or full: _put_values decides, with the token back
        self._put_values(values, _deadline(timeout), timeout)

    def send_record_nowait(self, value: Any) -> None:
        """Send one record if a slot is free now; else raise :class:`Full`."""
        self._put_values(self._prepare(self._values(value)), _deadline(0), 0)

    def send_values(self, *values: Any, timeout: float | None = None) -> None:
        """Send one record given as its field values in order: ``send_values(b"b", 20)``."""
        self.send_record(values, timeout)

    send = send_record  # type: ignore[assignment]
    send_nowait = send_record_nowait  # type: ignore[assignment]

    def send_many(self, values: Iterable[Any], timeout: float | None = None) -> None:
        """Send several records in order; every one is checked before any is sent.

        If the timeout expires part-way, :class:`Full` is raised with ``sent`` set to how many
        of them were sent.
        """
        prepared = [self._prepare(self._values(v)) for v in values]
        deadline = _deadline(timeout)
        for n, vals in enumerate(prepared):
            try:
                self._put_values(vals, deadline, timeout)
            except Full as exc:
                exc.sent = n  # type: ignore[attr-defined]
                raise

    def _put_values(self, values: Any, deadline: float | None, timeout: float | None) -> None:
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        space, hq = self._rsems["s"], self._rq
        while True:
            token = _wait_token(space, deadline)
            if not self._rplock.acquire(_lock_deadline(deadline)):
                if token:
                    space.release()
                raise Full(f"timed out after {timeout} s waiting for the producer lock",
                           size=self._rsize, free=0)
            committed = False
            try:
                if self._ri[I_CLOSED]:
                    if token:
                        space.release()  # the slot stays free
                    raise ChannelClosed("the channel was closed for sending (close_send); no "
                                        "more records go in")
                w = hq[Q_WRITE]
                used = (w - hq[Q_READ]) & U64_MASK
                if used < self.slots:
                    self._struct.pack_into(self._rdata, (w & self._smask) * self._rsize, *values)
                    w = (w + 1) & U64_MASK
                    hq[Q_WRITE] = w  # the commit: the record is visible
                    hq[Q_SENT] = w  # records ever sent: the position itself
                    committed = True
                elif used > self.slots:
                    raise CorruptChannel("the ring positions are impossible: the header was "
                                         "overwritten by something else than shmipc")
            finally:
                self._rplock.release()
            if committed:
                self._rsems["i"].release()
                return
            # Full: a token we held contradicted the positions and is dropped.
            if deadline is not None and time.monotonic() >= deadline:
                raise Full(f"no free slot within {timeout} s: all {self.slots} slots hold "
                           "records; receive faster, wait longer, or create the channel with "
                           "more slots=", size=self._rsize, free=0)

    # --- receiving -----------------------------------------------------------------------------

    def recv_tuple(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Receive one record as a plain tuple of raw field values (char[N] not NUL-trimmed).

        The fastest receive; :meth:`recv_record` decodes the tuple into a record value.
        """
        raw = self._take_now() if timeout is None else None
        return raw if raw is not None else self._take_values(_deadline(timeout))

    def recv_record(self, timeout: float | None = None) -> Any:
        """Receive one record, waiting up to ``timeout`` seconds (None: forever).

        Raises:
            Empty: no record before the timeout.
            EndOfChannel: the channel was closed for sending and is drained.
        """
        raw = self._take_now() if timeout is None else None
        if raw is None:
            raw = self._take_values(_deadline(timeout))
        return self._decode_record(raw)

    def _take_now(self) -> tuple[Any, ...] | None:
        # The fast path: a waiting record and a free lock right now (as _take_values, inlined);
        # None sends the caller the general way.
        if not self._closed:
            items = self._isem
            try:
                items.acquire(0)
            except posix_ipc.BusyError:
                pass
            else:
                lock = self._csem
                try:
                    lock.acquire(0)
                except posix_ipc.BusyError:
                    items.release()
                else:
                    hq = self._rq
                    hq[Q_CONSUMER_HOLDER] = _holder()
                    raw = None
                    try:
                        r = hq[Q_READ]
                        w = hq[Q_WRITE]
                        if w != r and (w - r) & U64_MASK <= self.slots:
                            raw = self._struct.unpack_from(self._rdata,
                                                           (r & self._smask) * self._rsize)
                            r = (r + 1) & U64_MASK
                            hq[Q_READ] = r  # the commit
                            hq[Q_RECEIVED] = r
                    finally:
                        hq[Q_CONSUMER_HOLDER] |= _RELEASED
                        lock.release()
                    if raw is not None:
                        self._ssem.release()
                        return raw
                    items.release()  # empty or ended: _take_values decides, with the token back
        return None

    def recv_record_nowait(self) -> Any:
        """Receive one record if one is waiting; else raise :class:`Empty`."""
        return self._decode_record(self._take_values(_deadline(0)))

    recv = recv_record
    recv_nowait = recv_record_nowait

    def recv_many(self, max_count: int, timeout: float | None = None) -> list[Any]:
        """Receive up to ``max_count`` records: waits (up to ``timeout``) for the first, then
        takes those waiting. Raises :class:`Empty` on timeout, :class:`EndOfChannel` when
        drained."""
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1 (got {max_count})")
        out = [self.recv_record(timeout)]
        while len(out) < max_count:
            try:
                out.append(self._decode_record(self._take_values(time.monotonic(), grace=False)))
            except (Empty, EndOfChannel):
                break
        return out

    def __iter__(self) -> Iterator[Any]:
        """Yield records until the channel is closed for sending and drained."""
        while True:
            try:
                yield self.recv_record()
            except EndOfChannel:
                return

    def _take_values(self, deadline: float | None, grace: bool = True) -> tuple[Any, ...]:
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        items, hq, hi = self._rsems["i"], self._rq, self._ri
        while True:
            token = _wait_token(items, deadline)
            if not self._rclock.acquire(_lock_deadline(deadline) if grace else deadline):
                if token:
                    items.release()
                raise Empty("timed out waiting for the consumer lock")
            raw = None
            ended = False
            try:
                r = hq[Q_READ]
                w = hq[Q_WRITE]
                if w == r and hi[I_CLOSED]:
                    w = hq[Q_WRITE]  # re-read after the flag: a commit before it is visible
                    ended = w == r
                if w != r:
                    if (w - r) & U64_MASK > self.slots:
                        raise CorruptChannel("the ring positions are impossible: the header "
                                             "was overwritten by something else than shmipc")
                    raw = self._struct.unpack_from(self._rdata, (r & self._smask) * self._rsize)
                    r = (r + 1) & U64_MASK
                    hq[Q_READ] = r  # the commit: the slot may be reused
                    hq[Q_RECEIVED] = r
            finally:
                self._rclock.release()
            if raw is not None:
                self._rsems["s"].release()
                return raw
            if ended:
                if token:
                    items.release()  # pass the wake-up on to the next consumer
                raise EndOfChannel("the channel was closed for sending and is drained")
            # Empty: a token we held contradicted the positions and is dropped.
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty("no record arrived before the timeout")

    # --- the bytes API does not apply ----------------------------------------------------------

    def _no_bytes(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"a record channel carries only {self.record.name} records; use "
                        "send_record/recv_record, or a Channel for bytes and msgpack objects")

    send_bytes = send_bytes_nowait = send_many_bytes = _no_bytes  # type: ignore[assignment]
    recv_bytes = recv_bytes_nowait = recv_many_bytes = _no_bytes  # type: ignore[assignment]
    _write = _read = _no_bytes  # type: ignore[assignment]

    # --- state -----------------------------------------------------------------------------------

    def statistics(self) -> ChannelStatistics:
        """A snapshot of the shared state; sizes in bytes, positions and messages in records."""
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        hq = self._rq
        w, r = hq[Q_WRITE], hq[Q_READ]
        sent, received = hq[Q_SENT], hq[Q_RECEIVED]
        waiting = min((w - r) & U64_MASK, self.slots)
        capacity = self.slots * self._rsize
        return ChannelStatistics(
            capacity=capacity,
            used=waiting * self._rsize,
            free=capacity - waiting * self._rsize,
            messages=waiting,
            sent=sent,
            received=received,
            closed=bool(self._ri[I_CLOSED]),
            max_message_size=self._rsize,
            write_position=w,
            read_position=r,
            recoveries=hq[Q_RECOVERIES],
        )

    @property
    def max_message_size(self) -> int:
        """The record size: every message is exactly one record."""
        return self._rsize

    def __repr__(self) -> str:
        where = repr(self._path) if self._path else "anonymous"
        state = "closed" if self._closed else f"{self.record.name} x {self.slots} slots"
        return f"<RecordChannel {where} {state}>"
