"""Seed 004, example 1, program 1: map a file of 5 ``people`` as 10, write 10, hold, unmap.

The C original (``map_normalfile1.c``) creates the file with room for 5 ``people`` (8 bytes
each: ``char name[4]; int age;``), maps 10 of them, writes 10 (names ``b``..``k``, ages 20..29),
sleeps 10 s while another process may look, then unmaps. Here the same with shmipc: a
:class:`shmipc.Record` for ``people``, ``shmipc.map_file(..., past_end=True)`` for the mapping
longer than the file, and a :class:`shmipc.RecordArray` as ``p_map``.

Terminal 1::

    python examples/map_normalfile/map_normalfile1.py /tmp/test_shm

prints ``initialize over``, holds the mapping 10 s (``--hold SECONDS`` to change; SIGUSR1 ends
the hold early), msyncs, unmaps and prints ``umap ok``.

Terminal 2, during the hold::

    python examples/map_normalfile/map_normalfile2.py /tmp/test_shm

prints all ten: ``name: b age 20;`` .. ``name: k age 29;``. Run it again after ``umap ok``: on
a disk filesystem (ext4, xfs, ...) it prints the first five and then ``name:  age 0;`` five
times, because bytes 40..79 were never part of the 40-byte file: writeback (the msync before
munmap) zeroes the part of the last page past the end of the file. On tmpfs (``/dev/shm``, often
``/tmp``) nothing is written back, so the tail can survive in the page cache and all ten may
still print until the page is dropped. Either way the file stays 40 bytes: a mapping never
changes the size of its file.

Ctrl-C exits at once (status 130), without a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import shmipc

people = shmipc.Record("people", [("name", "4s"), ("age", "i")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the file to create (truncated if it exists)")
    parser.add_argument("--hold", type=float, default=10.0,
                        help="seconds to keep the mapping (default 10)")
    args = parser.parse_args(argv)

    woken = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: woken.set())

    # open(O_CREAT|O_TRUNC) + lseek/write: a file of exactly 5 people.
    fd = os.open(args.path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, people.size * 5)
    finally:
        os.close(fd)
    # mmap(sizeof(people)*10, MAP_SHARED): twice the file, still inside its only page.
    mapping = shmipc.map_file(args.path, people.size * 10, past_end=True)
    with people.array(mapping) as p_map:
        for i in range(10):
            p_map[i] = people(name=bytes([ord("b") + i]), age=20 + i)
    print("initialize over", flush=True)
    woken.wait(args.hold)
    mapping.flush()  # msync: write back what belongs to the file, now
    mapping.close()  # munmap
    print("umap ok", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
