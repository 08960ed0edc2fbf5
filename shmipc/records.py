"""Fixed-size records with C layout, and arrays of them viewed over any mapping or buffer.

A :class:`Record` type is declared once, field name to :mod:`struct` code, and compiles to one
little-endian :class:`struct.Struct` laid out the way a C compiler lays out the same struct on
x86-64 and AArch64 (each field aligned to its size, the whole padded to its largest alignment)::

    people = Record("people", [("name", "4s"), ("age", "i")])  # typedef struct {
    people.size == 8                                          #     char name[4]; int age;
                                                              # } people;

Values are instances of a small class generated for the type (``people(name=b"b", age=20)``):
slotted, comparable, unpackable like a tuple (``name, age = rec``). ``char[N]`` fields (code
``Ns``) are exact bytes: a shorter value is NUL-padded, a longer one raises
:class:`FieldTooLong` (never a silent cut), and reading gives the C string up to the first NUL.
Declare a field with an encoding (``("name", "4s", "utf-8")``) to pass and get ``str``; the
limit then applies to the encoded bytes.

:class:`RecordArray` is a typed view over a :class:`~shmipc.mapping.Mapping`, an ``mmap``, a
``bytearray`` or a ``memoryview``: index, slice, iterate, assign a record or one field. Its
length comes from the buffer and it never reads or writes past it.

The schema text (:attr:`Record.schema`, at most 256 UTF-8 bytes) is what a record channel's
header stores; :meth:`Record.from_schema` rebuilds the type from it. This module knows nothing
of msgpack or channels; the codec carries records as an ext type through the duck-typed
``_shmipc_record`` attribute of the value classes.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from . import _records
from .errors import ShmipcError
from .mapping import Mapping

__all__ = ["FieldTooLong", "Record", "RecordArray", "RecordError", "SCHEMA_MAX"]

SCHEMA_MAX = 256
"""Bytes of schema text a channel header holds (``layout.SCHEMA_MAX``)."""

# code -> (size, alignment) for the fixed-width codes; 'Ns' is handled apart (size N, align 1).
# 'l'/'L'/'n'/'N'/'P' are left out on purpose: their width depends on the platform.
_SCALARS: dict[str, tuple[int, int]] = {
    "c": (1, 1), "b": (1, 1), "B": (1, 1), "?": (1, 1),
    "h": (2, 2), "H": (2, 2), "e": (2, 2),
    "i": (4, 4), "I": (4, 4), "f": (4, 4),
    "q": (8, 8), "Q": (8, 8), "d": (8, 8),
}
# The range each integer code holds, for the message of a value that does not fit.
_INT_RANGES: dict[str, tuple[str, int, int]] = {
    "b": ("int8_t", -(1 << 7), (1 << 7) - 1), "B": ("uint8_t", 0, (1 << 8) - 1),
    "h": ("int16_t", -(1 << 15), (1 << 15) - 1), "H": ("uint16_t", 0, (1 << 16) - 1),
    "i": ("int32_t", -(1 << 31), (1 << 31) - 1), "I": ("uint32_t", 0, (1 << 32) - 1),
    "q": ("int64_t", -(1 << 63), (1 << 63) - 1), "Q": ("uint64_t", 0, (1 << 64) - 1),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CODE = re.compile(r"(\d*)([A-Za-z?])\Z")


class RecordError(ShmipcError, ValueError):
    """A record type cannot be declared, or a value does not fit its field.

    Also a :class:`ValueError`. Attributes: ``field`` (the field name, or None).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class FieldTooLong(RecordError):
    """A ``char[N]`` value is longer than ``N`` bytes; nothing was written.

    Attributes: ``field``, ``length`` (bytes given, after encoding) and ``max_length`` (N).
    """

    def __init__(self, record: str, field: str, length: int, max_length: int) -> None:
        super().__init__(
            f"{record}.{field} is char[{max_length}]: a value of {length} bytes does not fit "
            f"and is never cut; shorten it to at most {max_length} bytes, or declare the field "
            f"larger",
            field=field,
        )
        self.length = length
        self.max_length = max_length


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    code: str
    encoding: str | None
    offset: int
    size: int
    text: bool  # an 'Ns' field


def _value_iter(self: Any) -> Iterator[Any]:
    for name in self.__slots__:
        yield getattr(self, name)


def _compile_eq(fields: Sequence[str]) -> Any:
    # Equal when of the same schema (a type rebuilt from a header equals the declared one),
    # field by field; generated per type, so no loop and no generator (records are compared
    # as often as dicts are).
    mine = ", ".join(f"self.{n}" for n in fields)
    theirs = ", ".join(f"other.{n}" for n in fields)
    source = (
        "def _shmipc_eq(self, other):\n"
        "    if other.__class__ is not self.__class__:\n"
        "        rec = getattr(other.__class__, '_shmipc_record', None)\n"
        "        if rec is None:\n"
        "            return NotImplemented\n"
        "        if rec.schema != self._shmipc_record.schema:\n"
        "            return False\n"
        f"    return ({mine},) == ({theirs},)\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace["_shmipc_eq"]


class Record:
    """A record type: named fields with C layout, compiled to one :class:`struct.Struct`.

    Args:
        name: the type's name (an identifier), as in the C ``typedef``.
        fields: ``(name, code)`` or ``(name, code, encoding)`` pairs, in C order. Codes are
            :mod:`struct` codes of fixed width: ``b B ? h H e i I f q Q d c`` and ``Ns`` for
            ``char[N]``. An encoding (``Ns`` only) makes the field read and accept ``str``.

    Attributes:
        name: the type's name.
        size: bytes one record takes, C padding included (``sizeof``).
        struct: the compiled little-endian :class:`struct.Struct` (padding as ``x``).
        fields: the field names, in order.
        offsets: field name to byte offset (``offsetof``).
        schema: the text form stored in a record channel's header.
        type: the class of the values (call the Record itself to make one).

    Raises:
        RecordError: a bad name, an unknown or platform-dependent code, a duplicate field, or a
            schema text longer than 256 bytes.
    """

    __slots__ = ("name", "size", "struct", "fields", "offsets", "schema", "type", "_fields",
                 "_text", "_field_structs", "_by_name", "_decode", "_codec", "__weakref__")

    def __init__(self, name: str, fields: Sequence[tuple[str, str] | tuple[str, str, str]]
                 ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise RecordError(f"record name {name!r} is not an identifier")
        if not fields:
            raise RecordError(f"record {name} needs at least one field")
        parsed: list[_Field] = []
        fmt = ["<"]
        offset = 0
        max_align = 1
        seen: set[str] = set()
        for spec in fields:
            if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
                raise RecordError(f"{name}: a field is (name, code[, encoding]), not {spec!r}")
            fname, code = spec[0], spec[1]
            encoding = spec[2] if len(spec) == 3 else None
            if not isinstance(fname, str) or not _NAME.match(fname) or fname.startswith("_"):
                raise RecordError(f"{name}: field name {fname!r} is not a public identifier",
                                  field=str(fname))
            if fname in seen:
                raise RecordError(f"{name}: field {fname!r} is declared twice", field=fname)
            seen.add(fname)
            m = _CODE.match(code) if isinstance(code, str) else None
            if m is None:
                raise RecordError(f"{name}.{fname}: {code!r} is not a struct code", field=fname)
            count, letter = m.groups()
            if letter == "s":
                size = int(count or "1")
                if size < 1:
                    raise RecordError(f"{name}.{fname}: char[{size}] is empty", field=fname)
                align = 1
                code = f"{size}s"
            elif letter in _SCALARS and not count:
                size, align = _SCALARS[letter]
            else:
                raise RecordError(
                    f"{name}.{fname}: code {code!r} is not supported; use one of "
                    f"{' '.join(_SCALARS)} or Ns (l, L, n, N and P differ between platforms: "
                    f"use i/I or q/Q)", field=fname)
            if encoding is not None:
                if letter != "s":
                    raise RecordError(f"{name}.{fname}: only char[N] fields take an encoding",
                                      field=fname)
                "".encode(encoding)  # LookupError for an unknown encoding, now
            pad = -offset % align
            if pad:
                fmt.append(f"{pad}x")
                offset += pad
            parsed.append(_Field(fname, code, encoding, offset, size, letter == "s"))
            fmt.append(code)
            offset += size
            max_align = max(max_align, align)
        tail = -offset % max_align
        if tail:
            fmt.append(f"{tail}x")
            offset += tail
        self.name = name
        self.size = offset
        self.struct = struct.Struct("".join(fmt))
        self._fields = tuple(parsed)
        self.fields = tuple(f.name for f in parsed)
        self.offsets = {f.name: f.offset for f in parsed}
        self._by_name = {f.name: (i, f) for i, f in enumerate(parsed)}
        self._field_structs = {f.name: struct.Struct("<" + f.code) for f in parsed}
        self._text = tuple((i, f) for i, f in enumerate(parsed) if f.text)
        self.schema = name + "{" + ";".join(
            f"{f.name}:{f.code}" + (f":{f.encoding}" if f.encoding else "") for f in parsed
        ) + "}"
        if len(self.schema.encode("utf-8")) > SCHEMA_MAX:
            raise RecordError(
                f"the schema text of {name} is {len(self.schema.encode())} bytes; a channel "
                f"header holds at most {SCHEMA_MAX}: use shorter field names")
        # == comes from the C base (RecordBase): values of one class compare slot by slot in
        # C, values of classes of the same schema through _shmipc_eq.
        cls = dataclasses.make_dataclass(
            name, [(f.name, Any) for f in parsed], bases=(_records.RecordBase,), slots=True,
            eq=False,
            namespace={"__iter__": _value_iter, "__hash__": None,
                       "_shmipc_eq": _compile_eq([f.name for f in parsed]),
                       "_shmipc_record": self,
                       "__doc__": f"A {name} record: {self.schema}"},
        )
        cls.__module__ = "shmipc.records"
        self.type = cls
        self._decode = self._compile_decode()
        self._codec = self.codec(self._pack_reference, self._unpack_reference)

    def codec(self, explain_pack: Any, explain_unpack: Any) -> Any:
        """Private: a C packer/unpacker of this type (``shmipc._records.RecordCodec``).

        ``explain_pack(value)`` and ``explain_unpack(payload)`` are called for what the C path
        does not take (a value that does not fit, a str in another encoding, a payload of the
        wrong length): they return the result or raise the error.
        """
        return _records.RecordCodec(
            self.size,
            [(f.name, f.code[-1], f.offset, f.size, f.encoding) for f in self._fields],
            self.type, explain_pack, explain_unpack)

    # --- values ----------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Make a value: ``people(b"b", 20)`` or ``people(name=b"b", age=20)``.

        The value is not checked until it is packed (assigned, sent, or :meth:`pack`-ed).
        """
        return self.type(*args, **kwargs)

    def _prepare(self, values: Sequence[Any]) -> Sequence[Any]:
        # Check and convert the char[N] fields: exact bytes, never cut (struct would cut).
        if len(values) != len(self._fields):
            raise RecordError(
                f"{self.name} has {len(self._fields)} fields ({', '.join(self.fields)}); "
                f"got {len(values)} values")
        out = None
        for i, f in self._text:
            v = values[i]
            if type(v) is not bytes or len(v) > f.size:
                if out is None:
                    out = list(values)
                out[i] = self._check_text(f, v)
        return values if out is None else out

    def _check_text(self, f: _Field, v: Any) -> bytes:
        if type(v) is not bytes:
            if isinstance(v, str):
                if f.encoding is None:
                    raise RecordError(
                        f"{self.name}.{f.name} holds bytes; pass bytes, or declare the "
                        f"field with an encoding: ({f.name!r}, {f.code!r}, 'utf-8')",
                        field=f.name)
                v = v.encode(f.encoding)
            elif isinstance(v, bytearray | memoryview):
                v = bytes(v)
            else:
                raise RecordError(f"{self.name}.{f.name} needs bytes, not "
                                  f"{type(v).__name__}", field=f.name)
        if len(v) > f.size:
            raise FieldTooLong(self.name, f.name, len(v), f.size)
        return v

    def _values(self, value: Any) -> Sequence[Any]:
        if type(value) is self.type:
            return [getattr(value, n) for n in self.fields]
        if isinstance(value, dict):
            try:
                return [value[n] for n in self.fields]
            except KeyError as exc:
                raise RecordError(f"{self.name}: missing field {exc.args[0]!r}",
                                  field=exc.args[0]) from None
        if isinstance(value, tuple | list):
            return value
        rec = getattr(type(value), "_shmipc_record", None)
        if rec is not None and rec.schema == self.schema:  # the same type, declared again
            return [getattr(value, n) for n in self.fields]
        if rec is not None:
            raise RecordError(f"a {rec.name} record is not a {self.name} record")
        raise RecordError(f"{self.name}: cannot pack a {type(value).__name__}; pass a "
                          f"{self.name} value, a tuple or a dict")

    def _struct_error(self, values: Sequence[Any], exc: Exception) -> RecordError:
        for (_, f), v in zip(self._by_name.values(), values, strict=False):
            try:
                self._field_structs[f.name].pack(v)
            except struct.error as inner:
                return self._field_error(f, v, inner)
        return RecordError(f"{self.name}: {exc}")

    def _field_error(self, f: _Field, value: Any, exc: Exception) -> RecordError:
        where = f"{self.name}.{f.name}"
        if f.code in _INT_RANGES and isinstance(value, int):
            ctype, lo, hi = _INT_RANGES[f.code]
            return RecordError(f"{where} is {ctype} ({f.code}): it holds {lo}..{hi}, not "
                               f"{value}; declare the field wider (q or Q) or send a value in "
                               "range", field=f.name)
        return RecordError(f"{where} ({f.code}): cannot hold {value!r} ({exc})", field=f.name)

    def pack(self, value: Any) -> bytes:
        """Return the C bytes of ``value`` (a value of this type, a tuple or a dict).

        Raises:
            FieldTooLong: a ``char[N]`` value longer than N bytes.
            RecordError: a wrong number of values, or a value its field cannot hold (the
                message names the field and the range it holds).
        """
        return self._codec.pack(value)  # type: ignore[no-any-return]

    def _pack_reference(self, value: Any) -> bytes:
        # The reference the C path falls back on: it packs what C did not take, or raises.
        values = self._prepare(self._values(value))
        try:
            return self.struct.pack(*values)
        except struct.error as exc:
            raise self._struct_error(values, exc) from None

    def pack_into(self, buffer: Any, offset: int, value: Any) -> None:
        """Write ``value`` at ``offset`` of a writable buffer (checked as :meth:`pack`).

        Raises:
            ValueError: the record does not fit the buffer at ``offset``.
            FieldTooLong, RecordError: as :meth:`pack`; nothing is written.
        """
        self._codec.pack_into(buffer, offset, value)

    def _decode_reference(self, raw: tuple[Any, ...]) -> Any:
        # Replaced per instance by a generated function (see _compile_decode); kept as the
        # reference implementation.
        if self._text:
            raw_list = list(raw)
            for i, f in self._text:
                v = raw_list[i].partition(b"\0")[0]
                raw_list[i] = v.decode(f.encoding) if f.encoding else v
            return self.type(*raw_list)
        return self.type(*raw)

    def _compile_decode(self) -> Any:
        # One generated function per type: a char[N] field is cut at its first NUL (the C
        # string), then decoded if it has an encoding; no loop, no intermediate list.
        args = []
        for i, f in enumerate(self._fields):
            if f.text:
                expr = f"raw[{i}].partition(b'\\0')[0]"
                if f.encoding:
                    expr += f".decode({f.encoding!r})"
                args.append(expr)
            else:
                args.append(f"raw[{i}]")
        namespace: dict[str, Any] = {"T": self.type}
        exec(f"def decode(raw):\n    return T({', '.join(args)})\n", namespace)
        return namespace["decode"]

    def unpack(self, data: Any) -> Any:
        """Read one record from exactly :attr:`size` bytes.

        Raises:
            RecordError: ``data`` is not :attr:`size` bytes long.
            UnicodeDecodeError: a field with an encoding holds bytes that do not decode.
        """
        return self._codec.unpack(data)

    def _unpack_reference(self, data: Any) -> Any:
        if len(memoryview(data).cast("B")) != self.size:
            raise RecordError(f"a {self.name} record is {self.size} bytes, not "
                              f"{len(memoryview(data).cast('B'))}")
        return self._decode(self.struct.unpack(data))

    def unpack_from(self, buffer: Any, offset: int = 0) -> Any:
        """Read one record at ``offset`` of a buffer.

        Raises:
            ValueError: the record does not fit the buffer at ``offset``.
        """
        return self._codec.unpack_from(buffer, offset)

    # --- schema ----------------------------------------------------------------------------

    @classmethod
    def from_schema(cls, text: str) -> Record:
        """Rebuild a record type from its :attr:`schema` text.

        Raises:
            RecordError: the text is not a schema this module wrote.
        """
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\{([^{}]*)\}", text)
        if m is None:
            raise RecordError(f"{text!r} is not a record schema")
        fields: list[tuple[str, ...]] = []
        for part in m.group(2).split(";"):
            bits = part.split(":")
            if len(bits) not in (2, 3):
                raise RecordError(f"{text!r} is not a record schema (field {part!r})")
            fields.append(tuple(bits))
        return cls(m.group(1), fields)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.schema == self.schema

    def __hash__(self) -> int:
        return hash(self.schema)

    def __repr__(self) -> str:
        return f"<Record {self.schema} size={self.size}>"

    def array(self, buffer: Any, *, offset: int = 0, count: int | None = None) -> RecordArray:
        """A :class:`RecordArray` of this type over ``buffer`` (see there)."""
        return RecordArray(self, buffer, offset=offset, count=count)


class RecordArray:
    """A typed view of records over a mapping or buffer: the C ``people *p_map``.

    Args:
        record: the record type.
        buffer: a :class:`~shmipc.mapping.Mapping`, ``mmap.mmap``, ``bytearray``,
            ``memoryview`` or any buffer (read-only ones give a read-only array).
        offset: byte offset of the first record.
        count: records to view; by default as many whole records as the buffer holds past
            ``offset``. Never more than fit: the array never reads or writes past the buffer.

    Indexing (``a[i]``, ``a[-1]``) returns a value; slicing returns a list; ``a[i] = value``
    assigns a whole record, ``a[i, "age"] = 30`` one field (``a[i, "age"]`` reads it).

    Hazard: the array holds a view of the buffer, so a :class:`Mapping` refuses to close (and an
    ``mmap`` to resize or close) until :meth:`release` is called or the ``with`` block ends.
    """

    __slots__ = ("record", "_view", "_offset", "_len", "_size", "_mapping")

    def __init__(self, record: Record, buffer: Any, *, offset: int = 0,
                 count: int | None = None) -> None:
        self.record = record
        self._mapping = buffer if isinstance(buffer, Mapping) else None
        raw = buffer.buffer if isinstance(buffer, Mapping) else buffer
        view = memoryview(raw)
        if view.ndim != 1 or view.format not in ("B", "b", "c") or view.format != "B":
            view = view.cast("B")
        nbytes = len(view)
        if offset < 0 or offset > nbytes:
            view.release()
            raise RecordError(f"offset {offset} is outside a buffer of {nbytes} bytes")
        fit = (nbytes - offset) // record.size
        if count is None:
            count = fit
        elif count < 0 or count > fit:
            view.release()
            raise RecordError(
                f"{count} {record.name} records of {record.size} bytes from offset {offset} "
                f"do not fit a buffer of {nbytes} bytes (at most {fit})")
        self._view: memoryview | None = view
        self._offset = offset
        self._len = count
        self._size = record.size

    def __len__(self) -> int:
        return self._len

    @property
    def readonly(self) -> bool:
        """True when the buffer cannot be written."""
        return self._buf().readonly

    def _buf(self) -> memoryview:
        if self._view is None:
            raise ValueError("the record array was released")
        return self._view

    def _index(self, i: int) -> int:
        n = self._len
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record index out of range (the array holds {n})")
        return self._offset + i * self._size

    def __getitem__(self, key: Any) -> Any:
        view = self._buf()
        if isinstance(key, slice):
            rec = self.record
            return [rec.unpack_from(view, self._offset + i * self._size)
                    for i in range(*key.indices(self._len))]
        if isinstance(key, tuple):
            i, name = key
            st, off = self._field(name)
            v = st.unpack_from(view, self._index(i) + off)[0]
            _, f = self.record._by_name[name]
            if f.text:
                n = v.find(b"\0")
                v = v[:n] if n >= 0 else v
                return v.decode(f.encoding) if f.encoding else v
            return v
        return self.record.unpack_from(view, self._index(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        view = self._buf()
        rec = self.record
        if isinstance(key, slice):
            idx = range(*key.indices(self._len))
            values = list(value)
            if len(values) != len(idx):
                raise ValueError(f"cannot assign {len(values)} records to a slice of {len(idx)}")
            packed = [rec.pack(v) for v in values]  # check all before writing any
            for i, data in zip(idx, packed, strict=True):
                off = self._offset + i * self._size
                view[off:off + self._size] = data
            return
        if isinstance(key, tuple):
            i, name = key
            st, off = self._field(name)
            _, f = rec._by_name[name]
            if f.text:
                value = rec._check_text(f, value)
            try:
                st.pack_into(view, self._index(i) + off, value)
            except struct.error as exc:
                raise rec._field_error(f, value, exc) from None
            return
        rec.pack_into(view, self._index(key), value)

    def _field(self, name: str) -> tuple[struct.Struct, int]:
        try:
            return self.record._field_structs[name], self.record.offsets[name]
        except KeyError:
            raise KeyError(f"{self.record.name} has no field {name!r} (fields: "
                           f"{', '.join(self.record.fields)})") from None

    def __iter__(self) -> Iterator[Any]:
        unpack = self.record.unpack_from
        view, off, size = self._buf(), self._offset, self._size
        for i in range(self._len):
            yield unpack(view, off + i * size)

    def fill(self, values: Iterable[Any], start: int = 0) -> int:
        """Assign records from ``start`` on; return how many were written (stops at the end)."""
        n = 0
        for i, v in zip(range(start, self._len), values, strict=False):
            self[i] = v
            n += 1
        return n

    def release(self) -> None:
        """Drop the view of the buffer, so that the mapping can be closed. Idempotent."""
        if self._view is not None:
            self._view.release()
            self._view = None

    def __enter__(self) -> RecordArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._view is None else f"{self._len} records"
        return f"<RecordArray of {self.record.name} {state}>"
