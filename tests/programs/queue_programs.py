"""Typical multiprocessing programs, unchanged but for the import of the queues.

    python tests/programs/queue_programs.py START_METHOD [shmipc|multiprocessing]

Three programs, each as the multiprocessing documentation and everyday code write them:
producers and a consumer as Process objects, a pool of workers fed from a queue (Pool and
ProcessPoolExecutor, the queues passed through initializer/initargs), and a JoinableQueue with
task_done/join. Each prints one line of results; the last lines name the queue files and
semaphores each made, for tests/test_queue.py to check that nothing is left behind. Every child
is joined with a timeout. With "multiprocessing" as the second argument the same code runs on
multiprocessing's own queues (the results must be the same).
"""

import concurrent.futures
import multiprocessing
import sys

if sys.argv[2:] == ["multiprocessing"]:
    from multiprocessing import JoinableQueue, Queue
else:
    from shmipc import JoinableQueue, Queue

TIMEOUT = 60
made = []  # the queue files and semaphores (shmipc only), to check that none is left


def track(*queues):
    for q in queues:
        if hasattr(q, "path"):
            made.append(" ".join([q.path, *q._channel.semaphore_names.values()]))


def producer(q, start, count):
    for i in range(start, start + count):
        q.put({"n": i, "square": i * i})
    q.put(None)
    q.close()
    q.join_thread()


def consumer(q, results, producers):
    ends, total, seen = 0, 0, 0
    while ends < producers:
        item = q.get(timeout=TIMEOUT)
        if item is None:
            ends += 1
            continue
        assert item["square"] == item["n"] ** 2
        total += item["n"]
        seen += 1
    results.put((seen, total))


def producers_and_consumer(ctx):
    q, results = Queue(), Queue()
    track(q, results)
    procs = [ctx.Process(target=producer, args=(q, k * 500, 500)) for k in range(2)]
    procs.append(ctx.Process(target=consumer, args=(q, results, 2)))
    for p in procs:
        p.start()
    q.close()  # the parent puts nothing: it may let go at once, the children still get it
    seen, total = results.get(timeout=TIMEOUT)
    for p in procs:
        p.join(TIMEOUT)
    print("producers/consumer:", seen, total, [p.exitcode for p in procs])


def init_worker(tasks_queue, results_queue):
    global tasks, results
    tasks, results = tasks_queue, results_queue


def drain(worker_index):
    done = 0
    while True:
        item = tasks.get(timeout=TIMEOUT)
        if item is None:
            return done
        results.put(item * item)
        done += 1


def pool_fed_from_a_queue(ctx):
    tasks_q, results_q = Queue(), Queue()
    track(tasks_q, results_q)
    for i in range(200):
        tasks_q.put(i)
    for _ in range(2):
        tasks_q.put(None)
    with ctx.Pool(2, initializer=init_worker, initargs=(tasks_q, results_q)) as pool:
        done = pool.map_async(drain, range(2), chunksize=1).get(TIMEOUT)
    squares = sorted(results_q.get(timeout=TIMEOUT) for _ in range(200))
    with concurrent.futures.ProcessPoolExecutor(
            2, mp_context=ctx, initializer=init_worker, initargs=(tasks_q, results_q)) as pool:
        for i in range(100):
            tasks_q.put(i)
        for _ in range(2):
            tasks_q.put(None)
        futures = [pool.submit(drain, k) for k in range(2)]
        done2 = [f.result(TIMEOUT) for f in futures]
    squares2 = sorted(results_q.get(timeout=TIMEOUT) for _ in range(100))
    print("pool:", sum(done), sum(squares), "executor:", sum(done2), sum(squares2),
          squares == [i * i for i in range(200)], squares2 == [i * i for i in range(100)])


def worker(q, out):
    while True:
        item = q.get()
        if item is None:
            q.task_done()
            break
        out.put(item * 2)
        q.task_done()


def joinable(ctx):
    q, out = JoinableQueue(), Queue()
    track(q, out)
    workers = [ctx.Process(target=worker, args=(q, out), daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(300):
        q.put(i)
    q.join()  # every item taken and marked done
    doubled = sorted(out.get(timeout=TIMEOUT) for _ in range(300))
    for _ in workers:
        q.put(None)
    q.join()
    for w in workers:
        w.join(TIMEOUT)
    try:
        q.task_done()
        extra = "accepted"
    except ValueError:
        extra = "ValueError"
    print("joinable:", sum(doubled), doubled == [2 * i for i in range(300)],
          [w.exitcode for w in workers], "extra task_done:", extra)


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    producers_and_consumer(ctx)
    pool_fed_from_a_queue(ctx)
    joinable(ctx)
    for names in made:
        print("names:", names)
    sys.stdout.flush()
    # The queues are left open: the exit closes them, and the last user removes them.
