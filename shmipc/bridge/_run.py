"""Running a bridge: signals (Ctrl-C stops cleanly), ``--stats`` lines, a progress line on a
terminal, and the ``shmipc bridge`` command built on them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ._common import BridgeError, BridgeStatistics, describe

log = logging.getLogger("shmipc.bridge")

StatsCallback = Callable[[BridgeStatistics], None]


async def run_async(bridge: Any, *, on_stats: StatsCallback | None = None,
                    stats_interval: float = 1.0) -> BridgeStatistics:
    """Run ``bridge`` (an :class:`OutBridge` or :class:`InBridge`) in the running event loop,
    calling ``on_stats`` every ``stats_interval`` seconds and once at the end."""
    ticker = None
    if on_stats is not None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(stats_interval)
                on_stats(bridge.statistics())

        ticker = asyncio.create_task(tick())
    try:
        final: BridgeStatistics = await bridge.run()
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    if on_stats is not None:
        on_stats(final)
    return final


def run(bridge: Any, *, on_stats: StatsCallback | None = None,
        stats_interval: float = 1.0) -> BridgeStatistics:
    """Run ``bridge`` in a new event loop until it ends; Ctrl-C and SIGTERM stop it cleanly.

    The first SIGINT or SIGTERM asks the bridge to stop (an out-bridge waits a few seconds for
    the acknowledgements in flight; whatever is left stays in its channel); a second SIGINT
    abandons the wait. Nothing is lost either way. The bridge's local channel handle is
    closed at the end (``await bridge.run()`` leaves it open).

    Returns:
        The final statistics.

    Raises:
        KeyboardInterrupt: the run was ended by SIGINT (after stopping cleanly).
        BridgeError: the bridge could not go on.
    """
    interrupted: list[int] = []

    async def main() -> BridgeStatistics:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            interrupted.append(signum)
            if len([s for s in interrupted if s == signal.SIGINT]) > 1 and task is not None:
                task.cancel()
            bridge.stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await run_async(bridge, on_stats=on_stats, stats_interval=stats_interval)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    except BridgeError:
        if signal.SIGINT in interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        with contextlib.suppress(Exception):
            bridge.source.close() if hasattr(bridge, "source") else bridge.sink.close()
    if signal.SIGINT in interrupted:
        raise KeyboardInterrupt
    return result


# --- the command line -----------------------------------------------------------------------


def _number(n: float) -> str:
    return f"{n:,.0f}"


def progress_line(stats: BridgeStatistics, label: str, count: int | None) -> str:
    """The one-line status a terminal shows while a bridge runs."""
    done = _number(stats.forwarded)
    if count:
        done += f"/{_number(count)} ({100.0 * stats.forwarded / count:.0f}%)"
    rate = f"{stats.rate / 1000:.1f}k/s" if stats.rate >= 1000 else f"{stats.rate:.0f}/s"
    text = (f"{label}: {done} forwarded, {_number(stats.pending_acks)} pending acks, "
            f"lag {_number(stats.lag)}, {rate}")
    if stats.reconnects:
        text += f", {stats.reconnects} reconnects"
    return text


class _Progress:
    """A status line on a terminal, redrawn in place; a final line is left when done."""

    def __init__(self, stream: TextIO, label: str, count: int | None) -> None:
        self.stream = stream
        self.label = label
        self.count = count
        self.drawn = False

    def draw(self, stats: BridgeStatistics, final: bool = False) -> None:
        line = progress_line(stats, self.label, self.count)
        self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        self.stream.flush()
        self.drawn = not final


def command(args: argparse.Namespace) -> int:
    """``shmipc bridge out|in PATH SUBJECT``: build the bridge from parsed arguments, run it,
    print statistics and progress. Returns the exit status (0, or 130 after Ctrl-C).

    Raises:
        BridgeError: a one-line failure for the command line to print.
    """
    from . import default_durable_name, open_in, open_out

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="shmipc bridge: %(message)s", stream=sys.stderr)
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # its reconnect noise; we report ours
    servers = args.server or ["nats://127.0.0.1:4222"]
    common: dict[str, Any] = dict(servers=servers, stream=args.stream, count=args.count,
                                  capacity=args.capacity, create_stream=not args.no_create_stream,
                                  replicas=args.replicas, duplicate_window=args.duplicate_window)
    try:
        if args.direction == "out":
            bridge: Any = open_out(args.path, args.subject, max_inflight=args.max_inflight,
                                   **common)
            label = f"out {args.path} -> {args.subject}"
        else:
            bridge = open_in(args.path, args.subject,
                             durable=args.durable or default_durable_name(args.path,
                                                                          args.subject),
                             batch=args.batch, ack_wait=args.ack_wait, **common)
            label = f"in {args.subject} -> {args.path}"
    except (OSError, RuntimeError) as exc:
        raise BridgeError(f"{args.path}: {describe(exc)}") from exc

    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = _Progress(sys.stderr, label, args.count) if show else None
    stats_out = sys.stdout if args.stats else None
    last_stats: list[BridgeStatistics] = []

    def on_stats(stats: BridgeStatistics) -> None:
        last_stats.append(stats)
        del last_stats[:-1]
        if stats_out is not None:
            stats_out.write(json.dumps(stats.as_dict()) + "\n")
            stats_out.flush()
        if progress is not None:
            progress.draw(stats)

    interval = args.stats_interval if args.stats else 0.25
    try:
        final = run(bridge, on_stats=on_stats if (stats_out or progress) else None,
                    stats_interval=interval)
    except KeyboardInterrupt:
        if progress is not None and last_stats:
            progress.draw(bridge.statistics(), final=True)
        return 130
    except BridgeError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        raise BridgeError(describe(exc)) from exc
    if progress is not None:
        progress.draw(final, final=True)
    return 0
