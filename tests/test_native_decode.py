"""The binding's msgpack code (shmipc/_msgpack.c) against msgpack-python, its reference.

Whatever the binding's decoder takes, it must decode exactly as ``msgpack.unpackb(raw=False,
strict_map_key=True, use_list=True)`` does (the same values of the same types); whatever its
packer takes, it must pack to the very bytes ``msgpack.packb(use_bin_type=True)`` writes.
What either gives up on (ext types, subclasses, invalid or unusual input) is left to
msgpack-python, which decodes, packs or raises as it always did. Random objects, random bytes
and mutated payloads, plus the channel paths that use them (send, send_many, recv, recv_many,
ext types and errors through a channel).
"""

from __future__ import annotations

import datetime as dt
import math
import random

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import shmipc
from shmipc import _core

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


def reference(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def same(a, b) -> bool:
    """Equal values of exactly the same types, all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) and type(k) is type(next(
            kk for kk in b if kk == k)) for k in a)
    return a == b


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
           | st.text(max_size=40) | st.binary(max_size=40))
keys = st.text(max_size=30) | st.binary(max_size=8)
objects = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                       | st.dictionaries(keys, inner, max_size=6), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(objects, st.booleans())
def test_every_object_msgpack_writes_is_decoded_as_msgpack_decodes_it(obj, single_float):
    try:
        data = msgpack.packb(obj, use_bin_type=True, use_single_float=single_float)
    except OverflowError:  # a double beyond float32's range
        assume(False)
    taken, value = _core._native_unpackb(data)
    assert taken, data
    assert same(value, reference(data))


@settings(max_examples=400, deadline=None)
@given(objects)
def test_every_plain_object_is_packed_to_the_bytes_msgpack_writes(obj):
    taken, data = _core._native_packb(obj)
    assert taken
    assert data == msgpack.packb(obj, use_bin_type=True)


class Tagged(dict):
    """A dict subclass: left to msgpack (which packs it as a map)."""


@pytest.mark.parametrize("obj", [2**64, -(2**63) - 1, "\ud800", bytearray(b"x"), memoryview(b"x"),
                                 1 + 2j, Tagged(a=1), [Tagged()], {"k": {1, 2}}, [object()],
                                 dt.datetime(2026, 1, 1, tzinfo=dt.UTC)])
def test_what_the_native_packer_leaves_to_msgpack(obj):
    assert _core._native_packb(obj) == (False, None)


def test_nesting_deeper_than_the_packer_goes_is_left_to_msgpack():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    assert _core._native_packb(deep) == (False, None)
    assert msgpack.unpackb(msgpack.packb(deep)) == deep  # the reference packs it


@settings(max_examples=400, deadline=None)
@given(objects, st.integers(0, 2**32), st.data())
def test_damaged_payloads_are_decoded_as_msgpack_does_or_left_to_it(obj, seed, data):
    payload = bytearray(msgpack.packb(obj, use_bin_type=True))
    rng = random.Random(seed)
    for _ in range(rng.randint(1, 4)):  # flip bytes, cut, or append
        kind = rng.randrange(3)
        if kind == 0 and payload:
            payload[rng.randrange(len(payload))] = rng.randrange(256)
        elif kind == 1 and payload:
            del payload[rng.randrange(len(payload)):]
        else:
            payload += bytes([rng.randrange(256)])
    payload = bytes(payload)
    taken, value = _core._native_unpackb(payload)
    try:
        expected = reference(payload)
    except Exception:
        assert not taken, (payload, value)  # msgpack raises: the native decoder left it
        return
    if taken:
        assert same(value, expected), payload


def test_random_bytes_never_crash_and_never_disagree():
    rng = random.Random(1234)
    for _ in range(20000):
        payload = rng.randbytes(rng.randrange(1, 24))
        taken, value = _core._native_unpackb(payload)
        if taken:
            assert same(value, reference(payload)), payload


@pytest.mark.parametrize("payload", [
    msgpack.packb(msgpack.ExtType(5, b"x")),
    msgpack.packb(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), datetime=True),
    msgpack.packb({1: 2}),                     # strict_map_key: msgpack raises
    b"\x81\x92\x01\x02\x03",               # a list as a key
    b"\xa3ab",                                 # truncated str
    b"\xa2\xff\xfe",                           # invalid UTF-8
    b"\x01\x02",                               # trailing bytes
    b"\xc1",                                   # never used
    b"\xdd\xff\xff\xff\xff",                   # an array of 4 G elements in 5 bytes
    b"\x91" * 100 + b"\x01",                   # nested deeper than the decoder goes
])
def test_what_the_native_decoder_leaves_to_msgpack(payload):
    assert _core._native_unpackb(payload) == (False, None)


def test_map_keys_come_back_interned_and_equal():
    a = _core._native_unpackb(msgpack.packb({"name": "b", "age": 20}))[1]
    b = _core._native_unpackb(msgpack.packb({"name": "c", "age": 21}))[1]
    ka, kb = list(a), list(b)
    assert ka == kb == ["name", "age"] and all(x is y for x, y in zip(ka, kb, strict=True))
    long_key = "k" * 100  # longer than the key cache holds: decoded each time, still right
    assert _core._native_unpackb(msgpack.packb({long_key: 1}))[1] == {long_key: 1}


def test_channel_paths_decode_natively_and_fall_back_for_the_rest(tmp_path):
    when = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    people = shmipc.Record("people", [("name", "4s"), ("age", "i")])
    codec = shmipc.Codec(records=[people])
    with shmipc.Channel.create(tmp_path / "ch", 1 << 16, codec=codec) as ch:
        try:
            objs = [{"name": "b", "age": 20}, [1, 2.5, None, True], when, people(b"b", 3),
                    "x" * 5000, {b"k": b"v"}]
            for obj in objs:
                ch.send(obj)
            assert [ch.recv(timeout=1) for _ in objs] == objs
            ch.send_many(objs)
            assert ch.recv_many(len(objs), timeout=1) == objs
            plain = [{"n": i, "s": "x" * i} for i in range(300)]  # outgrows the stack buffer
            ch.send_many(plain)
            assert ch.recv_many(1000, timeout=1) == plain
            ch.send(Tagged(a=1))  # a subclass: msgpack packs it, as a map
            assert ch.recv(timeout=1) == {"a": 1}
            with pytest.raises(shmipc.EncodeError):
                ch.send({"k": {1, 2}})  # msgpack's error, nothing sent
            with pytest.raises(shmipc.EncodeError):
                ch.send_many([{"ok": 1}, {"k": {1, 2}}])
            assert ch.statistics().messages == 0
            ch.send_bytes(b"\xa2\xff\xfe")  # invalid UTF-8: the codec's DecodeError
            ch.send({"after": 1})
            with pytest.raises(shmipc.DecodeError) as info:
                ch.recv_many(10, timeout=1)
            got = info.value.received
            assert isinstance(got[0], shmipc.DecodeError) and got[1] == {"after": 1}
            ch.send_bytes(b"\x81\x01\x02")  # an int key: strict_map_key
            with pytest.raises(shmipc.DecodeError):
                ch.recv(timeout=1)
        finally:
            ch.unlink()
