"""What both directions share: options, statistics, the NATS connection, stream set-up."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

log = logging.getLogger("shmipc.bridge")

NO_RESPONDERS = "503"


class BridgeError(RuntimeError):
    """A bridge cannot go on: misconfiguration, or a failure it must not paper over."""


@dataclass(frozen=True)
class BridgeStatistics:
    """A snapshot of a running bridge.

    Attributes:
        direction: "out" (local -> JetStream) or "in" (JetStream -> local).
        forwarded: messages moved this run (out: acknowledged by JetStream; in: committed to
            the local channel).
        duplicates: out: publications JetStream reported as duplicates (republished after a
            crash or a failover and dropped by its de-duplication window); in: redeliveries
            recognised by their sequence and dropped.
        pending_acks: out: publications in flight (sent, not yet acknowledged); in: messages
            delivered and not yet acknowledged to the server.
        lag: out: messages waiting in the local channel; in: messages in the stream not yet
            delivered to this bridge's consumer (as of the last delivery).
        rate: messages per second over the last interval.
        reconnects: reconnections to the NATS servers this run.
        resyncs: in: consumer resets after a delivery went missing (a failover); out:
            republications of the in-flight window after a failed or timed-out publication.
        last_error: the last transient error, or "".
        elapsed: seconds since the bridge started.
    """

    direction: str
    forwarded: int = 0
    duplicates: int = 0
    pending_acks: int = 0
    lag: int = 0
    rate: float = 0.0
    reconnects: int = 0
    resyncs: int = 0
    last_error: str = ""
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a JSON-ready dict."""
        return {
            "direction": self.direction, "forwarded": self.forwarded,
            "duplicates": self.duplicates, "pending_acks": self.pending_acks, "lag": self.lag,
            "rate": round(self.rate, 1), "reconnects": self.reconnects,
            "resyncs": self.resyncs, "last_error": self.last_error,
            "elapsed": round(self.elapsed, 3),
        }


@dataclass
class NatsOptions:
    """Where and how to reach JetStream.

    Attributes:
        servers: NATS URLs (a cluster's nodes; the client also learns the others from them).
        stream: the stream's name; None: the stream that holds the subject, or a new one named
            after the subject.
        create_stream: create the stream when it does not exist.
        replicas: replicas of a stream the bridge creates (1, or 3 on a 3-node cluster).
        duplicate_window: seconds of a created stream's de-duplication window (see the docs: a
            killed out-bridge must be restarted within it for "nothing doubled").
        request_timeout: seconds to wait for a JetStream API answer.
    """

    servers: Sequence[str] = ("nats://127.0.0.1:4222",)
    stream: str | None = None
    create_stream: bool = True
    replicas: int = 1
    duplicate_window: float = 120.0
    request_timeout: float = 5.0
    name: str = "shmipc-bridge"


@dataclass
class Counters:
    """Mutable counters behind :class:`BridgeStatistics`."""

    forwarded: int = 0
    duplicates: int = 0
    reconnects: int = 0
    resyncs: int = 0
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)
    rate_mark: tuple[float, int] = (0.0, 0)
    rate: float = 0.0

    def update_rate(self) -> float:
        now = time.monotonic()
        then, count = self.rate_mark
        if then == 0.0:
            self.rate_mark = (self.started, 0)
            then, count = self.rate_mark
        if now - then >= 0.5:
            self.rate = (self.forwarded - count) / (now - then)
            self.rate_mark = (now, self.forwarded)
        return self.rate


def default_stream_name(subject: str) -> str:
    """The stream a bridge creates for ``subject`` when none is named: ``SHMIPC_`` and the
    subject with every character a stream name may not hold replaced by ``_``."""
    return "SHMIPC_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject)


def default_durable_name(channel_path: str, subject: str) -> str:
    """The durable consumer of an in-bridge when none is named: stable for one host (by its
    name), one channel file (by its real path) and one subject, so that in-bridges on two
    hosts never share a consumer."""
    key = f"{socket.gethostname()}\0{os.path.realpath(channel_path)}\0{subject}".encode()
    return "shmipc-" + hashlib.sha256(key).hexdigest()[:16]


def describe(exc: BaseException) -> str:
    """A one-line description of an exception."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def connect(options: NatsOptions, counters: Counters,
                  stopping: asyncio.Event) -> nats.NATS:
    """Connect, retrying until a server answers or ``stopping`` is set; afterwards the client
    reconnects by itself for ever (counted in ``counters.reconnects``)."""

    async def on_error(exc: Exception) -> None:
        counters.last_error = describe(exc)
        log.debug("nats: %s", counters.last_error)

    async def on_disconnected() -> None:
        log.info("disconnected from NATS; reconnecting")

    async def on_reconnected() -> None:
        counters.reconnects += 1
        log.info("reconnected to NATS at %s", nc.connected_url.netloc if nc.connected_url
                 else "?")

    delay = 0.2
    while True:
        nc = nats.NATS()
        settings: dict[str, Any] = dict(
            servers=list(options.servers), name=options.name, connect_timeout=2,
            reconnect_time_wait=0.25, max_reconnect_attempts=-1, allow_reconnect=True,
            error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected,
            pending_size=64 << 20)
        attempt = asyncio.ensure_future(nc.connect(**settings))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait([attempt, stop], timeout=1.0,
                               return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done() and not stop.done():
                log.warning("cannot reach NATS at %s yet%s; still trying",
                            ", ".join(options.servers),
                            f" ({counters.last_error})" if counters.last_error else "")
                await asyncio.wait([attempt, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not attempt.done():
            attempt.cancel()
            try:
                await attempt
            except BaseException:
                pass
            try:
                await nc.close()
            except Exception:
                pass
            raise BridgeError(f"stopped before NATS at {', '.join(options.servers)} answered"
                              + (f" ({counters.last_error})" if counters.last_error else ""))
        try:
            attempt.result()
            return nc
        except Exception as exc:
            counters.last_error = describe(exc)
            log.warning("cannot reach NATS at %s (%s); retrying", ", ".join(options.servers),
                        counters.last_error)
            if stopping.is_set():
                raise BridgeError(f"cannot reach NATS at {', '.join(options.servers)}: "
                                  f"{counters.last_error}") from exc
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, 2.0)


async def ensure_stream(js: Any, options: NatsOptions, subject: str) -> api.StreamInfo:
    """The stream that stores ``subject``: the named one, the one whose subjects hold it, or a
    new one (when ``options.create_stream``).

    Raises:
        BridgeError: there is none and the bridge may not create one, or the named stream
            does not take the subject.
    """
    name = options.stream
    if name is None:
        try:
            name = await js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            name = None
    if name is not None:
        try:
            return await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            if not options.create_stream:
                raise BridgeError(f"JetStream has no stream {name!r}; create it, or let the "
                                  "bridge create it (drop --no-create-stream)") from None
    elif not options.create_stream:
        raise BridgeError(f"no JetStream stream holds subject {subject!r}; create one, or let "
                          "the bridge create it (drop --no-create-stream)")
    name = name or default_stream_name(subject)
    config = api.StreamConfig(name=name, subjects=[subject],
                              num_replicas=options.replicas,
                              duplicate_window=options.duplicate_window,
                              storage=api.StorageType.FILE)
    try:
        info = await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        # Made meanwhile by the other bridge with the same configuration, or a conflict.
        try:
            return await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            raise BridgeError(f"cannot create stream {name!r} for {subject!r}: "
                              f"{describe(exc)}") from exc
    log.info("created stream %s for subject %s (replicas %d, duplicate window %gs)", name,
             subject, options.replicas, options.duplicate_window)
    return info


async def retry_api(what: str, call: Any, counters: Counters, stopping: asyncio.Event,
                    attempts: int = 0) -> Any:
    """Await ``call()`` again after transient failures (no leader during a failover, a
    timeout, a reconnect), backing off up to 2 s; ``attempts`` > 0 bounds the tries."""
    delay = 0.1
    tried = 0
    while True:
        try:
            return await call()
        except (BridgeError, nats.js.errors.NotFoundError):
            raise
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            tried += 1
            counters.last_error = describe(exc)
            log.info("%s failed (%s); retrying", what, counters.last_error)
            if stopping.is_set() or (attempts and tried >= attempts):
                raise
        try:
            await asyncio.wait_for(stopping.wait(), delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, 2.0)
