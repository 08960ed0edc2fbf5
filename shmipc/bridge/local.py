"""The local ends of a bridge: where an out-bridge takes messages and an in-bridge puts them.

A bridge talks to its local end only through these two small interfaces, so that a topic (a
later kind of local endpoint) plugs in beside the channel without touching the bridge:

* a :class:`Source` (out-bridge) hands out messages one by one, each with a **key** that is
  stable across a crash (for a channel: its id and the message's read position), and removes a
  message only after the bridge has journaled it (see ``_journal.py``);
* a :class:`Sink` (in-bridge) stores a message together with its JetStream stream sequence in
  one commit, refusing a sequence it has applied already, and reports the last applied one.

:class:`ChannelSource` and :class:`ChannelSink` are the channel's; both use only the public
:class:`shmipc.Channel` API (``recv_view`` + ``statistics``, ``send_sequenced`` +
``applied_sequence``).
"""

from __future__ import annotations

from typing import Protocol

import shmipc

from ._journal import Entry, Outbox

__all__ = ["ChannelSink", "ChannelSource", "Sink", "Source", "TakeResult"]


class TakeResult:
    """What one :meth:`Source.take` moved into the outbox.

    Attributes:
        entries: the messages taken, in order, each journaled before it left the source.
        skipped: messages a killed predecessor had journaled whose removal from the source it
            did not live to commit: now removed, and not taken again (they are being
            republished from the outbox).
        closed: the source is closed and drained: nothing more will come.
        error: a failure to journal the last entry (it was removed from the source anyway,
            and is in ``entries``: publish it and stop).
    """

    __slots__ = ("entries", "skipped", "closed", "error")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.skipped = 0
        self.closed = False
        self.error: OSError | None = None


class Source(Protocol):
    """The local end of an out-bridge."""

    @property
    def source_id(self) -> bytes:
        """16 bytes naming this source for ever (message ids start with it)."""
        ...

    def take(self, outbox: Outbox, max_count: int, max_bytes: int,
             timeout: float) -> TakeResult:
        """Move up to ``max_count`` messages (and about ``max_bytes``) into ``outbox``, each
        appended there before it is removed from the source. Waits up to ``timeout`` for the
        first; takes the others only if they are there now."""
        ...

    def lag(self) -> int:
        """Messages waiting in the source now."""
        ...

    def close(self) -> None:
        """Release the source's handle."""
        ...


class Sink(Protocol):
    """The local end of an in-bridge."""

    def deliver(self, data: bytes, sequence: int, timeout: float) -> bool:
        """Store ``data`` stamped with stream ``sequence`` in one commit; False (and nothing
        stored) if a sequence at or above it was applied already.

        Raises:
            shmipc.Full: no room within ``timeout`` (back-pressure: retry later).
        """
        ...

    def applied_sequence(self, timeout: float) -> int:
        """The last stream sequence stored (0 if none).

        Raises:
            shmipc.Full: the sink's producer lock stayed busy for ``timeout``.
        """
        ...

    def lag(self) -> int:
        """Messages stored and not yet taken by local consumers."""
        ...

    def close(self) -> None:
        """Release the sink's handle."""
        ...


class ChannelSource:
    """A channel as the source of an out-bridge.

    The key of a message is the channel id and the message's read position: while a
    ``recv_view`` block runs, this handle holds the consumer lock, so ``read_position`` is the
    position of the message being viewed, and positions never repeat.

    Hazard: the bridge should be the channel's only consumer. If it is killed after journaling a
    message and before committing it, that message stays at the head of the channel: the
    restarted bridge recognises it by its position, but another consumer would receive it too.
    """

    def __init__(self, channel: shmipc.Channel) -> None:
        self.channel = channel

    @property
    def source_id(self) -> bytes:
        return bytes(self.channel.info.channel_id)

    def take(self, outbox: Outbox, max_count: int, max_bytes: int,
             timeout: float) -> TakeResult:
        result = TakeResult()
        channel = self.channel
        taken_bytes = 0
        wait = timeout
        while len(result.entries) < max_count and taken_bytes < max_bytes:
            try:
                # The block's end commits the message, also when it ends by an exception:
                # so nothing in it may raise before the message is in the outbox. A failed
                # append is kept as result.error and the message is still handed on.
                with channel.recv_view(wait) as view:
                    position = channel.statistics().read_position
                    if outbox.holds(position):
                        result.skipped += 1
                        continue
                    data = bytes(view)
                    try:
                        outbox.append(position, data)
                    except OSError as exc:
                        result.error = exc
            except shmipc.Empty:
                break
            except shmipc.EndOfChannel:
                result.closed = True
                break
            wait = 0
            result.entries.append(Entry(position, data))
            taken_bytes += len(data)
            if result.error is not None:
                break
        return result

    def lag(self) -> int:
        return self.channel.statistics().messages

    def close(self) -> None:
        self.channel.close()


class ChannelSink:
    """A channel as the sink of an in-bridge: ``send_sequenced`` stores the stream sequence in
    the same commit as the message, so a redelivery after a crash is recognised and dropped.

    Hazard: one in-bridge per channel (one sequenced producer); other producers may send plain
    messages to the same channel meanwhile.
    """

    def __init__(self, channel: shmipc.Channel) -> None:
        self.channel = channel

    def deliver(self, data: bytes, sequence: int, timeout: float) -> bool:
        return bool(self.channel.send_sequenced(data, sequence, timeout))

    def applied_sequence(self, timeout: float) -> int:
        return int(self.channel.applied_sequence(timeout))

    def lag(self) -> int:
        return self.channel.statistics().messages

    def close(self) -> None:
        self.channel.close()
