"""Channel: the bytes and object APIs, over file and anonymous backings, with real processes."""

from __future__ import annotations

import os

import pytest

import shmipc
from conftest import fork_run, join


def test_send_recv_roundtrip(make_channel):
    ch = make_channel()
    ch.send({"name": "b", "age": 20})
    ch.send_bytes(b"raw")
    assert ch.recv(timeout=1) == {"name": "b", "age": 20}
    assert ch.recv_bytes(timeout=1) == b"raw"


def test_parent_and_child_after_fork(make_channel):
    ch = make_channel(capacity=4096)
    count = 5000

    def child() -> None:
        for i in range(count):
            ch.send({"i": i})
        ch.close_send()

    pid = fork_run(child)
    got = [obj["i"] for obj in ch]
    assert join(pid) == 0
    assert got == list(range(count))
