"""Where the time of one small message goes, per side, measured in one process.

    python benchmarks/profile_small.py

Each component of ``send({"name": "b", "age": 20})`` and ``recv()`` is timed on its own with
timeit (best of 5), on the channel's own memory views and semaphores, then the whole calls; the
difference is the interpreter's share (calls, attribute loads, arithmetic on Python ints).
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shmipc import channel as C  # noqa: E402
from shmipc.layout import Q_READ, Q_RECEIVED, Q_SENT, Q_WRITE, U64_MASK  # noqa: E402

N = 200_000


def best(stmt: str, env: dict[str, object]) -> float:
    return min(timeit.repeat(stmt, globals=env, number=N, repeat=5)) / N * 1e9


def main() -> None:
    ch = C.Channel.anonymous(1 << 22)
    obj = {"name": "b", "age": 20}
    payload = ch._encode(obj)
    env = dict(ch=ch, obj=obj, p=payload, hq=ch._hq, dq=ch._dq, data=ch._data,
               ps=ch._psem, nh=C._next_holder_value, S=C.sync, R=C._RELEASED, Q_WRITE=Q_WRITE,
               Q_READ=Q_READ, Q_SENT=Q_SENT, Q_RECEIVED=Q_RECEIVED, M=U64_MASK,
               H=C._MESSAGE_HEADER)
    n = len(payload)
    parts = {
        "pack (Codec.encode)": best("ch._encode(obj)", env),
        "unpack (Codec.decode)": best("ch._decode(p)", env),
        "lock pair (sem_trywait + holder store, released store + sem_post)":
            best("ps.acquire(0)\ntry:\n    hq[50] = next(S.holder_values)\n"
                 "except StopIteration:\n    hq[50] = nh()\nhq[50] |= R; ps.release()", env),
        "sem_trywait + sem_post alone": best("ps.acquire(0); ps.release()", env),
        "frame write (copy in, header, commit, sent count)":
            best(f"data[8:{8 + n}] = p; dq[0] = {n} | H; hq[Q_WRITE] = 0; "
                 "hq[Q_SENT] = (hq[Q_SENT] + 1) & M", env),
        "frame read (header, copy out, commit, received count)":
            best(f"h = dq[0]; b = bytes(data[8:{8 + n}]); hq[Q_READ] = 0; "
                 "hq[Q_RECEIVED] = (hq[Q_RECEIVED] + 1) & M", env),
    }
    # Whole calls: the ring is emptied between rounds so no call waits.
    whole_pair = best("ch.send(obj); ch.recv()", env)
    send_only = best("ch.send(obj)\nif hq[Q_WRITE] > 3000000: hq[Q_READ] = hq[Q_WRITE]", env)
    recv_env = dict(env)
    result = {"components_ns": {k: round(v) for k, v in parts.items()},
              "send_ns": round(send_only), "send_plus_recv_ns": round(whole_pair),
              "recv_ns": round(whole_pair - send_only)}
    send_parts = (parts["pack (Codec.encode)"] + parts[
        "lock pair (sem_trywait + holder store, released store + sem_post)"]
        + parts["frame write (copy in, header, commit, sent count)"])
    recv_parts = (parts["unpack (Codec.decode)"] + parts[
        "lock pair (sem_trywait + holder store, released store + sem_post)"]
        + parts["frame read (header, copy out, commit, received count)"])
    result["send_interpreter_rest_ns"] = round(send_only - send_parts)
    result["recv_interpreter_rest_ns"] = round(result["recv_ns"] - recv_parts)
    del recv_env
    print(json.dumps(result, indent=1))
    ch.close()


if __name__ == "__main__":
    main()
