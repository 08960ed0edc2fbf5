"""Seed 004, example 2: parent and child share an anonymous mapping of ``people`` after fork.

The C original maps 10 ``people`` with ``MAP_SHARED|MAP_ANONYMOUS`` and forks; the parent
writes five, the child reads their ages and sets the first age to 100, the parent reads it back.
No file is involved: the child inherits the mapping, and with ``MAP_SHARED`` both see the same
pages. (The original orders the two with ``sleep(2)``/``sleep(5)``; here a pipe does it, so the
output never depends on timing.)

Run::

    python examples/fork/anonymous_records.py

Output::

    child read: the 1 people's age is 20
    child read: the 2 people's age is 21
    child read: the 3 people's age is 22
    child read: the 4 people's age is 23
    child read: the 5 people's age is 24
    parent read: the first people's age is 100
    umap
    umap ok

Ctrl-C exits at once (status 130), without a traceback.
"""

from __future__ import annotations

import os
import sys

import shmipc

people = shmipc.Record("people", [("name", "4s"), ("age", "i")])


def main() -> int:
    mapping = shmipc.map_anonymous(people.size * 10, shared=True)
    p_map = people.array(mapping)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(ready_w)
            os.read(ready_r, 1)  # wait until the parent has written
            for i in range(5):
                print(f"child read: the {i + 1} people's age is {p_map[i, 'age']}", flush=True)
            p_map[0, "age"] = 100
            code = 0
        finally:
            os._exit(code)
    os.close(ready_r)
    for i in range(5):
        p_map[i] = people(name=bytes([ord("b") + i]), age=20 + i)
    os.write(ready_w, b"!")
    os.close(ready_w)
    _, status = os.waitpid(pid, 0)
    print(f"parent read: the first people's age is {p_map[0, 'age']}")
    print("umap")
    p_map.release()
    mapping.close()
    print("umap ok")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
