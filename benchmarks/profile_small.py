"""Where the time of one small message goes, per side, measured in one process.

    python benchmarks/profile_small.py

The per-message protocol (locks, frame, copy, commit, wake-up) is one call into the compiled
core, so from Python it splits into msgpack and the core: ``send_bytes``/``recv_bytes`` of the
packed payload time the core alone, ``send``/``recv`` add msgpack, and the one-process floor
(pack, copy in, copy out, unpack) is what any IPC adds to. Each figure is the best of 5 timeit
runs; the ring is emptied between calls, so no call waits.
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import shmipc  # noqa: E402

N = 200_000


def best(stmt: str, env: dict[str, object]) -> float:
    return min(timeit.repeat(stmt, globals=env, number=N, repeat=5)) / N * 1e9


def main() -> None:
    ch = shmipc.Channel.anonymous(1 << 22)
    obj = {"name": "b", "age": 20}
    encode, decode = ch._codec.encode, ch._codec.decode
    payload = encode(obj)
    buf = memoryview(bytearray(1 << 16))
    n = len(payload)
    env = dict(ch=ch, obj=obj, p=payload, encode=encode, decode=decode, buf=buf, n=n)
    pack_ns = best("encode(obj)", env)
    unpack_ns = best("decode(p)", env)
    core_pair = best("ch.send_bytes(p); ch.recv_bytes()", env)
    whole_pair = best("ch.send(obj); ch.recv()", env)
    floor = best("q = encode(obj); buf[:n] = q; decode(bytes(buf[:n]))", env)
    result = {
        "pack_ns": round(pack_ns),
        "unpack_ns": round(unpack_ns),
        "core_send_bytes_plus_recv_bytes_ns": round(core_pair),
        "send_plus_recv_ns": round(whole_pair),
        "msgpack_share_of_pair": round((pack_ns + unpack_ns) / whole_pair, 2),
        "one_process_floor_ns": round(floor),
        "pair_over_floor": round(whole_pair / floor, 2),
    }
    print(json.dumps(result, indent=1))
    ch.close()


if __name__ == "__main__":
    main()
