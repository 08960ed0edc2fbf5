"""Test only: named points inside the lock protocol where a torture test can SIGKILL a process.

Nothing imports this module: the library's hot paths carry no hook and cost nothing. A test
worker calls :func:`install` in its own process (after ``fork``, before opening a channel);
from then on :class:`sync.RobustLock` is replaced there by a subclass that calls ``hook(point)``
at each point below, and ``ring.write_frame``/``ring.read_frame`` by wrappers that do the same:

=========  ==================================================================================
point      where
=========  ==================================================================================
window     the lock semaphore is taken, the holder slot not yet stored (nobody is recorded);
           on the uncontended path only (the same two steps follow a timed wait)
held       the holder slot is stored: the lock is held, nothing done under it yet
frame      a frame was copied in (producer) or located (consumer), its position not committed
releasing  the work is done and committed; the holder slot still says "held"
unposted   the holder slot says "released", the semaphore not yet posted
=========  ==================================================================================

The subclass repeats :meth:`RobustLock.acquire`/``release`` with the hooks between their two
steps; ``tests/test_crash.py`` checks that every point is reached, so a change to the lock that
this copy misses shows up there.

``Channel`` inlines the uncontended single-message send and receive (the same protocol, with
no calls to hook). In a hooked process those two fast paths are switched off, so that every
message there goes the general way through the hooked lock and ring functions; the fast paths
themselves are tortured by the random kills of the unhooked workers.
"""

from __future__ import annotations

from collections.abc import Callable

import posix_ipc

from . import channel, ring, sync

POINTS = ("window", "held", "frame", "releasing", "unposted")


def install(hook: Callable[[str], None]) -> None:
    """Call ``hook(point)`` at every kill point in this process from now on."""
    base = sync.RobustLock
    if getattr(base, "_killpoint_hook", None) is not None:
        base._killpoint_hook = staticmethod(hook)  # type: ignore[attr-defined]
        return

    class HookedRobustLock(base):  # type: ignore[valid-type, misc]
        __slots__ = ()
        _killpoint_hook = staticmethod(hook)

        def acquire(self, deadline: float | None) -> bool:
            try:
                self.sem.acquire(0)
            except posix_ipc.BusyError:
                if not self._acquire_slow(deadline):
                    return False
            else:
                self._killpoint_hook("window")
                self.slots[self.holder] = sync.next_holder_value()
            self._killpoint_hook("held")
            return True

        def release(self) -> None:
            self._killpoint_hook("releasing")
            self.slots[self.holder] |= sync.RELEASED
            self._killpoint_hook("unposted")
            self.sem.release()

    write_frame, read_frame = ring.write_frame, ring.read_frame
    read_frame_tagged = ring.read_frame_tagged

    def hooked_write_frame(*args, **kwargs):  # type: ignore[no-untyped-def]
        position = write_frame(*args, **kwargs)
        HookedRobustLock._killpoint_hook("frame")
        return position

    def hooked_read_frame(*args, **kwargs):  # type: ignore[no-untyped-def]
        located = read_frame(*args, **kwargs)
        HookedRobustLock._killpoint_hook("frame")
        return located

    def hooked_read_frame_tagged(*args, **kwargs):  # type: ignore[no-untyped-def]
        located = read_frame_tagged(*args, **kwargs)
        HookedRobustLock._killpoint_hook("frame")
        return located

    def general_put(self, payload, timeout):  # type: ignore[no-untyped-def]
        self._write((payload,), channel._deadline(timeout), timeout)

    def no_fast_take(self, timeout):  # type: ignore[no-untyped-def]
        return None  # the caller goes the general way

    sync.RobustLock = HookedRobustLock  # type: ignore[misc]
    ring.write_frame = hooked_write_frame
    ring.read_frame = hooked_read_frame
    ring.read_frame_tagged = hooked_read_frame_tagged
    channel.Channel._put = general_put  # type: ignore[method-assign]
    channel.Channel._take_one = no_fast_take  # type: ignore[method-assign]
