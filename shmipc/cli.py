"""``python -m shmipc`` (or ``shmipc``): create, inspect, send, receive, unlink and clean up.

Subcommands::

    shmipc create PATH [--capacity SIZE] [--mode 0600] [--record SCHEMA]
    shmipc inspect PATH [--json]
    shmipc send PATH [--bytes] [--close] [--timeout S]      < JSON lines (or raw lines)
    shmipc recv PATH [--count N] [--timeout S] [--follow] [--bytes]
    shmipc unlink PATH
    shmipc cleanup [--dry-run] [--id HEX ...] [--ignore-pid PID ...]   (semaphores, queue files)
    shmipc bridge out|in PATH SUBJECT [--server URL ...] [--stats] ...   (pip install shmipc[nats])

Exit status: 0 success, 1 a runtime failure (one line on stderr that names the path and the
problem; no traceback), 2 a usage error (argparse's message), 130 interrupted (Ctrl-C).

Messages on stdin and stdout are JSON lines. msgpack values that JSON lacks are written as
one-key objects (see :data:`JSON_FORMS`), and read back the same way by ``send``, so
``shmipc recv A --follow | shmipc send B`` copies a channel faithfully.

``inspect`` never changes a channel: it reads the header with ``pread`` and a read-only
mapping, and opens existing semaphores only to read their values (missing ones are reported,
never rebuilt). ``cleanup`` removes a semaphore name only when no process maps it (checked in
``/proc/*/maps``; see :func:`find_stale_semaphores`), and a queue file (``shmipc.Queue``) only
when no process holds its lock (see :func:`cleanup_queues`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import mmap
import os
import re
import stat
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgpack
import posix_ipc

import shmipc

from . import _core, layout, sync
from .channel import DEFAULT_CAPACITY, Channel
from .codec import Codec
from .errors import (
    ChannelClosed,
    DecodeError,
    Empty,
    EndOfChannel,
    Full,
    ShmipcError,
)
from .layout import HEADER_SIZE, ChannelKind
from .queue import is_held, queue_channel_id, queue_files, unlink_if_unused

__all__ = [
    "JSON_FORMS",
    "CliError",
    "ChannelState",
    "HolderState",
    "SemaphoreState",
    "StaleReport",
    "build_parser",
    "find_stale_semaphores",
    "format_state",
    "from_jsonable",
    "main",
    "parse_mode",
    "parse_size",
    "read_state",
    "to_jsonable",
]

PROG = "shmipc"

JSON_FORMS = """\
JSON forms of values JSON lacks (recv writes them, send reads them back):
  {"$bytes": "<base64>"}            msgpack bin (Python bytes) inside a message
  {"$raw": "<base64>"}              a whole message that is not msgpack (sent as raw bytes)
  {"$ext": CODE, "data": "<base64>"} a msgpack ext type
  {"$timestamp": [SECONDS, NANOS]}  a msgpack timestamp
  {"$map": [[KEY, VALUE], ...]}     a map with keys that are not all strings
A JSON object with exactly one of these keys (and "data" for $ext) is read as that value."""

ROLE_NAMES = {"i": "items", "s": "space", "p": "producer lock", "c": "consumer lock"}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SEM_PATH = "/dev/shm/sem."
_NAME_RE = re.compile(r"^/" + re.escape(sync.NAME_PREFIX) + r"([0-9a-f]{32})-(.+)$")


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit status 1."""


# --- argument types ---------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Parse a byte size: ``65536``, ``64K``, ``16M``, ``1G`` (binary units; ``KiB``/``KB`` too).

    Raises:
        argparse.ArgumentTypeError: not a size, zero, or above the largest channel capacity.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: give bytes, or a number with K, M or G (e.g. 64K, 16M)")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: it must be positive")
    if size > layout.MAX_CAPACITY:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: the largest capacity is {layout.MAX_CAPACITY} bytes")
    return size


def parse_mode(text: str) -> int:
    """Parse an octal permission mode such as ``0600``, ``640`` or ``0o660``.

    Raises:
        argparse.ArgumentTypeError: not octal, or bits outside 0o777.
    """
    digits = text[2:] if text.lower().startswith("0o") else text
    try:
        mode = int(digits, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r}: give octal digits, e.g. 0600")\
            from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"invalid mode {text!r}: permission bits only (0..0777)")
    return mode


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: it must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: give seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: finite seconds >= 0")
    return value


def _channel_id(text: str) -> str:
    value = text.lower()
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        raise argparse.ArgumentTypeError(
            f"invalid channel id {text!r}: 32 hex digits, as `shmipc inspect` shows")
    return value


# --- errors -----------------------------------------------------------------------------------


def _describe(path: str, exc: BaseException) -> str:
    """One line naming ``path`` and what went wrong, for an expected exception."""
    if isinstance(exc, FileNotFoundError) and not isinstance(exc, ShmipcError):
        text = "no such file"
    elif isinstance(exc, PermissionError) and exc.errno is not None:
        text = "permission denied"
    elif isinstance(exc, OSError) and exc.errno is not None:
        text = exc.strerror or str(exc)
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    if path in text:
        return text
    return f"{path}: {text}"


_EXPECTED = (ShmipcError, OSError, posix_ipc.Error)


# --- state of a channel, read without changing it -------------------------------------------


@dataclass(frozen=True)
class SemaphoreState:
    """One semaphore of a channel as ``inspect`` found it."""

    role: str
    name: str
    exists: bool
    value: int | None
    problem: str = ""


@dataclass(frozen=True)
class HolderState:
    """A lock word of the header, decoded: who holds the lock, judged as a waiter would."""

    lock: str
    raw: int
    pid: int
    verdict: str  # "free", "alive", "dead" or "unknown" (another pid namespace, hidepid)
    state: str  # the holder's /proc state letter ("R", "S", "T" stopped, ...) or "?"

    def describe(self) -> str:
        """A short sentence for the text output of ``inspect``."""
        if self.raw == 0:
            return "free"
        if self.verdict == "alive":
            how = "stopped: its side waits until it continues" if self.state in "tT" \
                else "running"
            return f"held by pid {self.pid} ({how})"
        if self.verdict == "unknown":
            return (f"held by pid {self.pid} (in another pid namespace or hidden: it is "
                    "never taken over from here)")
        side = self.lock.split()[0]
        return (f"held by pid {self.pid}, which has exited: the next {side} that waits "
                "takes the lock over")


@dataclass(frozen=True)
class ChannelState:
    """Everything ``inspect`` shows: the fixed header, a snapshot of the live fields, the file
    and the semaphores. Read by :func:`read_state`."""

    path: str
    info: layout.HeaderInfo
    file_size: int
    file_mode: int
    file_uid: int
    write_position: int
    read_position: int
    sent: int
    received: int
    closed: bool
    receivers_waiting: int
    senders_waiting: int
    semaphore_generation: int
    recoveries: int
    holders: tuple[HolderState, ...]
    semaphores: tuple[SemaphoreState, ...] = field(default=())
    applied_sequence: int = 0  # send_sequenced's (an in-bridge's JetStream stream sequence)

    @property
    def used(self) -> int:
        """Bytes taken by unread frames, headers and padding included (at most the capacity)."""
        return min((self.write_position - self.read_position) & layout.U64_MASK,
                   self.info.capacity)

    @property
    def messages(self) -> int:
        """Messages sent and not yet received."""
        return (self.sent - self.received) & layout.U64_MASK

    def to_json(self) -> dict[str, Any]:
        """The state as one JSON-ready dict (the ``inspect --json`` output)."""
        info = self.info
        out: dict[str, Any] = {
            "path": self.path,
            "format_version": info.format_version,
            "kind": info.kind.name.lower(),
            "kind_code": int(info.kind),
            "record_size": info.record_size,
            "schema": info.schema,
            "channel_id": info.channel_id.hex(),
            "creator_pid": info.creator_pid,
            "created_ns": info.created_ns,
            "header_size": info.header_size,
            "capacity": info.capacity,
            "max_message_size": (layout.max_message_size(info.capacity)
                                 if info.kind is ChannelKind.FRAMES else info.record_size),
            "used": self.used,
            "used_percent": round(100.0 * self.used / info.capacity, 2),
            "messages": self.messages,
            "sent": self.sent,
            "received": self.received,
            "closed": self.closed,
            "write_position": self.write_position,
            "read_position": self.read_position,
            "receivers_waiting": self.receivers_waiting,
            "senders_waiting": self.senders_waiting,
            "semaphore_generation": self.semaphore_generation,
            "recoveries": self.recoveries,
            "applied_sequence": self.applied_sequence,
            "file_size": self.file_size,
            "file_mode": f"{self.file_mode:04o}",
            "file_uid": self.file_uid,
            "semaphores": {
                s.role: {"name": s.name, "exists": s.exists, "value": s.value,
                         **({"problem": s.problem} if s.problem else {})}
                for s in self.semaphores
            },
            "holders": {
                h.lock.split()[0]: {"raw": h.raw, "pid": h.pid, "held": bool(h.raw),
                                    "verdict": h.verdict, "state": h.state}
                for h in self.holders
            },
        }
        return out


def _open_channel_file(path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only (never blocking on a FIFO) and check it is a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except IsADirectoryError:
        raise shmipc.NotAChannel(f"{path}: is a directory, not a shmipc channel file",
                                 path=path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise shmipc.NotAChannel(f"{path}: is {what}, not a shmipc channel file", path=path)
    return fd, st


def _semaphore_names(info: layout.HeaderInfo, generation: int) -> dict[str, str]:
    """The channel's semaphores by role: the four of the header's generation, plus any other
    name with the channel's prefix that exists now (left by an older generation)."""
    names = sync.semaphore_names(info.channel_id, generation)
    prefix = f"/{sync.NAME_PREFIX}{info.channel_id.hex()}-"
    for name in sync.list_semaphores():
        if name.startswith(prefix) and name not in names.values():
            names[name[len(prefix):]] = name
    return names


def _probe_semaphore(role: str, name: str) -> SemaphoreState:
    # sem_open maps the file without checking its size: a file shorter than a sem_t (truncated
    # by hand, or not a semaphore) would fault with SIGBUS when read. Look before opening.
    try:
        st = os.stat(_SEM_PATH + name[1:])
    except FileNotFoundError:
        return SemaphoreState(role, name, False, None)
    except OSError:
        pass  # not kept in /dev/shm on this system: sem_open decides
    else:
        if not stat.S_ISREG(st.st_mode) or st.st_size < sync.SEM_T_SIZE:
            return SemaphoreState(role, name, True, None,
                                  f"not a semaphore ({st.st_size} bytes); remove it with "
                                  "`shmipc cleanup`")
    # Opening without O_CREAT never creates: a missing name stays missing.
    try:
        sem = posix_ipc.Semaphore(name)
    except posix_ipc.ExistentialError:
        return SemaphoreState(role, name, False, None)
    except (posix_ipc.PermissionsError, PermissionError):
        return SemaphoreState(role, name, True, None, "no permission to open it")
    try:
        value = sem.value
    finally:
        sem.close()
    return SemaphoreState(role, name, True, value)


def read_state(path: str, *, semaphores: bool = True) -> ChannelState:
    """Read a channel's state without changing anything: header, live fields, semaphores.

    The fixed header is read with ``pread`` and validated by :func:`shmipc.layout.parse`
    (including the file size against header + capacity); the live fields are loaded from a
    read-only mapping of the header page (aligned 8-byte loads, so no value is torn). The
    read position is read before the write position and re-read after it, so the snapshot is
    consistent while consumers run.

    Raises:
        FileNotFoundError, PermissionError: the file cannot be opened.
        NotAChannel, IncompatibleChannel, CorruptChannel: as :meth:`Channel.open` would.
    """
    fd, st = _open_channel_file(path)
    try:
        header = os.pread(fd, HEADER_SIZE, 0)
        info = layout.parse(header, path=path, file_size=st.st_size)
        with mmap.mmap(fd, HEADER_SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as mm:
            for _ in range(1000):
                # One snapshot of the live fields; taken again while the read position moved
                # during the copy, so that the pair of positions is one instant's.
                live = layout.LIVE.unpack_from(mm, layout.WRITE_POSITION)
                if layout.LIVE.unpack_from(mm, layout.WRITE_POSITION)[3] == live[3]:
                    break
            header = mm[:HEADER_SIZE]
            applied = _core.applied_sequence(mm)  # without a lock, in the core's load order
    finally:
        os.close(fd)
    (w, sent, producer_lock, r, received, consumer_lock, closed, generation,
     recoveries) = live
    if w & 7 or r & 7 or (w - r) & layout.U64_MASK > info.capacity:
        raise shmipc.CorruptChannel(
            f"{path}: positions are impossible (write {w}, read {r}, capacity "
            f"{info.capacity}); the file was overwritten by something else than shmipc",
            path=path)
    sleepers = struct.unpack_from("<4Q", header, layout.SLEEPERS)
    holders = []
    for lock, word in (("producer lock", producer_lock), ("consumer lock", consumer_lock)):
        verdict, letter = _core.judge_holder(header, word) if word else ("free", "?")
        holders.append(HolderState(lock, word, layout.identity_pid(word), verdict, letter))
    sems: tuple[SemaphoreState, ...] = ()
    if semaphores:
        sems = tuple(_probe_semaphore(role, name)
                     for role, name in _semaphore_names(info, generation).items())
    return ChannelState(path, info, st.st_size, stat.S_IMODE(st.st_mode), st.st_uid, w, r,
                        sent, received, bool(closed), sleepers[0].bit_count(),
                        sleepers[1].bit_count(), generation, recoveries, tuple(holders), sems,
                        applied_sequence=applied)


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} ({uid})"
    except (KeyError, ImportError):
        return str(uid)


def format_state(state: ChannelState) -> str:
    """The text output of ``inspect``: one ``label  value`` line per fact."""
    info = state.info
    created = datetime.datetime.fromtimestamp(info.created_ns / 1e9, tz=datetime.UTC)
    if info.kind is ChannelKind.FRAMES:
        kind = "frames (msgpack objects and bytes)"
        capacity = (f"{info.capacity} bytes (largest message "
                    f"{layout.max_message_size(info.capacity)} bytes)")
    else:
        kind = f"records of {info.record_size} bytes"
        capacity = f"{info.capacity} bytes"
    lines = [
        ("path", state.path),
        ("file", f"{state.file_size} bytes = {info.header_size} header + {info.capacity} data, "
                 f"mode {state.file_mode:04o}, owner {_owner(state.file_uid)}"),
        ("format version", str(info.format_version)),
        ("kind", kind),
    ]
    if info.schema:
        lines.append(("schema", info.schema))
    lines += [
        ("channel id", info.channel_id.hex()),
        ("created", f"{created.isoformat(timespec='seconds')} by pid {info.creator_pid}"),
        ("capacity", capacity),
        ("used", f"{state.used} bytes ({100.0 * state.used / info.capacity:.1f}%)"),
        ("messages", f"{state.messages} waiting"),
        ("sent", f"{state.sent} in total"),
        ("received", f"{state.received} in total"),
        ("closed", "yes: closed for sending" if state.closed else "no"),
        ("write position", str(state.write_position)),
        ("read position", str(state.read_position)),
        ("receivers", f"{state.receivers_waiting} asleep waiting for a message"),
        ("senders", f"{state.senders_waiting} asleep waiting for room"
         + (" (a producer sleeps on a full ring)" if state.senders_waiting else "")),
        ("recoveries", f"{state.recoveries} dead lock holders taken over"),
        ("applied sequence", f"{state.applied_sequence}: the last JetStream stream sequence "
                             "an in-bridge committed here" if state.applied_sequence else
                             "none (no in-bridge has sent into this channel)"),
    ]
    for holder in state.holders:
        lines.append((holder.lock, holder.describe()))
    width = max(len(label) for label, _ in lines) + 2
    out = [f"{label:<{width}}{value}" for label, value in lines]
    out.append("semaphores")
    for sem in state.semaphores:
        if sem.problem:
            value = sem.problem
        elif sem.exists:
            value = f"value {sem.value}"
        else:
            value = "missing (the next open of the channel rebuilds it from the header)"
        label = ROLE_NAMES.get(sem.role, sem.role)
        out.append(f"  {sem.role}  {label:<15}{sem.name}  {value}")
    return "\n".join(out)


# --- JSON forms -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_jsonable(obj: Any) -> Any:
    """Turn a decoded msgpack value into JSON-ready values, using the forms of
    :data:`JSON_FORMS` for bytes, ext types, timestamps and maps with non-string keys."""
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"$bytes": _b64(bytes(obj))}
    if isinstance(obj, msgpack.ExtType):  # a namedtuple: before the tuples
        return {"$ext": obj.code, "data": _b64(obj.data)}

    if isinstance(obj, dict):
        if all(isinstance(key, str) for key in obj):
            return {key: to_jsonable(value) for key, value in obj.items()}
        return {"$map": [[to_jsonable(k), to_jsonable(v)] for k, v in obj.items()]}
    if isinstance(obj, msgpack.Timestamp):
        return {"$timestamp": [obj.seconds, obj.nanoseconds]}
    if isinstance(obj, list | tuple):
        return [to_jsonable(item) for item in obj]
    return {"$repr": repr(obj)}


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("a base64 form needs a string")
    return base64.b64decode(text, validate=True)


def _json_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key == "$bytes":
            return _unb64(value)
        if key == "$timestamp":
            seconds, nanos = value
            return msgpack.Timestamp(seconds, nanos)
        if key == "$map":
            return {_freeze(k): v for k, v in value}
    if len(obj) == 2 and "$ext" in obj and "data" in obj:
        return msgpack.ExtType(obj["$ext"], _unb64(obj["data"]))
    return obj


def _freeze(key: Any) -> Any:
    return tuple(_freeze(k) for k in key) if isinstance(key, list) else key


def from_jsonable(text: str | bytes) -> tuple[bool, Any]:
    """Parse one JSON line into what to send: ``(True, bytes)`` for a ``{"$raw": ...}``
    message (sent as raw bytes), else ``(False, object)`` (sent with msgpack).

    Raises:
        ValueError: not JSON, or a malformed form.
    """
    obj = json.loads(text, object_hook=_json_hook)
    if isinstance(obj, dict) and len(obj) == 1 and "$raw" in obj:
        return True, _unb64(obj["$raw"])
    return False, obj


def _json_line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


# --- subcommands ------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    """``create``: make a new channel file (and its semaphores)."""
    path = args.path
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CliError(f"{path}: directory {parent} does not exist")
    if args.record is not None:
        try:
            record = shmipc.Record.from_schema(args.record)
        except (ValueError, TypeError) as exc:  # a schema the record layer refuses
            raise CliError(f"{path}: invalid record schema {args.record!r}: {exc}") from None
        channel: Channel | shmipc.RecordChannel = shmipc.RecordChannel.create(
            path, record, max(1, args.capacity // record.size), mode=args.mode)
    else:
        channel = Channel.create(path, args.capacity, mode=args.mode)
    channel.close()
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """``inspect``: print a channel's state, as text or as one JSON object."""
    state = read_state(args.path)
    out = sys.stdout
    if args.json:
        out.write(json.dumps(state.to_json(), indent=None) + "\n")
    else:
        out.write(format_state(state) + "\n")
    out.flush()
    return 0


def _open_for_messages(path: str) -> Channel:
    try:
        return Channel.open(path)
    except shmipc.IncompatibleChannel as exc:
        if "record" in str(exc):
            raise CliError(f"{path}: is a record channel; send and recv handle msgpack "
                           "channels only (inspect works on both)") from None
        raise


def cmd_send(args: argparse.Namespace) -> int:
    """``send``: send each line of stdin (JSON, or raw with ``--bytes``)."""
    path = args.path
    stdin: BinaryIO = sys.stdin.buffer
    with _open_for_messages(path) as channel:
        sent = 0
        for lineno, line in enumerate(stdin, 1):
            try:
                if args.bytes:
                    channel.send_bytes(line[:-1] if line.endswith(b"\n") else line,
                                       timeout=args.timeout)
                elif line.strip():
                    try:
                        raw, obj = from_jsonable(line)
                    except (ValueError, TypeError) as exc:
                        raise CliError(f"{path}: stdin line {lineno} is not a JSON message "
                                       f"({exc}); nothing from it was sent") from None
                    if raw:
                        channel.send_bytes(obj, timeout=args.timeout)
                    else:
                        channel.send(obj, timeout=args.timeout)
                else:
                    continue
            except Full:
                raise CliError(f"{path}: the channel stayed full for {args.timeout} s; stdin "
                               f"line {lineno} was not sent ({sent} messages were)") from None
            except ShmipcError as exc:
                raise CliError(f"{path}: stdin line {lineno} was not sent ({sent} messages "
                               f"were): {exc}") from None
            sent += 1
        if args.close:
            try:
                channel.close_send(timeout=args.timeout)
            except Full:
                raise CliError(f"{path}: a send in progress did not finish within "
                               f"{args.timeout} s; the channel was not closed") from None
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    """``recv``: receive messages and print them as JSON lines (raw lines with ``--bytes``)."""
    path = args.path
    waits = args.follow or args.count is not None
    timeout = args.timeout if args.timeout is not None else (None if waits else 0.0)
    codec = Codec()
    out: BinaryIO = sys.stdout.buffer
    received = 0
    with _open_for_messages(path) as channel:
        while args.count is None or received < args.count:
            try:
                payload = channel.recv_bytes(timeout=timeout)
            except EndOfChannel:
                break  # closed for sending and drained: the normal end
            except Empty:
                if not waits:
                    break  # drained what was waiting (or arrived within --timeout)
                wanted = f"{received} of {args.count}" if args.count else f"{received}"
                raise CliError(f"{path}: no message within {timeout} s (received "
                               f"{wanted})") from None
            received += 1
            if args.bytes:
                line = payload + b"\n"
            else:
                try:
                    line = _json_line(to_jsonable(codec.decode(payload)))
                except DecodeError:
                    line = _json_line({"$raw": _b64(payload)})
            try:
                out.write(line)
                out.flush()
            except BrokenPipeError:
                _silence_stdout()
                raise CliError(f"{path}: stdout was closed; the message just received was "
                               "lost (use --count N instead of piping into head)") from None
    return 0


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def cmd_unlink(args: argparse.Namespace) -> int:
    """``unlink``: remove a channel file and its semaphore names."""
    path = args.path
    fd, _st = _open_channel_file(path)
    try:
        # The size is not checked: a truncated channel can still be removed by its header.
        info = layout.parse(os.pread(fd, HEADER_SIZE, 0), path=path)
    except shmipc.CorruptChannel as exc:
        raise CliError(f"{exc}; its channel id cannot be trusted, so only the file could be "
                       "removed: rm it, then run `shmipc cleanup`") from None
    finally:
        os.close(fd)
    # The file first: a process that opened it afterwards would rebuild the names we remove.
    os.unlink(path)
    prefix = f"/{sync.NAME_PREFIX}{info.channel_id.hex()}-"
    for name in sync.list_semaphores():
        if not name.startswith(prefix):
            continue
        try:
            sync.unlink_semaphore(name)
        except posix_ipc.PermissionsError:
            raise CliError(f"{path}: the file was removed, but not semaphore {name} "
                           "(permission denied)") from None
    return 0


# --- cleanup ----------------------------------------------------------------------------------


@dataclass
class StaleReport:
    """What :func:`find_stale_semaphores` found.

    Attributes:
        stale: names no process maps, whose whole channel is unused: safe to remove.
        in_use: names (all of a channel's, if any one is mapped) with the pids mapping them.
        unknown: names that may be in use by a process whose maps could not be read.
        unreadable: pids whose ``/proc/PID/maps`` could not be read.
    """

    stale: list[str] = field(default_factory=list)
    in_use: dict[str, set[int]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)


def _inodes(names: Iterable[str]) -> dict[int, str]:
    inodes: dict[int, str] = {}
    for name in names:
        with contextlib.suppress(OSError):  # removed meanwhile
            inodes[os.stat(_SEM_PATH + name[1:]).st_ino] = name
    return inodes


def _scan_maps(inodes: dict[int, str],
               ignore: Iterable[int] = ()) -> tuple[dict[str, set[int]], list[int]]:
    """Which processes map which of the semaphore files (by inode), and whom we cannot read.

    ``sem_open`` maps ``/dev/shm/sem.NAME`` into the process until ``sem_close`` or exit, so a
    mapping is a sound sign of use. Lines are matched by inode as well as path, so a process
    still mapping an old, removed semaphore of the same name does not count for the new one.
    """
    users: dict[str, set[int]] = {}
    unreadable: list[int] = []
    skip = {os.getpid(), *ignore}
    marker = (_SEM_PATH + sync.NAME_PREFIX).encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        raise CliError("cannot list /proc, so cannot tell which names are in use; "
                       "nothing was removed") from None
    for entry in entries:
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open(f"/proc/{entry}/maps", "rb") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        except OSError:
            unreadable.append(int(entry))
            continue
        if marker not in data:
            continue
        for line in data.splitlines():
            if marker not in line:
                continue
            fields = line.split(None, 5)
            if len(fields) < 6 or not fields[4].isdigit():
                continue
            name = inodes.get(int(fields[4]))
            if name is not None:
                users.setdefault(name, set()).add(int(entry))
    return users, unreadable


def _proc_hides_pids() -> bool:
    """True if /proc is mounted with ``hidepid`` and we may not see every process."""
    if os.geteuid() == 0:
        return False
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/proc":
                    options = line.split(" - ", 1)[-1]
                    return bool(re.search(r"hidepid=(1|2|noaccess|invisible)", options))
    except OSError:
        return True
    return False


def _channel_key(name: str) -> str:
    match = _NAME_RE.match(name)
    return match.group(1) if match else name


def find_stale_semaphores(ids: Sequence[str] = (),
                          ignore_pids: Iterable[int] = ()) -> StaleReport:
    """Find shmipc semaphore names that no live process has open.

    A name is stale when no process maps its file (``/proc/*/maps``), and a channel's names are
    judged together: if any one is in use, all of them are kept. If some process's maps cannot
    be read (another user's, without root), names not seen in use are reported ``unknown`` and
    kept. If ``ids`` is given, only names of those channel ids (hex) are considered.
    ``ignore_pids`` are processes the caller vouches do not use shmipc: they are not examined
    (use it for processes whose maps cannot be read, such as a sandbox's init).

    Removing a stale name is safe for a file channel: :meth:`Channel.open` rebuilds missing
    semaphores from the header, so unread messages survive. Hazard: processes in another PID
    namespace (a container sharing this ``/dev/shm``) are invisible here.
    """
    names = [n for n in sync.list_semaphores() if not ids or _channel_key(n) in ids]
    report = StaleReport()
    if not names:
        return report
    users, unreadable = _scan_maps(_inodes(names), ignore_pids)
    report.unreadable = sorted(unreadable)
    blind = bool(unreadable) or _proc_hides_pids()
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_channel_key(name), []).append(name)
    for group in groups.values():
        pids = set().union(*(users.get(name, set()) for name in group))
        if pids:
            for name in group:
                report.in_use[name] = users.get(name) or pids
        elif blind:
            report.unknown.extend(group)
        else:
            report.stale.extend(group)
    return report


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"({f.read().strip()})"
    except OSError:
        return ""


def cleanup_queues(ids: Sequence[str], dry_run: bool, out: Any) -> None:
    """Remove (or list) the files of ``shmipc.Queue`` that no process holds, with their
    semaphores.

    Every handle of a queue holds a shared ``flock`` on its file until it closes, and the
    kernel drops it when the process dies however it dies: a file on which an exclusive lock
    can be taken without waiting is proven unused, in every pid namespace.
    """
    for path in queue_files():
        channel_id = queue_channel_id(path)
        if ids and (channel_id is None or channel_id.hex() not in ids):
            continue
        if channel_id is None and not path.endswith(".creating"):
            out.write(f"kept          {path}  (not a shmipc channel file)\n")
        elif is_held(path):
            out.write(f"in use        {path}  (a queue some process holds)\n")
        elif dry_run:
            out.write(f"would remove  {path}  (a queue no process holds)\n")
        elif unlink_if_unused(path):
            out.write(f"removed       {path}  (a queue no process held, and its semaphores)\n")
        else:
            out.write(f"kept          {path}  (opened meanwhile)\n")


def cmd_cleanup(args: argparse.Namespace) -> int:
    """``cleanup``: list (and remove unless ``--dry-run``) queue files and semaphore names no
    process uses."""
    ignore = args.ignore_pid or ()
    out = sys.stdout
    cleanup_queues(args.id or (), args.dry_run, out)
    report = find_stale_semaphores(args.id or (), ignore)
    for name, users in sorted(report.in_use.items()):
        out.write(f"in use        {name}  (pid {', '.join(map(str, sorted(users)))})\n")
    for name in report.unknown:
        out.write(f"kept          {name}  (cannot tell whether it is in use)\n")
    if args.dry_run:
        for name in report.stale:
            out.write(f"would remove  {name}\n")
    elif report.stale:
        # Look once more just before removing, to keep the window for a new user small.
        recheck = find_stale_semaphores(args.id or (), ignore)
        still = set(recheck.stale)
        inodes = _inodes(n for n in report.stale if n in still)
        for name in report.stale:
            if name not in still:
                why = "opened meanwhile" if name in recheck.in_use else "cannot tell any more"
                out.write(f"kept          {name}  ({why})\n")
                continue
            try:
                if sync.unlink_semaphore(name):
                    out.write(f"removed       {name}\n")
            except posix_ipc.PermissionsError:
                out.flush()
                raise CliError(f"{name}: permission denied; it belongs to another user "
                               "(run cleanup as that user or as root)") from None
        late, _ = _scan_maps(inodes, ignore)
        if late:
            out.flush()
            who = "; ".join(f"{name} by pid {', '.join(map(str, sorted(p)))}"
                            for name, p in sorted(late.items()))
            raise CliError(f"opened while cleanup removed it: {who}; restart those processes "
                           "(they hold a semaphore no other process can open)")
    out.flush()
    if report.unknown:
        pids = report.unreadable
        if pids:
            shown = ", ".join(f"{pid} {_comm(pid)}".strip() for pid in pids[:5])
            shown += ", ..." if len(pids) > 5 else ""
            why = f"cannot read the memory maps of pid {shown}"
        else:
            why = "/proc hides other users' processes (hidepid)"
        sys.stderr.write(f"{PROG} cleanup: {why}, which could hold the {len(report.unknown)} "
                         "names kept; run as root to check them, or pass --ignore-pid PID for "
                         "a process you know does not use shmipc\n")
    return 0


# --- the parser -------------------------------------------------------------------------------

_RECV_HELP = f"""\
What recv waits for (like tail and kcat):
  recv PATH               print the messages waiting now, then exit (tail)
  recv PATH --count N     wait for N messages, print them, exit (head -n N; kcat -c N)
  recv PATH --follow      print messages as they come until the channel is closed for
                          sending and drained (tail -f); Ctrl-C stops it
--timeout S bounds each wait for the next message. Without --count and --follow it lets
recv wait S seconds for more before it ends (status 0); with --count or --follow, a wait
that runs out is a failure (status 1). A channel closed for sending and drained ends recv
with status 0 in every mode, even before N messages.

Output: one JSON line a message. A message sent as raw bytes (not msgpack) comes out as
{{"$raw": "<base64>"}}; with --bytes every message is written as it is, with a newline.

{JSON_FORMS}

Use --count N rather than piping into head: a message received after head has exited
cannot be put back, and is lost."""

_CLEANUP_HELP = """\
Queue files (shmipc.Queue, /dev/shm/shmipc-queue-*) that no process holds are removed
with their semaphores: every open queue holds a lock on its file, which the kernel drops
when the process ends, so a queue whose every user was killed is found here.
A name is in use while some process maps /dev/shm/sem.NAME (sem_open maps it until
sem_close or exit); all names of a channel are kept if any one is in use. Names in
processes whose maps this user may not read are kept and reported: run as root for a full
check, or name processes you know do not use shmipc with --ignore-pid.
Removing the names of a file channel nobody has open is safe: the next open rebuilds them
from the file's header, and unread messages stay. Output lines: "in use", "kept",
"would remove" (--dry-run), "removed". Processes in other PID namespaces (a container
sharing this /dev/shm) are not visible: do not run cleanup there."""


_BRIDGE_HELP = """\
out: every message of the channel is published to SUBJECT on NATS JetStream, straight from
the ring, in batches (a batch leaves the channel once JetStream acknowledged all of it).
in: a durable consumer of SUBJECT feeds the channel; a message is acknowledged only after
the channel committed it with its stream sequence. Kill either bridge at any moment and start
it again: nothing is lost or doubled (docs/bridge.md says exactly what is guaranteed).
Needs the nats extra: pip install 'shmipc[nats]'. Ctrl-C stops cleanly (exit status 130)."""


def cmd_bridge(args: argparse.Namespace) -> int:
    """``bridge``: run an out- or in-bridge between a channel and NATS JetStream."""
    try:
        from . import bridge
    except ImportError as exc:
        raise CliError(f"the bridge needs NATS: pip install 'shmipc[nats]' ({exc})") from None
    try:
        return bridge.command(args)
    except bridge.BridgeError as exc:
        raise CliError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m shmipc``, one subparser a subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Create, inspect, send to, receive from and remove shmipc channels.",
        epilog="Exit status: 0 ok, 1 runtime failure (one line on stderr), 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {shmipc.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            epilog: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("create", cmd_create, "Create a channel file (it must not exist).")
    p.add_argument("path", metavar="PATH", help="the channel file")
    p.add_argument("--capacity", type=parse_size, default=DEFAULT_CAPACITY, metavar="SIZE",
                   help="ring bytes: 65536, 64K, 16M, 1G (rounded up to a power of two, at "
                        f"least 4K; default {DEFAULT_CAPACITY // (1 << 20)}M)")
    p.add_argument("--mode", type=parse_mode, default=0o600, metavar="MODE",
                   help="octal permissions of the file and its semaphores (default 0600)")
    p.add_argument("--record", metavar="SCHEMA",
                   help="a record channel of fixed-size records with this schema, e.g. "
                        "'people{name:4s;age:i}' (struct codes; capacity then sets the slots)")

    p = add("inspect", cmd_inspect, "Show a channel's state without changing it.",
            "Reads the header and opens only existing semaphores; a missing semaphore is "
            "reported, never rebuilt.\n--json prints one object with the keys format_version, "
            "kind, capacity, used, messages,\nsent, received, closed, and more.")
    p.add_argument("path", metavar="PATH", help="the channel file")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("send", cmd_send, "Send each line of stdin as a message.",
            f"Each non-empty line is one JSON value, sent with msgpack; with --bytes each line\n"
            f"(its newline removed) is sent as raw bytes.\n\n{JSON_FORMS}")
    p.add_argument("path", metavar="PATH", help="the channel file")
    p.add_argument("--bytes", action="store_true", help="send raw lines, not JSON")
    p.add_argument("--close", action="store_true",
                   help="at end of input, close the channel for sending (receivers then end)")
    p.add_argument("--timeout", type=_seconds, metavar="S",
                   help="fail if the channel stays full this long (default: wait)")

    p = add("recv", cmd_recv, "Receive messages and print them as JSON lines.", _RECV_HELP)
    p.add_argument("path", metavar="PATH", help="the channel file")
    p.add_argument("--count", "-n", type=_positive_int, metavar="N",
                   help="stop after N messages (waiting for them)")
    p.add_argument("--timeout", type=_seconds, metavar="S",
                   help="the longest wait for the next message (see below)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep receiving until the channel is closed and drained")
    p.add_argument("--bytes", action="store_true",
                   help="write each message's raw bytes and a newline, not JSON")

    p = add("unlink", cmd_unlink, "Remove a channel file and its semaphore names.",
            "Refuses a file that is not a shmipc channel. Processes that have the channel open\n"
            "keep using it until they close it.")
    p.add_argument("path", metavar="PATH", help="the channel file")

    p = add("cleanup", cmd_cleanup,
            "Remove shmipc semaphore names and queue files that no live process has open.",
            _CLEANUP_HELP)
    p.add_argument("--dry-run", action="store_true", help="list, but remove nothing")
    p.add_argument("--id", action="append", type=_channel_id, metavar="HEX",
                   help="only names of this channel id (repeatable)")
    p.add_argument("--ignore-pid", action="append", type=_positive_int, metavar="PID",
                   help="a process known not to use shmipc, whose maps cannot be read: do not "
                        "let it keep names (repeatable)")

    p = add("bridge", cmd_bridge, "Forward a channel to NATS JetStream, or JetStream to a "
            "channel.", _BRIDGE_HELP)
    p.add_argument("direction", choices=["out", "in"],
                   help="out: channel -> JetStream; in: JetStream -> channel")
    p.add_argument("path", metavar="PATH",
                   help="the local channel file (opened, or created with --capacity)")
    p.add_argument("subject", metavar="SUBJECT",
                   help="the JetStream subject (in: wildcards allowed)")
    p.add_argument("--server", "-s", action="append", metavar="URL",
                   help="a NATS server URL (repeatable: the nodes of a cluster; default "
                        "nats://127.0.0.1:4222)")
    p.add_argument("--stream", metavar="NAME",
                   help="the JetStream stream (default: the one holding SUBJECT, else a new "
                        "one named SHMIPC_<subject>)")
    p.add_argument("--no-create-stream", action="store_true",
                   help="fail instead of creating a missing stream")
    p.add_argument("--replicas", type=_positive_int, default=1, metavar="N",
                   help="replicas of a stream the bridge creates (default 1)")
    p.add_argument("--duplicate-window", type=_seconds, default=120.0, metavar="S",
                   help="de-duplication window of a stream the bridge creates (default 120 s): "
                        "restart a killed out-bridge within it")
    p.add_argument("--capacity", type=parse_size, default=DEFAULT_CAPACITY, metavar="SIZE",
                   help="capacity if the channel has to be created")
    p.add_argument("--count", "-n", type=_positive_int, metavar="N",
                   help="stop after N messages forwarded")
    p.add_argument("--max-inflight", type=_positive_int, default=1024, metavar="N",
                   help="out: messages claimed and in flight at once, one batch committed "
                        "when JetStream acknowledged all of it (default 1024)")
    p.add_argument("--durable", metavar="NAME",
                   help="in: the durable consumer (default: named after this host, PATH and "
                        "SUBJECT)")
    p.add_argument("--batch", type=_positive_int, default=256, metavar="N",
                   help="in: messages fetched per request (default 256)")
    p.add_argument("--ack-wait", type=_seconds, default=30.0, metavar="S",
                   help="in: seconds before the server redelivers an unacknowledged message, "
                        "for a consumer the bridge creates (default 30)")
    p.add_argument("--stats", action="store_true",
                   help="print statistics as JSON lines on stdout (forwarded, pending_acks, "
                        "lag, ...): every --stats-interval seconds and at the end")
    p.add_argument("--stats-interval", type=_seconds, default=1.0, metavar="S",
                   help="seconds between --stats lines (default 1)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="show a progress line on stderr (default: when it is a terminal)")
    group.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="report connections, resets and republications on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    where = getattr(args, "path", None) or ""
    try:
        return int(args.func(args))
    except CliError as exc:
        message = str(exc)
    except (KeyboardInterrupt, posix_ipc.SignalError):  # Ctrl-C, maybe inside a sem wait
        return 130
    except BrokenPipeError:  # the reader of stdout went away (| head): nothing to say
        _silence_stdout()
        return 1
    except ChannelClosed as exc:
        message = _describe(where, exc)
    except _EXPECTED as exc:
        message = _describe(where, exc) if where else " ".join(str(exc).split())
    sys.stdout.flush()
    sys.stderr.write(f"{PROG} {args.command}: {' '.join(message.split())}\n")
    return 1
