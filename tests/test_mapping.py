"""mapping: the four kinds of the seed table, past-the-end mappings, msync, munmap."""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import fork_run, join
from shmipc import mapping
from shmipc.errors import MappingError


def child_writes(m: mapping.Mapping, value: bytes) -> None:
    pid = fork_run(lambda: m.buffer.__setitem__(slice(0, len(value)), value))
    assert join(pid) == 0


def test_shared_anonymous_is_seen_by_the_parent():
    with mapping.map_anonymous(4096) as m:
        assert m.kind is mapping.MappingKind.SHARED_ANONYMOUS
        child_writes(m, b"child")
        assert bytes(m.buffer[:5]) == b"child"


def test_private_anonymous_is_not():
    with mapping.map_anonymous(4096, shared=False) as m:
        child_writes(m, b"child")
        assert bytes(m.buffer[:5]) == bytes(5)


def test_shared_file_reaches_the_file(tmp_path):
    path = tmp_path / "f"
    mapping.create_file(path, 4096)
    with mapping.map_file(path) as m:
        child_writes(m, b"child")
        assert bytes(m.buffer[:5]) == b"child"
        m.flush()
    assert path.read_bytes()[:5] == b"child"


def test_private_file_stays_in_the_process(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"file!" + bytes(4091))
    with mapping.map_file(path, shared=False) as m:
        assert bytes(m.buffer[:5]) == b"file!"
        m.buffer[:5] = b"mine!"
        child_writes(m, b"child")
        assert bytes(m.buffer[:5]) == b"mine!"
    assert path.read_bytes()[:5] == b"file!"


def test_create_file_mode_and_size(tmp_path):
    path = tmp_path / "f"
    old = os.umask(0)
    try:
        mapping.create_file(path, 10000, mode=0o600)
    finally:
        os.umask(old)
    st = os.stat(path)
    assert st.st_size == 10000 and st.st_mode & 0o777 == 0o600
    assert st.st_blocks * 512 >= 10000  # reserved, not sparse
    with pytest.raises(FileExistsError):
        mapping.create_file(path, 10)


def test_mapping_past_the_end_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(40))
    with pytest.raises(MappingError, match="past_end=True"):
        mapping.map_file(path, 80)


def test_past_end_within_the_last_page(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(40))
    with mapping.map_file(path, 80, past_end=True) as m:
        assert m.persisted_size == 40
        m.buffer[:80] = bytes(range(80))
        m.flush()
    assert path.stat().st_size == 40  # a mapping never grows its file
    assert path.read_bytes() == bytes(range(40))


def test_past_end_beyond_the_last_page_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(40))
    with pytest.raises(MappingError, match="last page"):
        mapping.map_file(path, mapping.PAGE_SIZE + 1, past_end=True)


@pytest.mark.parametrize("past_end", [False, True])
def test_close_refuses_while_a_view_is_alive(tmp_path, past_end):
    path = tmp_path / "f"
    path.write_bytes(bytes(40))
    m = mapping.map_file(path, 80 if past_end else 40, past_end=past_end)
    view = m.buffer[:8]
    with pytest.raises(BufferError):
        m.close()
    assert bytes(m.buffer[:8]) == bytes(8)  # still mapped and usable
    view.release()
    m.close()
    assert m.closed
    m.close()  # idempotent
    with pytest.raises(ValueError):
        _ = m.buffer


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        mapping.map_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        mapping.map_file(tmp_path)


def test_posix_shared_memory_object():
    name = f"/shmipc-test-{uuid.uuid4().hex}"
    m = mapping.create_shared_memory(name, 4096)
    try:
        m.buffer[:3] = b"abc"
        with mapping.open_shared_memory(name) as other:
            assert bytes(other.buffer[:3]) == b"abc"
        with pytest.raises(FileExistsError):
            mapping.create_shared_memory(name, 4096)
    finally:
        m.close()
        mapping.unlink_shared_memory(name)
    with pytest.raises(FileNotFoundError):
        mapping.open_shared_memory(name)


def test_round_up_to_page():
    assert mapping.round_up_to_page(0) == 0
    assert mapping.round_up_to_page(1) == mapping.PAGE_SIZE
    assert mapping.round_up_to_page(mapping.PAGE_SIZE) == mapping.PAGE_SIZE
