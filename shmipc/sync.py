"""Named POSIX semaphores (posix_ipc) and a lock that survives the death of its holder.

A channel uses four semaphores, named from its random 128-bit id (``/shmipc-<hex id>-<role>``,
visible as ``/dev/shm/sem.shmipc-…``):

======  ================  =======  =========================================================
role    name suffix       initial  use
======  ================  =======  =========================================================
p       producer lock     1        one producer at a time moves the write position
c       consumer lock     1        one consumer at a time moves the read position
i       items             0        posted once a committed message; consumers sleep on it
s       space             0        posted by a consumer when a producer sleeps on a full ring
======  ================  =======  =========================================================

The counting semaphores are wake-ups, not the truth: the positions in the header are. A waiter
re-checks the positions after every wake-up and after every :data:`LIVENESS_INTERVAL` without
one, so a token lost with a killed process delays a message by at most that interval and never
loses it.

A POSIX semaphore has no owner: a process SIGKILLed while holding one as a lock would block
everybody forever. :class:`RobustLock` therefore writes the holder's token (pid and the process
start time from ``/proc/PID/stat``, which tells a reused pid apart) into a header slot, waits in
timed slices, and on each expired slice checks the holder. A waiter that finds the holder dead
takes the lock over under an exclusive ``lockf`` on the channel's file (the kernel drops that
lock when its owner dies, so the repair itself cannot wedge), lets the channel repair what the
dead holder left, and carries on as the holder. A live holder is never overridden, however long
it holds the lock (a producer legitimately holds its lock while it sleeps on a full ring).

This module knows nothing of mappings: it works on a memoryview of uint64 slots it is given.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import posix_ipc

from .errors import CorruptChannel

__all__ = [
    "LIVENESS_INTERVAL",
    "ROLES",
    "RobustLock",
    "current_token",
    "list_semaphores",
    "process_start_time",
    "semaphore_name",
    "timed_wait",
    "next_holder_value",
    "token_alive",
    "token_pid",
    "token_released",
]

LIVENESS_INTERVAL = 0.25
"""Seconds a waiter sleeps on a semaphore before it re-checks positions and lock holders."""

_BLOCKABLE = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}


def timed_wait(sem: posix_ipc.Semaphore, seconds: float) -> bool:
    """Take one token of ``sem``, sleeping at most ``seconds``; False if none came.

    Signals follow PEP 475: a handler that returns does not end the wait, and one that raises
    (SIGINT's KeyboardInterrupt, a SIGTERM handler's SystemExit, a SIGALRM timeout) ends it with
    its own exception. posix_ipc cannot do that: it runs the handler inside the wait and then
    replaces whatever the handler raised with its own SignalError. So signals are blocked for
    the sleep (at most one liveness interval, as every wait is sliced) and delivered when it
    ends, where Python runs the handler and lets its exception propagate. A token taken just
    before such an exception is lost with it; positions are the truth, so a lost wake-up only
    delays a waiter by one interval, and a lost lock is taken over as a dead holder's would be.
    """
    if seconds <= 0:
        try:
            sem.acquire(0)
        except posix_ipc.BusyError:
            return False
        return True
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKABLE)
    try:
        sem.acquire(min(seconds, LIVENESS_INTERVAL))
    except posix_ipc.BusyError:
        return False
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return True

ROLES = ("p", "c", "i", "s")
INITIAL_VALUES = {"p": 1, "c": 1, "i": 0, "s": 0}
NAME_PREFIX = "shmipc-"


def semaphore_name(channel_id: bytes, role: str) -> str:
    """The POSIX name of a channel's semaphore for ``role`` (one of :data:`ROLES`)."""
    return f"/{NAME_PREFIX}{channel_id.hex()}-{role}"


def list_semaphores() -> list[str]:
    """Names of every shmipc semaphore that exists now (scanned from ``/dev/shm``)."""
    try:
        entries = os.listdir("/dev/shm")
    except OSError:
        return []
    return sorted("/" + e[4:] for e in entries if e.startswith("sem." + NAME_PREFIX))


def create_semaphore(name: str, initial: int, mode: int) -> posix_ipc.Semaphore:
    """Create a semaphore that must not exist yet, with exactly ``mode`` (umask not applied)."""
    try:
        sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=mode, initial_value=initial)
    except posix_ipc.ExistentialError as exc:
        raise FileExistsError(f"semaphore {name} already exists") from exc
    try:
        os.chmod(f"/dev/shm/sem.{name[1:]}", mode)
    except OSError:
        pass  # not every system keeps semaphores in /dev/shm; the umask then applies
    return sem


SEM_T_SIZE = 32
"""sizeof(sem_t) with glibc on 64-bit Linux: the size of a real semaphore file in /dev/shm."""


def open_semaphore(name: str) -> posix_ipc.Semaphore | None:
    """Open an existing semaphore, or return None if the name does not exist.

    Raises:
        CorruptChannel: the name's file is not a semaphore. ``sem_open`` maps it without a
            size check, and a file shorter than a ``sem_t`` would fault with SIGBUS on first
            use; it is refused here instead.
    """
    try:
        st = os.stat(f"/dev/shm/sem.{name[1:]}")
    except FileNotFoundError:
        return None
    except OSError:
        pass  # semaphores are not kept in /dev/shm on this system: sem_open decides
    else:
        if not stat.S_ISREG(st.st_mode) or st.st_size < SEM_T_SIZE:
            raise CorruptChannel(
                f"/dev/shm/sem.{name[1:]} is not a semaphore ({st.st_size} bytes); remove it "
                "(`python -m shmipc cleanup`) and open the channel again to rebuild it"
            )
    try:
        return posix_ipc.Semaphore(name)
    except posix_ipc.ExistentialError:
        return None
    except posix_ipc.PermissionsError as exc:
        raise PermissionError(f"no permission to open semaphore {name}") from exc


def unlink_semaphore(name: str) -> bool:
    """Remove a semaphore name; return False if it did not exist."""
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        return False
    return True


# --- process identity ------------------------------------------------------------------------
# A holder slot is one uint64, stored with one aligned store:
#   bits  0..21  pid (pid_max is at most 2**22 on Linux)
#   bit      22  released: the holder has left (set just before the semaphore is posted)
#   bits 23..41  acquisition counter of the holder process: every acquisition stores a new value
#   bits 42..63  process start time in clock ticks, modulo 2**22 (tells a reused pid apart)
# 0 means never taken.

_PID_MASK = (1 << 22) - 1
RELEASED = 1 << 22
_COUNTER_SHIFT = 23
_COUNTER_MASK = (1 << 19) - 1
_START_SHIFT = 42
_START_MASK = (1 << 22) - 1


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        if fields[0] in (b"Z", b"X"):  # a zombie has died; it only waits to be reaped
            return None
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def make_token(pid: int, start_time: int) -> int:
    """A process identity as the fixed bits of a holder slot: pid and start time."""
    return (pid & _PID_MASK) | ((start_time & _START_MASK) << _START_SHIFT)


def token_pid(token: int) -> int:
    """The pid inside a holder slot value."""
    return token & _PID_MASK


def token_released(token: int) -> bool:
    """True if the holder slot value says its holder released the lock."""
    return bool(token & RELEASED)


def token_alive(token: int) -> bool:
    """True while the process named by a holder slot value runs (same pid, same start time)."""
    pid = token & _PID_MASK
    if pid == 0:
        return False
    start = process_start_time(pid)
    return start is not None and make_token(pid, start) == token & ~(RELEASED | (
        _COUNTER_MASK << _COUNTER_SHIFT))


def _compute_token() -> int:
    pid = os.getpid()
    start = process_start_time(pid)
    return make_token(pid, start if start is not None else 0)


_token = _compute_token()
_acquisitions = itertools.count(1)


def _fresh_holder_values() -> Iterator[int]:
    # Every value of the 19-bit acquisition counter once, as whole slot values: a range
    # iterator yields each in C, several times cheaper than the arithmetic in Python.
    step = 1 << _COUNTER_SHIFT
    return iter(range(_token | step, _token | (_COUNTER_MASK << _COUNTER_SHIFT) + 1, step))


holder_values: Iterator[int] = iter(())
"""The iterator behind :func:`next_holder_value`; a hot path may call ``next`` on it directly
and fall back to :func:`next_holder_value` on ``StopIteration`` (it is renewed then, and after
fork). Look it up on the module each time: the name is rebound."""


def _refresh_token() -> None:
    global _token, holder_values
    _token = _compute_token()
    holder_values = iter(())


os.register_at_fork(after_in_child=_refresh_token)


def current_token() -> int:
    """This process's identity bits (recomputed in a forked child)."""
    return _token


def next_holder_value() -> int:
    """A holder slot value for a new acquisition by this process: not stored in the last
    2**19 - 1 acquisitions by this process (the counter then starts over)."""
    global holder_values
    try:
        return next(holder_values)
    except StopIteration:
        holder_values = _fresh_holder_values()
        return next(holder_values)


# --- the robust lock ---------------------------------------------------------------------


class RepairLock:
    """Serializes repairs between processes (``lockf`` on an fd) and between threads."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._threads = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the repair lock; the kernel releases it if this process dies inside."""
        with self._threads:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)


class RobustLock:
    """A lock on a POSIX semaphore whose holder is recorded so that its death can be repaired.

    Every acquisition stores a new holder value (see the slot layout above); every release sets
    the value's released bit, then posts. A waiter whose timed wait expires looks at the slot:

    * held (released bit clear) by a dead process: the holder died holding it; take it over.
    * released, the semaphore still 0, and the slot unchanged for a whole interval: nobody
      acquired the lock in that interval, yet nobody can take it. Its last holder died between
      its store and its post, or a new holder died between its semaphore wait and its store.
      Either way nobody will ever post it; take it over. (Any live acquirer would have stored a
      new value within the interval.)
    * held by a live process: wait on. A live holder is never overridden.

    Args:
        sem: the lock semaphore (initial value 1).
        slots: uint64 slots; ``holder`` indexes the one that names the holder.
        repair: the repair lock shared by this channel's locks.
        on_recover: called with the dead holder's slot value while the repair lock and this lock
            are held, to repair what it left half-done.
    """

    __slots__ = ("sem", "slots", "holder", "repair", "on_recover", "recoveries",
                 "_suspect", "_suspect_since")

    def __init__(self, sem: posix_ipc.Semaphore, slots: memoryview, holder: int,
                 repair: RepairLock, on_recover: Callable[[int], None]) -> None:
        self.sem = sem
        self.slots = slots
        self.holder = holder
        self.repair = repair
        self.on_recover = on_recover
        self.recoveries = 0
        # A released slot value seen with the semaphore at 0, and since when. Kept across
        # acquire() calls: a caller that polls with short timeouts must still see the value
        # stay unchanged for a whole interval and take the lock over.
        self._suspect: int | None = None
        self._suspect_since = 0.0

    def acquire(self, deadline: float | None) -> bool:
        """Take the lock, waiting until ``deadline`` (``time.monotonic()``; None = forever).

        Returns False if the deadline passed first. Recovers the lock from a dead holder.
        """
        try:
            self.sem.acquire(0)
        except posix_ipc.BusyError:
            return self._acquire_slow(deadline)
        self.slots[self.holder] = next_holder_value()
        return True

    def release(self) -> None:
        """Release the lock: mark the holder slot released, then post the semaphore."""
        self.slots[self.holder] |= RELEASED
        self.sem.release()

    def _acquire_slow(self, deadline: float | None) -> bool:
        while True:
            wait = LIVENESS_INTERVAL
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return False
            if timed_wait(self.sem, wait):
                self.slots[self.holder] = next_holder_value()
                return True
            value = self.slots[self.holder]
            if self.sem.value != 0:
                self._suspect = None  # released meanwhile: compete for it again
            elif value and not value & RELEASED:
                self._suspect = None
                if not token_alive(value) and self._take_over(value):
                    return True
            elif value != self._suspect:
                self._suspect, self._suspect_since = value, time.monotonic()
            elif time.monotonic() - self._suspect_since >= LIVENESS_INTERVAL:
                self._suspect = None
                if self._take_over(value):
                    return True

    def _take_over(self, dead: int) -> bool:
        with self.repair.held():
            if self.slots[self.holder] != dead or self.sem.value != 0:
                return False  # somebody repaired it already, or the lock moved on
            self.slots[self.holder] = next_holder_value()
            self.recoveries += 1
            self.on_recover(dead)
        return True

    def holder_value(self) -> int:
        """The holder slot as it is now (0 if the lock was never taken)."""
        return self.slots[self.holder]
