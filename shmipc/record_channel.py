"""``RecordChannel``: fixed-size records a C program can read, through the same core.

A record channel is a channel file (or anonymous mapping) of kind ``RECORDS``: the header stores
the record size and the schema text (:attr:`Record.schema`), and every message is one record's
C bytes, carried as a frame by the same compiled core as every other channel: one lock, commit
and wake-up protocol for every kind of channel. No msgpack is involved; a C program reads the
payload of each frame as the C struct, and the core refuses a frame of any other size.

:class:`RecordChannel` is composed, not derived: it holds a core handle of the channel (a
private :class:`Channel` of kind ``RECORDS`` whose codec packs records in C) and offers only
what works for records. Its per-record calls (``send``, ``recv`` and their kin) are that
handle's compiled methods, bound once when the channel is opened, so a call costs no Python
frame of this module.

Sizes count what they name: ``capacity`` is records (the ring holds at least that many at once),
``record.size`` is bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import layout
from .channel import Channel
from .errors import CorruptChannel, DecodeError, IncompatibleChannel
from .layout import ChannelKind, HeaderInfo
from .records import Record, RecordError

__all__ = ["DEFAULT_RECORDS", "RecordChannel", "RecordStatistics", "records_held"]

DEFAULT_RECORDS = 4096
"""Default number of records a new record channel holds at once."""


def records_held(ring_bytes: int, record_size: int) -> int:
    """Records a ring of ``ring_bytes`` surely holds at once, each a frame of 8 + record bytes.

    A frame that does not fit before the end of the ring leaves a padding frame there (of at
    most a frame less 8 bytes) unless frames divide the ring exactly.
    """
    frame = layout.frame_size(record_size)
    if ring_bytes % frame == 0:
        return ring_bytes // frame
    return (ring_bytes - frame + layout.FRAME_HEADER) // frame


@dataclass(frozen=True)
class RecordStatistics:
    """A snapshot of a record channel's shared state, counted in records.

    Attributes:
        capacity: records the ring surely holds at once.
        messages: records sent and not yet received.
        sent: records ever sent (all processes).
        received: records ever received (all processes).
        closed: True once ``close_send()`` was called.
        record_size: bytes of one record (``sizeof`` the C struct).
        ring_bytes: bytes of the ring (each record takes a frame of 8 + its size, padded to 8).
        recoveries: lock holders found dead and taken over from.
        receivers_waiting: consumers registered as sleeping for a record now.
        senders_waiting: producers registered as sleeping for room now.
    """

    capacity: int
    messages: int
    sent: int
    received: int
    closed: bool
    record_size: int
    ring_bytes: int
    recoveries: int
    receivers_waiting: int
    senders_waiting: int


class _RecordRing(Channel):
    """Private: the core handle of a record channel (a channel of kind RECORDS)."""

    __slots__ = ()

    _expected_kind = ChannelKind.RECORDS


def _decode_error(record: Record) -> Callable[[Any], Any]:
    # What the C unpacker falls back on. The core delivers only frames of exactly the record
    # size, so what is left to explain is a text field whose bytes do not decode.
    def explain(payload: Any) -> Any:
        try:
            return record._unpack_reference(payload)
        except (RecordError, UnicodeDecodeError) as exc:
            raise DecodeError(f"a {record.name} record could not be read: {exc}",
                              payload=bytes(payload)) from None
    return explain


class RecordChannel:
    """A multi-producer, multi-consumer channel of fixed-size C records (no msgpack).

    Make one with :meth:`create`, :meth:`open`, :meth:`open_or_create` or :meth:`anonymous`.
    ``send`` takes a value of the record type, a tuple or a dict of its fields; ``recv``
    returns a value of the record type (``recv_tuple`` the raw field values). The semantics are
    those of :class:`~shmipc.channel.Channel`: exactly once, per-producer order, back-pressure,
    ``timeout=``, ``*_nowait``, batches under one lock round, :meth:`close_send` then
    :class:`EndOfChannel`, durability of a file channel, pickling by path.

    There is no zero-copy view of a record (``recv()`` of one record copies 8 to a few hundred
    bytes: a view would cost more than it saves) and no bytes API: a record channel carries
    only its records. A value that does not fit its field raises :class:`RecordError` (also a
    ``ValueError``) naming the field and the range it holds, and nothing is sent.

    Attributes:
        record: the :class:`~shmipc.records.Record` type.
        capacity: records the ring surely holds at once.
    """

    __slots__ = {
        "record": "The Record type of this channel's values.",
        "capacity": "Records the ring surely holds at once.",
        "_ring": "The core handle.",
        "send": "send(value, timeout=None)\n\nSend one record: a value of the record type, a "
                "tuple or a dict of its fields. Blocks while the ring is full, up to timeout "
                "seconds (None: forever).\n\nRaises:\n    FieldTooLong, RecordError: the value "
                "does not fit the record type; nothing is sent.\n    Full: no room before the "
                "timeout.\n    ChannelClosed: this handle was closed, or the channel was closed "
                "for sending.",
        "send_nowait": "send_nowait(value)\n\nSend one record if there is room now; else raise "
                       "Full.",
        "send_many": "send_many(values, timeout=None)\n\nSend a list of records in order, in "
                     "one lock round while they fit. Every value is packed before anything is "
                     "sent, so a RecordError sends nothing. Full carries .sent, the records "
                     "that went before the timeout.",
        "recv": "recv(timeout=None)\n\nReceive one record (a value of the record type), waiting "
                "up to timeout seconds (None: forever).\n\nRaises:\n    Empty: no record "
                "before the timeout.\n    EndOfChannel: the channel was closed for sending and "
                "is drained.",
        "recv_nowait": "recv_nowait()\n\nReceive one record if one is waiting; else raise "
                       "Empty.",
        "recv_many": "recv_many(max_count, timeout=None)\n\nReceive up to max_count records in "
                     "one lock round: waits for the first (as recv), then takes those already "
                     "waiting.",
        "close_send": "close_send(timeout=None)\n\nClose the channel for sending: receivers "
                      "drain what is left, then get EndOfChannel.",
    }

    record: Record
    capacity: int
    send: Callable[..., None]
    send_nowait: Callable[[Any], None]
    send_many: Callable[..., None]
    recv: Callable[..., Any]
    recv_nowait: Callable[[], Any]
    recv_many: Callable[..., list[Any]]
    close_send: Callable[..., None]

    def __init__(self, ring: _RecordRing, record: Record | None = None) -> None:
        """Private: use :meth:`create`, :meth:`open`, :meth:`open_or_create`, :meth:`anonymous`."""
        info = ring.info
        try:
            if record is None:
                record = Record.from_schema(info.schema)
            if record.size != info.record_size:
                raise CorruptChannel(f"{ring.path!r}: schema {info.schema!r} is {record.size} "
                                     f"bytes but the header says {info.record_size}",
                                     path=ring.path)
        except RecordError as exc:
            ring.close()
            raise CorruptChannel(f"{ring.path!r}: the record schema {info.schema!r} cannot be "
                                 f"read ({exc})", path=ring.path) from None
        except BaseException:
            ring.close()
            raise
        self._ring = ring
        self.record = record
        self.capacity = records_held(info.capacity, record.size)
        # The C packer and unpacker of the record type are the ring's codec; the ring holds
        # no reference back to this object (a cycle would keep a dropped handle alive).
        codec = record.codec(record._pack_reference, _decode_error(record))
        ring._set_codec(codec.pack, codec.unpack, None, None, None, codec)
        self.send = ring.send
        self.send_nowait = ring.send_nowait
        self.send_many = ring.send_many
        self.recv = ring.recv
        self.recv_nowait = ring.recv_nowait
        self.recv_many = ring.recv_many
        self.close_send = ring.close_send

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], record: Record,
               capacity: int = DEFAULT_RECORDS, *, mode: int = 0o600) -> RecordChannel:
        """Create a new record channel file at ``path`` for records of type ``record``.

        Args:
            path: where the channel file goes; it must not exist.
            record: the record type; its schema is stored in the header.
            capacity: records the ring holds at least (the ring is a power of two of at least
                4096 bytes, so there may be room for more: see :attr:`capacity`).
            mode: permissions of the file and the semaphores.

        Raises:
            FileExistsError: ``path`` exists; use :meth:`open` or :meth:`open_or_create`.
            TypeError, ValueError: ``record`` is not a Record, or ``capacity`` < 1.
        """
        ring = _RecordRing._create(path, cls._ring_bytes(record, capacity), mode=mode,
                                   codec=None, kind=ChannelKind.RECORDS,
                                   record_size=record.size, schema=record.schema)
        return cls(ring, record)

    @staticmethod
    def _ring_bytes(record: Record, capacity: int) -> int:
        if not isinstance(record, Record):
            raise TypeError(f"record must be a shmipc.Record, not {type(record).__name__}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 record (got {capacity})")
        frame = layout.frame_size(record.size)
        ring = layout.capacity_for(max(capacity * frame, 2 * (record.size + layout.FRAME_HEADER)))
        while records_held(ring, record.size) < capacity:  # the padding frame at the end
            ring *= 2
        return ring

    @classmethod
    def open(cls, path: str | os.PathLike[str], record: Record | None = None) -> RecordChannel:
        """Open an existing record channel file.

        Args:
            path: the channel file.
            record: the record type this process expects; None takes the header's (values
                are then of a type rebuilt from the schema, equal to the declared one's).

        Raises:
            IncompatibleChannel: the file is a frame channel, or its schema is not
                ``record.schema`` (another type, or the same name with other fields).
            FileNotFoundError, NotAChannel, CorruptChannel: as :meth:`Channel.open`.
        """
        ring = _RecordRing._open(path, None)
        if record is not None and record.schema != ring.info.schema:
            ring.close()
            raise IncompatibleChannel(
                f"{os.fspath(path)!r} carries records {ring.info.schema!r}, not "
                f"{record.schema!r}; open it with the same record type (or record=None)",
                path=os.fspath(path))
        return cls(ring, record)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], record: Record,
                       capacity: int = DEFAULT_RECORDS, *, mode: int = 0o600) -> RecordChannel:
        """Open the record channel at ``path``, creating it first if there is none.

        Safe when several processes race: one creates, the others open. An existing channel
        keeps its own capacity. Raises :class:`IncompatibleChannel` if it carries another
        schema.
        """
        try:
            return cls.open(path, record)
        except FileNotFoundError:
            pass
        try:
            return cls.create(path, record, capacity, mode=mode)
        except FileExistsError:
            return cls.open(path, record)

    @classmethod
    def anonymous(cls, record: Record, capacity: int = DEFAULT_RECORDS) -> RecordChannel:
        """Create a record channel in a shared anonymous mapping, to use across ``fork()``.

        As :meth:`Channel.anonymous`: create it before forking; its semaphore names are removed
        at once; a process started by ``spawn``/``forkserver`` cannot use it
        (:class:`WrongStartMethod`).
        """
        ring = _RecordRing._anonymous(cls._ring_bytes(record, capacity), codec=None,
                                      kind=ChannelKind.RECORDS, record_size=record.size,
                                      schema=record.schema)
        return cls(ring, record)

    def close(self) -> None:
        """Release this process's handle (the channel and its records stay). Idempotent."""
        self._ring.close()

    def unlink(self) -> None:
        """Remove the channel's file and its semaphore names (see :meth:`Channel.unlink`)."""
        self._ring.unlink()

    def flush(self) -> None:
        """Write the channel's pages to its file now (``msync``; see :meth:`Channel.flush`)."""
        self._ring.flush()

    def __enter__(self) -> RecordChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        self._ring.__reduce__()  # WrongStartMethod for an anonymous channel
        return (_open_pickled, (self._ring.path, self.record.schema))

    # --- records ---------------------------------------------------------------------------

    def send_values(self, *values: Any, timeout: float | None = None) -> None:
        """Send one record given as its field values in order: ``send_values(b"b", 20)``."""
        self.send(values, timeout)

    def recv_tuple(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Receive one record as a plain tuple of raw field values (char[N] not NUL-trimmed).

        Raises:
            Empty, EndOfChannel: as :meth:`recv`.
        """
        return self.record.struct.unpack(self._ring.recv_bytes(timeout))  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        """Yield received records until the channel is closed for sending and drained."""
        return iter(self._ring)

    # --- state -----------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The channel file's path, or None for an anonymous channel."""
        return self._ring.path

    @property
    def closed(self) -> bool:
        """True once this handle was closed with :meth:`close`."""
        return self._ring.closed

    @property
    def info(self) -> HeaderInfo:
        """The fixed header fields (format version, ring bytes, record size, schema, ...)."""
        return self._ring.info

    @property
    def spin(self) -> float:
        """Seconds a blocked call polls before it sleeps (see :attr:`Channel.spin`)."""
        return self._ring.spin

    @spin.setter
    def spin(self, seconds: float) -> None:
        self._ring.spin = seconds

    def fileno(self) -> int:
        """A descriptor that becomes readable when a record may be waiting (see
        :meth:`Channel.fileno`: the rule, the readiness slot it takes, the hazards)."""
        return self._ring.fileno()

    @property
    def semaphore_names(self) -> dict[str, str]:
        """The POSIX names of this channel's semaphores now, by role."""
        return self._ring.semaphore_names

    def statistics(self) -> RecordStatistics:
        """A snapshot of the channel's shared state, counted in records.

        Raises:
            ChannelClosed: this handle was closed.
            CorruptChannel: the file was truncated by another program.
        """
        s = self._ring.statistics()
        return RecordStatistics(
            capacity=self.capacity, messages=s.messages, sent=s.sent, received=s.received,
            closed=s.closed, record_size=self.record.size, ring_bytes=s.capacity,
            recoveries=s.recoveries, receivers_waiting=s.receivers_waiting,
            senders_waiting=s.senders_waiting)

    def __repr__(self) -> str:
        where = repr(self.path) if self.path else "anonymous"
        state = "closed" if self.closed else f"{self.record.name} x {self.capacity}"
        return f"<RecordChannel {where} {state}>"


def _open_pickled(path: str, schema: str) -> RecordChannel:
    ch = RecordChannel.open(path)
    if ch.record.schema != schema:  # the file at path was replaced by another channel
        ch.close()
        raise IncompatibleChannel(f"{path!r} now carries records {ch.info.schema!r}, not "
                                  f"{schema!r}", path=path)
    return ch

