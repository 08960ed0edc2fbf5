"""``Queue`` and ``JoinableQueue``: ``multiprocessing``'s queues on a shmipc channel.

Replace ``from multiprocessing import Queue, JoinableQueue`` with ``from shmipc import Queue,
JoinableQueue`` and the program keeps working, with every start method (``fork``, ``spawn``,
``forkserver``), as an argument to ``multiprocessing.Process``, to ``Pool(initializer=...,
initargs=...)`` and to ``concurrent.futures.ProcessPoolExecutor``. ``put`` writes the message
into the shared ring in the calling thread (no feeder thread, no pipe, no pickling unless
asked for): it returns when the message is in the queue, or raises there.

Where a queue lives. A queue is a channel file in ``/dev/shm`` (tmpfs: memory, never disk)
named ``shmipc-queue-<random>``; it pickles by that path, so a child started by any method
opens the same file. ``SHMIPC_QUEUE_DIR`` puts the files elsewhere.

Who uses it, and who removes it. Every handle holds a shared ``flock`` on the file, from the
moment it is created or opened until it is closed (the kernel drops the lock when the process
ends, however it ends). A handle that closes tries an exclusive ``flock`` without waiting: if it
gets it, no other handle in any process holds the file, and it removes the file and the
semaphores. A queue passed to a child that ``multiprocessing`` starts (``spawn`` or
``forkserver``) carries the parent's descriptor along (``multiprocessing.reduction.DupFd``), so
the lock is held on the child's behalf from the moment the child is launched: the parent may
close its handle at once and the queue still waits for the child to open it. A handle left open
at exit is closed by ``multiprocessing``'s exit finalizers, in the main process after the
children were joined, and in every child ``multiprocessing`` starts; a handle on which another
thread still waits lets go of its lock only. A child of ``fork()`` is given a locked open file
of its own by its parent just before the fork, so no process ever lets go of another's hold.
After a SIGKILL of every user, ``python -m shmipc cleanup`` removes the files no process
holds.

This module knows nothing of the core's protocol: it is :class:`~shmipc.channel.Channel`'s
send and receive, plus the counters of ``src/tasks.c``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pickle
import time
import uuid
import weakref
from typing import Any, cast

from . import layout, sync
from .channel import DEFAULT_CAPACITY, Channel
from .codec import Codec
from .errors import ChannelClosed, Full
from .layout import HeaderInfo
from .mapping import Mapping

__all__ = ["FILE_PREFIX", "QUEUE_DIR", "JoinableQueue", "Queue", "is_held", "queue_files",
           "unlink_if_unused"]

QUEUE_DIR = os.environ.get("SHMIPC_QUEUE_DIR", "/dev/shm")
"""Where new queue files go: tmpfs, so a queue is memory and never touches a disk."""

FILE_PREFIX = "shmipc-queue-"
"""The name of every queue file starts with this (``python -m shmipc cleanup`` looks for it)."""

SERIALIZERS = ("msgpack", "pickle")


def _gone(path: str) -> ChannelClosed:
    return ChannelClosed(
        f"the queue {path!r} is gone: every process that used it closed it before this one "
        "opened it. Pass a queue to a child while the sender still holds it open "
        "(multiprocessing does this for you for Process arguments and Pool initargs)")


class _QueueChannel(Channel):
    """A channel whose every handle holds a shared ``flock`` on its file (see the module)."""

    __slots__ = ()

    def __init__(self, mapping: Mapping, info: HeaderInfo, *, path: str | None, fd: int,
                 codec: Codec | None = None) -> None:
        # On create this is the file still being prepared aside: the lock is held before the
        # file has its name, so no cleanup can take a queue that is being made.
        fcntl.flock(fd, fcntl.LOCK_SH)
        super().__init__(mapping, info, path=path, fd=fd, codec=codec)

    @classmethod
    def _opened(cls, fd: int, path: str) -> None:
        # Before the header is read or a semaphore rebuilt: a last user removing the queue
        # holds the exclusive lock while it unlinks, and once it let go the file has no name.
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_nlink == 0:
            raise _gone(path)


def unlink_if_unused(path: str) -> bool:
    """Remove the queue file at ``path`` and its semaphores if no handle holds it.

    No handle holds it when an exclusive ``flock`` can be taken without waiting; the kernel
    drops the locks of a killed process, so this also finds queues whose every user was
    SIGKILLed. Returns True if it removed the queue.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, IsADirectoryError):
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        st = os.fstat(fd)
        if st.st_nlink == 0:
            return False  # removed by another last user meanwhile
        header = os.pread(fd, layout.LIVE_OFFSET, 0)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == st.st_ino:
                os.unlink(path)
        if len(header) >= 48 and header[:8] == layout.MAGIC:
            sync.unlink_channel_semaphores(bytes(header[32:48]))
        return True
    finally:
        os.close(fd)  # and with it the lock: an opener waiting for it finds no name


def queue_files(directory: str | None = None) -> list[str]:
    """Paths of the queue files in ``directory`` (default :data:`QUEUE_DIR`), sorted.

    Files still being created (``….creating``) are listed too: a creator killed at that moment
    leaves one behind.
    """
    directory = QUEUE_DIR if directory is None else directory
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, e) for e in entries if e.startswith(FILE_PREFIX))


def is_held(path: str) -> bool:
    """True if some handle, in any process, holds the queue file at ``path`` now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, IsADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def queue_channel_id(path: str) -> bytes | None:
    """The channel id in the header of the queue file at ``path``, or None if it has none."""
    try:
        with open(path, "rb") as f:
            header = f.read(48)
    except OSError:
        return None
    return header[32:48] if len(header) == 48 and header[:8] == layout.MAGIC else None


class _Attachment:
    """One process's hold on a queue: the channel handle, released once.

    The shared lock is on the channel's descriptor, whose open file the mapping shares (Python's
    mmap keeps a duplicate): it is let go when both are closed. A child of ``fork()`` inherits
    that open file, so it is given a locked open file of its own as well (:func:`_lock_for_child`):
    each process can then let go of its own hold without touching another's, which
    :meth:`abandon` needs.
    """

    __slots__ = ("channel", "path", "opener", "own_lock", "__weakref__")

    def __init__(self, channel: _QueueChannel, path: str) -> None:
        self.channel: _QueueChannel | None = channel
        self.path = path
        self.opener = os.getpid()  # the process whose open file the channel's descriptor is
        self.own_lock = -1  # a fork child's own locked descriptor
        _attachments.add(self)

    def _drop_own_lock(self) -> None:
        fd, self.own_lock = self.own_lock, -1
        if fd >= 0:
            os.close(fd)

    def release(self) -> None:
        channel = self.channel
        if channel is None:
            return
        channel.close()  # RuntimeError if another thread waits in a call: nothing changed
        self.channel = None
        _attachments.discard(self)
        self._drop_own_lock()
        unlink_if_unused(self.path)

    def abandon(self) -> None:
        """At exit, when a thread still waits in a call on the handle (so the mapping cannot
        be closed): let go of this process's lock, so that the queue is removed if this process
        is its last user. The handle is never used again."""
        channel = self.channel
        if channel is None:
            return
        self.channel = None
        _attachments.discard(self)
        if self.opener == os.getpid():
            # Our own open file: fork children hold locks of their own, so unlocking it here
            # lets go of this process's hold only.
            fcntl.flock(channel._fd, fcntl.LOCK_UN)
        self._drop_own_lock()  # a fork child cannot unlock the open file its parent holds
        unlink_if_unused(self.path)

    def adopt_lock(self, fd: int) -> None:
        """In a fork child: hold the queue through ``fd``, an open file locked for this child
        by its parent just before the fork (see :func:`_lock_for_child`)."""
        self._drop_own_lock()  # the parent's, inherited: closing our copy leaves it locked
        self.own_lock = fd


# (attachment, descriptor): open files locked in the parent for the child of a fork about to
# happen. Taken before the fork, so that a child holds a lock of its own from its first
# instant: if it took one after the fork, a parent exiting at once could let go of the only
# hold first.
_for_child: list[tuple[_Attachment, int]] = []


def _lock_for_child() -> None:
    _for_child.clear()
    for attachment in list(_attachments):
        if attachment.channel is None:
            continue
        try:
            fd = os.open(attachment.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue  # removed meanwhile: the inherited open file still holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # we hold it too: never waits
        except OSError:
            os.close(fd)
            continue
        _for_child.append((attachment, fd))


def _after_fork_in_parent() -> None:
    for _, fd in _for_child:
        os.close(fd)  # the child's copy keeps the lock: it is the child's alone now
    _for_child.clear()


def _after_fork_in_child() -> None:
    for attachment, fd in _for_child:
        attachment.adopt_lock(fd)
    _for_child.clear()


os.register_at_fork(before=_lock_for_child, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


_attachments: weakref.WeakSet[_Attachment] = weakref.WeakSet()


def _release_all() -> None:
    """Close every queue handle this process still holds (at exit)."""
    for attachment in list(_attachments):
        with contextlib.suppress(Exception):
            try:
                attachment.release()
            except RuntimeError:  # a thread still waits in get() or put() on it
                attachment.abandon()


class _ExitHook:
    """Registers :func:`_release_all` with multiprocessing's exit finalizers, in this process
    and again in every child multiprocessing starts (which clears the finalizers it inherits).

    Priority -100: in the main process it runs after multiprocessing has terminated its daemon
    children and joined the others, so a queue is removed by whoever really is last. Children
    that multiprocessing starts run it before they exit (they leave by ``os._exit`` after fork
    and forkserver, which skips ``atexit``). Installed with the first queue of a process, so
    that ``import shmipc`` alone changes nothing at exit."""

    def register(self, _: object = None) -> None:
        from multiprocessing import util

        util.Finalize(None, _release_all, exitpriority=-100)


_exit_hook: _ExitHook | None = None


def _install_exit_hook() -> None:
    global _exit_hook
    if _exit_hook is not None:
        return
    from multiprocessing import util

    _exit_hook = _ExitHook()
    _exit_hook.register()
    util.register_after_fork(_exit_hook, _ExitHook.register)


def _pickle_codec() -> tuple[Any, Any]:
    return functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads


class Queue:
    """A process-safe FIFO queue with the interface of :class:`multiprocessing.Queue`.

    ``put(obj, block=True, timeout=None)``, ``get(block=True, timeout=None)``, ``put_nowait``,
    ``get_nowait``, ``qsize``, ``empty``, ``full``, ``close``, ``join_thread`` and
    ``cancel_join_thread`` behave as multiprocessing's, raising :class:`queue.Full` and
    :class:`queue.Empty` (as :class:`shmipc.Full` and :class:`shmipc.Empty`, which subclass
    them). Pass it to processes started by any method: as a ``Process`` argument, in
    ``Pool(initializer=..., initargs=...)`` or ``ProcessPoolExecutor(initializer=...,
    initargs=...)``. Every item is delivered exactly once, to one consumer; the items of one
    producer arrive in the order put.

    Differences from :class:`multiprocessing.Queue` (docs/queue.md has the full list):

    * Items are msgpack objects by default: ``None``, bools, ints, floats, str, bytes, lists and
      dicts (a tuple comes back as a list). ``serializer="pickle"`` carries anything picklable,
      as multiprocessing does.
    * No feeder thread: ``put`` has written the item into shared memory when it returns, or it
      raised (an unpicklable or unencodable item raises in the caller, not in a thread).
      ``join_thread`` and ``cancel_join_thread`` have nothing to do.
    * The queue is a ring of ``capacity`` bytes (default 4 MiB) in ``/dev/shm``: ``put``
      blocks while it is full, even with ``maxsize=0``, and one item may take at most half of
      it (:class:`shmipc.MessageTooLarge`, a ``ValueError``, otherwise).
    * ``maxsize`` is checked against the count of waiting items before each ``put``; producers
      putting at the same instant may pass it by up to (producers - 1) items. A producer
      blocked on ``maxsize`` re-checks within 2 ms of room appearing.
    * ``qsize()`` is approximate (as multiprocessing's is), but works on every platform.
    * Pickling a queue outside process start-up (say, through a ``Pool`` task) works too, by
      path: it fails with :class:`shmipc.ChannelClosed` if every holder closed it meanwhile.

    Hazards: a consumer killed (SIGKILL) inside ``get`` loses at most the item it was taking;
    a process killed by a signal does not remove the queue, so if it was the last user the
    file stays until ``python -m shmipc cleanup``.

    Args:
        maxsize: the most items waiting at once (see above); 0 or less: bounded by
            ``capacity`` only.
        capacity: bytes of the ring, rounded up to a power of two of at least 4096.
        serializer: ``"msgpack"`` (default: fast, language-neutral) or ``"pickle"``.
        codec: msgpack settings (ext types, ``default=``) for the msgpack serializer. A
            codec is not sent to other processes: such a queue is shared by ``fork`` only.
        ctx: accepted for compatibility with ``multiprocessing.queues.Queue``; unused (a
            shmipc queue works with every start method).
    """

    _channel: _QueueChannel | None

    def __init__(self, maxsize: int = 0, *, capacity: int = DEFAULT_CAPACITY,
                 serializer: str = "msgpack", codec: Codec | None = None,
                 ctx: Any = None) -> None:
        """Create a new queue (a fresh file in :data:`QUEUE_DIR`)."""
        if serializer not in SERIALIZERS:
            raise ValueError(f"serializer must be one of {SERIALIZERS} (got {serializer!r})")
        if serializer == "pickle" and codec is not None:
            raise ValueError("codec= configures msgpack; it does not apply to "
                             "serializer='pickle'")
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        maxsize = max(maxsize, 0)
        path = os.path.join(QUEUE_DIR, f"{FILE_PREFIX}{uuid.uuid4().hex}")
        channel = cast(_QueueChannel, _QueueChannel.create(path, capacity, codec=codec))
        channel._mapping.buffer[layout.QUEUE_MAXSIZE:layout.QUEUE_MAXSIZE + 8] = (
            min(maxsize, layout.U64_MASK).to_bytes(8, "little"))
        self._attach(channel, path, serializer)
        self._custom_codec = codec is not None

    def _attach(self, channel: _QueueChannel, path: str, serializer: str) -> None:
        self._channel = channel
        self._path = path
        self._serializer = serializer
        self._closed = False
        self._custom_codec = False
        if serializer == "pickle":
            channel._set_codec(*_pickle_codec())
        raw = bytes(channel._mapping.buffer[layout.QUEUE_MAXSIZE:layout.QUEUE_MAXSIZE + 8])
        self._maxsize = min(int.from_bytes(raw, "little"), 1 << 62)
        # The per-item calls go straight to the compiled core's methods: with no maxsize to
        # check, put and get are the core's (multiprocessing's arguments, parsed in C) until
        # close() removes them again (the methods below then say the queue is closed).
        self._send = channel.send
        self._recv = channel.recv
        if not self._maxsize:
            self.put = channel._put  # type: ignore[method-assign]
        self.get = channel._get  # type: ignore[method-assign]
        self._attachment = _Attachment(channel, path)
        _install_exit_hook()

    # --- multiprocessing.Queue's interface ---------------------------------------------------

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` into the queue.

        With ``block`` true (the default) wait up to ``timeout`` seconds (None: as long as it
        takes) for room; with ``block`` false raise :class:`queue.Full` at once if there is
        none. The item is in shared memory when this returns.

        Raises:
            queue.Full: (:class:`shmipc.Full`) no room before the timeout.
            ValueError: this handle was closed; or (:class:`shmipc.MessageTooLarge`) the item
                can never fit the ring.
            TypeError: (:class:`shmipc.EncodeError`) msgpack cannot encode ``obj``; use
                ``serializer="pickle"``.
        """
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        if not block or timeout is not None and timeout < 0:
            timeout = 0
        if self._maxsize:
            timeout = self._wait_below_maxsize(timeout)
        self._send(obj, timeout)

    def _wait_below_maxsize(self, timeout: float | None) -> float | None:
        """Wait for fewer than maxsize items; return what is left of the timeout."""
        started = time.monotonic()
        if not self._live()._wait_fewer(self._maxsize, timeout):
            raise Full(f"the queue holds {self._maxsize} items (its maxsize) and none was "
                       + ("taken" if not timeout else f"taken within {timeout:g} s"))
        if timeout is None:
            return None
        return max(0.0, timeout - (time.monotonic() - started))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item from the queue.

        With ``block`` true (the default) wait up to ``timeout`` seconds (None: as long as it
        takes); with ``block`` false raise :class:`queue.Empty` at once if none is waiting.

        Raises:
            queue.Empty: (:class:`shmipc.Empty`) no item before the timeout.
            ValueError: this handle was closed.
            shmipc.DecodeError: an item that cannot be decoded (it is consumed; its bytes are
                on the error).
        """
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        if block:
            if timeout is None:
                return self._recv()
            return self._recv(max(timeout, 0))
        return self._recv(0)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``: put if there is room now, else raise :class:`queue.Full`."""
        self.put(obj, False)

    def get_nowait(self) -> Any:
        """``get(False)``: return an item if one is waiting, else raise :class:`queue.Empty`."""
        return self.get(False)

    def qsize(self) -> int:
        """The approximate number of items waiting (others may put and get meanwhile)."""
        return self._live()._messages_waiting()

    def empty(self) -> bool:
        """True if no item is waiting now (approximate, as :meth:`qsize`)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """True if the queue holds ``maxsize`` items now (approximate, as :meth:`qsize`).

        A queue with no ``maxsize`` is never reported full, although a ``put`` of an item
        larger than the room left in its ring waits for consumers.
        """
        return bool(self._maxsize) and self.qsize() >= self._maxsize

    def close(self) -> None:
        """Release this process's handle: no more ``put`` or ``get`` through it. Idempotent.

        Items already put stay for the other processes. The last handle to close, in any
        process, removes the queue's file and semaphores. Called when the queue is garbage
        collected and when the process exits.

        Raises:
            RuntimeError: another thread of this process waits in ``put`` or ``get`` on this
                handle (end that wait first).
        """
        if self._closed:
            return
        self._attachment.release()
        self._closed = True
        self._channel = None
        self.__dict__.pop("put", None)
        self.__dict__.pop("get", None)

    def join_thread(self) -> None:
        """Nothing to wait for: ``put`` wrote each item before it returned (no feeder thread)."""

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: no item ever waits in this process's memory (no feeder thread)."""

    # --- beyond multiprocessing ------------------------------------------------------------

    @property
    def path(self) -> str:
        """The queue's file (``python -m shmipc inspect PATH`` shows its state)."""
        return self._path

    @property
    def maxsize(self) -> int:
        """The ``maxsize`` the queue was made with (0: bounded by its ring only)."""
        return self._maxsize

    def _live(self) -> _QueueChannel:
        if self._closed or self._channel is None:
            raise ValueError(f"Queue {self!r} is closed")
        return self._channel

    def __del__(self) -> None:
        attachment = getattr(self, "_attachment", None)
        if attachment is not None:
            with contextlib.suppress(Exception):
                attachment.release()

    def __reduce__(self) -> tuple[Any, ...]:
        channel = self._live()
        if self._custom_codec:
            raise TypeError(
                "a queue made with codec= cannot be passed to a process started with spawn or "
                "forkserver, or pickled: a codec holds functions and is not sent along. Use "
                "the fork start method, or serializer='pickle'")
        from multiprocessing import context, reduction

        token = None
        if context.get_spawning_popen() is not None:
            # Starting a child: hand it our descriptor, and with it our shared lock, so the
            # queue stays until the child has opened it, even if we close at once.
            token = reduction.DupFd(channel._fd)
        return (_rebuild, (type(self), self._path, self._serializer, token))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"maxsize={self._maxsize}"
        return f"<shmipc.{type(self).__name__} {self._path!r} {state}>"


def _rebuild(cls: type[Queue], path: str, serializer: str, token: Any) -> Queue:
    """Unpickle a queue: open its file by path (holding the sender's descriptor meanwhile)."""
    passed = token.detach() if token is not None else -1
    try:
        channel = cast(_QueueChannel, _QueueChannel.open(path))
    except FileNotFoundError:
        raise _gone(path) from None
    finally:
        if passed >= 0:
            os.close(passed)
    queue = cls.__new__(cls)
    queue._attach(channel, path, serializer)
    return queue


class JoinableQueue(Queue):
    """A :class:`Queue` with ``task_done()`` and ``join()``, as
    :class:`multiprocessing.JoinableQueue`.

    Every item put is a task; ``task_done()`` marks one finished; ``join()`` waits until every
    task put so far is finished. The count is shared by every process (in the queue's header:
    items ever put less ``task_done`` calls ever made), so it is exact whoever puts and whoever
    finishes. ``join()`` polls the count in a sleep of slices that double up to 2 ms: it
    returns within 2 ms of the last ``task_done`` and uses no CPU meanwhile.

    Hazard: a consumer killed between ``get`` and ``task_done`` leaves its task unfinished for
    good, as with multiprocessing; ``join(timeout=...)`` bounds the wait.
    """

    def task_done(self) -> None:
        """Mark one task (an item taken with ``get``) finished.

        Raises:
            ValueError: called more times than items were put; or this handle was closed.
        """
        self._live()._task_done()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put so far has been marked finished with :meth:`task_done`.

        Args:
            timeout: seconds to wait at most (None: as long as it takes; multiprocessing's
                ``join`` has no timeout).

        Returns:
            True when no task is unfinished; False if some still were at the timeout.

        Raises:
            ValueError: this handle was closed.
        """
        if timeout is not None and timeout < 0:
            timeout = 0
        return self._live()._join_tasks(timeout)

    def unfinished_tasks(self) -> int:
        """Items put and not yet marked finished, in every process (a snapshot)."""
        return self._live()._tasks_unfinished()
