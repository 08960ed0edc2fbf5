"""``shmipc.wait``: wait for several channels (and other descriptors) at once.

Like :func:`multiprocessing.connection.wait`: it returns the objects that are ready, here the
channels on which a message may be waiting (or that were closed for sending, so that a
receive raises :class:`~shmipc.errors.EndOfChannel` at once). It rests on each channel's
readiness descriptor (:meth:`Channel.fileno`) and ``poll``: no thread, no busy loop.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterable
from typing import Any

from .channel import Channel
from .record_channel import RecordChannel

__all__ = ["RECHECK_INTERVAL", "wait"]

RECHECK_INTERVAL = 0.25
"""Seconds between re-checks of the channels while nothing signals: a peer killed between its
commit and its signal costs at most this (the slice of the blocking calls)."""


def _core_of(obj: Any) -> Channel | None:
    """The core handle whose readiness a channel's descriptor signals; None for others."""
    if isinstance(obj, Channel):
        return obj
    if isinstance(obj, RecordChannel):
        return obj._ring
    return None


def _descriptor(obj: Any) -> int:
    if isinstance(obj, int):
        return obj
    return int(obj.fileno())


def wait(objects: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """Wait until at least one of ``objects`` is ready; return those that are.

    ``objects`` holds channels (any :class:`~shmipc.Channel`, records too) and, as
    :func:`multiprocessing.connection.wait` takes them, other objects with a ``fileno()``
    (sockets, connections) or descriptors as ints. A channel is ready when a message may be
    waiting or the channel was closed for sending; another object when its descriptor is
    readable. Nothing is received: take the messages with ``recv_nowait()`` (or ``recv``).

    A channel returned may turn out empty when its receive comes (another consumer was
    faster): receive with ``recv_nowait()`` and treat :class:`~shmipc.errors.Empty` as "not
    this time". A channel that had a message when the call began is never missed.

    Each channel handle given gets its readiness descriptor here (see ``Channel.fileno``: it
    holds one of the channel's 28 readiness slots until the handle is closed, and from then on
    the handle's ``*_nowait`` calls never wait for a lock).

    Args:
        objects: channels, objects with ``fileno()``, or descriptors.
        timeout: seconds to wait at most; None waits until one is ready; 0 only looks.

    Returns:
        The ready objects, in the order given; an empty list if the timeout expired.

    Raises:
        TooManyWaiters: a channel has no readiness slot left for this handle.
        ChannelClosed: a channel handle was closed.
    """
    items = list(objects)
    cores = [_core_of(obj) for obj in items]
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    poller = select.poll()
    owners: dict[int, list[int]] = {}
    for index, obj in enumerate(items):
        fd = _descriptor(obj)
        owners.setdefault(fd, []).append(index)
        poller.register(fd, select.POLLIN)
    while True:
        # Arm every channel, then look: a message committed from here on signals its
        # descriptor, and one committed before is seen now.
        ready = {index for index, core in enumerate(cores)
                 if core is not None and core._ready_arm(False)}
        if ready:
            slice_ms = 0
        elif deadline is None:
            slice_ms = int(RECHECK_INTERVAL * 1000)
        else:
            left = deadline - time.monotonic()
            slice_ms = max(0, min(int(RECHECK_INTERVAL * 1000), int(left * 1000 + 0.999)))
        for fd, _events in poller.poll(slice_ms):
            ready.update(owners.get(fd, ()))
        if ready:
            return [items[index] for index in sorted(ready)]
        if deadline is not None and time.monotonic() >= deadline:
            return []
