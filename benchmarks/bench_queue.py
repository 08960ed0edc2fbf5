"""The shmipc.Queue row of benchmarks/run.py, and its bar.

``shmipc.Queue`` (msgpack, the default serializer) takes part in the producer workloads of
run.py: 200k small objects ``{"name": "b", "age": 20}`` from 1 and from 4 producer processes
into one consumer, through ``put``/``get`` exactly as a multiprocessing program calls them.
Its peers are in the same run: ``multiprocessing.Queue`` and ``faster_fifo.Queue``. The bar:
shmipc.Queue at least 3x multiprocessing.Queue and 2x faster-fifo, with 1 and with 4 producers.

    python benchmarks/run.py --systems shmipc.Queue,multiprocessing.Queue,faster \\
        --workloads producers1,producers4 --no-plot --json /tmp/queue.json

This module only defines the system and the bar; run.py measures (fresh forked processes,
every message checked) and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import shmipc

QUEUE_LABELS = ("producers1", "producers4")
BAR = ("shmipc.Queue ≥ 3x multiprocessing.Queue and ≥ 2x faster-fifo (small objects, 1 and 4 "
       "producers)")


class ShmipcQueue:
    """shmipc.Queue as a run.py system (the interface of run.System, by duck typing)."""

    name = "shmipc.Queue"
    base: str | None = None
    column: str | None = None
    only = QUEUE_LABELS
    multi_producer = True
    max_size: int | None = None

    def takes(self, label: str) -> bool:
        return label in self.only

    def open(self, size: int) -> Any:
        return shmipc.Queue(capacity=max(4 << 20, 1 << (4 * size + 64).bit_length()))

    def close(self, state: Any) -> None:
        state.close()

    def tx(self, state: Any) -> Any:
        return state

    def rx(self, state: Any) -> Any:
        return state

    def release(self, ep: Any) -> None:
        pass

    def send(self, ep: Any, obj: Any) -> None:
        ep.put(obj)

    def recv(self, ep: Any) -> Any:
        return ep.get()

    def send_bytes(self, ep: Any, data: Any) -> None:
        ep.put(bytes(data))

    def recv_bytes(self, ep: Any) -> Any:
        return ep.get()

    def send_batch(self, ep: Any, objs: list[Any]) -> None:
        for obj in objs:
            ep.put(obj)

    def recv_batch(self, ep: Any) -> list[Any]:
        return [ep.get()]


def queue_bar(get: Callable[[str, str, str], float | None], mp_queue: str, faster_fifo: str,
              unavailable: dict[str, str]) -> tuple[str, bool | None, str]:
    """(bar text, verdict: True met / False not met / None n/a, the figures) for one run."""
    parts: list[str] = []
    verdict: bool | None = True
    for label in QUEUE_LABELS:
        ours = get(label, ShmipcQueue.name, "msgs_per_s")
        producers = label.removeprefix("producers")
        if ours is None:
            return BAR, None, f"shmipc.Queue not measured with {producers} producer(s)"
        for peer, factor in ((mp_queue, 3.0), (faster_fifo, 2.0)):
            theirs = get(label, peer, "msgs_per_s")
            if theirs is None:
                verdict = None if verdict is not False else False
                parts.append(f"{producers}p: {peer} "
                             f"{'n/a' if peer in unavailable else 'not measured'}")
                continue
            ratio = ours / theirs
            if ratio < factor:
                verdict = False
            parts.append(f"{producers}p: {ours / 1e3:.0f} k/s = {ratio:.2f}x {peer} "
                         f"({theirs / 1e3:.0f} k/s)")
    return BAR, verdict, "; ".join(parts)
