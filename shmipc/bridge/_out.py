"""The out-bridge: a local channel (a :class:`~shmipc.bridge.local.Source`) to a JetStream subject.

The invariant: every message is, at every instant, in the channel, in the outbox, or stored by
JetStream. A message is appended to the outbox before its ``recv_view`` block ends (the
channel's commit), published with the id ``<channel id hex>:<read position>`` in the header
``Nats-Msg-Id``, and leaves the outbox only once JetStream has acknowledged it. A restarted
bridge republishes the outbox's unacknowledged records with their old ids first; JetStream's
de-duplication window drops those it had stored already.

Many publications are in flight at once (``max_inflight``), each acknowledged through one
wildcard reply subscription. A failed or timed-out publication stops new ones: the bridge waits
a moment and republishes the whole unacknowledged window in order (duplicates dropped again).
"""

from __future__ import annotations

import asyncio
import collections
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
from ._journal import DEFAULT_COMPACT_SIZE, Entry, Outbox
from .local import Source

log = logging.getLogger("shmipc.bridge")

MSG_ID = "Nats-Msg-Id"


@dataclass
class _Flight:
    """One publication in flight."""

    entry: Entry
    msg_id: str
    token: int = 0
    sent_at: float = 0.0
    acked: bool = False


class OutBridge:
    """Forward a local source (a channel) to a JetStream subject; see the module docstring.

    Args:
        source: the local end, e.g. ``ChannelSource(Channel.open(path))``.
        subject: the JetStream subject to publish to.
        outbox: the path of this bridge's outbox file (one per out-bridge; keep it across
            restarts: it holds what was taken from the channel and not yet acknowledged).
        nats_options: servers and stream.
        max_inflight: publications in flight at once.
        max_inflight_bytes: payload bytes in flight at once.
        ack_timeout: seconds after which an unacknowledged publication counts as failed and the
            window is republished.
        count: stop after this many messages were forwarded (None: run until stopped or the
            channel is closed and drained).
    """

    direction = "out"

    def __init__(self, source: Source, subject: str, outbox: str, *,
                 nats_options: NatsOptions | None = None, max_inflight: int = 1024,
                 max_inflight_bytes: int = 8 << 20, ack_timeout: float = 5.0,
                 count: int | None = None, compact_size: int = DEFAULT_COMPACT_SIZE) -> None:
        self.source = source
        self.subject = subject
        self.outbox_path = outbox
        self.options = nats_options or NatsOptions()
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.ack_timeout = ack_timeout
        self.count = count
        self.compact_size = compact_size
        self.counters = Counters()
        self.closed_source = False
        self._inflight: collections.deque[_Flight] = collections.deque()
        self._inflight_bytes = 0
        self._waiting: dict[int, _Flight] = {}
        self._next_token = 0
        self._trouble = ""
        self._progress = asyncio.Event()
        self._stopping = asyncio.Event()
        self._outbox: Outbox | None = None
        self._id_prefix = ""
        self._reply_prefix = ""
        self._nc: nats.NATS | None = None
        self._taken = 0
        self._fatal: BridgeError | None = None

    # --- control ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the bridge to stop: it takes nothing more, waits a few seconds for the
        acknowledgements in flight, and returns from :meth:`run`. Safe from a signal handler
        installed with ``loop.add_signal_handler``."""
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
            pending_acks=len(self._inflight), lag=lag, rate=c.update_rate(),
            reconnects=c.reconnects, resyncs=c.resyncs, last_error=c.last_error,
            elapsed=time.monotonic() - c.started)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> BridgeStatistics:
        """Forward until stopped, until ``count`` messages are forwarded, or until the channel
        is closed and drained (then everything taken is acknowledged first).

        Raises:
            BridgeError: the outbox cannot be used, or JetStream refuses the subject for good.
            OSError: the outbox could not be written (the message concerned was published and
                acknowledged first).
        """
        loop = asyncio.get_running_loop()
        worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shmipc-bridge")
        try:
            self._outbox = Outbox.open(self.outbox_path, self.source.source_id,
                                       compact_size=self.compact_size)
        except Exception as exc:
            raise BridgeError(f"outbox {self.outbox_path}: {describe(exc)}") from exc
        outbox = self._outbox
        try:
            self._nc = nc = await connect(self.options, self.counters, self._stopping)
            try:
                js = nc.jetstream(timeout=self.options.request_timeout)
                await retry_api("stream set-up",
                                lambda: ensure_stream(js, self.options, self.subject),
                                self.counters, self._stopping)
                self._reply_prefix = nc.new_inbox() + "."
                await nc.subscribe(self._reply_prefix + "*", cb=self._on_ack)
                await self._recover(outbox)
                await self._forward(loop, worker, outbox)
            finally:
                await self._finish(outbox)
                try:
                    await asyncio.wait_for(nc.close(), 5)
                except Exception:
                    pass
        finally:
            # The worker first: a take it is still running (after a second Ctrl-C cancelled
            # us) ends with its messages in the outbox, which must still be open then.
            worker.shutdown(wait=True)
            outbox.close()
        return self.statistics()

    async def _recover(self, outbox: Outbox) -> None:
        """Republish what a killed predecessor left unacknowledged, then adopt the source."""
        prefix = outbox.source_id.hex() + ":"
        if outbox.recovered:
            log.info("republishing %d unacknowledged message(s) from the outbox",
                     len(outbox.recovered))
        for entry in outbox.recovered:
            await self._publish(_Flight(entry, prefix + str(entry.position)))
        outbox.recovered = []
        if outbox.source_id != self.source.source_id:
            await self._drain(None)
            if self._inflight:
                raise BridgeError("stopped before the outbox of the previous channel was "
                                  "acknowledged; it is kept for the next run")
            log.info("the channel was made anew (another id): starting a new outbox")
            outbox.reset(self.source.source_id)
        self._id_prefix = self.source.source_id.hex() + ":"

    async def _forward(self, loop: asyncio.AbstractEventLoop,
                       worker: concurrent.futures.Executor, outbox: Outbox) -> None:
        flushed = time.monotonic()
        reconnects = self.counters.reconnects
        assert self._nc is not None
        while not self._stopping.is_set():
            self._progress.clear()  # before looking: an acknowledgement from now on wakes us
            if self._fatal is not None:
                raise self._fatal
            if self.count is not None and self._taken >= self.count:
                break
            if not self._nc.is_connected:
                # Take nothing new while disconnected: after the reconnection the window is
                # republished first, so that the stream keeps the channel's order.
                await self._wait_progress(0.05)
                continue
            if self.counters.reconnects != reconnects:
                reconnects = self.counters.reconnects
                if self._inflight:
                    self._note_trouble("reconnected: answers in flight may be lost")
            now = time.monotonic()
            if now - flushed > 0.1:
                outbox.flush()
                flushed = now
            if self._trouble or (self._inflight and
                                 now - self._inflight[0].sent_at > self.ack_timeout):
                await self._republish()
                continue
            room = self.max_inflight - len(self._inflight)
            room_bytes = self.max_inflight_bytes - self._inflight_bytes
            if room <= 0 or room_bytes <= 0:
                await self._wait_progress(0.1)
                continue
            if outbox.size >= outbox.compact_size:
                await self._drain(None)  # a short bubble: then the file starts over
                outbox.compact()
                continue
            if self.count is not None:
                room = min(room, self.count - self._taken)
            took = self.source.take(outbox, room, room_bytes, 0)
            if not took.entries and not took.closed and took.error is None:
                if self._inflight:
                    await asyncio.sleep(0.002)
                    took = self.source.take(outbox, room, room_bytes, 0)
                else:
                    outbox.flush()
                    outbox.compact(force=True)
                    took = await loop.run_in_executor(worker, self.source.take, outbox, room,
                                                      room_bytes, 0.2)
            for entry in took.entries:
                await self._publish(_Flight(entry, self._id_prefix + str(entry.position)))
            self._taken += len(took.entries)
            if took.error is not None:
                await self._drain(None)
                raise took.error
            if took.closed:
                self.closed_source = True
                log.info("the channel is closed and drained")
                break

    async def _finish(self, outbox: Outbox) -> None:
        """Wait for what is in flight: without limit after a normal end, a few seconds when
        asked to stop (what is left stays in the outbox for the next run)."""
        try:
            await self._drain(5.0 if self._stopping.is_set() else None)
        except Exception as exc:
            log.warning("stopping with %d publication(s) unacknowledged (%s); they stay in "
                        "the outbox", len(self._inflight), describe(exc))
        _tidy(outbox.flush)
        if not self._inflight:
            _tidy(lambda: outbox.compact(force=True))

    # --- publishing ---------------------------------------------------------------------

    async def _publish(self, flight: _Flight, *, append: bool = True) -> None:
        assert self._nc is not None
        self._next_token += 1
        flight.token = self._next_token
        flight.sent_at = time.monotonic()
        flight.acked = False
        if append:
            self._inflight.append(flight)
            self._inflight_bytes += len(flight.entry.payload)
        self._waiting[flight.token] = flight
        try:
            await self._nc.publish(self.subject, flight.entry.payload,
                                   reply=self._reply_prefix + str(flight.token),
                                   headers={MSG_ID: flight.msg_id})
        except nats.errors.MaxPayloadError:
            self._fatal = BridgeError(
                f"a message of {len(flight.entry.payload)} bytes exceeds the NATS server's "
                f"max_payload ({self._nc.max_payload} bytes); raise max_payload in the "
                "server's configuration and restart the bridge (the message is kept in the "
                "outbox)")
            self._progress.set()
        except Exception as exc:  # disconnected with a full buffer, closed: republish later
            self._note_trouble(describe(exc))

    async def _on_ack(self, msg: Msg) -> None:
        try:
            token = int(msg.subject[len(self._reply_prefix):])
        except ValueError:
            return
        flight = self._waiting.pop(token, None)
        if flight is None:
            return  # an answer to a publication republished since
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
        flight.acked = True
        self._settle()

    def _settle(self) -> None:
        """Retire the acknowledged prefix of the window, in order."""
        inflight = self._inflight
        outbox = self._outbox
        retired = False
        while inflight and inflight[0].acked:
            flight = inflight.popleft()
            self._inflight_bytes -= len(flight.entry.payload)
            self.counters.forwarded += 1
            if outbox is not None:
                outbox.acknowledge(flight.entry.position)
            retired = True
        if retired:
            self._progress.set()

    def _note_trouble(self, text: str) -> None:
        if not self._trouble:
            log.warning("publication failed: %s; republishing the window", text)
        self._trouble = text
        self.counters.last_error = text
        self._progress.set()

    async def _wait_progress(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._progress.wait(), timeout)
        except TimeoutError:
            pass

    async def _republish(self) -> None:
        """Republish the whole unacknowledged window in order, after a pause that grows while
        the trouble lasts (ids unchanged: JetStream drops what it stored already)."""
        delay = 0.0 if self._trouble.startswith("reconnected") else 0.1
        while True:
            if not self._trouble:
                self._note_trouble(f"no acknowledgement within {self.ack_timeout} s")
            self.counters.resyncs += 1
            self._trouble = ""
            self._waiting.clear()
            if delay:
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                    return
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
            for flight in list(self._inflight):
                if not flight.acked:
                    await self._publish(flight, append=False)
            return

    async def _drain(self, timeout: float | None) -> None:
        """Wait until nothing is in flight, republishing as needed; ``timeout`` bounds it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._progress.clear()
            if self._fatal is not None:
                raise self._fatal
            if not self._inflight:
                return
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise TimeoutError(f"{len(self._inflight)} publication(s) unacknowledged")
            if self._trouble or now - self._inflight[0].sent_at > self.ack_timeout:
                if self._stopping.is_set() and deadline is not None:
                    # Stopping: one republication at most, no back-off.
                    self._trouble = ""
                    self._waiting.clear()
                    for flight in list(self._inflight):
                        if not flight.acked:
                            await self._publish(flight, append=False)
                else:
                    await self._republish()
                    if self._stopping.is_set() and deadline is None:
                        deadline = time.monotonic() + 5.0
                continue
            await self._wait_progress(0.1)


def _tidy(fn: object) -> None:
    """Call ``fn`` and ignore an OSError (tidying up at the end of a run)."""
    try:
        fn()  # type: ignore[operator]
    except OSError as exc:
        log.warning("outbox: %s", describe(exc))
