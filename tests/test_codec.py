"""Codec: settings, ext types (records, datetime, user types), default hook, clear errors."""

from __future__ import annotations

import datetime as dt
import decimal

import msgpack
import pytest

import shmipc
from conftest import fork_run, join
from shmipc import Codec, DecodeError, EncodeError, Record

people = Record("people", [("name", "4s"), ("age", "i")])


def test_plain_objects_round_trip_with_the_settings():
    c = Codec()
    obj = {"s": "text", "b": b"\x00bin", "l": [1, 2.5, None, True], "t": (1, 2), "n": -(2**63)}
    out = c.decode(c.encode(obj))
    assert out == {"s": "text", "b": b"\x00bin", "l": [1, 2.5, None, True], "t": [1, 2],
                   "n": -(2**63)}
    assert isinstance(out["b"], bytes) and isinstance(out["s"], str)


def test_records_travel_as_an_ext_type_and_come_back_as_records():
    c = Codec(records=[people])
    data = c.encode({"who": people(b"b", 20), "all": [people(b"c", 21)]})
    assert msgpack.unpackb(data, raw=False)["who"].code == shmipc.RECORD_EXT_CODE
    out = c.decode(data)
    assert out == {"who": people(b"b", 20), "all": [people(b"c", 21)]}
    assert type(out["who"]) is people.type


def test_a_record_type_the_decoder_does_not_know_is_a_clear_error():
    data = Codec().encode(people(b"b", 20))  # encoding needs no registration
    with pytest.raises(DecodeError, match="records=") as info:
        Codec().decode(data)
    assert info.value.payload == data
    other = Record("people", [("name", "8s"), ("age", "i")])
    with pytest.raises(DecodeError, match="schema"):
        Codec(records=[other]).decode(data)
    with pytest.raises(ValueError):
        Codec(records=[people, other])


def test_datetime_as_msgpack_timestamp():
    c = Codec()
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    data = c.encode(when)
    assert msgpack.unpackb(data, timestamp=0).__class__ is msgpack.Timestamp
    out = c.decode(data)
    assert out == when and out.tzinfo == dt.UTC
    with pytest.raises(EncodeError, match="naive"):
        c.encode(dt.datetime(2024, 1, 1))


def test_user_ext_types_and_default_hook():
    c = Codec(default=lambda o: sorted(o) if isinstance(o, set) else str(o))
    c.register_ext(5, decimal.Decimal, lambda d: str(d).encode(),
                   lambda b: decimal.Decimal(b.decode()))
    assert c.decode(c.encode([decimal.Decimal("1.25"), {3, 1}])) == [decimal.Decimal("1.25"),
                                                                     [1, 3]]
    with pytest.raises(ValueError):
        c.register_ext(shmipc.RECORD_EXT_CODE, int, bytes, int)
    with pytest.raises(ValueError):
        c.register_ext(200, int, bytes, int)
    with pytest.raises(ValueError):
        c.register_ext(5, complex, bytes, complex)


def test_unknown_ext_codes_go_to_ext_hook_or_come_back_as_ext_type():
    data = msgpack.packb(msgpack.ExtType(9, b"xy"))
    assert Codec().decode(data) == msgpack.ExtType(9, b"xy")
    assert Codec(ext_hook=lambda code, b: (code, b)).decode(data) == (9, b"xy")


def test_a_failing_ext_decoder_is_a_decode_error():
    c = Codec()
    c.register_ext(6, complex, lambda z: b"?", lambda b: complex(b.decode()))
    with pytest.raises(DecodeError, match="code 6"):
        c.decode(c.encode(1j))


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x92\x01", b"\x81\x92\x01\x02\x03",
                                     b"\xd9\x05ab", b"\x91\xc1"])
def test_malformed_payloads_raise_decode_error(garbage):
    with pytest.raises(DecodeError) as info:
        Codec().decode(garbage)
    assert info.value.payload == garbage
    assert isinstance(info.value, ValueError)


def test_unencodable_objects_leave_the_codec_clean():
    c = Codec()
    with pytest.raises(EncodeError) as info:
        c.encode({"ok": 1, "bad": object()})
    assert isinstance(info.value, TypeError)
    assert c.decode(c.encode({"next": 2})) == {"next": 2}
    loop: list = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        c.encode(loop)
    assert c.encode(1) == b"\x01"


def test_max_size():
    c = Codec(max_size=8)
    with pytest.raises(DecodeError, match="max_size"):
        c.decode(c.encode("x" * 20))
    assert c.decode(c.encode("short")) == "short"


def test_records_through_a_msgpack_channel_across_fork(make_channel):
    ch = make_channel(codec=Codec(records=[people]))

    def child():
        for i in range(200):
            ch.send({"seq": i, "who": people(b"f", i)})
        ch.close_send()

    pid = fork_run(child)
    got = list(ch)
    assert join(pid) == 0
    assert got == [{"seq": i, "who": people(b"f", i)} for i in range(200)]


def test_nothing_is_sent_when_encoding_fails(make_channel):
    ch = make_channel()
    with pytest.raises(EncodeError):
        ch.send({"bad": object()})
    assert ch.statistics().messages == 0
