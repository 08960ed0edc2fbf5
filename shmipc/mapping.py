"""Memory mappings: the four kinds of the seed table, POSIX shared memory, msync and munmap.

=================  ==============================  =====================================
                   private (``MAP_PRIVATE``)       shared (``MAP_SHARED``)
=================  ==============================  =====================================
anonymous          fresh zeroed memory; a forked   memory shared with children forked
                   child gets a copy-on-write      after the mapping was made (IPC
                   copy                            between related processes)
file               initialised from the file;      memory-mapped I/O: writes reach the
                   writes stay in this process     file and every process mapping it
=================  ==============================  =====================================

:func:`map_anonymous` and :func:`map_file` make each kind; :func:`create_shared_memory` and
:func:`open_shared_memory` give a named POSIX shared-memory object (``/dev/shm``) as backing.
:meth:`Mapping.flush` is ``msync(MS_SYNC)`` and :meth:`Mapping.close` is ``munmap``.

A mapping longer than its file faults (SIGBUS) on the pages past the end of the file, so
:func:`map_file` refuses it, with one exception the seed demo relies on: ``past_end=True`` maps up
to the end of the file's *last page*. Linux hands out whole pages, so bytes between the end of the
file and the end of its last page are addressable memory; they are shared by every process
mapping the file while the page stays in the page cache, but they are never written to the file
(msync and munmap write back only up to the file size). This module knows nothing of channels or
semaphores.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import errno
import mmap
import os
import stat
import sys
from typing import Any

import posix_ipc

from .errors import MappingError

__all__ = [
    "PAGE_SIZE",
    "Mapping",
    "MappingKind",
    "create_file",
    "create_shared_memory",
    "map_anonymous",
    "map_descriptor",
    "map_file",
    "open_shared_memory",
    "round_up_to_page",
    "unlink_shared_memory",
]

PAGE_SIZE: int = mmap.PAGESIZE


class MappingKind(enum.Enum):
    """The four mapping kinds of the seed table (private/shared x anonymous/file)."""

    PRIVATE_ANONYMOUS = "private anonymous"
    SHARED_ANONYMOUS = "shared anonymous"
    PRIVATE_FILE = "private file"
    SHARED_FILE = "shared file"

    @property
    def shared(self) -> bool:
        """True for ``MAP_SHARED`` kinds: writes are seen by other processes."""
        return self in (MappingKind.SHARED_ANONYMOUS, MappingKind.SHARED_FILE)


def round_up_to_page(size: int) -> int:
    """Return ``size`` rounded up to a whole number of pages (the kernel's unit of mapping)."""
    if size < 0:
        raise MappingError(f"a size cannot be negative (got {size})")
    return -(-size // PAGE_SIZE) * PAGE_SIZE


class Mapping:
    """One live memory mapping: its bytes, its kind, and where it came from.

    Use :func:`map_anonymous`, :func:`map_file` or :func:`open_shared_memory` to make one.
    ``buffer`` is a writable :class:`memoryview` of the whole mapping (read-only for a mapping
    made with ``writable=False``). :meth:`close` unmaps; it refuses (``BufferError``) while views
    of the buffer are still alive, so no view can ever read unmapped memory.
    """

    __slots__ = ("_mmap", "_raw", "_view", "kind", "path", "size", "file_size", "__weakref__")

    def __init__(
        self,
        kind: MappingKind,
        size: int,
        *,
        path: str | None = None,
        file_size: int | None = None,
        mm: mmap.mmap | None = None,
        raw: _RawMapping | None = None,
    ) -> None:
        self.kind = kind
        self.size = size
        self.path = path
        self.file_size = file_size
        self._mmap = mm
        self._raw = raw
        self._view: memoryview | None = memoryview(mm) if mm is not None else raw.view()  # type: ignore[union-attr]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has unmapped the memory."""
        return self._view is None

    @property
    def buffer(self) -> memoryview:
        """The mapped bytes as a memoryview (raises :class:`ValueError` once closed)."""
        if self._view is None:
            raise ValueError("the mapping is closed")
        return self._view

    @property
    def persisted_size(self) -> int:
        """How many leading bytes reach the backing file (all of them for a normal mapping).

        For a ``past_end`` mapping it is the file size: bytes beyond it live only in memory.
        Zero for anonymous and private mappings, which have no file to reach.
        """
        if self.kind is not MappingKind.SHARED_FILE:
            return 0
        return min(self.size, self.file_size if self.file_size is not None else self.size)

    def flush(self, offset: int = 0, size: int | None = None) -> None:
        """Write the mapped pages back to the file now: ``msync(MS_SYNC)``.

        Only bytes inside the file are written; a ``past_end`` mapping's tail is not. Without a
        flush the kernel writes pages back on its own schedule, at the latest on munmap.
        """
        if self._view is None:
            raise ValueError("the mapping is closed")
        if size is None:
            size = self.size - offset
        if offset < 0 or size < 0 or offset + size > self.size:
            raise MappingError(
                f"flush range {offset}+{size} is outside a mapping of {self.size} bytes"
            )
        if self.kind is not MappingKind.SHARED_FILE or size == 0:
            return
        start = offset - offset % PAGE_SIZE
        if self._mmap is not None:
            self._mmap.flush(start, size + (offset - start))
        else:
            self._raw.flush(start, size + (offset - start))  # type: ignore[union-attr]

    def close(self) -> None:
        """Unmap: ``munmap``. Idempotent.

        Raises:
            BufferError: views of :attr:`buffer` (slices, record arrays, numpy arrays) are still
                alive. Release them first; unmapping under them would let them read freed
                memory.
        """
        if self._view is None:
            return
        view = self._view
        try:
            view.release()
        except BufferError as exc:  # something still exports from our view
            raise BufferError(
                "cannot unmap while views of the mapping are alive; release them first"
            ) from exc
        self._view = None
        try:
            if self._mmap is not None:
                self._mmap.close()
            elif self._raw is not None:
                self._raw.close()
        except BufferError:
            self._view = memoryview(self._mmap) if self._mmap is not None else self._raw.view()  # type: ignore[union-attr]
            raise BufferError(
                "cannot unmap while views of the mapping are alive; release them first"
            ) from None

    def __enter__(self) -> Mapping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" {self.path!r}" if self.path else ""
        state = "closed" if self.closed else f"{self.size} bytes"
        return f"<Mapping {self.kind.value}{where} {state}>"


def map_anonymous(size: int, *, shared: bool = True) -> Mapping:
    """Map ``size`` bytes of zeroed memory with no file behind it.

    Args:
        size: bytes to map (> 0); the kernel rounds the mapping up to whole pages.
        shared: ``MAP_SHARED`` (children forked afterwards share it) or ``MAP_PRIVATE`` (they get
            a copy-on-write copy).

    Hazard: only processes forked after this call can see a shared anonymous mapping; a process
    started with ``spawn`` or ``forkserver`` cannot.
    """
    if size <= 0:
        raise MappingError(f"a mapping needs a positive size (got {size})")
    flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
    mm = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    kind = MappingKind.SHARED_ANONYMOUS if shared else MappingKind.PRIVATE_ANONYMOUS
    return Mapping(kind, size, mm=mm)


def create_file(path: str | os.PathLike[str], size: int, *, mode: int = 0o600) -> None:
    """Create a new file of ``size`` zero bytes, its blocks reserved on disk.

    The blocks are reserved with ``posix_fallocate`` so that a full filesystem is an error here
    (``OSError`` with ``ENOSPC``) and not a SIGBUS later, when a page of the mapping is first
    written. The file must not exist yet (``FileExistsError``); on any failure it is removed.
    """
    if size < 0:
        raise MappingError(f"a file size cannot be negative (got {size})")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what the caller asked for
        if size:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here
                    raise OSError(
                        exc.errno,
                        f"cannot reserve {size} bytes for {os.fspath(path)!r}: {exc.strerror}; "
                        "free space on that filesystem, raise the file size limit, or ask "
                        "for a smaller capacity=",
                    ) from exc
                # ftruncate leaves a sparse file: the blocks are then not reserved, and a full
                # filesystem shows up later as SIGBUS on first touch of a page. Touch each
                # block now with a real write so that it fails here instead.
                _write_zeros(fd, size)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def _write_zeros(fd: int, size: int) -> None:
    chunk = bytes(1 << 20)
    done = 0
    while done < size:
        done += os.pwrite(fd, chunk[: min(len(chunk), size - done)], done)


def map_file(
    path: str | os.PathLike[str],
    size: int | None = None,
    *,
    shared: bool = True,
    writable: bool = True,
    past_end: bool = False,
) -> Mapping:
    """Map an existing regular file.

    Args:
        path: the file. It must exist (``FileNotFoundError``) and be a regular file.
        size: bytes to map; the file size by default.
        shared: ``MAP_SHARED`` (writes reach the file and other processes) or ``MAP_PRIVATE``
            (writes stay in this process and never reach the file).
        writable: map read-write (the file is opened ``O_RDWR``) or read-only.
        past_end: allow ``size`` beyond the end of the file, up to the end of the file's last
            page, as the seed demo does. Bytes past the file size are shared memory but never
            part of the file: they are not persisted by :meth:`Mapping.flush` or munmap.

    Raises:
        MappingError: the mapping would reach past the end of the file (a SIGBUS on access),
            or ``past_end`` asks for more than the file's last page.
        OSError: the file cannot be opened (``FileNotFoundError``, ``PermissionError``,
            ``IsADirectoryError``).
    """
    path = os.fspath(path)
    fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MappingError(f"{path!r} is not a regular file; only regular files can be mapped")
        file_size = st.st_size
        if size is None:
            size = file_size
        if size <= 0:
            raise MappingError(f"{path!r} is empty; a mapping needs a positive size")
        kind = MappingKind.SHARED_FILE if shared else MappingKind.PRIVATE_FILE
        if size > file_size:
            limit = round_up_to_page(file_size)
            if not past_end:
                raise MappingError(
                    f"mapping {size} bytes of {path!r} would reach past its end ({file_size} "
                    f"bytes) and fault with SIGBUS on access; grow the file first, or pass "
                    f"past_end=True to map up to the end of its last page ({limit} bytes)"
                )
            if size > limit:
                raise MappingError(
                    f"mapping {size} bytes of {path!r} reaches past the last page of the file "
                    f"({file_size} bytes, last page ends at {limit}): access there faults with "
                    f"SIGBUS; map at most {limit} bytes"
                )
            raw = _RawMapping(fd, size, shared=shared, writable=writable)
            return Mapping(kind, size, path=path, file_size=file_size, raw=raw)
        flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mm = mmap.mmap(fd, size, flags=flags, prot=prot)
        return Mapping(kind, size, path=path, file_size=file_size, mm=mm)
    finally:
        os.close(fd)


def map_descriptor(fd: int, size: int, *, path: str | None = None) -> Mapping:
    """Map ``size`` bytes of an open regular file read-write and shared (``MAP_SHARED``).

    The caller has checked that the file holds at least ``size`` bytes; mapping from the
    descriptor it checked (not from a path) leaves no window for the file to be swapped.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise MappingError(f"{path or fd!r} is not a regular file; only regular files map")
    if size <= 0 or size > st.st_size:
        raise MappingError(
            f"mapping {size} bytes of {path or fd!r} ({st.st_size} bytes) would fault on access"
        )
    mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return Mapping(MappingKind.SHARED_FILE, size, path=path, file_size=st.st_size, mm=mm)


def create_shared_memory(name: str, size: int, *, mode: int = 0o600) -> Mapping:
    """Create a named POSIX shared-memory object (``shm_open``) of ``size`` bytes and map it.

    The name lives in ``/dev/shm`` until :func:`unlink_shared_memory`; unrelated processes open it
    with :func:`open_shared_memory`. Raises ``FileExistsError`` if the name is taken.
    """
    if size <= 0:
        raise MappingError(f"a shared-memory object needs a positive size (got {size})")
    try:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=size)
    except posix_ipc.ExistentialError as exc:
        raise FileExistsError(f"shared-memory object {name!r} already exists") from exc
    try:
        mm = mmap.mmap(shm.fd, size, flags=mmap.MAP_SHARED)
    finally:
        shm.close_fd()
    return Mapping(MappingKind.SHARED_FILE, size, path=f"/dev/shm{name}", file_size=size, mm=mm)


def open_shared_memory(name: str) -> Mapping:
    """Map an existing POSIX shared-memory object by name (``FileNotFoundError`` if none)."""
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.ExistentialError as exc:
        raise FileNotFoundError(f"no shared-memory object named {name!r}") from exc
    try:
        size = shm.size
        if size <= 0:
            raise MappingError(f"shared-memory object {name!r} is empty")
        mm = mmap.mmap(shm.fd, size, flags=mmap.MAP_SHARED)
    finally:
        shm.close_fd()
    return Mapping(MappingKind.SHARED_FILE, size, path=f"/dev/shm{name}", file_size=size, mm=mm)


def unlink_shared_memory(name: str) -> None:
    """Remove a POSIX shared-memory object's name; mappings of it stay valid until closed."""
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError as exc:
        raise FileNotFoundError(f"no shared-memory object named {name!r}") from exc


# --- the raw mapping behind past_end=True ----------------------------------------------------
# Python's mmap refuses a length beyond a regular file's size, so the demo's mapping is made
# with libc's mmap through ctypes. Its memoryview is handed out like mmap's; close() counts the
# references to the ctypes array so that it never unmaps under a live view.

_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_long,
        ]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc = lib
    return _libc


_MAP_FAILED = ctypes.c_void_p(-1).value
_MS_SYNC = 4


class _RawMapping:
    def __init__(self, fd: int, size: int, *, shared: bool, writable: bool) -> None:
        libc = _load_libc()
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
        addr = libc.mmap(None, size, prot, flags, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap failed: {os.strerror(err)}")
        self.addr: int | None = addr
        self.size = size
        self.writable = writable
        self._array: Any = (ctypes.c_char * size).from_address(addr)
        self._baseline = sys.getrefcount(self._array)

    def view(self) -> memoryview:
        mv = memoryview(self._array).cast("B")
        return mv if self.writable else mv.toreadonly()

    def flush(self, offset: int, size: int) -> None:
        if _load_libc().msync(self.addr + offset, size, _MS_SYNC) != 0:  # type: ignore[operator]
            err = ctypes.get_errno()
            raise OSError(err, f"msync failed: {os.strerror(err)}")

    def close(self) -> None:
        if self.addr is None:
            return
        if sys.getrefcount(self._array) > self._baseline:
            raise BufferError("views of the mapping are alive")
        _load_libc().munmap(self.addr, self.size)
        self.addr = None
        self._array = None
