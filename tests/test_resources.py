"""Resources a channel needs and must not leak: disk blocks, /dev/shm names, file descriptors,
and permissions that keep other users out.

Failures are injected in forked children (a tiny ``RLIMIT_FSIZE``, a semaphore name that exists
already, a path that appears while the channel is being created, another user), so that the
test process itself keeps its limits, its umask and its identity.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

import posix_ipc
import pytest

import shmipc
from conftest import fork_run, join
from shmipc import channel as channel_module
from shmipc import sync

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching to 'nobody' needs root")


def sem_path(name: str) -> str:
    return f"/dev/shm/sem.{name[1:]}"


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def no_names_of(channel_id: bytes) -> bool:
    return not any(os.path.exists(sem_path(sync.semaphore_name(channel_id, r)))
                   for r in sync.ROLES)


def fix_channel_id(channel_id: bytes) -> None:
    """In a child: make the next channel id ``channel_id`` (to look for its names after)."""
    channel_module.os.urandom = lambda n: channel_id


def in_child(fn) -> None:
    """Run ``fn`` in a forked child; fail with its exit code if it raised."""
    assert join(fork_run(fn), timeout=60) == 0


# --- space that is not there -------------------------------------------------------------


def test_a_full_filesystem_fails_at_create_not_later(tmp_path):
    """posix_fallocate reserves the blocks: the file size limit is hit in create(), cleanly."""
    path = tmp_path / f"big-{uuid.uuid4().hex}"
    channel_id = os.urandom(16)

    def child() -> None:
        fix_channel_id(channel_id)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, resource.RLIM_INFINITY))
        with pytest.raises(OSError) as info:
            shmipc.Channel.create(path, 4 << 20)
        assert info.value.errno == errno.EFBIG
        assert "cannot reserve" in str(info.value) and "capacity=" in str(info.value)
        shmipc.Channel.create(path, 64 << 10).close()  # one that fits works

    in_child(child)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no half-made file left aside
    ch = shmipc.Channel.open(path)
    assert ch.info.channel_id == channel_id
    ch.unlink()
    ch.close()
    assert no_names_of(channel_id)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs, mounted for the test (root only; skipped where mounting is refused)."""
    where = tmp_path / "tiny"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1M,mode=0700", "tmpfs", str(where)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_tmpfs_is_enospc_at_create_not_sigbus_later(tiny_tmpfs):
    channel_id = os.urandom(16)

    def child() -> None:
        fix_channel_id(channel_id)
        with pytest.raises(OSError) as info:
            shmipc.Channel.create(tiny_tmpfs / "big", 4 << 20)
        assert info.value.errno == errno.ENOSPC and "cannot reserve" in str(info.value)
        # Half the space taken by one channel: a second one does not fit either, at create.
        with shmipc.Channel.create(tiny_tmpfs / "half", 512 << 10) as ch:
            with pytest.raises(OSError) as info:
                shmipc.Channel.create(tiny_tmpfs / "second", 512 << 10)
            assert info.value.errno == errno.ENOSPC
            for i in range(2000):  # every page of the first one is really there
                ch.send_bytes(bytes([i & 0xFF]) * 1000, timeout=10)
                assert ch.recv_bytes(timeout=10) == bytes([i & 0xFF]) * 1000
            ch.unlink()

    in_child(child)
    assert os.listdir(tiny_tmpfs) == [] and no_names_of(channel_id)


def test_created_file_has_its_blocks_reserved(channel_path):
    with shmipc.Channel.create(channel_path, 1 << 20) as ch:
        st = os.stat(channel_path)
        assert st.st_blocks * 512 >= st.st_size == ch.info.file_size  # not a sparse file


def test_truncated_live_channel_is_detected_by_statistics_and_open(channel_path):
    with shmipc.Channel.create(channel_path, 1 << 16) as ch:
        ch.send("x")
        os.truncate(channel_path, 4096)  # another program cuts the file under us
        with pytest.raises(shmipc.CorruptChannel, match="truncated"):
            ch.statistics()
        with pytest.raises(shmipc.CorruptChannel, match="truncated or extended"):
            shmipc.Channel.open(channel_path)


def test_touching_a_truncated_mapping_is_sigbus_as_documented(channel_path):
    """The hazard docs/reliability.md states: no library can catch it, so it is checked here."""
    with shmipc.Channel.create(channel_path, 1 << 16) as ch:
        ch.send_bytes(b"y" * 100)
        os.truncate(channel_path, 4096)

        def child() -> None:
            faulthandler.disable()  # the fault is expected: no traceback dump
            ch.recv_bytes(timeout=1)

        assert join(fork_run(child), timeout=60) == -signal.SIGBUS


# --- no leaks ----------------------------------------------------------------------------


def test_an_existing_semaphore_name_fails_create_and_leaves_nothing(tmp_path):
    """A channel id whose semaphore name is taken (injected): create fails, removes its own
    names and files, and leaves the foreign semaphore alone."""
    channel_id = os.urandom(16)
    foreign = sync.semaphore_name(channel_id, "i")
    sem = posix_ipc.Semaphore(foreign, posix_ipc.O_CREX, mode=0o600, initial_value=5)
    path = tmp_path / "ch"
    try:
        def child() -> None:
            fix_channel_id(channel_id)  # the only injection
            with pytest.raises(FileExistsError, match="already exists"):
                shmipc.Channel.create(path, 1 << 14)

        in_child(child)
        assert os.listdir(tmp_path) == []
        for role in "pcs":
            assert not os.path.exists(sem_path(sync.semaphore_name(channel_id, role)))
        assert os.path.exists(sem_path(foreign)) and sem.value == 5
    finally:
        sem.close()
        sync.unlink_semaphore(foreign)


def test_a_path_that_appears_during_create_leaves_nothing(tmp_path):
    path = tmp_path / "ch"
    made: list[bytes] = []

    def child() -> None:
        real_link = os.link

        def racing_link(src, dst):  # another process wins the race for the path
            made.append(Path(src).read_bytes()[32:48])
            Path(dst).write_bytes(b"theirs")
            return real_link(src, dst)

        channel_module.os.link = racing_link
        with pytest.raises(FileExistsError, match="meanwhile"):
            shmipc.Channel.create(path, 1 << 14)
        for role in sync.ROLES:
            assert not os.path.exists(sem_path(sync.semaphore_name(made[0], role)))

    in_child(child)
    assert os.listdir(tmp_path) == ["ch"] and path.read_bytes() == b"theirs"


def test_create_in_a_missing_directory_makes_nothing(tmp_path):
    channel_id = os.urandom(16)

    def child() -> None:
        fix_channel_id(channel_id)
        with pytest.raises(FileNotFoundError):
            shmipc.Channel.create(tmp_path / "no" / "such" / "ch", 1 << 14)

    in_child(child)
    assert no_names_of(channel_id) and os.listdir(tmp_path) == []


def test_failed_opens_close_their_descriptors(tmp_path, channel_path):
    shmipc.Channel.create(channel_path, 1 << 14).close()
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a channel at all" * 100)
    before = open_fds()
    for target in (bad, tmp_path, tmp_path / "missing"):
        with pytest.raises((shmipc.ShmipcError, OSError)):
            shmipc.Channel.open(target)
    with open(channel_path, "r+b") as f:
        f.seek(8)
        f.write(b"\x09\x00\x00\x00")
    with pytest.raises(shmipc.IncompatibleChannel):
        shmipc.Channel.open(channel_path)
    assert open_fds() == before


# --- permissions -------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077])
def test_files_and_semaphores_are_0600_whatever_the_umask(tmp_path, umask):
    path = tmp_path / f"ch-{umask:o}"

    def child() -> None:
        os.umask(umask)
        with shmipc.Channel.create(path, 1 << 14) as ch:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            for name in ch.semaphore_names.values():
                assert stat.S_IMODE(os.stat(sem_path(name)).st_mode) == 0o600
            ch.unlink()

    in_child(child)


def test_channel_ids_are_random_128_bit(tmp_path):
    ids = set()
    for i in range(20):
        with shmipc.Channel.create(tmp_path / f"ch{i}", 1 << 12) as ch:
            assert len(ch.info.channel_id) == 16
            ids.add(ch.info.channel_id)
            ch.unlink()
    assert len(ids) == 20
    assert len({b for cid in ids for b in cid}) > 16  # not a counter or a constant


@pytest.fixture
def shared_dir():
    """A directory other users may traverse (pytest's tmp_path is 0700 and root's)."""
    d = tempfile.mkdtemp(prefix="shmipc-perm-")
    os.chmod(d, 0o711)
    yield Path(d)
    for entry in Path(d).iterdir():
        try:
            with open(entry, "rb") as f:
                cid = f.read(48)[32:48]
            for role in sync.ROLES:
                sync.unlink_semaphore(sync.semaphore_name(cid, role))
        except OSError:
            pass
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(fn) -> int:
    nobody = pwd.getpwnam("nobody")

    def child() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
        fn()

    return join(fork_run(child), timeout=60)


@ROOT_ONLY
def test_another_user_gets_permission_error_not_a_hang(shared_dir):
    path = shared_dir / "ch"
    with shmipc.Channel.create(path, 1 << 14) as ch:
        ch.send("secret")

        def other_user() -> None:
            before = open_fds()
            with pytest.raises(PermissionError):
                shmipc.Channel.open(path)
            for name in ch.semaphore_names.values():
                with pytest.raises(posix_ipc.PermissionsError):
                    posix_ipc.Semaphore(name)
            assert open_fds() == before

        assert as_nobody(other_user) == 0
        assert ch.recv(timeout=1) == "secret"  # nothing was disturbed
        ch.unlink()


@ROOT_ONLY
def test_a_readable_file_with_private_semaphores_is_refused_whole(shared_dir):
    """The file made world-writable by hand, the semaphores still 0600: PermissionError, and
    no half-open channel (descriptors, mappings) left in the other user's process."""
    path = shared_dir / "ch"
    with shmipc.Channel.create(path, 1 << 14) as ch:
        os.chmod(path, 0o666)

        def other_user() -> None:
            before = open_fds()
            with pytest.raises(PermissionError, match="semaphore"):
                shmipc.Channel.open(path)
            assert open_fds() == before

        assert as_nobody(other_user) == 0
        ch.unlink()


@ROOT_ONLY
def test_another_user_cannot_create_in_a_directory_it_may_not_write(shared_dir):
    channel_id = os.urandom(16)

    def other_user() -> None:
        fix_channel_id(channel_id)
        with pytest.raises(PermissionError):
            shmipc.Channel.create(shared_dir / "ch", 1 << 14)

    assert as_nobody(other_user) == 0
    assert os.listdir(shared_dir) == [] and no_names_of(channel_id)
