"""A blocking client of the asyncio worker: sends five jobs, then waits for their results.

It sends ``{"n": 0}`` .. ``{"n": 4}`` on ``jobs`` in DIR, closes ``jobs`` for sending (the
worker then stops once it has answered them), and receives the five results from
``results``, waiting with ``shmipc.wait`` (a plain ``recv()`` would do as well). The jobs wait
in the channel file if the worker is not running yet. At the end it removes both channels
(the worker's open handles stay usable), so the pair runs again with the same DIR.

Run (see worker.py)::

    python examples/asyncio/client.py /tmp/squares

Output::

    sent 5 jobs
    result: 0 squared is 0
    result: 1 squared is 1
    result: 2 squared is 4
    result: 3 squared is 9
    result: 4 squared is 16

Ctrl-C exits at once (status 130), without a traceback.
"""

from __future__ import annotations

import os
import sys

import shmipc


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    try:
        with (shmipc.Channel.open_or_create(os.path.join(directory, "jobs"), 1 << 16) as jobs,
              shmipc.Channel.open_or_create(os.path.join(directory, "results"), 1 << 16)
              as results):
            for n in range(5):
                jobs.send({"n": n})
            jobs.close_send()
            print("sent 5 jobs", flush=True)
            got = 0
            while got < 5:
                shmipc.wait([results])  # readable: a result may be waiting
                while got < 5:
                    try:
                        result = results.recv_nowait()
                    except shmipc.Empty:
                        break
                    print(f"result: {result['n']} squared is {result['square']}", flush=True)
                    got += 1
            jobs.unlink()
            results.unlink()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
