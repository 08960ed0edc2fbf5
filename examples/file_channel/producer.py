"""Producer of a file channel: two unrelated processes meet by path, started in either order.

Terminal 1::

    python examples/file_channel/consumer.py /tmp/demo.shmipc

Terminal 2::

    python examples/file_channel/producer.py /tmp/demo.shmipc --count 5

The producer prints ``sent 0: hello from <pid>`` .. ``sent 4: ...``; the consumer prints
``received 0: hello from <pid>`` .. ``received 4: ...`` and waits for more. Whichever starts
first creates the channel (``Channel.open_or_create``); the other opens it. Start the producer
first and the messages wait in the file (even with no process running) until a consumer comes.
Run the producer again and it continues the same channel: its messages are numbered from 5 on,
because the channel counts the messages ever sent. ``--interval SECONDS`` paces the sends.

Ctrl-C stops either one cleanly (status 130, no traceback); the channel file stays for the next
run. Remove it, and its semaphores, with ``python examples/file_channel/producer.py PATH
--unlink``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import shmipc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the channel file (created if missing)")
    parser.add_argument("--count", type=int, default=5, help="messages to send (default 5)")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between sends")
    parser.add_argument("--unlink", action="store_true",
                        help="remove the channel file and its semaphores, and exit")
    args = parser.parse_args(argv)
    if args.unlink:
        try:
            channel = shmipc.Channel.open(args.path)
        except FileNotFoundError:
            return 0
        channel.unlink()
        channel.close()
        return 0
    with shmipc.Channel.open_or_create(args.path, 1 << 16) as channel:
        for _ in range(args.count):
            # Numbered by the channel's own count of messages ever sent, so a producer started
            # later continues the numbering (exact while one producer runs at a time).
            seq = channel.statistics().sent
            channel.send({"seq": seq, "text": f"hello from {os.getpid()}"})
            print(f"sent {seq}: hello from {os.getpid()}", flush=True)
            if args.interval:
                time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
