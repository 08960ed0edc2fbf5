"""The four mapping kinds of the seed table, each shown by what a forked child's write does.

===============  =========================================  ==========================================
                 private (``MAP_PRIVATE``)                  shared (``MAP_SHARED``)
===============  =========================================  ==========================================
anonymous        memory allocation: the child writes its    IPC between related processes: the
                 own copy-on-write copy                     parent sees the child's write
file             initialised from the file (how libraries   memory-mapped I/O and IPC: the write
                 load): writes reach neither the parent     reaches the parent and the file
                 nor the file
===============  =========================================  ==========================================

For each kind the parent maps one ``people`` record (``b``, 20), forks, the child writes
(``z``, 99) through its inherited mapping and exits, and the parent looks at its mapping and, for
the file kinds, at the file (read with ``pread``, not through any mapping).

Run::

    python examples/mapping_kinds.py [DIRECTORY]

Output (the file goes to a temporary directory, or DIRECTORY, and is removed)::

    private anonymous: parent sees people(name=b'b', age=20), the child's write: not visible; no file
    shared anonymous: parent sees people(name=b'z', age=99), the child's write: visible; no file
    private file: parent sees people(name=b'b', age=20), the child's write: not visible; file holds people(name=b'b', age=20): not in the file
    shared file: parent sees people(name=b'z', age=99), the child's write: visible; file holds people(name=b'z', age=99): in the file

Ctrl-C exits at once (status 130), without a traceback.
"""  # noqa: E501

from __future__ import annotations

import os
import sys
import tempfile

import shmipc

people = shmipc.Record("people", [("name", "4s"), ("age", "i")])


def show(kind: shmipc.MappingKind, directory: str) -> str:
    path = None
    if kind in (shmipc.MappingKind.PRIVATE_FILE, shmipc.MappingKind.SHARED_FILE):
        path = os.path.join(directory, f"mapping-kinds-{os.getpid()}.bin")
        with open(path, "wb") as f:
            f.write(people.pack(people(b"b", 20)))
        mapping = shmipc.map_file(path, shared=kind.shared)
    else:
        mapping = shmipc.map_anonymous(people.size, shared=kind.shared)
        people.pack_into(mapping.buffer, 0, people(b"b", 20))
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                people.pack_into(mapping.buffer, 0, people(b"z", 99))
                mapping.flush()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the child failed for {kind.value}")
        seen = people.unpack_from(mapping.buffer, 0)
        line = (f"{kind.value}: parent sees {seen}, the child's write: "
                f"{'visible' if seen.age == 99 else 'not visible'}")
        if path is None:
            return line + "; no file"
        with open(path, "rb") as f:
            on_disk = people.unpack(f.read(people.size))
        return line + (f"; file holds {on_disk}: "
                       f"{'in the file' if on_disk.age == 99 else 'not in the file'}")
    finally:
        mapping.close()
        if path is not None:
            os.unlink(path)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(dir=argv[0] if argv else None) as directory:
        for kind in (shmipc.MappingKind.PRIVATE_ANONYMOUS, shmipc.MappingKind.SHARED_ANONYMOUS,
                     shmipc.MappingKind.PRIVATE_FILE, shmipc.MappingKind.SHARED_FILE):
            print(show(kind, directory), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
