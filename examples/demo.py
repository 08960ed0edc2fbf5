"""The shmipc demo: real processes exchanging messages through shared memory.

Run it with ``make demo`` (or ``python examples/demo.py``). It shows the two uses:

1. Two unrelated processes meet at a file channel: a producer process (started with
   ``subprocess``) sends 100,000 small objects, a consumer process receives and checks them;
   then a message left in the file outlives every process and a later process receives it.
2. A parent and a child forked after ``Channel.anonymous()`` talk both ways.

Expected output (numbers vary with the machine)::

    1. file channel /tmp/shmipc-demo-.../demo.shmipc, two unrelated processes
       producer pid 1234 sent 100000 messages
       consumer pid 1235 received 100000 messages in order in 0.41 s (245,000 msg/s)
       a message left in the file was received by a later process: {'note': 'still here'}
    2. anonymous channel, parent and child after fork()
       child pid 1236 answered 5 requests: [1, 4, 9, 16, 25]
    all done: 2 channels, 5 processes, no message lost
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import shmipc

COUNT = 100_000

PRODUCER = textwrap.dedent("""
    import os, sys, shmipc
    with shmipc.Channel.open(sys.argv[1]) as ch:
        for i in range(int(sys.argv[2])):
            ch.send({"name": "b", "age": 20, "seq": i})
        ch.send({"note": "still here"})  # nobody receives this one now
        ch.close_send()
    print(f"   producer pid {os.getpid()} sent {sys.argv[2]} messages", flush=True)
""")

CONSUMER = textwrap.dedent("""
    import os, sys, time, shmipc
    count = int(sys.argv[2])
    with shmipc.Channel.open(sys.argv[1]) as ch:
        start = time.perf_counter()
        for i in range(count):
            msg = ch.recv(timeout=30)
            assert msg["seq"] == i, (msg, i)
        elapsed = time.perf_counter() - start
    print(f"   consumer pid {os.getpid()} received {count} messages in order in "
          f"{elapsed:.2f} s ({count / elapsed:,.0f} msg/s)", flush=True)
""")

LATER = textwrap.dedent("""
    import sys, shmipc
    with shmipc.Channel.open(sys.argv[1]) as ch:
        print("   a message left in the file was received by a later process:", ch.recv(timeout=5))
        ch.unlink()
""")


def file_channel_demo(directory: str) -> None:
    path = os.path.join(directory, "demo.shmipc")
    print(f"1. file channel {path}, two unrelated processes")
    shmipc.Channel.create(path, capacity=1 << 20).close()
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, path, str(COUNT)])
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER, path, str(COUNT)])
    for proc in (producer, consumer):
        if proc.wait(timeout=120) != 0:
            raise SystemExit(f"demo process {proc.pid} failed with exit code {proc.returncode}")
    subprocess.run([sys.executable, "-c", LATER, path], check=True, timeout=60)


def fork_demo() -> None:
    print("2. anonymous channel, parent and child after fork()")
    requests = shmipc.Channel.anonymous(capacity=1 << 16)
    answers = shmipc.Channel.anonymous(capacity=1 << 16)
    pid = os.fork()
    if pid == 0:  # the child squares what it gets until the parent closes the channel
        code = 0
        try:
            for n in requests:
                answers.send(n * n)
        except BaseException:
            code = 1
        os._exit(code)
    requests.send_many([1, 2, 3, 4, 5])
    got = [answers.recv(timeout=10) for _ in range(5)]
    requests.close_send()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("the child failed")
    print(f"   child pid {pid} answered {len(got)} requests: {got}")
    requests.close()
    answers.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="shmipc-demo-") as directory:
        file_channel_demo(directory)
    fork_demo()
    print("all done: 2 channels, 5 processes, no message lost")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
