"""The local ends of a bridge: where an out-bridge takes messages and an in-bridge puts them.

A bridge talks to its local end only through these two small interfaces, so that a topic (a
later kind of local endpoint) plugs in beside the channel without touching the bridge:

* a :class:`Source` (out-bridge) lends a batch of messages in place: :meth:`Source.claim`
  returns a context manager that yields ``(key, payload)`` pairs, each key stable across a
  crash, and removes the messages only when its block ends normally (after JetStream
  acknowledged every one); an exception, or a kill, leaves them for the next claim with the
  same keys;
* a :class:`Sink` (in-bridge) stores a message together with its JetStream stream sequence in
  one commit, refusing a sequence it has applied already, and reports the last applied one.

:class:`ChannelSource` and :class:`ChannelSink` are the channel's; both use only the public
:class:`shmipc.Channel` API (``recv_many_view`` + ``statistics``, ``send_sequenced`` +
``applied_sequence``).

**Plugging a topic in** (the seam): a topic subscription becomes a :class:`Source` when it can
claim a batch in place with a key per message that never repeats for that subscription (its
read position), and commit the batch (advance the subscription) only on a normal exit; its
``source_id`` must name the topic *and* the subscription (16 bytes, e.g. a hash of the topic's
id and the subscriber's), so that two subscriptions forwarding the same message never share a
JetStream message id. A topic publisher becomes a :class:`Sink` when it can publish a message
and record the stream sequence in the same commit (the topic's own ``send_sequenced``) and read
the last recorded one back. Nothing in ``_out.py`` or ``_in.py`` changes; ``open_out`` /
``open_in`` (and the CLI) then choose the class by the kind of file at ``PATH``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

import shmipc

__all__ = ["ChannelClaim", "ChannelSink", "ChannelSource", "Claim", "Sink", "Source"]


class Claim(Protocol):
    """A batch lent by a :class:`Source`: a context manager.

    ``__enter__`` returns the messages as ``(key, payload)`` pairs, in order (an empty list if
    none was waiting); the payloads are valid inside the block only. ``__exit__`` removes them
    from the source if the block ended normally, and leaves them (same keys, same order) for
    the next claim if it ended by an exception. :attr:`closed` is True after ``__enter__`` when
    the source is closed and drained: nothing more will come.
    """

    closed: bool

    def __enter__(self) -> list[tuple[int, memoryview]]: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Source(Protocol):
    """The local end of an out-bridge."""

    @property
    def source_id(self) -> bytes:
        """16 bytes naming this source for ever (message ids start with it)."""
        ...

    def claim(self, max_count: int) -> Claim:
        """Claim up to ``max_count`` messages waiting now, without waiting for any. Claim and
        end the claim's block in the same thread."""
        ...

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds until a message is waiting (or the source is closed),
        claiming nothing. Called from a worker thread while the event loop runs."""
        ...

    def lag(self) -> int:
        """Messages waiting in the source now (claimed ones included)."""
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


class _Peeked(Exception):
    """Ends a claim made only to learn that a message is waiting (nothing is committed)."""


class ChannelClaim:
    """A batch claimed from a channel with :meth:`shmipc.Channel.recv_many_view`: keys are the
    messages' read positions, payloads read-only views into the ring (see :class:`Claim`)."""

    __slots__ = ("_claim", "_entered", "closed")

    def __init__(self, channel: shmipc.Channel, max_count: int) -> None:
        self._claim = channel.recv_many_view(max_count, 0)
        self._entered = False
        self.closed = False

    def __enter__(self) -> list[tuple[int, memoryview]]:
        try:
            views = self._claim.__enter__()
        except shmipc.Empty:
            return []
        except shmipc.EndOfChannel:
            self.closed = True
            return []
        self._entered = True
        return list(zip(self._claim.positions, views, strict=True))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._entered:
            self._entered = False
            self._claim.__exit__(exc_type, exc, tb)


class ChannelSource:
    """A channel as the source of an out-bridge.

    The key of a message is its read position, a 64-bit counter that never repeats in the
    channel: with the channel id it names the message for ever, so the JetStream message id
    ``<channel id>:<position>`` of a message published again after a crash is the same.

    Hazard: the bridge should be the channel's only consumer. While a batch is claimed (one
    JetStream round trip) other consumers wait; and if the bridge is killed after JetStream
    stored a batch and before the channel's commit, those messages stay at the head of the
    channel, where the restarted bridge republishes them (dropped as duplicates by JetStream)
    but another consumer would receive them too.
    """

    def __init__(self, channel: shmipc.Channel) -> None:
        self.channel = channel

    @property
    def source_id(self) -> bytes:
        return bytes(self.channel.info.channel_id)

    def claim(self, max_count: int) -> ChannelClaim:
        return ChannelClaim(self.channel, max_count)

    def wait(self, timeout: float) -> None:
        # A claim ended by an exception commits nothing: the message stays for claim().
        try:
            with self.channel.recv_many_view(1, timeout):
                raise _Peeked
        except (_Peeked, shmipc.Empty, shmipc.EndOfChannel):
            pass

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
