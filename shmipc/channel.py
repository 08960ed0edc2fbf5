"""``Channel``: a ring of frames in a shared mapping, coordinated by POSIX semaphores.

A channel is a mapping (``mapping.py``) holding a header (``layout.py``) and a ring of frames
(``ring.py``), plus four named semaphores (``sync.py``). The protocol, in five lines:

1. A producer takes the producer lock, waits (still holding it) until the frame fits, copies the
   frame in, and commits it by storing the new write position; then it releases the lock and
   posts ``items``.
2. A consumer waits on ``items`` (in slices, re-checking the positions after each), takes the
   consumer lock, copies frames out below the write position, commits by storing the new read
   position, releases the lock, and posts ``space`` if a producer registered as sleeping.
3. The positions are the truth and the semaphores only wake-ups: a token lost with a killed
   process delays a message by at most ``LIVENESS_INTERVAL`` and never loses it.
4. A producer sleeping on a full ring registers in ``sender_waiting``, fences, and re-checks the
   read position before it sleeps; the consumer stores its position, posts its lock (a barrier),
   then reads the flag: one of the two always sees the other.
5. Each lock records its holder; a waiter that finds the holder dead takes the lock over
   (``sync.RobustLock``). Nothing half-done is visible, because only position stores commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import posix_ipc

from . import layout, ring, sync
from .codec import Codec
from .errors import (
    ChannelClosed,
    CorruptChannel,
    Empty,
    EndOfChannel,
    Full,
    IncompatibleChannel,
    MessageTooLarge,
    NotAChannel,
    WrongStartMethod,
)
from .layout import (
    HEADER_SIZE,
    I_CLOSED,
    I_SENDER_WAITING,
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
from .mapping import Mapping, create_file, map_anonymous, map_descriptor

__all__ = ["DEFAULT_CAPACITY", "Channel", "ChannelStatistics"]

DEFAULT_CAPACITY = 4 << 20
"""Default data capacity: a few MiB, small enough to stay in the last-level cache."""

_LOCK_GRACE = 0.005  # a *_nowait call still waits this long for a lock held by a running peer


@dataclass(frozen=True)
class ChannelStatistics:
    """A snapshot of a channel's state, read from its shared header.

    Attributes:
        capacity: bytes in the ring.
        used: bytes taken by unread frames (headers and padding included).
        free: ``capacity - used``.
        messages: messages sent and not yet received.
        sent: messages ever sent (all processes).
        received: messages ever received (all processes).
        closed: True once ``close_send()`` was called.
        max_message_size: the largest message the channel takes.
        write_position: the producers' monotonic byte counter.
        read_position: the consumers' monotonic byte counter.
        recoveries: lock holders found dead and recovered from.
    """

    capacity: int
    used: int
    free: int
    messages: int
    sent: int
    received: int
    closed: bool
    max_message_size: int
    write_position: int
    read_position: int
    recoveries: int


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None (got {timeout})")
    return time.monotonic() + timeout


def _lock_deadline(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline, time.monotonic() + _LOCK_GRACE)


def _as_bytes_view(data: Any) -> Any:
    if type(data) is bytes or type(data) is bytearray:
        return data
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class Channel:
    """A multi-producer, multi-consumer message channel in shared memory.

    Make one with :meth:`create`, :meth:`open`, :meth:`open_or_create` (a file: unrelated
    processes meet by path, and unread messages outlive every process) or :meth:`anonymous`
    (created before ``fork()``, inherited by the child). Every message is delivered exactly
    once, to one consumer, whole; the messages of one producer arrive in the order sent. A full
    ring blocks the sender; nothing is dropped or overwritten unread.

    ``send``/``recv`` carry any msgpack-able object; ``send_bytes``/``recv_bytes`` carry bytes.
    Blocking calls take ``timeout=`` (seconds, None waits forever) and raise :class:`Full` or
    :class:`Empty` when it expires; the ``*_nowait`` forms raise at once.

    Hazards: a channel file truncated by another program while mapped makes the next access
    fault (SIGBUS), which no library can catch; shmipc detects it at :meth:`open`. A handle
    may be shared by threads, but :meth:`close` must not race with calls on other threads.
    """

    __slots__ = (
        "_mapping", "_info", "_path", "_fd", "_codec", "_capacity", "_mask", "_max_message",
        "_hq", "_hi", "_data", "_dq", "_items", "_space", "_plock", "_clock", "_sems",
        "_closed", "_semaphore_names",
    )

    _expected_kind = ChannelKind.FRAMES

    def __init__(self, mapping: Mapping, info: HeaderInfo, sems: dict[str, posix_ipc.Semaphore],
                 *, path: str | None, fd: int, codec: Codec | None = None) -> None:
        """Private: use :meth:`create`, :meth:`open`, :meth:`open_or_create`, :meth:`anonymous`."""
        self._mapping = mapping
        self._info = info
        self._path = path
        self._fd = fd
        self._codec = codec if codec is not None else Codec()
        self._capacity = info.capacity
        self._mask = info.capacity - 1
        self._max_message = ring.max_message_size(info.capacity)
        buf = mapping.buffer
        self._hq = buf[:HEADER_SIZE].cast("Q")
        self._hi = buf[:HEADER_SIZE].cast("I")
        self._data = buf[HEADER_SIZE:HEADER_SIZE + info.capacity]
        self._dq = self._data.cast("Q")
        self._sems = sems
        self._semaphore_names = {r: sync.semaphore_name(info.channel_id, r) for r in sync.ROLES}
        self._items = sems["i"]
        self._space = sems["s"]
        repair = sync.RepairLock(fd)
        # The callback holds the header view, not self: no reference cycle, so a dropped
        # handle is closed by reference counting at once.
        recovered = functools.partial(_count_recovery, self._hq)
        self._plock = sync.RobustLock(sems["p"], self._hq, Q_PRODUCER_HOLDER, repair, recovered)
        self._clock = sync.RobustLock(sems["c"], self._hq, Q_CONSUMER_HOLDER, repair, recovered)
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], capacity: int = DEFAULT_CAPACITY, *,
               mode: int = 0o600, codec: Codec | None = None) -> Channel:
        """Create a new channel file at ``path`` and open it.

        The file is written aside and linked into place only when complete, so a process that
        opens ``path`` never sees half a header. Its blocks are reserved up front, so a full
        disk is an ``OSError`` here and never a SIGBUS later.

        Args:
            path: where the channel file goes; it must not exist.
            capacity: ring bytes, rounded up to a power of two of at least 4096. One message can
                take at most half of it.
            mode: permissions of the file and of the semaphores (0600: this user only).
            codec: the msgpack settings for ``send``/``recv`` (default :class:`Codec`).

        Raises:
            FileExistsError: ``path`` exists; use :meth:`open` or :meth:`open_or_create`.
        """
        return cls._create(path, capacity, mode=mode, codec=codec)

    @classmethod
    def _create(cls, path: str | os.PathLike[str], capacity: int, *, mode: int,
                codec: Codec | None, kind: ChannelKind = ChannelKind.FRAMES,
                record_size: int = 0, schema: str = "", initial_position: int = 0) -> Any:
        path = os.fspath(path)
        cap = layout.capacity_for(capacity)
        if os.path.lexists(path):
            raise FileExistsError(
                f"{path!r} already exists; open it with Channel.open, or use "
                "Channel.open_or_create"
            )
        channel_id = os.urandom(16)
        aside = f"{path}.{channel_id.hex()[:12]}.creating"
        create_file(aside, HEADER_SIZE + cap, mode=mode)
        fd = -1
        sems: dict[str, posix_ipc.Semaphore] = {}
        mapping: Mapping | None = None
        try:
            fd = os.open(aside, os.O_RDWR | os.O_CLOEXEC)
            mapping = map_descriptor(fd, HEADER_SIZE + cap, path=path)
            info = layout.initialize(mapping.buffer, cap, kind=kind, record_size=record_size,
                                     schema=schema, channel_id=channel_id,
                                     initial_position=initial_position)
            for role in sync.ROLES:
                sems[role] = sync.create_semaphore(sync.semaphore_name(channel_id, role),
                                                   cls._initial_value(role, info), mode)
            try:
                os.link(aside, path)
            except FileExistsError:
                raise FileExistsError(
                    f"{path!r} was created by another process meanwhile; open it with "
                    "Channel.open"
                ) from None
        except BaseException:
            for role, sem in sems.items():
                sem.close()
                sync.unlink_semaphore(sync.semaphore_name(channel_id, role))
            if mapping is not None:
                mapping.close()
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
            raise
        os.unlink(aside)
        return cls(mapping, info, sems, path=path, fd=fd, codec=codec)

    @classmethod
    def _initial_value(cls, role: str, info: HeaderInfo) -> int:
        return sync.INITIAL_VALUES[role]

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, codec: Codec | None = None) -> Channel:
        """Open an existing channel file.

        Everything is validated before use. If the channel's semaphores are gone (after a
        reboot, or removed by hand) they are rebuilt from the header under an exclusive lock on
        the file, and no message is lost.

        Raises:
            FileNotFoundError: nothing at ``path``.
            PermissionError: the file or its semaphores belong to somebody else.
            NotAChannel: ``path`` is not a shmipc channel (not a file, wrong magic).
            IncompatibleChannel: another format version, or a record channel.
            CorruptChannel: a header or position fails validation, or the file was truncated.
        """
        path = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except IsADirectoryError:
            raise NotAChannel(f"{path!r} is a directory, not a shmipc channel file",
                              path=path) from None
        mapping: Mapping | None = None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotAChannel(f"{path!r} is not a regular file, so not a shmipc channel",
                                  path=path)
            info = layout.parse(os.pread(fd, layout.LIVE_OFFSET, 0), path=path,
                                file_size=st.st_size)
            if info.kind is not cls._expected_kind:
                raise IncompatibleChannel(
                    f"{path!r} is a {info.kind.name.lower()} channel"
                    f" ({info.schema or 'no schema'}); open it with "
                    + ("shmipc.RecordChannel.open" if info.kind is ChannelKind.RECORDS
                       else "shmipc.Channel.open"),
                    path=path,
                )
            mapping = map_descriptor(fd, info.file_size, path=path)
            cls._validate_positions(mapping, info, path)
            sems = cls._attach_semaphores(fd, mapping, info, st.st_mode & 0o777)
        except BaseException:
            if mapping is not None:
                mapping.close()
            os.close(fd)
            raise
        return cls(mapping, info, sems, path=path, fd=fd, codec=codec)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], capacity: int = DEFAULT_CAPACITY,
                       *, mode: int = 0o600, codec: Codec | None = None) -> Channel:
        """Open the channel at ``path``, creating it first if there is none.

        Safe when several processes race to create the same path: one creates, the others open.
        An existing channel keeps its own capacity.
        """
        try:
            return cls.open(path, codec=codec)
        except FileNotFoundError:
            pass
        try:
            return cls.create(path, capacity, mode=mode, codec=codec)
        except FileExistsError:
            return cls.open(path, codec=codec)

    @classmethod
    def anonymous(cls, capacity: int = DEFAULT_CAPACITY, *, codec: Codec | None = None) -> Channel:
        """Create a channel in a shared anonymous mapping, to use across ``fork()``.

        Create it before forking; the parent and every child forked afterwards share it. Its
        semaphore names are removed at once (the handles survive), so nothing is left behind
        in ``/dev/shm`` whatever happens to the processes.

        Hazard: a process started with ``spawn`` or ``forkserver`` cannot inherit it; passing
        it to one raises :class:`WrongStartMethod`. Use a file channel there.
        """
        cap = layout.capacity_for(capacity)
        mapping = map_anonymous(HEADER_SIZE + cap)
        info = layout.initialize(mapping.buffer, cap)
        sems: dict[str, posix_ipc.Semaphore] = {}
        fd = os.memfd_create("shmipc-repair", os.MFD_CLOEXEC)  # a lockf target for repairs
        try:
            for role in sync.ROLES:
                name = sync.semaphore_name(info.channel_id, role)
                sems[role] = sync.create_semaphore(name, sync.INITIAL_VALUES[role], 0o600)
                sync.unlink_semaphore(name)
        except BaseException:
            for sem in sems.values():
                sem.close()
            mapping.close()
            os.close(fd)
            raise
        return cls(mapping, info, sems, path=None, fd=fd, codec=codec)

    @classmethod
    def _validate_positions(cls, mapping: Mapping, info: HeaderInfo, path: str) -> None:
        hq = mapping.buffer[:HEADER_SIZE].cast("Q")
        try:
            w, r = hq[Q_WRITE], hq[Q_READ]
        finally:
            hq.release()
        if w & 7 or r & 7 or ring.used_bytes(w, r) > info.capacity:
            raise CorruptChannel(
                f"{path!r}: positions are impossible (write {w}, read {r}, capacity "
                f"{info.capacity}); the file was overwritten by something else than shmipc",
                path=path,
            )

    @classmethod
    def _count_items(cls, mapping: Mapping, info: HeaderInfo) -> int:
        buf = mapping.buffer
        hq = buf[:HEADER_SIZE].cast("Q")
        dq = buf[HEADER_SIZE:HEADER_SIZE + info.capacity].cast("Q")
        try:
            r, w, count = hq[Q_READ], hq[Q_WRITE], 0
            while r != w:
                _, _, r = ring.read_frame(dq, info.capacity, r, w)
                count += 1
            return count
        finally:
            dq.release()
            hq.release()

    @classmethod
    def _attach_semaphores(cls, fd: int, mapping: Mapping, info: HeaderInfo,
                           mode: int) -> dict[str, posix_ipc.Semaphore]:
        names = {role: sync.semaphore_name(info.channel_id, role) for role in sync.ROLES}
        sems = {role: sync.open_semaphore(name) for role, name in names.items()}
        if all(sem is not None for sem in sems.values()):
            return sems  # type: ignore[return-value]
        # Some are gone (reboot, removed by hand): rebuild them from the header, alone.
        fcntl.lockf(fd, fcntl.LOCK_EX)
        created: list[str] = []  # names this call made: removed again if it fails
        try:
            for role, name in names.items():
                if sems[role] is None:
                    sems[role] = sync.open_semaphore(name)
            # Count before creating anything: corrupt frames must not leave new names behind.
            items = cls._count_items(mapping, info) if sems["i"] is None else 0
            for role, name in names.items():
                if sems[role] is not None:
                    continue
                initial = items if role == "i" else cls._initial_value(role, info)
                try:
                    sems[role] = sync.create_semaphore(name, initial, mode)
                    created.append(name)
                except FileExistsError:
                    sems[role] = sync.open_semaphore(name)
                if role in ("p", "c"):  # a fresh lock has no holder
                    hq = mapping.buffer[:HEADER_SIZE].cast("Q")
                    hq[Q_PRODUCER_HOLDER if role == "p" else Q_CONSUMER_HOLDER] = 0
                    hq.release()
        except BaseException:
            for sem in sems.values():
                if sem is not None:
                    sem.close()
            for name in created:
                sync.unlink_semaphore(name)
            raise
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        if any(sem is None for sem in sems.values()):
            raise CorruptChannel(f"{mapping.path!r}: its semaphores could not be rebuilt")
        return sems  # type: ignore[return-value]

    def close(self) -> None:
        """Release this process's handle: unmap, close the semaphores and the file. Idempotent.

        The channel, its file and its messages stay for other handles; :meth:`unlink` removes
        them.
        """
        if self._closed:
            return
        self._closed = True
        for view in (self._dq, self._data, self._hi, self._hq):
            view.release()
        self._mapping.close()
        for sem in self._sems.values():
            sem.close()
        os.close(self._fd)

    def flush(self) -> None:
        """Write the channel's pages to its file now (``msync``), for a machine crash.

        Other processes see every message at once without this; the kernel writes the pages
        back on its own within seconds. Call it where messages must survive a power loss.
        A no-op for an anonymous channel.
        """
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        self._mapping.flush()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass  # views still out at interpreter exit: the OS reclaims everything

    def unlink(self) -> None:
        """Remove the channel's file and its semaphore names. Idempotent.

        Handles that are open stay usable until closed; new :meth:`open` calls fail. An
        anonymous channel has no names left to remove.
        """
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            for name in self._semaphore_names.values():
                sync.unlink_semaphore(name)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._path is None:
            raise WrongStartMethod(
                "an anonymous channel cannot be passed to another process except by fork(): "
                "a process started with 'spawn' or 'forkserver' cannot see its memory. Use "
                "multiprocessing.get_context('fork'), or a file channel (Channel.create(path)),"
                " which works with every start method"
            )
        return (type(self).open, (self._path,))

    def __repr__(self) -> str:
        where = repr(self._path) if self._path else "anonymous"
        state = "closed" if self._closed else f"capacity={self._capacity}"
        return f"<{type(self).__name__} {where} {state}>"

    @property
    def path(self) -> str | None:
        """The channel file's path, or None for an anonymous channel."""
        return self._path

    @property
    def capacity(self) -> int:
        """Bytes in the ring."""
        return self._capacity

    @property
    def max_message_size(self) -> int:
        """The largest message, in bytes, this channel takes (half its capacity less 8)."""
        return self._max_message

    @property
    def closed(self) -> bool:
        """True once this handle was closed with :meth:`close`."""
        return self._closed

    @property
    def semaphore_names(self) -> dict[str, str]:
        """The POSIX names of this channel's semaphores, by role (p, c, i, s)."""
        return dict(self._semaphore_names)

    @property
    def info(self) -> HeaderInfo:
        """The fixed header fields (format version, capacity, kind, channel id, ...)."""
        return self._info

    # --- sending -------------------------------------------------------------------------

    def send_bytes(self, data: Any, timeout: float | None = None) -> None:
        """Send one message of raw bytes (any bytes-like object).

        Blocks while the ring is full, up to ``timeout`` seconds (None: forever).

        Raises:
            MessageTooLarge: the message can never fit (see :attr:`max_message_size`).
            Full: no room before the timeout.
            ChannelClosed: this handle was closed, or the channel was closed for sending.
        """
        self._write((_as_bytes_view(data),), _deadline(timeout), timeout)

    def send_bytes_nowait(self, data: Any) -> None:
        """Send raw bytes if there is room now; else raise :class:`Full`."""
        self._write((_as_bytes_view(data),), _deadline(0), 0)

    def send(self, obj: Any, timeout: float | None = None) -> None:
        """Send one object, encoded with msgpack.

        Raises:
            EncodeError: msgpack cannot encode ``obj`` (also a TypeError); nothing is sent.
            MessageTooLarge, Full, ChannelClosed: as for :meth:`send_bytes`.
        """
        self._write((self._codec.encode(obj),), _deadline(timeout), timeout)

    def send_nowait(self, obj: Any) -> None:
        """Send one object if there is room now; else raise :class:`Full`."""
        self._write((self._codec.encode(obj),), _deadline(0), 0)

    def send_many(self, objects: Iterable[Any], timeout: float | None = None) -> None:
        """Send several objects under one lock acquisition; they arrive in order.

        Every object is encoded before anything is written, so an :class:`EncodeError`
        sends nothing. If the timeout expires part-way, :class:`Full` is raised and its
        ``sent`` attribute says how many of the objects were sent.
        """
        encode = self._codec.encode
        self._write([encode(obj) for obj in objects], _deadline(timeout), timeout)

    def send_many_bytes(self, messages: Iterable[Any], timeout: float | None = None) -> None:
        """Send several raw-bytes messages under one lock acquisition (see :meth:`send_many`)."""
        self._write([_as_bytes_view(m) for m in messages], _deadline(timeout), timeout)

    def _write(self, payloads: Any, deadline: float | None, timeout: float | None) -> None:
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        limit = self._max_message
        for payload in payloads:
            if len(payload) > limit:
                raise MessageTooLarge(len(payload), limit, self._capacity)
        if not payloads:
            return
        hq, hi, cap = self._hq, self._hi, self._capacity
        if not self._plock.acquire(_lock_deadline(deadline)):
            raise Full(
                f"timed out after {timeout} s waiting for the producer lock; another producer "
                "holds it while it waits for room: receive faster or wait longer",
            )
        committed = 0
        try:
            if hi[I_CLOSED]:
                raise ChannelClosed(
                    "the channel was closed for sending (close_send); no more messages go in"
                )
            w = hq[Q_WRITE]
            data, dq = self._data, self._dq
            for payload in payloads:
                length = len(payload)
                need = ring.room_needed(w, cap, length)
                used = ring.used_bytes(w, hq[Q_READ])
                if used > cap or w & 7:
                    raise CorruptChannel("the ring positions are impossible: the header was "
                                         "overwritten by something else than shmipc")
                if cap - used < need:
                    self._wait_for_space(w, need, deadline, timeout, committed)
                w = ring.write_frame(data, dq, cap, w, payload, length)
                hq[Q_WRITE] = w  # the commit: the frame is visible from here on
                hq[Q_SENT] = (hq[Q_SENT] + 1) & U64_MASK
                committed += 1
        finally:
            self._plock.release()
            items = self._items
            for _ in range(committed):
                items.release()

    def _wait_for_space(self, w: int, need: int, deadline: float | None,
                        timeout: float | None, committed: int) -> None:
        hq, hi, cap, space = self._hq, self._hi, self._capacity, self._space
        try:
            while True:
                hi[I_SENDER_WAITING] = 1
                ring.full_fence()  # the flag must be visible before the re-check below
                free = cap - ring.used_bytes(w, hq[Q_READ])
                if free < 0:
                    raise CorruptChannel("the read position is impossible")
                if free >= need:
                    return
                wait = sync.LIVENESS_INTERVAL
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        error = Full(
                            f"no room for a frame of {need} bytes within {timeout} s: {free} of "
                            f"{cap} bytes free; receive faster, wait longer, or create the "
                            "channel with a larger capacity=",
                            size=need, free=free,
                        )
                        error.sent = committed  # type: ignore[attr-defined]
                        raise error
                try:
                    space.acquire(wait)
                except sync.WAKE_UPS:  # a timeout, or a signal whose handler returned
                    pass
        finally:
            hi[I_SENDER_WAITING] = 0

    def close_send(self, timeout: float | None = None) -> None:
        """Close the channel for sending, for every process.

        Messages already sent stay and are received as usual; once they are drained, receives
        raise :class:`EndOfChannel` and iteration stops. Later sends raise
        :class:`ChannelClosed`. Waits for a send in progress to finish (up to ``timeout``).
        """
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        if not self._plock.acquire(_deadline(timeout)):
            raise Full(f"timed out after {timeout} s waiting for a send in progress to finish")
        try:
            self._hi[I_CLOSED] = 1
        finally:
            self._plock.release()
        self._items.release()  # wakes one sleeping consumer; each passes the wake-up on

    # --- receiving -----------------------------------------------------------------------

    def recv_bytes(self, timeout: float | None = None) -> bytes:
        """Receive one message as bytes, waiting up to ``timeout`` seconds (None: forever).

        Raises:
            Empty: no message before the timeout.
            EndOfChannel: the channel was closed for sending and is drained.
            CorruptChannel: a frame failed validation.
        """
        return self._read(1, _deadline(timeout))[0]

    def recv_bytes_nowait(self) -> bytes:
        """Receive one message as bytes if one is waiting; else raise :class:`Empty`."""
        return self._read(1, _deadline(0))[0]

    def recv(self, timeout: float | None = None) -> Any:
        """Receive one object (decoded with msgpack); see :meth:`recv_bytes`.

        Raises:
            DecodeError: the message is not valid msgpack; its bytes are in ``.payload``.
        """
        return self._codec.decode(self._read(1, _deadline(timeout))[0])

    def recv_nowait(self) -> Any:
        """Receive one object if one is waiting; else raise :class:`Empty`."""
        return self._codec.decode(self._read(1, _deadline(0))[0])

    def recv_many(self, max_count: int, timeout: float | None = None) -> list[Any]:
        """Receive up to ``max_count`` objects under one lock acquisition.

        Waits (up to ``timeout``) for the first; returns those waiting then, in order, at least
        one. Raises :class:`Empty` on timeout and :class:`EndOfChannel` when drained.
        """
        decode = self._codec.decode
        return [decode(payload) for payload in self._read(max_count, _deadline(timeout))]

    def recv_many_bytes(self, max_count: int, timeout: float | None = None) -> list[bytes]:
        """Receive up to ``max_count`` raw messages under one lock (see :meth:`recv_many`)."""
        return self._read(max_count, _deadline(timeout))

    def __iter__(self) -> Iterator[Any]:
        """Yield received objects until the channel is closed for sending and drained."""
        while True:
            try:
                yield self.recv()
            except EndOfChannel:
                return

    def _read(self, max_count: int, deadline: float | None) -> list[bytes]:
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1 (got {max_count})")
        hq, hi, cap = self._hq, self._hi, self._capacity
        items = self._items
        while True:
            token = self._wait_for_item(deadline)
            if not self._clock.acquire(_lock_deadline(deadline)):
                if token:
                    items.release()
                raise Empty("timed out waiting for the consumer lock")
            out: list[bytes] = []
            ended = False
            try:
                r = hq[Q_READ]
                w = hq[Q_WRITE]
                if w == r and hi[I_CLOSED]:
                    w = hq[Q_WRITE]  # re-read after the flag: a commit before it is visible
                    ended = w == r
                data, dq = self._data, self._dq
                while r != w and len(out) < max_count:
                    start, length, r = ring.read_frame(dq, cap, r, w)
                    out.append(bytes(data[start:start + length]))
                if out:
                    hq[Q_READ] = r  # the commit: the bytes may be reused from here on
                    hq[Q_RECEIVED] = (hq[Q_RECEIVED] + len(out)) & U64_MASK
            finally:
                self._clock.release()
            if out:
                if hi[I_SENDER_WAITING]:
                    hi[I_SENDER_WAITING] = 0
                    self._space.release()
                for _ in range(len(out) - token):  # tokens of the extra messages taken
                    try:
                        items.acquire(0)
                    except posix_ipc.BusyError:
                        break
                return out
            if ended:
                if token:
                    items.release()  # pass the wake-up on to the next consumer
                raise EndOfChannel("the channel was closed for sending and is drained")
            if not token and deadline is not None and time.monotonic() >= deadline:
                raise Empty("no message arrived before the timeout")

    def _wait_for_item(self, deadline: float | None) -> bool:
        items = self._items
        try:
            items.acquire(0)
            return True
        except posix_ipc.BusyError:
            pass
        wait = sync.LIVENESS_INTERVAL
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return False
        try:
            items.acquire(wait)
        except sync.WAKE_UPS:  # a timeout, or a signal whose handler returned
            return False
        return True

    # --- state -----------------------------------------------------------------------------

    def statistics(self) -> ChannelStatistics:
        """A snapshot of the channel's shared state (see :class:`ChannelStatistics`).

        Raises:
            CorruptChannel: the channel file was truncated by another program (checked with
                ``fstat`` before the mapping is touched: a truncated page faults with SIGBUS).
        """
        if self._closed:
            raise ChannelClosed("this channel handle is closed; open the channel again")
        if self._path is not None:
            size = os.fstat(self._fd).st_size
            if size < self._info.file_size:
                raise CorruptChannel(
                    f"{self._path!r} was truncated to {size} bytes by another program while "
                    f"mapped (it must be {self._info.file_size}); touching the missing pages "
                    "would fault with SIGBUS: stop every process using it and create it again",
                    path=self._path,
                )
        hq, hi = self._hq, self._hi
        w, r = hq[Q_WRITE], hq[Q_READ]
        sent, received = hq[Q_SENT], hq[Q_RECEIVED]
        used = min(ring.used_bytes(w, r), self._capacity)
        return ChannelStatistics(
            capacity=self._capacity,
            used=used,
            free=self._capacity - used,
            messages=(sent - received) & U64_MASK,
            sent=sent,
            received=received,
            closed=bool(hi[I_CLOSED]),
            max_message_size=self._max_message,
            write_position=w,
            read_position=r,
            recoveries=hq[Q_RECOVERIES],
        )


def _count_recovery(hq: memoryview, dead_holder: int) -> None:
    # Called under the repair lock with the dead holder's lock taken over. Nothing it did is
    # half-visible (only position stores commit), and tokens it took or failed to post are made
    # good by the waiters' liveness re-checks: count it for inspect.
    hq[Q_RECOVERIES] = (hq[Q_RECOVERIES] + 1) & U64_MASK
