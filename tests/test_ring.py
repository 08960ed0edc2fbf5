"""ring: frames, padding and wrap, checked against a deque model (hypothesis)."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmipc import ring
from shmipc.errors import CorruptChannel

CAPACITY = 4096


class Model:
    """The ring under test plus a deque of what it must hold."""

    def __init__(self, start: int) -> None:
        self.data = memoryview(bytearray(CAPACITY))
        self.words = self.data.cast("Q")
        self.w = self.r = start & ring.U64_MASK
        self.expected: collections.deque[bytes] = collections.deque()

    def free(self) -> int:
        return CAPACITY - ring.used_bytes(self.w, self.r)

    def send(self, payload: bytes) -> bool:
        if ring.room_needed(self.w, CAPACITY, len(payload)) > self.free():
            return False
        self.w = ring.write_frame(self.data, self.words, CAPACITY, self.w, payload, len(payload))
        self.expected.append(payload)
        return True

    def recv(self) -> bytes | None:
        if self.w == self.r:
            assert not self.expected
            return None
        start, length, self.r = ring.read_frame(self.words, CAPACITY, self.r, self.w)
        got = bytes(self.data[start:start + length])
        assert got == self.expected.popleft()
        return got


starts = st.sampled_from([0, 8, 4000, 2**32 - 16, 2**32 + 8, 2**64 - 4096, 2**64 - 8])
ops = st.lists(st.one_of(st.integers(0, ring.max_message_size(CAPACITY)), st.none()),
               max_size=200)


@settings(max_examples=300, deadline=None)
@given(start=starts, ops=ops, seed=st.integers(0, 255))
def test_ring_matches_a_deque(start, ops, seed):
    model = Model(start)
    for i, op in enumerate(ops):
        if op is None:
            model.recv()
        else:
            payload = bytes([(seed + i) & 0xFF]) * op
            if not model.send(payload):
                model.recv()  # full: make room, as a blocked sender would wait for
        assert 0 <= ring.used_bytes(model.w, model.r) <= CAPACITY
        assert model.w % 8 == model.r % 8 == 0 or start % 8
    while model.recv() is not None:
        pass
    assert ring.used_bytes(model.w, model.r) == 0


def test_positions_wrap_at_2_to_the_64():
    model = Model(2**64 - 16)
    assert model.send(b"abc")
    assert model.w == 0  # 16 bytes: header + padded payload
    assert model.send(b"defgh")
    assert model.recv() == b"abc" and model.recv() == b"defgh"


def test_max_message_always_fits_an_empty_ring_at_any_offset():
    biggest = ring.max_message_size(CAPACITY)
    for offset in range(0, CAPACITY, 8):
        assert ring.room_needed(offset, CAPACITY, biggest) <= CAPACITY


def test_frame_claiming_more_than_committed_is_corrupt():
    model = Model(0)
    model.send(b"x" * 100)
    model.words[0] = 10_000 | (ring.TAG_MESSAGE << 32)
    with pytest.raises(CorruptChannel):
        ring.read_frame(model.words, CAPACITY, model.r, model.w)


def test_unknown_tag_is_corrupt():
    model = Model(0)
    model.send(b"x")
    model.words[0] = 1 | (77 << 32)
    with pytest.raises(CorruptChannel):
        ring.read_frame(model.words, CAPACITY, model.r, model.w)


def test_impossible_positions_are_corrupt():
    model = Model(0)
    with pytest.raises(CorruptChannel):
        ring.read_frame(model.words, CAPACITY, 0, CAPACITY * 2)
