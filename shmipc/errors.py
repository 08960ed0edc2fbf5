"""One exception hierarchy for shmipc, rooted at :class:`ShmipcError`.

The split follows trio: "you closed it" (:class:`ChannelClosed`, :class:`EndOfChannel`) against
"something outside broke" (:class:`PeerDied`, :class:`CorruptChannel`). Where callers already catch
a builtin, the exception is also that builtin: :class:`Empty` is a :class:`queue.Empty`,
:class:`Full` a :class:`queue.Full`, :class:`MessageTooLarge` a :class:`ValueError` and
:class:`EncodeError` a :class:`TypeError`. Numbers that explain the error are attributes, not only
text in the message.
"""

from __future__ import annotations

import queue

__all__ = [
    "ChannelClosed",
    "CorruptChannel",
    "DecodeError",
    "Empty",
    "EncodeError",
    "EndOfChannel",
    "Full",
    "IncompatibleChannel",
    "MappingError",
    "MessageTooLarge",
    "NotAChannel",
    "PeerDied",
    "ShmipcError",
    "TooManyWaiters",
    "WrongStartMethod",
]


class ShmipcError(Exception):
    """Base class of every error shmipc raises on purpose."""


class Empty(ShmipcError, queue.Empty):
    """A receive timed out, or a ``*_nowait`` receive found no message.

    Also a :class:`queue.Empty`, so code written for :mod:`queue` keeps working.
    """


class Full(ShmipcError, queue.Full):
    """A send timed out, or a ``*_nowait`` send found no room in the ring.

    Also a :class:`queue.Full`. Attributes: ``size`` (bytes the frame needs) and ``free``
    (bytes that were free when the send gave up).
    """

    def __init__(self, message: str, *, size: int = 0, free: int = 0) -> None:
        super().__init__(message)
        self.size = size
        self.free = free


class MessageTooLarge(ShmipcError, ValueError):
    """A message can never fit the channel, however long the sender waits.

    Attributes: ``size`` (the message in bytes) and ``max_size`` (the largest message the channel
    takes: half its capacity less a frame header, so that a frame that must wrap still fits).
    """

    def __init__(self, size: int, max_size: int, capacity: int) -> None:
        super().__init__(
            f"message of {size} bytes does not fit a channel of capacity {capacity} "
            f"(the largest message is {max_size} bytes); create the channel with a larger "
            f"capacity= (at least {2 * (size + 16)})"
        )
        self.size = size
        self.max_size = max_size
        self.capacity = capacity


class EndOfChannel(ShmipcError):
    """The channel was closed for sending and every message in it has been received."""


class ChannelClosed(ShmipcError):
    """The operation needs an open channel: this handle was closed, or sending was closed."""


class PeerDied(ShmipcError):
    """A process that held a channel lock died, and the state it left could not be repaired."""


class NotAChannel(ShmipcError):
    """The path exists but is not a shmipc channel file (wrong magic, too short, not a file)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class IncompatibleChannel(ShmipcError):
    """The file is a shmipc channel, but of another format version or another kind or schema."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CorruptChannel(ShmipcError):
    """A header field, position or frame read from shared memory failed validation.

    Shared memory is input from other processes: a crashed or hostile peer, or another program
    writing into the file, is reported with this error instead of a crash or a read outside the
    ring.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class EncodeError(ShmipcError, TypeError):
    """An object could not be encoded with msgpack; nothing was written to the channel."""


class DecodeError(ShmipcError, ValueError):
    """A message payload is not valid msgpack (or not what the codec expects).

    The message has been received (it is no longer in the channel); its raw bytes are kept in
    the ``payload`` attribute so that nothing is lost.
    """

    def __init__(self, message: str, *, payload: bytes = b"") -> None:
        super().__init__(message)
        self.payload = payload


class MappingError(ShmipcError, ValueError):
    """A mapping was asked for that could fault on access, or with impossible sizes."""


class WrongStartMethod(ShmipcError):
    """An anonymous channel was passed to a process not started by ``fork``.

    An anonymous mapping is inherited only through ``fork()``; ``spawn`` and ``forkserver``
    (the default from Python 3.14) start a fresh interpreter that cannot see it. Use a file
    channel (``Channel.create(path)``), which pickles by path and works with every start method.
    """


class TooManyWaiters(ShmipcError):
    """Every readiness slot of a channel is held by a live handle (``fileno()``, asyncio).

    A channel has 28; each handle that waits on a descriptor holds one until it is closed.
    Slots of processes that died are repaired. Close handles that no longer wait.
    """
