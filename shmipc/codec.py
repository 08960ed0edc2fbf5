"""The msgpack layer: one place that owns the packer and unpacker settings.

Settings: binary and text stay apart (``use_bin_type=True``, ``raw=False``), map keys must be
str or bytes (``strict_map_key=True``: a hostile peer cannot make a dict key out of a huge
tuple), tuples come back as lists, and every size the unpacker accepts is capped by the message
it came in. An object msgpack cannot encode raises :class:`~shmipc.errors.EncodeError` (also a
``TypeError``) before anything is written; a payload that is not valid msgpack raises
:class:`~shmipc.errors.DecodeError` (also a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from .errors import DecodeError, EncodeError

__all__ = ["Codec"]


class Codec:
    """Encodes objects to msgpack bytes and back, with shmipc's settings.

    Args:
        default: called for objects msgpack cannot encode; returns something it can (for
            example an :class:`msgpack.ExtType`), or raises ``TypeError``.
        ext_hook: called as ``ext_hook(code, data)`` for ext types on decoding.

    A Codec reuses one :class:`msgpack.Packer`. It is safe to share between threads as long as
    ``default`` does not release the GIL in the middle of an object.
    """

    __slots__ = ("_packer", "_default", "_ext_hook")

    def __init__(self, *, default: Callable[[Any], Any] | None = None,
                 ext_hook: Callable[[int, bytes], Any] | None = None) -> None:
        self._default = default
        self._ext_hook = ext_hook
        self._packer = msgpack.Packer(use_bin_type=True, default=default, autoreset=True)

    def encode(self, obj: Any) -> bytes:
        """Encode one object; raise EncodeError (a TypeError) if msgpack cannot."""
        try:
            return self._packer.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            # The reused packer may hold a partial buffer after a failure: start afresh.
            self._packer = msgpack.Packer(use_bin_type=True, default=self._default,
                                          autoreset=True)
            raise EncodeError(
                f"cannot encode {type(obj).__name__} with msgpack ({exc}); send bytes with "
                "send_bytes(), convert the object to dicts/lists/str/int/float/bytes, or give "
                "the channel a codec with a default= hook"
            ) from exc

    def decode(self, payload: bytes | memoryview) -> Any:
        """Decode one message; raise DecodeError (a ValueError) if it is not valid msgpack."""
        try:
            if self._ext_hook is None:
                return msgpack.unpackb(payload, raw=False, strict_map_key=True,
                                       use_list=True)
            return msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                                   ext_hook=self._ext_hook)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise DecodeError(
                f"a message of {len(payload)} bytes is not valid msgpack ({exc}); it was sent "
                "with send_bytes() or by another codec: receive it with recv_bytes(); its bytes "
                "are in this error's .payload",
                payload=bytes(payload),
            ) from exc
