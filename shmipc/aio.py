"""``shmipc.aio``: the asyncio face of every channel kind.

::

    async with AsyncChannel.open("/dev/shm/jobs") as ch:
        await ch.send({"job": 1})
        async for obj in ch:          # until the channel is closed for sending and drained
            print(obj)

An :class:`AsyncChannel` wraps a :class:`~shmipc.Channel` (:class:`AsyncRecordChannel` a
:class:`~shmipc.RecordChannel`). Each ``await`` first tries the non-blocking call; if it would
have to wait, the coroutine parks on the channel's readiness descriptor (:meth:`Channel.fileno`)
through the loop's ``add_reader`` - no thread per call, no polling, nothing on the CPU while it
waits - and tries again when the descriptor says something may have changed.

Cancellation is safe: the message is taken by a synchronous ``recv_nowait`` in the same step
that returns it, never across an ``await``, so a cancelled ``await ch.recv()`` (also under
``asyncio.wait_for`` or ``asyncio.timeout``) either took no message or returned it. A cancelled
``await ch.send(obj)`` either sent it or did not. Works with any asyncio event loop that has
``add_reader`` (the default one on Linux, uvloop).

Hazards: a handle is used by one event loop at a time. From its first use here the handle's
``*_nowait`` calls never wait for a lock (see :meth:`Channel.fileno`). A peer killed between
its commit and its signal costs a waiter at most :attr:`AsyncChannel.recheck_interval`. Once
it has waited, an AsyncChannel keeps its descriptor registered with the loop (a registration
per wait cost more than the rest of a wake-up): close it (or use ``async with``) rather than
closing the wrapped channel directly while the loop runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .channel import DEFAULT_CAPACITY, Channel
from .codec import Codec
from .errors import ChannelClosed, Empty, EndOfChannel, Full
from .record_channel import DEFAULT_RECORDS, RecordChannel
from .records import Record

__all__ = ["AsyncChannel", "AsyncRecordChannel"]

T = TypeVar("T")


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _AsyncHandle:
    """Private: what the asyncio faces share (waiting, the object and batch calls).

    ``_ch`` is the wrapped channel (its calls); ``_core`` its core handle (the readiness
    descriptor and its arming: the channel itself, or a record channel's core handle).
    """

    recheck_interval: float | None = 0.25
    spin: float = 0.0

    def __init__(self, channel: Any, core: Channel) -> None:
        self._ch = channel
        self._core = core
        self._fd = core.fileno()
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._reading = False

    # --- lifecycle -------------------------------------------------------------------------

    def fileno(self) -> int:
        """The wrapped channel's readiness descriptor."""
        return self._fd

    def close(self) -> None:
        """Close the wrapped channel handle; coroutines parked on it raise ChannelClosed.

        Also takes the descriptor off the event loop it was registered with.
        """
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(ChannelClosed("the channel handle was closed while this "
                                                "call waited on it"))
        self._stop_reading()
        self._ch.close()

    async def __aenter__(self) -> _AsyncHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._ch!r}>"

    # --- waiting ---------------------------------------------------------------------------

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._reading = False

    def _on_readable(self) -> None:
        # The reader stays registered while this channel is used on the loop (a registration
        # per wait costs more than the rest of the wake-up). Readable with coroutines parked:
        # wake them all; each tries again, and a try that fails re-arms (and drains). Readable
        # with none parked - every parked coroutine is in _waiters, from its failed try on -:
        # drain it and disarm, so that peers stop signalling a handle nobody waits on.
        if self._waiters:
            self._wake_all()
        else:
            self._core._ready_quiet()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _readable(self, deadline: float | None) -> None:
        """Park until the descriptor is readable, a re-check is due, or the deadline."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():  # a forked child: its own descriptor, no parent's state
            self._fd, self._pid = self._core.fileno(), os.getpid()
            self._loop, self._waiters, self._reading = None, [], False
        if loop is not self._loop:
            if self._waiters:
                raise RuntimeError("this AsyncChannel is waited on in another event loop; use "
                                   "one AsyncChannel (and handle) per loop")
            self._stop_reading()  # from the previous loop, if it still runs
            self._loop = loop
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if not self._reading:
            loop.add_reader(self._fd, self._on_readable)
            self._reading = True
        delay = self.recheck_interval
        if deadline is not None:
            left = max(deadline - loop.time(), 0.0)
            delay = left if delay is None else min(delay, left)
        timer = loop.call_later(delay, _wake, fut) if delay is not None else None
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    async def _retry(self, call: Callable[[], T], lacking: type[Exception],
                     timeout: float | None, tried: bool) -> T:
        """Call ``call`` (non-blocking) until it does not raise ``lacking`` or time is up.

        ``tried``: the caller's own first try raised ``lacking`` (and armed the descriptor),
        with no other coroutine parked on this channel. Each try is synchronous, in the step
        that returns its result. A try that failed after draining a signal from the descriptor
        may have taken one meant for another parked coroutine (a sender's, say, by a
        receiver): those are woken to look again.
        """
        ch = self._core
        if self.spin > 0 and not self._waiters:  # poll first, blocking the loop up to `spin`
            peek, sending = ch._ready_peek, lacking is Full
            clock = time.perf_counter
            until = clock() + self.spin
            while clock() < until:
                if peek(sending):  # two loads of the positions: cheap to poll
                    try:
                        return call()
                    except lacking:
                        pass
            tried = False  # a real try arms the descriptor before parking
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if not tried:
                drains = ch._ready_drains()
                try:
                    return call()
                except lacking:
                    if self._waiters and ch._ready_drains() != drains:
                        self._wake_all()
            tried = False
            if deadline is not None and loop.time() >= deadline:
                what = "no message arrived" if lacking is Empty else "no room came free"
                raise lacking(f"{what} within {timeout:g} s")
            await self._readable(deadline)

    async def _call(self, call: Callable[[], T], lacking: type[Exception],
                    timeout: float | None) -> T:
        if not self._waiters and not self.spin:
            try:
                return call()
            except lacking:
                if timeout is not None and timeout <= 0:
                    raise
            return await self._retry(call, lacking, timeout, True)
        return await self._retry(call, lacking, timeout, False)

    # --- receiving -------------------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> Any:
        """Receive one object (msgpack; a record on a record channel).

        Raises:
            Empty: no message before the timeout.
            EndOfChannel: the channel was closed for sending and is drained.
            DecodeError, CorruptChannel: as :meth:`Channel.recv`.
        """
        if not self._waiters and not self.spin:  # the fast path, inline
            try:
                return self._ch.recv_nowait()
            except Empty:
                if timeout is not None and timeout <= 0:
                    raise
            return await self._retry(self._ch.recv_nowait, Empty, timeout, True)
        return await self._retry(self._ch.recv_nowait, Empty, timeout, False)

    async def recv_many(self, max_count: int, timeout: float | None = None) -> list[Any]:
        """Receive between 1 and ``max_count`` objects under one lock (see
        :meth:`Channel.recv_many`): waits for the first, takes those waiting then."""
        ch = self._ch

        def call() -> list[Any]:
            return ch.recv_many(max_count, 0)

        return await self._call(call, Empty, timeout)

    def __aiter__(self) -> _AsyncHandle:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.recv()
        except EndOfChannel:
            raise StopAsyncIteration from None

    # --- sending ---------------------------------------------------------------------------

    async def send(self, obj: Any, timeout: float | None = None) -> None:
        """Send one object (msgpack; a record on a record channel), waiting for room.

        Raises:
            Full: no room before the timeout.
            EncodeError, MessageTooLarge, ChannelClosed: as :meth:`Channel.send`.
        """
        ch = self._ch
        if not self._waiters and not self.spin:  # the fast path, inline
            try:
                return ch.send_nowait(obj)
            except Full:
                if timeout is not None and timeout <= 0:
                    raise
            return await self._retry(lambda: ch.send_nowait(obj), Full, timeout, True)
        await self._retry(lambda: ch.send_nowait(obj), Full, timeout, False)

    async def send_many(self, messages: Iterable[Any], timeout: float | None = None) -> None:
        """Send several objects in order, each batch that fits under one lock.

        What fits now goes in at once; the rest waits for room. A cancellation or timeout
        part-way leaves the messages sent before it sent (none is lost or sent twice): the
        :class:`~shmipc.Full` of a timeout says how many in ``sent``, as a
        ``CancelledError`` does in its ``sent`` attribute.
        """
        await self._send_batch(self._ch.send_many, list(messages), timeout)

    async def _send_batch(self, send: Callable[..., None], items: list[Any],
                          timeout: float | None) -> None:
        sent = 0

        def call() -> None:
            nonlocal sent
            try:
                send(items[sent:] if sent else items, 0)
            except Full as exc:
                sent += getattr(exc, "sent", 0)
                raise
            sent = len(items)

        try:
            await self._call(call, Full, timeout)
        except (Full, asyncio.CancelledError) as exc:
            setattr(exc, "sent", sent)  # noqa: B010 (CancelledError has no such attribute)
            raise

    async def close_send(self) -> None:
        """Close the channel for sending, for every process (see :meth:`Channel.close_send`).

        Waits, without blocking the loop, for a send in progress in another process.
        """
        try:
            self._ch.close_send(timeout=0)
        except Full:  # another producer holds the lock (waiting for room): wait aside
            await asyncio.get_running_loop().run_in_executor(None, self._ch.close_send)


class AsyncChannel(_AsyncHandle):
    """A channel whose sends and receives are coroutines, for asyncio.

    Make one with :meth:`create`, :meth:`open`, :meth:`open_or_create`, :meth:`anonymous`, or
    wrap a channel you have: ``AsyncChannel(ch)`` (an anonymous channel in a forked child, a
    channel from a pickle). The semantics are the channel's: exactly once, per-producer order,
    back-pressure (``await send`` waits for room), :meth:`close_send` then
    :class:`~shmipc.EndOfChannel`.

    ``timeout=`` (seconds, None waits forever) raises :class:`~shmipc.Empty` or
    :class:`~shmipc.Full` as the blocking calls do; ``asyncio.timeout``/``wait_for`` work too.

    Attributes:
        recheck_interval: seconds between re-checks while parked (None: never). A re-check is
            a single non-blocking call; it bounds what a peer killed between its commit and
            its signal, or a lock holder that died, costs a waiter.
        spin: seconds a call that would wait keeps retrying before it parks (default 0). It
            blocks the event loop that long, so it suits a loop that serves little else; a
            round trip then costs a few µs instead of an event-loop wake-up (~40-80 µs).
    """

    _ch: Channel

    def __init__(self, channel: Channel) -> None:
        """Wrap ``channel`` (this takes one of its readiness slots: see ``fileno()``)."""
        super().__init__(channel, channel)

    @classmethod
    def create(cls, path: str | os.PathLike[str], capacity: int = DEFAULT_CAPACITY, *,
               mode: int = 0o600, codec: Codec | None = None) -> AsyncChannel:
        """Create a channel file (as :meth:`Channel.create`) and wrap it."""
        return cls(Channel.create(path, capacity, mode=mode, codec=codec))

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, codec: Codec | None = None) -> AsyncChannel:
        """Open a channel file (as :meth:`Channel.open`) and wrap it."""
        return cls(Channel.open(path, codec=codec))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], capacity: int = DEFAULT_CAPACITY,
                       *, mode: int = 0o600, codec: Codec | None = None) -> AsyncChannel:
        """Open the channel file at ``path``, creating it if there is none, and wrap it."""
        return cls(Channel.open_or_create(path, capacity, mode=mode, codec=codec))

    @classmethod
    def anonymous(cls, capacity: int = DEFAULT_CAPACITY, *,
                  codec: Codec | None = None) -> AsyncChannel:
        """Create an anonymous channel (as :meth:`Channel.anonymous`) and wrap it.

        Hazard: a forked child must wrap its inherited channel again
        (``AsyncChannel(parent.channel)``): the readiness descriptor is per process.
        """
        return cls(Channel.anonymous(capacity, codec=codec))

    @property
    def channel(self) -> Channel:
        """The wrapped channel (its blocking calls, statistics, path, ...)."""
        return self._ch

    # --- bytes -----------------------------------------------------------------------------

    async def recv_bytes(self, timeout: float | None = None) -> bytes:
        """Receive one message as bytes (see :meth:`recv`)."""
        return await self._call(self._ch.recv_bytes_nowait, Empty, timeout)

    async def recv_many_bytes(self, max_count: int,
                              timeout: float | None = None) -> list[bytes]:
        """Receive between 1 and ``max_count`` messages as bytes (see :meth:`recv_many`)."""
        ch = self._ch

        def call() -> list[bytes]:
            return ch.recv_many_bytes(max_count, 0)

        return await self._call(call, Empty, timeout)

    async def send_bytes(self, data: Any, timeout: float | None = None) -> None:
        """Send one message of raw bytes, waiting for room (see :meth:`send`)."""
        ch = self._ch
        await self._call(lambda: ch.send_bytes_nowait(data), Full, timeout)

    async def send_many_bytes(self, messages: Iterable[Any],
                              timeout: float | None = None) -> None:
        """Send several raw-bytes messages in order (see :meth:`send_many`)."""
        await self._send_batch(self._ch.send_many_bytes, list(messages), timeout)


class AsyncRecordChannel(_AsyncHandle):
    """The asyncio face of a :class:`~shmipc.RecordChannel`: records, no msgpack.

    ``send``/``recv``/``send_many``/``recv_many`` carry records (values of the record type,
    tuples or dicts in; values out), ``async for`` and ``async with`` work, and waiting,
    timeouts and cancellation are :class:`AsyncChannel`'s; like the record channel it has no
    bytes calls.
    """

    _ch: RecordChannel

    def __init__(self, channel: RecordChannel) -> None:
        """Wrap a record channel (this takes one of its readiness slots)."""
        if not isinstance(channel, RecordChannel):
            raise TypeError(f"AsyncRecordChannel wraps a RecordChannel, not "
                            f"{type(channel).__name__}; use AsyncChannel for a Channel")
        super().__init__(channel, channel._ring)

    @classmethod
    def create(cls, path: str | os.PathLike[str], record: Record,
               capacity: int = DEFAULT_RECORDS, *, mode: int = 0o600) -> AsyncRecordChannel:
        """Create a record channel file (as :meth:`RecordChannel.create`) and wrap it."""
        return cls(RecordChannel.create(path, record, capacity, mode=mode))

    @classmethod
    def open(cls, path: str | os.PathLike[str],
             record: Record | None = None) -> AsyncRecordChannel:
        """Open a record channel file (as :meth:`RecordChannel.open`) and wrap it."""
        return cls(RecordChannel.open(path, record))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], record: Record,
                       capacity: int = DEFAULT_RECORDS, *, mode: int = 0o600) -> AsyncRecordChannel:
        """Open the record channel at ``path``, creating it if there is none, and wrap it."""
        return cls(RecordChannel.open_or_create(path, record, capacity, mode=mode))

    @classmethod
    def anonymous(cls, record: Record,
                  capacity: int = DEFAULT_RECORDS) -> AsyncRecordChannel:
        """Create an anonymous record channel (as :meth:`RecordChannel.anonymous`)."""
        return cls(RecordChannel.anonymous(record, capacity))

    @property
    def channel(self) -> RecordChannel:
        """The wrapped record channel."""
        return self._ch

    async def recv_tuple(self, timeout: float | None = None) -> tuple[Any, ...]:
        """Receive one record as a plain tuple of raw field values."""
        ch = self._ch

        def call() -> tuple[Any, ...]:
            return ch.recv_tuple(0)

        return await self._call(call, Empty, timeout)

    async def send_values(self, *values: Any, timeout: float | None = None) -> None:
        """Send one record given as its field values in order."""
        await self.send(values, timeout)
