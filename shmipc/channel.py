"""``Channel``: a ring of frames in a shared mapping, the public face of the compiled core.

A channel is a mapping (``mapping.py``) holding a header (``layout.py``) and a ring of frames,
plus four named semaphores (``sync.py``). Everything per message - the locks, the space check,
the copy, the commit, the wake-up, the bounded spin and the sliced sleep - is one call into the
compiled core (``shmipc._core``, from ``src/``), which :class:`Channel` subclasses: ``send``,
``recv`` and their kin are the core's methods, with msgpack encoding and decoding around the
copy. This module keeps what is not per message: creating, opening and validating channels,
the semaphores' names, the zero-copy views, statistics, pickling.

The protocol, in five lines (``src/channel.c`` and ``src/lock.c`` say it in full):

1. A producer takes the producer lock (one compare-and-swap of the lock word from 0 to its
   identity), waits (holding it) until the frame fits, copies the frame in, and commits it by
   storing the new write position (release); then it releases the lock.
2. A consumer takes the consumer lock, copies frames out below the write position (loaded with
   acquire), and commits by storing the read position; only position stores commit, so a
   process killed mid-copy leaves nothing half-visible.
3. A side with nothing to do polls for ``spin`` seconds, then registers as a sleeper in the
   header, re-checks after a fence, and sleeps on a semaphore in slices; the other side posts
   only when somebody sleeps. Semaphores are wake-ups; positions are the truth.
4. A lock is taken over only from a holder proven dead (pid gone or reused, same pid
   namespace); a stopped holder blocks its side until it continues or the caller times out.
5. Signals follow PEP 475: a handler that returns does not end a wait; one that raises does.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _core, layout, sync
from .codec import Codec
from .errors import (
    ChannelClosed,
    CorruptChannel,
    EndOfChannel,
    IncompatibleChannel,
    NotAChannel,
    WrongStartMethod,
)
from .layout import HEADER_SIZE, ChannelKind, HeaderInfo
from .mapping import Mapping, create_file, map_anonymous, map_descriptor

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_SPIN", "Channel", "ChannelStatistics"]

DEFAULT_CAPACITY = 4 << 20
"""Default data capacity: a few MiB, small enough to stay in the last-level cache."""

DEFAULT_SPIN = float(os.environ.get("SHMIPC_SPIN", "50e-6"))
"""Seconds a blocked receive or send polls before it sleeps (see :attr:`Channel.spin`).

50 µs: long enough to catch a busy peer's next message (a wake-up through the semaphore costs
tens of µs), short enough that an idle receiver's CPU use is nil. The environment variable
``SHMIPC_SPIN`` sets it for a whole process. New handles read it.
"""


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
        recoveries: lock holders found dead and taken over from.
        receivers_waiting: consumers registered as sleeping for a message now.
        senders_waiting: producers registered as sleeping for room now.
        semaphore_generation: how often the semaphores were rebuilt.
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
    receivers_waiting: int = 0
    senders_waiting: int = 0
    semaphore_generation: int = 0


def _closed_error() -> ChannelClosed:
    return ChannelClosed("this channel handle is closed; open the channel again")


class Channel(_core.CoreChannel):
    """A multi-producer, multi-consumer message channel in shared memory.

    Make one with :meth:`create`, :meth:`open`, :meth:`open_or_create` (a file: unrelated
    processes meet by path, and unread messages outlive every process) or :meth:`anonymous`
    (created before ``fork()``, inherited by the child). Every message is delivered exactly
    once, to one consumer, whole; the messages of one producer arrive in the order sent. A full
    ring blocks the sender; nothing is dropped or overwritten unread.

    ``send``/``recv`` carry any msgpack-able object; ``send_bytes``/``recv_bytes`` carry bytes;
    ``send_many``/``recv_many`` move batches under one lock; ``recv_view``/``send_view`` read
    and write a message in place. Blocking calls take ``timeout=`` (seconds, None waits
    forever) and raise :class:`Full` or :class:`Empty` when it expires; the ``*_nowait`` forms
    raise at once. :meth:`fileno` is a readiness descriptor for ``select``/``poll`` and event
    loops (``shmipc.wait``, ``shmipc.aio``).

    Hazards: a channel file truncated by another program while mapped makes the next access
    fault (SIGBUS), which no library can catch; shmipc detects it at :meth:`open` and in
    :meth:`statistics`. A handle may be shared by threads; :meth:`close` refuses while another
    thread waits in a call on it.
    """

    __slots__ = ("_mapping", "_info", "_path", "_fd", "_codec", "_data", "_closed", "_view")

    _expected_kind = ChannelKind.FRAMES

    def __init__(self, mapping: Mapping, info: HeaderInfo, *, path: str | None, fd: int,
                 codec: Codec | None = None) -> None:
        """Private: use :meth:`create`, :meth:`open`, :meth:`open_or_create`, :meth:`anonymous`."""
        super().__init__(mapping.buffer)  # the core validates the header and opens semaphores
        self._mapping = mapping
        self._info = info
        self._path = path
        self._fd = fd
        self._codec = codec if codec is not None else Codec()
        self._data = mapping.buffer[HEADER_SIZE:HEADER_SIZE + info.capacity]
        self._closed = False
        self._view: Any = None  # a recv_view whose view an exporter still held at block end
        fast = self._codec.fast_paths()
        self._set_codec(self._codec.encode, self._codec.decode, *(fast or ()))
        # The binding's own msgpack code first; the codec's pack and unpackb take what it gives
        # up on (ext types, subclasses, invalid input), so both give the same bytes, objects
        # and errors.
        self._set_native_msgpack(fast is not None)
        self.spin = DEFAULT_SPIN

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
        return cls._create(path, capacity, mode=mode, codec=codec)  # type: ignore[no-any-return]

    @classmethod
    def _create(cls, path: str | os.PathLike[str], capacity: int, *, mode: int,
                codec: Any, kind: ChannelKind = ChannelKind.FRAMES, record_size: int = 0,
                schema: str = "", initial_position: int = 0) -> Any:
        path = os.fspath(path)
        cap = layout.capacity_for(capacity)
        if os.path.lexists(path):
            raise FileExistsError(
                f"{path!r} already exists; open it with {cls.__name__}.open, or use "
                f"{cls.__name__}.open_or_create"
            )
        channel_id = os.urandom(16)
        aside = f"{path}.{channel_id.hex()[:12]}.creating"
        create_file(aside, HEADER_SIZE + cap, mode=mode)
        fd = -1
        names: list[str] = []
        mapping: Mapping | None = None
        channel = None
        try:
            fd = os.open(aside, os.O_RDWR | os.O_CLOEXEC)
            mapping = map_descriptor(fd, HEADER_SIZE + cap, path=path)
            info = layout.initialize(mapping.buffer, cap, kind=kind, record_size=record_size,
                                     schema=schema, channel_id=channel_id,
                                     initial_position=initial_position)
            names = sync.create_semaphores(channel_id, 0, mode)
            channel = cls(mapping, info, path=path, fd=fd, codec=codec)
            try:
                os.link(aside, path)
            except FileExistsError:
                raise FileExistsError(
                    f"{path!r} was created by another process meanwhile; open it with "
                    f"{cls.__name__}.open") from None
        except BaseException:
            if channel is not None:
                channel.close()  # and with it the mapping and the descriptor
            else:
                if mapping is not None:
                    mapping.close()
                if fd >= 0:
                    os.close(fd)
            for name in names:
                sync.unlink_semaphore(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
            raise
        os.unlink(aside)
        return channel

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, codec: Codec | None = None) -> Channel:
        """Open an existing channel file.

        Everything is validated before use. If the channel's semaphores are gone (after a
        reboot, or removed by hand) they are rebuilt under an exclusive lock on the file, and
        no message is lost.

        Raises:
            FileNotFoundError: nothing at ``path``.
            PermissionError: the file or its semaphores belong to somebody else.
            NotAChannel: ``path`` is not a shmipc channel (not a file, wrong magic).
            IncompatibleChannel: another format version, or a record channel.
            CorruptChannel: a header or position fails validation, or the file was truncated.
        """
        return cls._open(path, codec)  # type: ignore[no-any-return]

    @classmethod
    def _open(cls, path: str | os.PathLike[str], codec: Any) -> Any:
        path = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except IsADirectoryError:
            raise NotAChannel(f"{path!r} is a directory, not a shmipc channel file",
                              path=path) from None
        mapping: Mapping | None = None
        try:
            cls._opened(fd, path)
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
            _validate_positions(mapping, info, path)
            _ensure_semaphores(fd, mapping, info, st.st_mode & 0o777, path)
            return cls(mapping, info, path=path, fd=fd, codec=codec)
        except BaseException:
            if mapping is not None:
                mapping.close()
            os.close(fd)
            raise

    @classmethod
    def _opened(cls, fd: int, path: str) -> None:
        """Private hook: runs on the descriptor :meth:`open` just opened, before anything is
        read, mapped or rebuilt (shmipc.Queue takes its attachment lock here)."""

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
        return cls._anonymous(layout.capacity_for(capacity), codec=codec)  # type: ignore[no-any-return]

    @classmethod
    def _anonymous(cls, cap: int, *, codec: Any, kind: ChannelKind = ChannelKind.FRAMES,
                   record_size: int = 0, schema: str = "") -> Any:
        mapping = map_anonymous(HEADER_SIZE + cap)
        names: list[str] = []
        try:
            info = layout.initialize(mapping.buffer, cap, kind=kind, record_size=record_size,
                                     schema=schema)
            names = sync.create_semaphores(info.channel_id, 0, 0o600)
            return cls(mapping, info, path=None, fd=-1, codec=codec)  # opens the semaphores
        except BaseException:
            mapping.close()
            raise
        finally:
            for name in names:  # the open handles live on; no name is left behind
                sync.unlink_semaphore(name)

    def close(self) -> None:
        """Release this process's handle: unmap, close the semaphores and the file. Idempotent.

        The channel, its file and its messages stay for other handles; :meth:`unlink` removes
        them.

        Raises:
            RuntimeError: another thread waits in a call on this handle (end it first), or a
                view from :meth:`recv_view` is still held by an exporter.
        """
        if self._closed:
            return
        if self._view is not None and not self._settle_view():
            raise RuntimeError("a view from recv_view() is still held by an exporter (such as "
                               "a numpy array); release it before closing the handle")
        self._detach()
        self._closed = True
        self._data.release()
        self._mapping.close()
        if self._fd >= 0:
            os.close(self._fd)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass  # views still out at interpreter exit: the OS reclaims everything

    def flush(self) -> None:
        """Write the channel's pages to its file now (``msync``), for a machine crash.

        Other processes see every message at once without this; the kernel writes the pages
        back on its own within seconds. Call it where messages must survive a power loss.
        A no-op for an anonymous channel.
        """
        if self._closed:
            raise _closed_error()
        self._mapping.flush()

    def unlink(self) -> None:
        """Remove the channel's file and its semaphore names. Idempotent.

        Handles that are open stay usable until closed; new :meth:`open` calls fail. An
        anonymous channel has no names left to remove.
        """
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            sync.unlink_channel_semaphores(self._info.channel_id)

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
        state = "closed" if self._closed else f"capacity={self._info.capacity}"
        return f"<{type(self).__name__} {where} {state}>"

    def __iter__(self) -> Iterator[Any]:
        """Yield received objects until the channel is closed for sending and drained."""
        recv = self.recv
        while True:
            try:
                yield recv()
            except EndOfChannel:
                return

    @property
    def path(self) -> str | None:
        """The channel file's path, or None for an anonymous channel."""
        return self._path

    @property
    def capacity(self) -> int:
        """Bytes in the ring."""
        return self._info.capacity

    @property
    def max_message_size(self) -> int:
        """The largest message, in bytes, this channel takes (half its capacity less 8)."""
        return layout.max_message_size(self._info.capacity)

    @property
    def closed(self) -> bool:
        """True once this handle was closed with :meth:`close`."""
        return self._closed

    @property
    def semaphore_names(self) -> dict[str, str]:
        """The POSIX names of this channel's semaphores now, by role (i, s, p, c)."""
        generation = self._state()["semaphore_generation"] if not self._closed else 0
        return sync.semaphore_names(self._info.channel_id, generation)

    @property
    def info(self) -> HeaderInfo:
        """The fixed header fields (format version, capacity, kind, channel id, ...)."""
        return self._info

    # --- zero copy -----------------------------------------------------------------------

    def recv_view(self, timeout: float | None = None) -> _RecvView:
        """Receive one message without copying it: a read-only view of its bytes in the ring.

        ::

            with ch.recv_view() as view:
                total += checksum(view)   # the bytes stay in place, nobody can overwrite them

        The message is consumed when the block ends, even by an exception; its space goes back
        to the producers then, and using the view afterwards raises ``ValueError``. While the
        block runs this handle holds the consumer lock: other consumers wait, and producers
        may fill the rest of the ring but never the message's bytes. If this process dies
        inside the block, another consumer takes the lock over and receives the same message,
        so nothing is lost.

        Hazards: keep the block short (it blocks every other consumer); a copy made inside the
        block (``bytes(view)``) is yours to keep, but slices and other views derived from
        ``view`` must not outlive the block. If an exporter such as a numpy array still holds
        the view at the end of the block, ``BufferError`` is raised and the message and the
        lock stay held until a later receive or :meth:`close` on this handle finds the view
        released (receives raise ``RuntimeError`` until then).

        Raises:
            Empty, EndOfChannel, CorruptChannel: as for :meth:`recv_bytes` (from ``with``).
        """
        return _RecvView(self, timeout)

    def recv_many_view(self, max_count: int, timeout: float | None = None) -> _RecvManyView:
        """Receive up to ``max_count`` messages without copying them, committed together.

        ::

            claim = ch.recv_many_view(256)
            with claim as views:              # read-only views of the messages in the ring
                for position, view in zip(claim.positions, views):
                    publish(message_id=position, data=view)
            # committed here, all at once: their space goes back to the producers

        Waits up to ``timeout`` for the first message, then takes those committed now (at
        least one, at most ``max_count``), in order. ``claim.positions[i]`` is the read
        position of message ``i``: a 64-bit counter that never repeats in this channel, so
        the channel id and the position name a message for ever (a message id for a remote
        system's de-duplication). Unlike :meth:`recv_view`, nothing is committed when the
        block ends by an exception: the messages stay in the channel, at the same positions,
        for the next receive. If this process dies inside the block, another consumer takes
        the lock over and receives them. After the block the views are released (using one
        raises ``ValueError``), so nobody reads ring bytes a producer has reused.

        While the block runs this handle holds the consumer lock: other consumers wait (as
        long as the block lasts: it may span a network round trip for a process that is the
        channel's only consumer), and producers may fill the rest of the ring but never these
        messages' bytes. Commit and claim from the same thread.

        Hazards: as for :meth:`recv_view`: slices and views derived from a view must not
        outlive the block, and if an exporter (a numpy array, say) still holds a view at the
        end of the block, ``BufferError`` is raised and the messages and the lock stay held
        until a later receive or :meth:`close` on this handle finds the views released; the
        commit (or, after an exception, the abort) happens then.

        Raises:
            ValueError: ``max_count`` is below 1.
            Empty, EndOfChannel, CorruptChannel: as for :meth:`recv_many` (from ``with``).
        """
        return _RecvManyView(self, max_count, timeout)

    def _settle_view(self, raise_if_held: bool = False) -> bool:
        """Commit (or abort) the claim of a finished view block once its views can be
        released."""
        if self._view is None:
            return False
        views, commit = self._view
        try:
            for view in views:
                view.release()
        except BufferError:
            if raise_if_held:
                raise
            return False
        self._view = None
        self._recv_finish(commit)  # a commit: the messages' bytes may be reused from here
        return True

    def send_view(self, size: int, timeout: float | None = None) -> _SendView:
        """Send one message of ``size`` bytes written in place: a writable view into the ring.

        ::

            with ch.send_view(len(frame)) as buf:
                camera.read_into(buf)      # no copy: consumers read these very bytes

        The message is committed (visible to consumers, whole) when the block ends normally;
        an exception inside the block sends nothing. While the block runs this handle holds
        the producer lock: other producers wait. If this process dies inside the block,
        nothing of the message is visible and the lock is taken over.

        Hazards: keep the block short; the view must not outlive the block (releasing it is
        checked: ``BufferError`` if an exporter still holds it, and then nothing is sent).

        Raises:
            MessageTooLarge, Full, ChannelClosed: as for :meth:`send_bytes` (from ``with``).
        """
        return _SendView(self, size, timeout)

    # --- state ---------------------------------------------------------------------------

    def statistics(self) -> ChannelStatistics:
        """A snapshot of the channel's shared state (see :class:`ChannelStatistics`).

        Raises:
            CorruptChannel: the channel file was truncated by another program (checked with
                ``fstat`` before the mapping is touched: a truncated page faults with SIGBUS).
        """
        if self._closed:
            raise _closed_error()
        self._check_size()
        s = self._state()
        capacity = self._info.capacity
        used = min((s["write_position"] - s["read_position"]) & layout.U64_MASK, capacity)
        return ChannelStatistics(
            capacity=capacity,
            used=used,
            free=capacity - used,
            messages=(s["sent"] - s["received"]) & layout.U64_MASK,
            sent=s["sent"],
            received=s["received"],
            closed=s["closed"],
            max_message_size=self.max_message_size,
            write_position=s["write_position"],
            read_position=s["read_position"],
            recoveries=s["recoveries"],
            receivers_waiting=s["receivers_waiting"],
            senders_waiting=s["senders_waiting"],
            semaphore_generation=s["semaphore_generation"],
        )

    def _check_size(self) -> None:
        if self._path is None:
            return
        size = os.fstat(self._fd).st_size
        if size < self._info.file_size:
            raise CorruptChannel(
                f"{self._path!r} was truncated to {size} bytes by another program while "
                f"mapped (it must be {self._info.file_size}); touching the missing pages "
                "would fault with SIGBUS: stop every process using it and create it again",
                path=self._path,
            )


class _RecvView:
    """The context manager of :meth:`Channel.recv_view` (a class: cheaper than a generator)."""

    __slots__ = ("_ch", "_timeout", "_held", "_position")

    def __init__(self, ch: Channel, timeout: float | None) -> None:
        self._ch = ch
        self._timeout = timeout
        self._held: Any = None
        self._position: int | None = None

    @property
    def position(self) -> int:
        """The message's read position: a 64-bit counter that never repeats in the channel
        (with the channel id, a name for the message that survives a crash). One load from
        the header, no lock; inside the block only.

        Raises:
            RuntimeError: outside the ``with`` block.
        """
        if self._position is None:
            if self._held is None:
                raise RuntimeError("the position of a recv_view is known inside its block "
                                   "only")
            self._position = self._ch._recv_position()
        return self._position

    def __enter__(self) -> memoryview:
        ch = self._ch
        if ch._closed:
            raise _closed_error()
        if ch._view is not None:
            ch._settle_view()
        offset, length = ch._recv_claim(self._timeout)
        region = ch._data[offset:offset + length]
        view = region.toreadonly()
        self._held = ((view, region), True)  # inside the block: receives here are refused
        return view

    def __exit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        self._ch._view = held  # settled now, or by a later call once an exporter lets go
        self._ch._settle_view(raise_if_held=True)


class _RecvManyView:
    """The context manager of :meth:`Channel.recv_many_view`.

    Attributes:
        positions: inside the block, the read position of each claimed message, in order.
    """

    __slots__ = ("_ch", "_max_count", "_timeout", "_views", "positions")

    def __init__(self, ch: Channel, max_count: int, timeout: float | None) -> None:
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1 (got {max_count})")
        self._ch = ch
        self._max_count = max_count
        self._timeout = timeout
        self._views: tuple[memoryview, ...] | None = None
        self.positions: list[int] = []

    def __enter__(self) -> list[memoryview]:
        ch = self._ch
        if ch._closed:
            raise _closed_error()
        if ch._view is not None:
            ch._settle_view()
        claimed = ch._recv_claim_many(self._max_count, self._timeout)
        data = ch._data
        # Only these read-only views exist (the slices they were made from are gone), so
        # releasing them is what proves nobody can read the ring's bytes through them.
        views = [data[offset:offset + length].toreadonly() for offset, length, _ in claimed]
        self.positions = [position for _, _, position in claimed]
        self._views = tuple(views)
        return views

    def __exit__(self, exc_type: object, *rest: object) -> None:
        views, self._views = self._views, None
        if views is None:
            return
        ch = self._ch
        ch._view = (views, exc_type is None)  # settled now, or once an exporter lets go
        ch._settle_view(raise_if_held=exc_type is None)


class _SendView:
    """The context manager of :meth:`Channel.send_view`."""

    __slots__ = ("_ch", "_size", "_timeout", "_region")

    def __init__(self, ch: Channel, size: int, timeout: float | None) -> None:
        self._ch = ch
        self._size = size
        self._timeout = timeout

    def __enter__(self) -> memoryview:
        ch = self._ch
        if ch._closed:
            raise _closed_error()
        offset = ch._send_claim(self._size, self._timeout)
        self._region = ch._data[offset:offset + self._size]
        return self._region

    def __exit__(self, exc_type: object, *rest: object) -> None:
        region, ch = self._region, self._ch
        if exc_type is None:
            try:
                region.release()  # BufferError if an exporter holds it: then nothing is sent
            except BaseException:
                ch._send_finish(None)
                raise
            ch._send_finish(self._size)
            return
        with contextlib.suppress(BufferError):
            region.release()
        ch._send_finish(None)


def _validate_positions(mapping: Mapping, info: HeaderInfo, path: str) -> None:
    live = bytes(mapping.buffer[layout.WRITE_POSITION:layout.WRITE_POSITION + layout.LIVE.size])
    w, _, _, r, _, _, _, _, _ = layout.LIVE.unpack(live)
    if w & 7 or r & 7 or (w - r) & layout.U64_MASK > info.capacity:
        raise CorruptChannel(
            f"{path!r}: positions are impossible (write {w}, read {r}, capacity "
            f"{info.capacity}); the file was overwritten by something else than shmipc",
            path=path,
        )


def _ensure_semaphores(fd: int, mapping: Mapping, info: HeaderInfo, mode: int,
                       path: str) -> None:
    buf = mapping.buffer
    at = layout.SEMAPHORE_GENERATION

    def read_generation() -> int:
        return int.from_bytes(buf[at:at + 4], "little")

    def write_generation(generation: int) -> None:
        buf[at:at + 4] = generation.to_bytes(4, "little")

    sync.ensure_semaphores(fd, info.channel_id, read_generation, write_generation, mode, path)
