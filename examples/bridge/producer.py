"""Host A: a producer sends orders into its local channel; a bridge carries them to host B.

Two "hosts" on one machine: host A's channel ``/tmp/host-a.shmipc`` and host B's channel
``/tmp/host-b.shmipc``, joined through NATS JetStream by two bridges. Five terminals:

    python examples/bridge/server.py                                     # 1: NATS
    python -m shmipc bridge out /tmp/host-a.shmipc demo.orders           # 2: host A's bridge
    python -m shmipc bridge in /tmp/host-b.shmipc demo.orders            # 3: host B's bridge
    python examples/bridge/consumer.py /tmp/host-b.shmipc                # 4: host B
    python examples/bridge/producer.py /tmp/host-a.shmipc                # 5: host A

(Add ``--server nats://127.0.0.1:PORT`` to both bridges when the server is not on 4222.)

The producer prints ``sent 1000 orders`` and exits. The consumer prints the first three orders
and a summary::

    order 0: 1 x widget-0
    order 1: 2 x widget-1
    order 2: 3 x widget-2
    received 1000 orders, numbers 0..999, each exactly once, in order

The bridges show a progress line on the terminal (``1,000 forwarded, 0 pending acks, lag 0``)
and keep running; Ctrl-C stops each cleanly (status 130). Start the five in any order: the
channels keep what arrives before its reader, JetStream keeps what arrives before the in-bridge,
and killing either bridge (``kill -9``) and starting it again loses and doubles nothing. The
orders are msgpack objects; the bridges carry their bytes untouched.
"""

from __future__ import annotations

import argparse
import sys

import shmipc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="host A's channel file (created if missing)")
    parser.add_argument("--count", type=int, default=1000, help="orders to send")
    args = parser.parse_args(argv)
    with shmipc.Channel.open_or_create(args.path) as channel:
        for n in range(args.count):
            channel.send({"order": n, "item": f"widget-{n}", "quantity": n % 5 + 1})
    print(f"sent {args.count} orders", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
