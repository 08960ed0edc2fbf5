"""The out-bridge: a local channel (a :class:`~shmipc.bridge.local.Source`) to a JetStream subject.

The invariant: a message leaves the channel only after JetStream acknowledged it. The bridge
claims a batch in place (``Channel.recv_many_view``: up to ``max_inflight`` messages, under the
consumer lock), publishes every message straight from its view of the ring with the id
``<channel id hex>:<read position>`` in the header ``Nats-Msg-Id``, and commits the batch in the
channel once JetStream has acknowledged all of them. A bridge killed at any instant leaves the
batch in the channel at the same positions: the restarted bridge publishes it again with the
same ids, and JetStream's de-duplication window drops those it had stored.

The messages of a batch are all in flight at once, each acknowledged through one wildcard reply
subscription. A failed or timed-out publication, or a reconnection, makes the bridge wait a
moment and republish the batch's unacknowledged messages in order (duplicates dropped again).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg

from ._common import (
    NO_RESPONDERS,
    BridgeError,
    BridgeStatistics,
    Counters,
    NatsOptions,
    connect,
    describe,
    ensure_stream,
    retry_api,
)
from .local import Source

log = logging.getLogger("shmipc.bridge")

MSG_ID = "Nats-Msg-Id"
STOP_GRACE = 5.0  # seconds a stopping bridge still waits for the acknowledgements of a batch
FLUSH_BYTES = 256 << 10  # payload bytes published between two chances for nats-py to send


@dataclass
class _Flight:
    """One message of the batch in flight: its payload (a view of the ring) and id."""

    payload: memoryview
    msg_id: str
    token: int = 0
    acked: bool = False


class _Unacknowledged(Exception):
    """Stopping with publications unacknowledged: the batch stays in the channel."""


class OutBridge:
    """Forward a local source (a channel) to a JetStream subject; see the module docstring.

    Args:
        source: the local end, e.g. ``ChannelSource(Channel.open(path))``.
        subject: the JetStream subject to publish to.
        nats_options: servers and stream.
        max_inflight: messages claimed, and in flight, at once (one batch).
        ack_timeout: seconds after which an unacknowledged publication counts as failed and the
            batch's unacknowledged messages are republished.
        count: stop after this many messages were forwarded (None: run until stopped or the
            channel is closed and drained).
    """

    direction = "out"

    def __init__(self, source: Source, subject: str, *,
                 nats_options: NatsOptions | None = None, max_inflight: int = 1024,
                 ack_timeout: float = 5.0, count: int | None = None) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1 (got {max_inflight})")
        self.source = source
        self.subject = subject
        self.options = nats_options or NatsOptions()
        self.max_inflight = max_inflight
        self.ack_timeout = ack_timeout
        self.count = count
        self.counters = Counters()
        self.closed_source = False
        self._batch: list[_Flight] = []
        self._unacked = 0
        self._sent_at = 0.0
        self._waiting: dict[int, _Flight] = {}
        self._next_token = 0
        self._trouble = ""
        self._progress = asyncio.Event()
        self._stopping = asyncio.Event()
        self._id_prefix = ""
        self._reply_prefix = ""
        self._nc: nats.NATS | None = None
        self._taken = 0
        self._fatal: BridgeError | None = None

    # --- control ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the bridge to stop: it claims nothing more, waits a few seconds for the
        acknowledgements of the batch in flight (committing it if they come, leaving it in the
        channel if not), and returns from :meth:`run`. Safe from a signal handler installed
        with ``loop.add_signal_handler``."""
        self._stopping.set()
        self._progress.set()

    def statistics(self) -> BridgeStatistics:
        """A snapshot of the counters (see :class:`BridgeStatistics`)."""
        c = self.counters
        try:
            lag = self.source.lag()
        except Exception:
            lag = -1
        return BridgeStatistics(
            direction="out", forwarded=c.forwarded, duplicates=c.duplicates,
            pending_acks=self._unacked, lag=lag, rate=c.update_rate(),
            reconnects=c.reconnects, resyncs=c.resyncs, last_error=c.last_error,
            elapsed=time.monotonic() - c.started)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> BridgeStatistics:
        """Forward until stopped, until ``count`` messages are forwarded, or until the channel
        is closed and drained.

        Raises:
            BridgeError: JetStream refuses the subject for good, or a message exceeds the
                server's ``max_payload`` (it stays in the channel).
        """
        loop = asyncio.get_running_loop()
        worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shmipc-bridge")
        try:
            self._nc = nc = await connect(self.options, self.counters, self._stopping)
            try:
                js = nc.jetstream(timeout=self.options.request_timeout)
                await retry_api("stream set-up",
                                lambda: ensure_stream(js, self.options, self.subject),
                                self.counters, self._stopping)
                self._reply_prefix = nc.new_inbox() + "."
                await nc.subscribe(self._reply_prefix + "*", cb=self._on_ack)
                self._id_prefix = self.source.source_id.hex() + ":"
                await self._forward(loop, worker)
            finally:
                try:
                    await asyncio.wait_for(nc.close(), 5)
                except Exception:
                    pass
        finally:
            worker.shutdown(wait=True)  # a wait() in progress ends within its 0.2 s
        return self.statistics()

    async def _forward(self, loop: asyncio.AbstractEventLoop,
                       worker: concurrent.futures.Executor) -> None:
        assert self._nc is not None
        while not self._stopping.is_set():
            if self.count is not None and self._taken >= self.count:
                break
            if not self._nc.is_connected:
                # Claim nothing while disconnected: the channel fills and its producers block.
                await self._wait_progress(0.05)
                continue
            room = self.max_inflight
            if self.count is not None:
                room = min(room, self.count - self._taken)
            # The claim is made and ended in this thread (a claim belongs to its thread); it
            # is committed only if the block ends normally, after every acknowledgement.
            claim = self.source.claim(room)
            try:
                with claim as batch:
                    if batch:
                        await self._send_batch(batch)
            except _Unacknowledged as exc:
                log.warning("stopping with %s publication(s) unacknowledged; their messages "
                            "stay in the channel", exc)
                break
            if batch:
                self._taken += len(batch)
                self.counters.forwarded += len(batch)
                continue
            if claim.closed:
                self.closed_source = True
                log.info("the channel is closed and drained")
                break
            await loop.run_in_executor(worker, self.source.wait, 0.2)

    async def _send_batch(self, batch: list[tuple[int, memoryview]]) -> None:
        """Publish a claimed batch and wait until JetStream acknowledged all of it."""
        prefix = self._id_prefix
        self._batch = [_Flight(view, prefix + str(key)) for key, view in batch]
        self._unacked = len(self._batch)
        try:
            unflushed = 0
            for flight in self._batch:
                await self._publish(flight)
                unflushed += len(flight.payload)
                if unflushed >= FLUSH_BYTES:  # let nats-py's flusher send what is pending
                    unflushed = 0
                    await asyncio.sleep(0)
            self._sent_at = time.monotonic()
            await self._await_acks()
        finally:
            # The views die with the claim: nothing may reach them afterwards (nats-py copied
            # each payload into its own buffer when it was published).
            self._batch = []
            self._waiting.clear()
            self._unacked = 0

    async def _await_acks(self) -> None:
        deadline: float | None = None
        reconnects = self.counters.reconnects
        republished_stopping = False
        assert self._nc is not None
        while True:
            self._progress.clear()  # before looking: an acknowledgement from now on wakes us
            if self._fatal is not None:
                raise self._fatal
            if not self._unacked:
                return
            now = time.monotonic()
            if self._stopping.is_set():
                if deadline is None:
                    deadline = now + STOP_GRACE
                elif now > deadline:
                    raise _Unacknowledged(self._unacked)
            if not self._nc.is_connected:
                await self._wait_progress(0.05)
                continue
            if self.counters.reconnects != reconnects:
                reconnects = self.counters.reconnects
                self._note_trouble("reconnected: answers in flight may be lost")
            if self._trouble or now - self._sent_at > self.ack_timeout:
                if not self._stopping.is_set():
                    await self._republish()
                elif not republished_stopping:  # stopping: once more at most, no back-off
                    republished_stopping = True
                    await self._publish_unacked()
                else:
                    await self._wait_progress(0.1)
                continue
            await self._wait_progress(0.1)

    # --- publishing ---------------------------------------------------------------------

    async def _publish(self, flight: _Flight) -> None:
        assert self._nc is not None
        self._next_token += 1
        flight.token = self._next_token
        self._waiting[flight.token] = flight
        try:
            await self._nc.publish(self.subject, flight.payload,  # type: ignore[arg-type]
                                   reply=self._reply_prefix + str(flight.token),
                                   headers={MSG_ID: flight.msg_id})
        except nats.errors.MaxPayloadError:
            self._fatal = BridgeError(
                f"a message of {len(flight.payload)} bytes exceeds the NATS server's "
                f"max_payload ({self._nc.max_payload} bytes); raise max_payload in the "
                "server's configuration and restart the bridge (the message stays in the "
                "channel)")
            self._progress.set()
        except Exception as exc:  # disconnected with a full buffer, closed: republish later
            self._note_trouble(describe(exc))

    async def _publish_unacked(self) -> None:
        self._trouble = ""
        self._waiting.clear()  # answers to the earlier publications are ignored from here
        for flight in self._batch:
            if not flight.acked:
                await self._publish(flight)
        self._sent_at = time.monotonic()

    async def _on_ack(self, msg: Msg) -> None:
        try:
            token = int(msg.subject[len(self._reply_prefix):])
        except ValueError:
            return
        flight = self._waiting.pop(token, None)
        if flight is None:
            return  # an answer to a publication republished since, or of a finished batch
        if not msg.data:
            status = msg.headers.get("Status", "") if msg.headers else ""
            self._note_trouble("no stream answered for subject " + self.subject
                               if status == NO_RESPONDERS else f"empty answer (status {status})")
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            self._note_trouble("an acknowledgement that is not JSON")
            return
        if "error" in answer:
            error = answer["error"]
            self._note_trouble(f"JetStream refused a publication: {error.get('description')}"
                               f" (code {error.get('err_code')})")
            return
        if answer.get("duplicate"):
            self.counters.duplicates += 1
        if not flight.acked:
            flight.acked = True
            self._unacked -= 1
            if not self._unacked:
                self._progress.set()

    def _note_trouble(self, text: str) -> None:
        if not self._trouble:
            log.warning("publication failed: %s; republishing the batch", text)
        self._trouble = text
        self.counters.last_error = text
        self._progress.set()

    async def _wait_progress(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._progress.wait(), timeout)
        except TimeoutError:
            pass

    async def _republish(self) -> None:
        """Republish the batch's unacknowledged messages in order, after a pause that grows
        while the trouble lasts (ids unchanged: JetStream drops what it stored already)."""
        delay = 0.0 if self._trouble.startswith("reconnected") else 0.1
        while True:
            if not self._trouble:
                self._note_trouble(f"no acknowledgement within {self.ack_timeout} s")
            self.counters.resyncs += 1
            self._trouble = ""
            if delay:
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                    return  # stopping: _await_acks decides
                except TimeoutError:
                    pass
            delay = max(delay, 0.1)
            if self._nc is not None and self._nc.is_connected:
                try:
                    await self._nc.flush(timeout=int(max(1, self.ack_timeout)))
                except Exception as exc:
                    self._note_trouble(describe(exc))
                    delay = min(delay * 2, 2.0)
                    continue
            await self._publish_unacked()
            return
