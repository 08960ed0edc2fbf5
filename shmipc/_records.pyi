"""Type stub of the C fast path of shmipc.records (shmipc/_records.c)."""

from collections.abc import Callable, Sequence
from typing import Any

class RecordCodec:
    """Private: packs and unpacks one Record type's values in C."""

    def __init__(self, size: int,
                 fields: Sequence[tuple[str, str, int, int, str | None]], type: type,
                 explain_pack: Callable[[Any], bytes],
                 explain_unpack: Callable[[Any], Any]) -> None: ...
    def pack(self, value: Any) -> bytes: ...
    def unpack(self, payload: Any) -> Any: ...
    def pack_into(self, buffer: Any, offset: int, value: Any) -> None: ...
    def unpack_from(self, buffer: Any, offset: int = 0) -> Any: ...

class RecordBase:
    """Private: the base of record value classes (== in C)."""

    def _shmipc_eq(self, other: object) -> Any: ...
