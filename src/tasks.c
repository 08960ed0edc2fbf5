/*
 * tasks.c - the count of unfinished tasks of a JoinableQueue, and waits on message counts.
 *
 * A task is a message. The unfinished tasks are the messages ever sent (sent_total, stored by
 * the producers with each commit) less the task_done() calls ever made (tasks_done, header
 * byte 2048), so a put needs no step of its own: the count goes up in the commit of the
 * message itself, and a producer killed at any instant leaves no count behind that no message
 * backs. task_done() is one compare-and-swap that refuses to pass the messages sent.
 *
 * Nobody is woken when the count reaches 0: a joiner (and a producer waiting for a queue's
 * maxsize) polls the counters in a sliced sleep that starts at POLL_MIN_NS and doubles up to
 * POLL_MAX_NS, so it reacts within POLL_MAX_NS and burns no core meanwhile (a few hundred
 * wake-ups a second at most). The semaphores keep their four roles.
 *
 * Memory order: tasks_done is raised with a release compare-and-swap and loaded with acquire
 * by joiners, so what a consumer did before task_done() is visible to a joiner that returns.
 * sent_total and received_total are plain counters (relaxed, written under their locks; see
 * channel.c): they are only compared here, never used to reach memory.
 */
#include "core.h" /* first: it defines _GNU_SOURCE */

#include <errno.h>
#include <time.h>

#define POLL_MIN_NS 20000LL    /* the first sleep of a waiter: 20 us */
#define POLL_MAX_NS 2000000LL  /* ... doubling up to 2 ms */

static uint64_t sent_of(const struct shmipc_header *h) {
    return atomic_load_explicit(&((struct shmipc_header *)h)->sent_total, memory_order_relaxed);
}

static uint64_t received_of(const struct shmipc_header *h) {
    return atomic_load_explicit(&((struct shmipc_header *)h)->received_total,
                                memory_order_relaxed);
}

int shmipc_channel_task_done(shmipc_channel *ch, uint64_t *unfinished) {
    struct shmipc_header *h = ch->hdr;
    uint64_t done = atomic_load_explicit(&h->tasks_done, memory_order_relaxed);
    for (;;) {
        /* A producer stores write_position, then sent_total: a consumer may have received a
         * message whose sent_total is not stored yet. Its own receive stored received_total
         * before this call, so the bound is the larger of the two (as signed differences:
         * every counter is modulo 2**64). */
        uint64_t sent = sent_of(h), received = received_of(h);
        uint64_t bound = (int64_t)(received - sent) > 0 ? received : sent;
        if ((int64_t)(bound - done) <= 0) return SHMIPC_EINVAL;
        /* Pairs with the acquire load of a joiner in shmipc_channel_tasks_unfinished. */
        if (atomic_compare_exchange_weak_explicit(&h->tasks_done, &done, done + 1,
                                                  memory_order_release, memory_order_relaxed)) {
            if (unfinished != NULL) *unfinished = bound - (done + 1);
            return SHMIPC_OK;
        }
    }
}

uint64_t shmipc_channel_tasks_unfinished(const shmipc_channel *ch) {
    const struct shmipc_header *h = ch->hdr;
    /* Pairs with the release compare-and-swap in shmipc_channel_task_done. */
    uint64_t done = atomic_load_explicit(&((struct shmipc_header *)h)->tasks_done,
                                         memory_order_acquire);
    int64_t left = (int64_t)(sent_of(h) - done);
    return left > 0 ? (uint64_t)left : 0;
}

uint64_t shmipc_channel_messages_waiting(const shmipc_channel *ch) {
    int64_t left = (int64_t)(sent_of(ch->hdr) - received_of(ch->hdr));
    return left > 0 ? (uint64_t)left : 0;
}

/* Sleep in doubling slices until ready(ch, arg) is true, the timeout or an interrupt. */
static int poll_until(shmipc_channel *ch, bool (*ready)(shmipc_channel *, uint64_t),
                      uint64_t arg, int64_t timeout_ns, int flags) {
    if (ready(ch, arg)) return SHMIPC_OK;
    if ((flags & SHMIPC_TRY) || timeout_ns == 0) return SHMIPC_EWOULDBLOCK;
    budget b = budget_of(timeout_ns);
    int64_t deadline = budget_deadline(&b), slice = POLL_MIN_NS;
    for (;;) {
        int64_t until = now_ns() + slice;
        if (deadline >= 0 && deadline < until) until = deadline;
        struct timespec ts = {until / 1000000000LL, until % 1000000000LL};
        int rc;
        while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) == EINTR) {
            /* PEP 475: a signal handler that raises ends the wait. */
            if (ch->interrupt != NULL && ch->interrupt(ch->interrupt_arg) != 0)
                return SHMIPC_EINTR;
        }
        if (ready(ch, arg)) return SHMIPC_OK;
        if (deadline >= 0 && now_ns() >= deadline) return SHMIPC_EWOULDBLOCK;
        if (slice >= POLL_MAX_NS && ch->interrupt != NULL &&
            ch->interrupt(ch->interrupt_arg) != 0)
            return SHMIPC_EINTR;
        if (slice < POLL_MAX_NS) slice *= 2;
    }
}

static bool no_task_unfinished(shmipc_channel *ch, uint64_t unused) {
    (void)unused;
    return shmipc_channel_tasks_unfinished(ch) == 0;
}

static bool fewer_waiting(shmipc_channel *ch, uint64_t max_messages) {
    return shmipc_channel_messages_waiting(ch) < max_messages;
}

int shmipc_channel_join_tasks(shmipc_channel *ch, int64_t timeout_ns, int flags) {
    return poll_until(ch, no_task_unfinished, 0, timeout_ns, flags);
}

int shmipc_channel_wait_fewer(shmipc_channel *ch, uint64_t max_messages, int64_t timeout_ns,
                              int flags) {
    if (max_messages == 0) return SHMIPC_EINVAL;
    return poll_until(ch, fewer_waiting, max_messages, timeout_ns, flags);
}
