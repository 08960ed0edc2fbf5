"""shmipc.bridge: channels joined across machines through NATS JetStream.

An **out-bridge** takes messages from a local channel and publishes them to a JetStream
subject; an **in-bridge** consumes a subject with a durable consumer and sends the messages into
a local channel. Bytes go through untouched. Neither loses nor doubles a message when it is
killed (``kill -9``) at any moment and restarted: see ``docs/bridge.md`` for exactly what is
guaranteed and what is not.

::

    from shmipc.bridge import open_out, open_in, run

    run(open_out("/tmp/a.shmipc", "orders", servers=["nats://127.0.0.1:4222"]))   # host A
    run(open_in("/tmp/b.shmipc", "orders", servers=["nats://127.0.0.1:4222"]))    # host B

or ``shmipc bridge out /tmp/a.shmipc orders`` and ``shmipc bridge in /tmp/b.shmipc orders``.

Layers: ``local`` (the channel ends, behind two small interfaces a topic can implement too),
``_out`` and ``_in`` (the two loops, asyncio over nats-py), ``_run`` (signals, statistics,
progress; the CLI), ``server`` (local nats-server processes for tests and examples). Only
shmipc's public API and nats-py are used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import shmipc

from ._common import (
    BridgeError,
    BridgeStatistics,
    NatsOptions,
    default_durable_name,
    default_stream_name,
)
from ._in import InBridge
from ._out import OutBridge
from ._run import command, run, run_async
from .local import ChannelClaim, ChannelSink, ChannelSource, Claim, Sink, Source

__all__ = [
    "BridgeError",
    "BridgeStatistics",
    "ChannelClaim",
    "ChannelSink",
    "ChannelSource",
    "Claim",
    "InBridge",
    "NatsOptions",
    "OutBridge",
    "Sink",
    "Source",
    "command",
    "default_durable_name",
    "default_stream_name",
    "open_in",
    "open_out",
    "run",
    "run_async",
]


def open_out(path: str | os.PathLike[str], subject: str, *,
             servers: Sequence[str] = ("nats://127.0.0.1:4222",), stream: str | None = None,
             capacity: int = shmipc.DEFAULT_CAPACITY,
             count: int | None = None, max_inflight: int = 1024,
             **nats_options: object) -> OutBridge:
    """An out-bridge from the channel at ``path`` (opened, or created with ``capacity``) to
    ``subject``. Run it with :func:`run` (or ``await bridge.run()``).

    Args:
        path: the local channel file.
        subject: the JetStream subject to publish to.
        servers: NATS URLs.
        stream: the stream (default: the one holding the subject, or a new one).
        capacity: the capacity if the channel has to be created.
        count: stop after this many messages.
        max_inflight: messages claimed from the channel and in flight at once (a batch,
            committed once JetStream acknowledged all of it).
        **nats_options: more :class:`NatsOptions` fields (replicas, duplicate_window, ...).
    """
    options = NatsOptions(servers=tuple(servers), stream=stream, **nats_options)  # type: ignore[arg-type]
    channel = shmipc.Channel.open_or_create(path, capacity)
    return OutBridge(ChannelSource(channel), subject, nats_options=options, count=count,
                     max_inflight=max_inflight)


def open_in(path: str | os.PathLike[str], subject: str, *,
            servers: Sequence[str] = ("nats://127.0.0.1:4222",), stream: str | None = None,
            durable: str | None = None, capacity: int = shmipc.DEFAULT_CAPACITY,
            count: int | None = None, batch: int = 256, ack_wait: float = 30.0,
            **nats_options: object) -> InBridge:
    """An in-bridge from ``subject`` into the channel at ``path`` (opened, or created with
    ``capacity``). Run it with :func:`run` (or ``await bridge.run()``).

    Args:
        path: the local channel file.
        subject: the subject to consume (wildcards allowed).
        servers: NATS URLs.
        stream: the stream (default: the one holding the subject, or a new one).
        durable: the durable consumer (default: named after this host, the channel's real
            path and the subject, see :func:`default_durable_name`).
        capacity: the capacity if the channel has to be created.
        count: stop after this many messages.
        batch: messages fetched per request.
        ack_wait: seconds before the server redelivers (for a consumer the bridge creates).
        **nats_options: more :class:`NatsOptions` fields.
    """
    options = NatsOptions(servers=tuple(servers), stream=stream, **nats_options)  # type: ignore[arg-type]
    channel = shmipc.Channel.open_or_create(path, capacity)
    return InBridge(ChannelSink(channel), subject,
                    durable or default_durable_name(os.fspath(path), subject),
                    nats_options=options, count=count, batch=batch, ack_wait=ack_wait)
