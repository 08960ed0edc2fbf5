"""shmipc: messaging between processes through shared memory.

Layers, bottom up (a lower layer never imports a higher one): the compiled core ``_core`` (the
per-message protocol, in C) and errors; mapping (mmap kinds, msync, munmap); layout (the
header and frame format); sync (POSIX semaphore names); codec (msgpack, ext types); records
(C-layout records, arrays over mappings); channel and record_channel (the public faces);
waiting (``wait`` over several channels), aio (the asyncio face, imported on first use) and
queue (multiprocessing's Queue and JoinableQueue on a channel).
"""

from typing import TYPE_CHECKING, Any

from .channel import DEFAULT_CAPACITY, Channel, ChannelStatistics
from .codec import RECORD_EXT_CODE, Codec
from .errors import (
    ChannelClosed,
    CorruptChannel,
    DecodeError,
    Empty,
    EncodeError,
    EndOfChannel,
    Full,
    IncompatibleChannel,
    MappingError,
    MessageTooLarge,
    NotAChannel,
    PeerDied,
    ShmipcError,
    TooManyWaiters,
    WrongStartMethod,
)
from .mapping import Mapping, MappingKind, map_anonymous, map_file
from .queue import JoinableQueue, Queue
from .record_channel import RecordChannel, RecordStatistics
from .records import FieldTooLong, Record, RecordArray, RecordError
from .waiting import wait

if TYPE_CHECKING:
    from .aio import AsyncChannel, AsyncRecordChannel

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_CAPACITY",
    "RECORD_EXT_CODE",
    "Channel",
    "ChannelClosed",
    "ChannelStatistics",
    "Codec",
    "CorruptChannel",
    "DecodeError",
    "Empty",
    "EncodeError",
    "EndOfChannel",
    "FieldTooLong",
    "Full",
    "IncompatibleChannel",
    "JoinableQueue",
    "Mapping",
    "MappingError",
    "MappingKind",
    "MessageTooLarge",
    "NotAChannel",
    "PeerDied",
    "Queue",
    "Record",
    "RecordArray",
    "RecordChannel",
    "RecordError",
    "RecordStatistics",
    "ShmipcError",
    "TooManyWaiters",
    "WrongStartMethod",
    "map_anonymous",
    "map_file",
    "wait",
    "AsyncChannel",
    "AsyncRecordChannel",
]


def __getattr__(name: str) -> Any:
    # The asyncio face on first use: `import shmipc` does not import asyncio.
    if name in ("AsyncChannel", "AsyncRecordChannel"):
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'shmipc' has no attribute {name!r}")
