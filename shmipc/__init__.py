"""shmipc: messaging between processes through shared memory.

Layers, bottom up (a lower layer never imports a higher one): the compiled core ``_core`` (the
per-message protocol, in C) and errors; mapping (mmap kinds, msync, munmap); layout (the
header and frame format); sync (POSIX semaphore names); codec (msgpack, ext types); records
(C-layout records, arrays over mappings); channel and record_channel (the public faces);
queue (multiprocessing's Queue and JoinableQueue on a channel).
"""

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
    WrongStartMethod,
)
from .mapping import Mapping, MappingKind, map_anonymous, map_file
from .queue import JoinableQueue, Queue
from .record_channel import RecordChannel
from .records import FieldTooLong, Record, RecordArray, RecordError

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
    "ShmipcError",
    "WrongStartMethod",
    "map_anonymous",
    "map_file",
]
