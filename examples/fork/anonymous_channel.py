"""The same parent/child pair through ``Channel.anonymous``: messages instead of raw memory.

The parent creates an anonymous channel before ``fork()``; the child inherits it, sends five
``people`` records (they travel as a msgpack ext type, so the parent's codec registers the
record type) and closes the channel for sending; the parent receives until the channel is
drained. No file and no semaphore name is left behind.

Run::

    python examples/fork/anonymous_channel.py

Output::

    parent received: name b age 20
    parent received: name c age 21
    parent received: name d age 22
    parent received: name e age 23
    parent received: name f age 24
    child exited with status 0

Ctrl-C exits at once (status 130), without a traceback.
"""

from __future__ import annotations

import os
import sys

import shmipc

people = shmipc.Record("people", [("name", "4s"), ("age", "i")])


def main() -> int:
    channel = shmipc.Channel.anonymous(1 << 16, codec=shmipc.Codec(records=[people]))
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            for i in range(5):
                channel.send(people(name=bytes([ord("b") + i]), age=20 + i))
            channel.close_send()
            code = 0
        finally:
            os._exit(code)
    try:
        for p in channel:  # until the child's close_send and the channel is drained
            print(f"parent received: name {p.name.decode()} age {p.age}", flush=True)
    finally:
        _, status = os.waitpid(pid, 0)
        channel.close()
    print(f"child exited with status {os.waitstatus_to_exitcode(status)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
