"""Seed 004, example 1, program 2: map 10 ``people`` of a file and print them.

Terminal 2 (see ``map_normalfile1.py`` for terminal 1)::

    python examples/map_normalfile/map_normalfile2.py /tmp/test_shm

While ``map_normalfile1.py`` holds its mapping, this prints::

    name: b age 20;
    name: c age 21;
    ...
    name: k age 29;

After it printed ``umap ok``, on a disk filesystem::

    name: b age 20;
    name: c age 21;
    name: d age 22;
    name: e age 23;
    name: f age 24;
    name:  age 0;
    name:  age 0;
    name:  age 0;
    name:  age 0;
    name:  age 0;

(on tmpfs the last five can still show ``g``..``k``: see ``map_normalfile1.py``). Records
6..10 lie past the end of the file and are read from the rest of its last page, which the
mapping may reach (``past_end=True``) but which is not part of the file.
"""

from __future__ import annotations

import argparse
import sys

import shmipc

people = shmipc.Record("people", [("name", "4s"), ("age", "i")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the file map_normalfile1.py created")
    args = parser.parse_args(argv)
    try:
        mapping = shmipc.map_file(args.path, people.size * 10, past_end=True)
    except FileNotFoundError:
        print(f"{args.path} does not exist: start map_normalfile1.py first", file=sys.stderr)
        return 1
    with people.array(mapping) as p_map:
        for p in p_map:
            print(f"name: {p.name.decode('ascii', 'replace')} age {p.age};")
    mapping.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
