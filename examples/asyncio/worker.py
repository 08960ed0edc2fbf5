"""An asyncio worker: one coroutine per channel, no thread, nothing on the CPU while idle.

It serves the channel ``jobs`` in DIR and answers on ``results`` (both created if missing):
each job ``{"n": N}`` gets ``{"n": N, "square": N * N}``. Its loop stays free for other
coroutines all along; here a second one counts the jobs. It stops when the client closes
``jobs`` for sending and every job is done.

Run, in two terminals (either order)::

    python examples/asyncio/worker.py /tmp/squares      # terminal 1
    python examples/asyncio/client.py /tmp/squares      # terminal 2

Output of the worker::

    worker waiting for jobs
    job 0: 0 squared is 0
    job 1: 1 squared is 1
    job 2: 2 squared is 4
    job 3: 3 squared is 9
    job 4: 4 squared is 16
    no more jobs after 5: worker done

Ctrl-C exits at once (status 130), without a traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys

from shmipc.aio import AsyncChannel


async def serve(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    async with (AsyncChannel.open_or_create(os.path.join(directory, "jobs"), 1 << 16) as jobs,
                AsyncChannel.open_or_create(os.path.join(directory, "results"), 1 << 16)
                as results):
        done = asyncio.Queue[int]()

        async def count() -> int:  # another coroutine on the same loop, never starved
            total = 0
            while await done.get() >= 0:
                total += 1
            return total

        counter = asyncio.create_task(count())
        print("worker waiting for jobs", flush=True)
        async for job in jobs:  # until the client's close_send, and every job taken
            n = job["n"]
            await results.send({"n": n, "square": n * n})
            print(f"job {n}: {n} squared is {n * n}", flush=True)
            done.put_nowait(n)
        done.put_nowait(-1)
        print(f"no more jobs after {await counter}: worker done", flush=True)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(sys.argv[1]))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
