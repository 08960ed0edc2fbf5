"""Named POSIX semaphores (posix_ipc): naming, create, open, unlink, rebuild.

A channel has four semaphores, named from its random 128-bit id and the header's semaphore
generation (``/shmipc-<hex id>-<role><generation>``, visible as ``/dev/shm/sem.shmipc-…``):

======  ======================================================================================
role    what sleeps on it
======  ======================================================================================
i       consumers waiting for a message (posted by a producer that committed one)
s       a producer waiting for room (posted by a consumer that freed some)
p       producers waiting for the producer lock (posted when it is released)
c       consumers waiting for the consumer lock
======  ======================================================================================

All start at 0: they are wake-ups only. The positions and the lock words in the header are the
truth, and the compiled core (``shmipc._core``) is what waits and posts; this module makes and
removes the names. If a name is gone (a reboot, systemd's ``RemoveIPC``, a cleanup), opening
the channel rebuilds all four under a new generation, under an exclusive ``lockf`` on the
file, and live handles follow the generation on their next sleep: no two sets stay in use.

This module knows nothing of mappings: it is given the header's bytes where it needs them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable, Iterator

import posix_ipc

from .errors import CorruptChannel

__all__ = [
    "NAME_PREFIX",
    "ROLES",
    "create_semaphores",
    "ensure_semaphores",
    "list_semaphores",
    "semaphore_name",
    "semaphore_names",
    "unlink_semaphore",
    "unlink_channel_semaphores",
]

ROLES = ("i", "s", "p", "c")
NAME_PREFIX = "shmipc-"
SEM_T_SIZE = 32
"""sizeof(sem_t) with glibc on 64-bit Linux: the size of a real semaphore file in /dev/shm."""


def semaphore_name(channel_id: bytes, role: str, generation: int = 0) -> str:
    """The POSIX name of a channel's semaphore for ``role`` (one of :data:`ROLES`)."""
    return f"/{NAME_PREFIX}{channel_id.hex()}-{role}{generation}"


def semaphore_names(channel_id: bytes, generation: int = 0) -> dict[str, str]:
    """The four names of a channel's semaphores in one generation, by role."""
    return {role: semaphore_name(channel_id, role, generation) for role in ROLES}


def list_semaphores() -> list[str]:
    """Names of every shmipc semaphore that exists now (scanned from ``/dev/shm``)."""
    try:
        entries = os.listdir("/dev/shm")
    except OSError:
        return []
    return sorted("/" + e[4:] for e in entries if e.startswith("sem." + NAME_PREFIX))


def _semaphore_file(name: str) -> str:
    return f"/dev/shm/sem.{name[1:]}"


def _create(name: str, mode: int) -> None:
    try:
        sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=mode, initial_value=0)
    except posix_ipc.ExistentialError as exc:
        raise FileExistsError(f"semaphore {name} already exists") from exc
    sem.close()
    try:
        os.chmod(_semaphore_file(name), mode)  # exactly `mode`: the umask does not apply
    except OSError:
        pass  # not every system keeps semaphores in /dev/shm; the umask then applies


def create_semaphores(channel_id: bytes, generation: int, mode: int) -> list[str]:
    """Create the four semaphores of one generation (none may exist); return their names.

    Raises:
        FileExistsError: a name exists already; nothing is left behind.
    """
    made: list[str] = []
    try:
        for name in semaphore_names(channel_id, generation).values():
            _create(name, mode)
            made.append(name)
    except BaseException:
        for name in made:
            unlink_semaphore(name)
        raise
    return made


def _state(name: str) -> str:
    """'ok', 'missing', or 'damaged' (a file that sem_open would map and then fault on)."""
    try:
        st = os.stat(_semaphore_file(name))
    except FileNotFoundError:
        return "missing"
    except OSError:
        # Semaphores are not kept in /dev/shm here: ask posix_ipc.
        try:
            posix_ipc.Semaphore(name).close()
        except posix_ipc.ExistentialError:
            return "missing"
        return "ok"
    if not stat.S_ISREG(st.st_mode) or st.st_size < SEM_T_SIZE:
        return "damaged"
    return "ok"


def ensure_semaphores(fd: int, channel_id: bytes, read_generation: Callable[[], int],
                      write_generation: Callable[[int], None], mode: int,
                      path: str | None = None) -> int:
    """Make sure the channel's semaphores exist; rebuild them under a new generation if not.

    Args:
        fd: the channel file, locked with ``lockf`` while rebuilding (the kernel drops the lock
            if this process dies inside).
        channel_id: from the header.
        read_generation / write_generation: read and store the header's semaphore generation.
        mode: permissions of rebuilt semaphores.

    Returns:
        The generation in use.

    Raises:
        CorruptChannel: a semaphore file is damaged (not a semaphore); remove it with
            ``python -m shmipc cleanup`` and open the channel again.
        PermissionError: the semaphores belong to somebody else.
    """
    generation = read_generation()
    names = semaphore_names(channel_id, generation)
    states = {name: _state(name) for name in names.values()}
    if all(s == "ok" for s in states.values()):
        return generation
    with _locked(fd):
        generation = read_generation()
        names = semaphore_names(channel_id, generation)
        states = {name: _state(name) for name in names.values()}
        damaged = [n for n, s in states.items() if s == "damaged"]
        if damaged:
            raise CorruptChannel(
                f"{_semaphore_file(damaged[0])} is not a semaphore; remove it (`python -m "
                "shmipc cleanup`) and open the channel again to rebuild it", path=path)
        if all(s == "ok" for s in states.values()):
            return generation  # rebuilt by another process meanwhile
        # Rebuild all four under the next generation: live handles still holding the old
        # ones move over on their next sleep (the core follows the header's generation).
        fresh = (generation + 1) & 0xFFFFFFFF
        for name in semaphore_names(channel_id, fresh).values():
            unlink_semaphore(name)  # left by a rebuild that died before storing its number
        create_semaphores(channel_id, fresh, mode)
        write_generation(fresh)
        for name in names.values():
            unlink_semaphore(name)
        return fresh


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


def unlink_semaphore(name: str) -> bool:
    """Remove a semaphore name; return False if it did not exist."""
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        return False
    return True


def unlink_channel_semaphores(channel_id: bytes) -> list[str]:
    """Remove every semaphore name of a channel, of any generation; return those removed."""
    prefix = f"/{NAME_PREFIX}{channel_id.hex()}-"
    return [name for name in list_semaphores()
            if name.startswith(prefix) and unlink_semaphore(name)]

