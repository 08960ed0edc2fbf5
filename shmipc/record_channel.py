"""``RecordChannel``: fixed-size records a C program can read, through the same core.

A record channel is a channel file (or anonymous mapping) of kind ``RECORDS``: the header stores
the record size and the schema text (:attr:`Record.schema`), and every message is one record's
C bytes (``struct.pack`` of the record type), carried as a frame by the same compiled core as
every other channel: one lock, commit and wake-up protocol for every kind of channel. No
msgpack is involved; a C program reads the payload of each frame as the C struct.

``slots`` is how many records the ring holds at once: the capacity divided by the size of one
record's frame (8 bytes of header plus the record padded to 8).
"""

from __future__ import annotations

import functools
import os
import struct
from typing import Any

from . import layout
from .channel import Channel
from .errors import CorruptChannel, DecodeError, IncompatibleChannel
from .layout import ChannelKind, HeaderInfo
from .mapping import Mapping
from .records import Record, RecordError

__all__ = ["DEFAULT_SLOTS", "RecordChannel", "slots_for"]

DEFAULT_SLOTS = 4096
"""Default number of records a new record channel holds."""


def slots_for(info: HeaderInfo) -> int:
    """Records the ring of the record channel described by ``info`` holds at once."""
    return info.capacity // layout.frame_size(info.record_size)


def _decode_record(record: Record, payload: bytes) -> Any:
    if len(payload) != record.size:
        raise DecodeError(f"a message of {len(payload)} bytes arrived on a channel of "
                          f"{record.size}-byte {record.name} records: it was not sent through a "
                          "RecordChannel", payload=payload)
    return record.unpack(payload)


class RecordChannel(Channel):
    """A multi-producer, multi-consumer channel of fixed-size records (no msgpack).

    Make one with :meth:`create`, :meth:`open`, :meth:`open_or_create` or :meth:`anonymous`.
    :meth:`send_record` (also ``send``) takes a value of the record type, a tuple or a dict and
    packs it with the record's C layout; :meth:`recv_record` (also ``recv``) returns a value of
    the record type, :meth:`recv_tuple` the raw field values. The semantics are those of
    :class:`~shmipc.channel.Channel`: exactly once, per-producer order, back-pressure,
    ``timeout=``, ``*_nowait``, batches, :meth:`close_send` then :class:`EndOfChannel`,
    durability of a file channel. The bytes calls raise :class:`TypeError`: a record channel
    carries only its records.

    Attributes:
        record: the :class:`~shmipc.records.Record` type.
        slots: how many records the ring holds at once.
    """

    __slots__ = ("record", "slots", "_struct")

    _expected_kind = ChannelKind.RECORDS

    def __init__(self, mapping: Mapping, info: HeaderInfo, *, path: str | None, fd: int,
                 codec: Any = None) -> None:
        """Private: use :meth:`create`, :meth:`open`, :meth:`open_or_create`, :meth:`anonymous`."""
        try:
            record = Record.from_schema(info.schema)
        except RecordError as exc:
            raise CorruptChannel(f"{path!r}: the record schema {info.schema!r} cannot be "
                                 f"read ({exc})", path=path) from None
        if record.size != info.record_size:
            raise CorruptChannel(f"{path!r}: schema {info.schema!r} is {record.size} bytes but "
                                 f"the header says {info.record_size}", path=path)
        super().__init__(mapping, info, path=path, fd=fd)
        self.slots = slots_for(info)
        self._use_record(record)

    def _use_record(self, record: Record) -> None:
        # The caller's own Record (same schema as the header's), so that values come back as
        # instances of the caller's class.
        self.record = record
        self._struct = record.struct
        # Not a bound method: the core keeps the decoder, and a reference back to this handle
        # would make a cycle that keeps a dropped handle (and its descriptor) alive.
        self._set_codec(record.pack, functools.partial(_decode_record, record))

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], record: Record,  # type: ignore[override]
               slots: int = DEFAULT_SLOTS, *, mode: int = 0o600) -> RecordChannel:
        """Create a new record channel file at ``path`` for records of type ``record``.

        Args:
            path: where the channel file goes; it must not exist.
            record: the record type; its schema is stored in the header.
            slots: records the ring holds at least (the data area is a power of two of at
                least 4096 bytes, so there may be more).
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
        frame = layout.frame_size(record.size)
        return layout.capacity_for(max(slots * frame, 2 * (record.size + layout.FRAME_HEADER)))

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
        ch: RecordChannel = cls._open(path, None)
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

    # --- records ---------------------------------------------------------------------------

    def send_record(self, value: Any, timeout: float | None = None) -> None:
        """Send one record: a value of the record type, a tuple or a dict of its fields.

        Blocks while the ring is full, up to ``timeout`` seconds (None: forever).

        Raises:
            FieldTooLong, RecordError: the value does not fit the record type; nothing is sent.
            Full: no room before the timeout.
            ChannelClosed: this handle was closed, or the channel was closed for sending.
        """
        self.send(value, timeout)

    def send_record_nowait(self, value: Any) -> None:
        """Send one record if there is room now; else raise :class:`Full`."""
        self.send_nowait(value)

    def send_values(self, *values: Any, timeout: float | None = None) -> None:
        """Send one record given as its field values in order: ``send_values(b"b", 20)``."""
        self.send(values, timeout)

    def recv_record(self, timeout: float | None = None) -> Any:
        """Receive one record, waiting up to ``timeout`` seconds (None: forever).

        Raises:
            Empty: no record before the timeout.
            EndOfChannel: the channel was closed for sending and is drained.
        """
        return self.recv(timeout)

    def recv_record_nowait(self) -> Any:
        """Receive one record if one is waiting; else raise :class:`Empty`."""
        return self.recv_nowait()

    def recv_tuple(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Receive one record as a plain tuple of raw field values (char[N] not NUL-trimmed)."""
        payload = super().recv_bytes(timeout)
        try:
            return self._struct.unpack(payload)
        except struct.error:
            raise DecodeError(f"a message of {len(payload)} bytes is not a {self.record.name} "
                              "record", payload=payload) from None

    # --- the bytes API does not apply -----------------------------------------------------

    def _no_bytes(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"a record channel carries only {self.record.name} records; use "
                        "send_record/recv_record, or a Channel for bytes and msgpack objects")

    send_bytes = send_bytes_nowait = send_many_bytes = _no_bytes  # type: ignore[assignment]
    recv_bytes = recv_bytes_nowait = recv_many_bytes = _no_bytes  # type: ignore[assignment]

    @property
    def max_message_size(self) -> int:
        """The record size: every message is exactly one record."""
        return self.record.size

    def __repr__(self) -> str:
        where = repr(self._path) if self._path else "anonymous"
        state = "closed" if self._closed else f"{self.record.name} x {self.slots} slots"
        return f"<RecordChannel {where} {state}>"
