"""shmipc: messaging between processes through shared memory.

Layers, bottom up (a lower layer never imports a higher one): errors; mapping (mmap kinds,
msync, munmap); layout (the channel header) and ring (frames); sync (POSIX semaphores, robust
locks); codec (msgpack); channel (the Channel that puts them together).
"""

from .channel import DEFAULT_CAPACITY, Channel, ChannelStatistics
from .codec import Codec
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

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CAPACITY",
    "Channel",
    "ChannelClosed",
    "ChannelStatistics",
    "Codec",
    "CorruptChannel",
    "DecodeError",
    "Empty",
    "EncodeError",
    "EndOfChannel",
    "Full",
    "IncompatibleChannel",
    "Mapping",
    "MappingError",
    "MappingKind",
    "MessageTooLarge",
    "NotAChannel",
    "PeerDied",
    "ShmipcError",
    "WrongStartMethod",
    "map_anonymous",
    "map_file",
]
