"""Host B: a consumer receives the orders that the bridges carried from host A.

See ``producer.py`` for the five commands. This one::

    python examples/bridge/consumer.py /tmp/host-b.shmipc

prints the first three orders and, once all have arrived::

    order 0: 1 x widget-0
    order 1: 2 x widget-1
    order 2: 3 x widget-2
    received 1000 orders, numbers 0..999, each exactly once, in order

Ctrl-C exits cleanly (status 130); orders not yet received stay in the channel file.
"""

from __future__ import annotations

import argparse
import sys

import shmipc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="host B's channel file (created if missing)")
    parser.add_argument("--count", type=int, default=1000, help="orders to wait for")
    args = parser.parse_args(argv)
    numbers = []
    with shmipc.Channel.open_or_create(args.path) as channel:
        while len(numbers) < args.count:
            order = channel.recv()
            if len(numbers) < 3:
                print(f"order {order['order']}: {order['quantity']} x {order['item']}",
                      flush=True)
            numbers.append(order["order"])
    once = len(set(numbers)) == len(numbers) and sorted(numbers) == list(range(args.count))
    in_order = numbers == sorted(numbers)
    print(f"received {len(numbers)} orders, numbers {min(numbers)}..{max(numbers)}, "
          + ("each exactly once" if once else "NOT each exactly once")
          + (", in order" if in_order else ", NOT in order"), flush=True)
    return 0 if once else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
