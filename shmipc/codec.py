"""The msgpack layer: one place that owns the packer and unpacker settings and the ext types.

Settings: binary and text stay apart (``use_bin_type=True``, ``raw=False``), map keys must be
str or bytes (``strict_map_key=True``: a hostile peer cannot make a dict key out of a huge
tuple), tuples come back as lists, and every length the unpacker accepts is capped by the
message it came in (msgpack derives ``max_str_len`` and friends from the buffer), plus an
optional ``max_size`` for the whole message. An object msgpack cannot encode raises
:class:`~shmipc.errors.EncodeError` (also a ``TypeError``) before anything is written; a payload
that is not valid msgpack raises :class:`~shmipc.errors.DecodeError` (also a ``ValueError``).

Ext types (msgpack's application types, codes 0..127):

=======  ===================================================================================
code     carries
=======  ===================================================================================
-1       ``datetime`` with a tzinfo, as a msgpack timestamp; decoded as an aware UTC datetime
82       a record (:class:`shmipc.Record` value): ``u8 name length, name, u32 crc32 of the
         schema text (LE), the record's C bytes``. The decoding codec must know the record
         type (``Codec(records=[people])``), since the bytes alone do not say the fields.
others   registered with :meth:`Codec.register_ext`, or left to ``ext_hook`` / returned as
         :class:`msgpack.ExtType`
=======  ===================================================================================

This module sits below ``records.py`` and does not import it: it recognises a record value by
the ``_shmipc_record`` attribute of its class (the :class:`~shmipc.records.Record` that made it).
"""

from __future__ import annotations

import datetime as _dt
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from .errors import DecodeError, EncodeError

__all__ = ["RECORD_EXT_CODE", "Codec"]

RECORD_EXT_CODE = 82
"""The msgpack ext code records travel as (82 is ``ord("R")``)."""

_CRC = struct.Struct("<I")


def _schema_crc(schema: str) -> int:
    return zlib.crc32(schema.encode("utf-8")) & 0xFFFFFFFF


class Codec:
    """Encodes objects to msgpack bytes and back, with shmipc's settings and ext types.

    Args:
        default: called for objects msgpack and the registered ext types cannot encode;
            returns something encodable (for example an :class:`msgpack.ExtType`) or raises
            ``TypeError``.
        ext_hook: called as ``ext_hook(code, data)`` for ext codes nobody registered; without
            one they decode as :class:`msgpack.ExtType`.
        records: record types (:class:`shmipc.Record`) to decode; any record value encodes.
        max_size: refuse to decode a message longer than this many bytes (None: no limit
            beyond the channel's own). Set it here: a channel reads it when it is opened.

    A Codec reuses one :class:`msgpack.Packer`. It is safe to share between threads as long as
    ``default`` does not release the GIL in the middle of an object. Register types before
    handing the codec to a channel that other threads use.
    """

    __slots__ = ("_packer", "_default", "_ext_hook", "_records", "_ext_by_type",
                 "_ext_by_code", "_hook", "max_size")

    def __init__(self, *, default: Callable[[Any], Any] | None = None,
                 ext_hook: Callable[[int, bytes], Any] | None = None,
                 records: Iterable[Any] = (), max_size: int | None = None) -> None:
        self._default = default
        self._ext_hook = ext_hook
        self._records: dict[str, Any] = {}
        self._ext_by_type: dict[type, tuple[int, Callable[[Any], bytes]]] = {}
        self._ext_by_code: dict[int, Callable[[bytes], Any]] = {}
        self.max_size = max_size
        self._hook = self._decode_ext
        self._packer = self._new_packer()
        for record in records:
            self.register_record(record)

    def _new_packer(self) -> msgpack.Packer:
        return msgpack.Packer(use_bin_type=True, datetime=True, default=self._encode_other,
                              autoreset=True)

    # --- registration --------------------------------------------------------------------

    def register_record(self, record: Any) -> None:
        """Let this codec decode values of ``record`` (a :class:`shmipc.Record`).

        Raises:
            ValueError: another record type of the same name is registered.
        """
        known = self._records.get(record.name)
        if known is not None and known.schema != record.schema:
            raise ValueError(f"a record type named {record.name!r} is registered already "
                             f"({known.schema}); record names must be unique in a codec")
        self._records[record.name] = record

    def register_ext(self, code: int, cls: type, encode: Callable[[Any], bytes],
                     decode: Callable[[bytes], Any]) -> None:
        """Carry instances of ``cls`` as msgpack ext type ``code``.

        Args:
            code: 0..127, not :data:`RECORD_EXT_CODE`.
            cls: the class (subclasses are encoded too).
            encode: object to bytes.
            decode: bytes to object (an exception it raises becomes a :class:`DecodeError`).

        Raises:
            ValueError: the code is out of range, reserved, or taken by another class.
        """
        if not isinstance(code, int) or not 0 <= code <= 127:
            raise ValueError(f"an ext code is 0..127 (got {code!r})")
        if code == RECORD_EXT_CODE:
            raise ValueError(f"ext code {code} carries shmipc records; choose another")
        for other, (taken, _) in self._ext_by_type.items():
            if taken == code and other is not cls:
                raise ValueError(f"ext code {code} is taken by {other.__name__}")
        self._ext_by_type[cls] = (code, encode)
        self._ext_by_code[code] = decode

    # --- encoding ----------------------------------------------------------------------------

    def _encode_other(self, obj: Any) -> Any:
        record = getattr(type(obj), "_shmipc_record", None)
        if record is not None:
            name = record.name.encode("utf-8")
            return msgpack.ExtType(RECORD_EXT_CODE, bytes((len(name),)) + name
                                   + _CRC.pack(_schema_crc(record.schema)) + record.pack(obj))
        if self._ext_by_type:
            entry = self._ext_by_type.get(type(obj))
            if entry is None:
                for cls, candidate in self._ext_by_type.items():
                    if isinstance(obj, cls):
                        entry = candidate
                        break
            if entry is not None:
                data = entry[1](obj)
                if not isinstance(data, bytes | bytearray):
                    raise TypeError(f"the ext encoder for {type(obj).__name__} returned "
                                    f"{type(data).__name__}, not bytes")
                return msgpack.ExtType(entry[0], bytes(data))
        if self._default is not None:
            return self._default(obj)
        if isinstance(obj, _dt.datetime):
            raise TypeError("a naive datetime has no time zone, so it has no single instant to "
                            "send; attach one (dt.replace(tzinfo=datetime.timezone.utc))")
        raise TypeError(f"can not serialize {type(obj).__name__!r} object")

    def encode(self, obj: Any) -> bytes:
        """Encode one object.

        Raises:
            EncodeError: msgpack cannot encode it (also a ``TypeError``); the codec is left
                clean for the next call.
        """
        try:
            return self._packer.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            # The packer empties its buffer when a pack fails (autoreset), so it is reused: the
            # compiled core holds its pack method (fast_paths).
            raise EncodeError(
                f"cannot encode {type(obj).__name__} with msgpack ({exc}); send bytes with "
                "send_bytes(), convert the object to dicts/lists/str/int/float/bytes, register "
                "an ext type on the codec, or give it a default= hook"
            ) from exc
        except RecursionError as exc:
            raise EncodeError(f"cannot encode {type(obj).__name__}: nested too deeply or "
                              "self-referencing") from exc

    # --- decoding ----------------------------------------------------------------------------

    def _decode_ext(self, code: int, data: bytes) -> Any:
        if code == RECORD_EXT_CODE:
            if not data:
                raise DecodeError("a record ext value is empty")
            n = data[0]
            if len(data) < 1 + n + 4:
                raise DecodeError("a record ext value is truncated")
            name = data[1:1 + n].decode("utf-8", "replace")
            record = self._records.get(name)
            if record is None:
                raise DecodeError(f"a {name!r} record arrived, but this codec does not know the "
                                  f"type; create it with Codec(records=[{name}])")
            (crc,) = _CRC.unpack_from(data, 1 + n)
            if crc != _schema_crc(record.schema):
                raise DecodeError(f"a {name!r} record arrived with another schema than "
                                  f"{record.schema!r}: sender and receiver declare it differently")
            body = data[1 + n + 4:]
            if len(body) != record.size:
                raise DecodeError(f"a {name!r} record of {len(body)} bytes arrived; the type "
                                  f"has {record.size}")
            return record.unpack(body)
        decode = self._ext_by_code.get(code)
        if decode is not None:
            try:
                return decode(data)
            except Exception as exc:
                raise DecodeError(f"the ext decoder for code {code} failed: {exc!r}") from exc
        if self._ext_hook is not None:
            return self._ext_hook(code, data)
        return msgpack.ExtType(code, data)

    def fast_paths(self) -> tuple[Any, Any, dict[str, Any]] | None:
        """For the compiled core: ``(pack, unpackb, unpack_kwargs)``, the msgpack calls that
        :meth:`encode` and :meth:`decode` make, to be called directly per message or batch
        (the core falls back to :meth:`encode`/:meth:`decode` to raise their errors). None
        when this codec must see every message (``max_size`` is set)."""
        if self.max_size is not None:
            return None
        # raw=False, strict_map_key=True and use_list=True are msgpack's defaults (>= 1.0):
        # not passing them saves ~200 ns a call of keyword parsing, most of a small decode.
        return self._packer.pack, msgpack.unpackb, {"ext_hook": self._hook, "timestamp": 3}

    def decode(self, payload: bytes | memoryview) -> Any:
        """Decode one message.

        Raises:
            DecodeError: not valid msgpack, too large, or an ext value that cannot be decoded
                (also a ``ValueError``); the raw bytes are in its ``payload``.
        """
        if self.max_size is not None and len(payload) > self.max_size:
            raise DecodeError(f"a message of {len(payload)} bytes is above this codec's "
                              f"max_size of {self.max_size}", payload=bytes(payload))
        try:
            return msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                                   ext_hook=self._hook, timestamp=3)
        except DecodeError as exc:
            raise DecodeError(str(exc), payload=bytes(payload)) from exc
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError,
                struct.error, UnicodeDecodeError) as exc:
            raise DecodeError(
                f"a message of {len(payload)} bytes is not valid msgpack ({exc}); it was sent "
                "with send_bytes() or by another codec: receive it with recv_bytes(); its bytes "
                "are in this error's .payload",
                payload=bytes(payload),
            ) from exc
