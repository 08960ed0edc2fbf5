"""Consumer of a file channel: prints every message it receives (see ``producer.py``).

Terminal 1::

    python examples/file_channel/consumer.py /tmp/demo.shmipc

Terminal 2::

    python examples/file_channel/producer.py /tmp/demo.shmipc --count 5

The consumer prints ``received 0: hello from <pid>`` .. ``received 4: hello from <pid>`` and
waits for more; a producer started later continues with ``received 5: ...``. ``--count N``
exits after N messages. Ctrl-C exits cleanly (status 130, no traceback); messages not yet
received stay in the file for the next consumer.
"""

from __future__ import annotations

import argparse
import sys

import shmipc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the channel file (created if missing)")
    parser.add_argument("--count", type=int, default=None, help="exit after N messages")
    args = parser.parse_args(argv)
    with shmipc.Channel.open_or_create(args.path, 1 << 16) as channel:
        print("waiting for messages", flush=True)
        # Until the channel is closed for sending and drained (or --count messages).
        for received, message in enumerate(channel, 1):
            print(f"received {message['seq']}: {message['text']}", flush=True)
            if args.count is not None and received >= args.count:
                break
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
