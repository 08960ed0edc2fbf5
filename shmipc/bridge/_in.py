"""The in-bridge: a JetStream subject (a durable pull consumer) to a local channel (a
:class:`~shmipc.bridge.local.Sink`).

The invariant: a message is acknowledged to JetStream only after the channel committed it, and
the channel commits the message's stream sequence in the same commit (``send_sequenced``), so a
redelivery of anything applied is recognised (sequence not above the applied one) and only
acknowledged.

That alone is not enough: JetStream redelivers an unacknowledged message only after its ack
wait, while newer ones keep coming, so a message lost in flight (delivered to a bridge that was
then killed, or dropped with a connection during a failover) could arrive after a newer one was
applied, and be taken for a duplicate. Two rules close that hole:

1. At every start and after every reconnection the consumer is **reset** to the channel's
   applied sequence + 1 (``$JS.API.CONSUMER.RESET``, nats-server 2.14+): nothing is pending any
   more and delivery restarts right after what the channel holds.
2. Every delivery carries the consumer's delivery sequence, which the server raises by one for
   each delivery (redeliveries included). A gap means a delivery went missing: the bridge drops
   what it fetched beyond, and resets again.

So the bridge applies stream sequences in increasing order without skipping any delivered one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api

import shmipc

from ._common import (
    BridgeError,
    BridgeStatistics,
    Counters,
    NatsOptions,
    connect,
    describe,
    ensure_stream,
    retry_api,
)
from .local import Sink

log = logging.getLogger("shmipc.bridge")


class _Resync(Exception):
    """A delivery went missing: reset the consumer and start again."""


class InBridge:
    """Forward a JetStream subject into a local sink (a channel); see the module docstring.

    Args:
        sink: the local end, e.g. ``ChannelSink(Channel.open_or_create(path))``.
        subject: the subject (wildcards allowed) to consume.
        durable: the durable consumer's name (one in-bridge per durable consumer and channel).
        nats_options: servers and stream.
        batch: messages fetched per request.
        ack_wait: seconds the server waits for an acknowledgement before redelivering; while
            the channel is full the bridge sends "in progress" well within it.
        max_ack_pending: the consumer's limit of unacknowledged messages.
        count: stop after this many messages were committed (None: run until stopped).
    """

    direction = "in"

    def __init__(self, sink: Sink, subject: str, durable: str, *,
                 nats_options: NatsOptions | None = None, batch: int = 256,
                 ack_wait: float = 30.0, max_ack_pending: int = 4096,
                 count: int | None = None) -> None:
        self.sink = sink
        self.subject = subject
        self.durable = durable
        self.options = nats_options or NatsOptions()
        self.batch = batch
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self.count = count
        self.counters = Counters()
        self.applied = 0
        self.stream = ""
        self._stopping = asyncio.Event()
        self._reconnected = False
        self._unacked = 0
        self._lag = 0
        self._ack_all = True

    def stop(self) -> None:
        """Ask the bridge to stop after the message it is committing; unacknowledged
        deliveries are redelivered to the next run (and recognised if applied)."""
        self._stopping.set()

    def statistics(self) -> BridgeStatistics:
        """A snapshot of the counters (see :class:`BridgeStatistics`)."""
        c = self.counters
        return BridgeStatistics(
            direction="in", forwarded=c.forwarded, duplicates=c.duplicates,
            pending_acks=self._unacked, lag=self._lag, rate=c.update_rate(),
            reconnects=c.reconnects, resyncs=c.resyncs, last_error=c.last_error,
            elapsed=time.monotonic() - c.started)

    async def run(self) -> BridgeStatistics:
        """Forward until stopped or until ``count`` messages are committed.

        Raises:
            BridgeError: misconfiguration (no stream, a consumer that cannot be reset), or the
                local channel was closed for sending.
        """
        loop = asyncio.get_running_loop()
        worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shmipc-bridge")
        try:
            nc = await connect(self.options, self.counters, self._stopping)
            seen_reconnects = self.counters.reconnects
            try:
                js = nc.jetstream(timeout=self.options.request_timeout)
                info = await retry_api("stream set-up",
                                       lambda: ensure_stream(js, self.options, self.subject),
                                       self.counters, self._stopping)
                self.stream = info.config.name
                self._ack_all = info.config.retention != api.RetentionPolicy.WORK_QUEUE
                await retry_api("consumer set-up", lambda: self._ensure_consumer(js),
                                self.counters, self._stopping)
                self.applied = await self._applied(loop, worker)
                while not self._stopping.is_set() and not self._done():
                    sub = await self._resync(js, nc)
                    seen_reconnects = self.counters.reconnects
                    try:
                        await self._consume(
                            sub, loop, worker,
                            lambda seen=seen_reconnects: self.counters.reconnects != seen)
                    except _Resync as why:
                        self.counters.resyncs += 1
                        log.info("resynchronising the consumer: %s", why)
                    finally:
                        try:
                            await sub.unsubscribe()
                        except Exception:
                            pass
            finally:
                try:
                    await asyncio.wait_for(nc.close(), 5)
                except Exception:
                    pass
        finally:
            worker.shutdown(wait=True)
        return self.statistics()

    def _done(self) -> bool:
        return self.count is not None and self.counters.forwarded >= self.count

    async def _ensure_consumer(self, js: Any) -> None:
        try:
            await js.consumer_info(self.stream, self.durable)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = api.ConsumerConfig(
            durable_name=self.durable, filter_subject=self.subject,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.ALL if self._ack_all else api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait, max_ack_pending=self.max_ack_pending,
)
        await js.add_consumer(self.stream, config)
        log.info("created durable consumer %s on stream %s for %s", self.durable, self.stream,
                 self.subject)

    async def _applied(self, loop: asyncio.AbstractEventLoop,
                       worker: concurrent.futures.Executor) -> int:
        while True:
            try:
                return self.sink.applied_sequence(0)
            except shmipc.Full:  # a producer holds the lock: wait for it off the event loop
                try:
                    return await loop.run_in_executor(worker, self.sink.applied_sequence, 0.25)
                except shmipc.Full:
                    if self._stopping.is_set():
                        raise BridgeError("stopped while waiting for the channel's producer "
                                          "lock") from None

    async def _resync(self, js: Any, nc: Any) -> Any:
        """Reset the consumer to just after what the channel holds; a fresh subscription."""

        async def reset() -> Any:
            if self.applied:
                return await js.reset_consumer(self.stream, self.durable, seq=self.applied + 1)
            return await js.reset_consumer(self.stream, self.durable)

        try:
            done = await retry_api("consumer reset", reset, self.counters, self._stopping)
        except nats.js.errors.BadRequestError as exc:
            raise BridgeError(
                f"cannot reset consumer {self.durable} of stream {self.stream} to sequence "
                f"{self.applied + 1} ({describe(exc)}); the in-bridge needs nats-server 2.14 "
                "or later and a consumer with deliver policy 'all' or a start sequence at or "
                "below the channel's") from exc
        self._next_delivery = (done.info.delivered.consumer_seq if done.info.delivered
                               else 0) + 1
        self._unacked = 0
        return await retry_api(
            "subscribe", lambda: js.pull_subscribe_bind(durable=self.durable,
                                                        stream=self.stream),
            self.counters, self._stopping)

    async def _consume(self, sub: Any, loop: asyncio.AbstractEventLoop,
                       worker: concurrent.futures.Executor, reconnected: Any) -> None:
        while not self._stopping.is_set() and not self._done():
            if reconnected():
                raise _Resync("reconnected to NATS")
            want = self.batch
            if self.count is not None:
                want = max(1, min(want, self.count - self.counters.forwarded))
            try:
                msgs = await sub.fetch(want, timeout=1.0)
            except (TimeoutError, nats.js.errors.FetchTimeoutError):
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                self.counters.last_error = describe(exc)
                raise _Resync(f"fetch failed: {self.counters.last_error}") from exc
            pending_ack = None
            for index, msg in enumerate(msgs):
                meta = msg.metadata
                if meta.sequence.consumer != self._next_delivery:
                    raise _Resync(f"delivery {self._next_delivery} went missing (got "
                                  f"{meta.sequence.consumer})")
                self._next_delivery += 1
                self._lag = meta.num_pending
                sequence = meta.sequence.stream
                if sequence > self.applied:
                    if not await self._deliver(msg, sequence, msgs[index:], loop, worker):
                        return  # stopping while the channel is full: redelivered next run
                    self.applied = sequence
                else:
                    self.counters.duplicates += 1
                if self._ack_all:
                    pending_ack = msg
                    self._unacked += 1
                else:
                    await msg.ack()
            if pending_ack is not None:
                await pending_ack.ack()  # AckAll: one acknowledgement covers the batch
                self._unacked = 0

    async def _deliver(self, msg: Any, sequence: int, rest: list[Any],
                       loop: asyncio.AbstractEventLoop,
                       worker: concurrent.futures.Executor) -> bool:
        """Commit one message to the sink; wait (and keep the server from redelivering)
        while it is full. False if asked to stop meanwhile."""
        try:
            if self.sink.deliver(msg.data, sequence, 0):
                self.counters.forwarded += 1
            else:
                self.counters.duplicates += 1
            return True
        except shmipc.Full:
            pass
        except shmipc.ChannelClosed as exc:
            raise BridgeError(f"the local channel is closed for sending: {exc}") from exc
        touched = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() - touched > self.ack_wait / 3:
                for waiting in rest:  # back-pressure: hold them, never drop, never redeliver
                    try:
                        await waiting.in_progress()
                    except Exception:
                        pass
                touched = time.monotonic()
            try:
                applied = await loop.run_in_executor(worker, self.sink.deliver, msg.data,
                                                     sequence, 0.25)
            except shmipc.Full:
                continue
            except shmipc.ChannelClosed as exc:
                raise BridgeError(f"the local channel is closed for sending: {exc}") from exc
            if applied:
                self.counters.forwarded += 1
            else:
                self.counters.duplicates += 1
            return True
        return False
