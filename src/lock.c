/*
 * lock.c - the producer and consumer locks: one 64-bit holder word each, in the header.
 *
 * Taking a lock and recording its holder are one step: a compare-and-swap of the word from 0
 * to the taker's identity. Releasing stores 0. A waiter polls briefly, then registers as a
 * sleeper on the lock's semaphore and sleeps in slices; each time it finds the word held by an
 * identity it has not yet judged, and after every slice, it judges the holder (identity.c).
 * Only a holder proven dead is replaced, by a compare-and-swap from exactly the dead identity,
 * so of several waiters one wins and a live holder is never overridden, however long it holds
 * the lock (a producer holds its lock while it waits for room; a stopped process holds it
 * until it continues). No timing rule ever moves a lock.
 *
 * What a dead holder leaves needs no repair: only the position stores commit, so a frame
 * written but not committed is invisible and is overwritten by the next holder.
 */
#include "core.h"

#define LOCK_POLLS 200 /* pause-polls of a held lock before sleeping: ~1-5 us, a copy's time */

static _Atomic uint64_t *lock_word(shmipc_channel *ch, int role) {
    return role == ROLE_PLOCK ? &ch->hdr->producer_lock : &ch->hdr->consumer_lock;
}

static bool try_take(_Atomic uint64_t *word, uint64_t *holder, uint64_t me) {
    *holder = 0;
    return atomic_compare_exchange_strong_explicit(word, holder, me, memory_order_acq_rel,
                                                   memory_order_acquire);
}

static int taken(shmipc_channel *ch, int role, int slot) {
    slot_unregister(ch, slot);
    ready_disarm(ch, 1 << role);
    note_held(ch, role, true);
    KILLPOINT(KP_LOCKED);
    return SHMIPC_OK;
}

/* The lock is held and the caller may not wait (SHMIPC_TRY, or a timeout of 0 with a
 * readiness descriptor open): arm the descriptor for its release and try once more. */
static int lock_unavailable(shmipc_channel *ch, int role, _Atomic uint64_t *word, uint64_t me,
                            int flags) {
    uint64_t holder;
    if (!(flags & SHMIPC_TRY)) /* the time of a copy, no longer: the caller is an event loop */
        for (int polls = 0; polls < LOCK_POLLS; polls++) {
            cpu_relax();
            if (atomic_load_explicit(word, memory_order_relaxed) == 0 &&
                try_take(word, &holder, me))
                return taken(ch, role, -1);
        }
    ready_prepare(ch, role); /* fenced: the compare-and-swap below sees a release before it */
    if (try_take(word, &holder, me)) return taken(ch, role, -1);
    if (!(flags & SHMIPC_TRY) && !identity_alive(ch, holder)) {
        uint64_t dead = holder; /* nobody will release it: take it over as a waiter would */
        if (atomic_compare_exchange_strong_explicit(word, &dead, me, memory_order_acq_rel,
                                                    memory_order_acquire)) {
            atomic_fetch_add_explicit(&ch->hdr->recoveries, 1, memory_order_relaxed);
            KILLPOINT(KP_TAKEOVER);
            return taken(ch, role, -1);
        }
    }
    if (flags & SHMIPC_TRY) return SHMIPC_EWOULDBLOCK;
    return role == ROLE_PLOCK ? SHMIPC_EFULL : SHMIPC_EEMPTY;
}

int lock_acquire(shmipc_channel *ch, int role, budget *b, bool grace, int flags) {
    _Atomic uint64_t *word = lock_word(ch, role);
    uint64_t me = identity_of_self(ch), holder;
    if (__builtin_expect(try_take(word, &holder, me), 1)) return taken(ch, role, -1);
    if (ready_on(ch) && ((flags & SHMIPC_TRY) || ready_nowait(ch, b))) {
        if (!(flags & SHMIPC_TRY) && holder == me && held_by_this_thread(ch, role))
            return SHMIPC_EDEADLK;
        return lock_unavailable(ch, role, word, me, flags);
    }
    if (flags & SHMIPC_TRY) return SHMIPC_EWOULDBLOCK;
    if (holder == me && held_by_this_thread(ch, role)) return SHMIPC_EDEADLK;

    /* Held: usually for the time of one copy. Poll a little before sleeping. */
    int64_t spin_until = ch->spin_ns > 0 ? now_ns() + ch->spin_ns : 0;
    for (int polls = 0;; polls++) {
        cpu_relax();
        if (atomic_load_explicit(word, memory_order_relaxed) == 0 && try_take(word, &holder, me))
            return taken(ch, role, -1);
        if (polls >= LOCK_POLLS && (polls & 63) == 0 && now_ns() >= spin_until) break;
    }

    int64_t deadline = budget_deadline(b);
    if (grace && deadline >= 0 && deadline < now_ns() + LOCK_GRACE_NS)
        deadline = now_ns() + LOCK_GRACE_NS;
    int slot = -1;
    uint64_t judged_alive = 0; /* a holder judged alive, not judged again until a slice ends */
    for (;;) {
        if (slot < 0) slot = slot_register(ch, role); /* fenced: the CAS below sees a release */
        if (try_take(word, &holder, me)) return taken(ch, role, slot);
        if (holder != judged_alive) {
            if (!identity_alive(ch, holder)) {
                uint64_t dead = holder;
                if (atomic_compare_exchange_strong_explicit(word, &dead, me,
                                                            memory_order_acq_rel,
                                                            memory_order_acquire)) {
                    atomic_fetch_add_explicit(&ch->hdr->recoveries, 1, memory_order_relaxed);
                    KILLPOINT(KP_TAKEOVER);
                    return taken(ch, role, slot);
                }
                continue; /* another waiter took it over, or it was released: look again */
            }
            judged_alive = holder;
        }
        if (deadline >= 0 && now_ns() >= deadline) {
            slot_unregister(ch, slot);
            return role == ROLE_PLOCK ? SHMIPC_EFULL : SHMIPC_EEMPTY;
        }
        int rc = sleep_on(ch, role, deadline, slot >= 0);
        if (rc == SHMIPC_EINTR) {
            slot_unregister(ch, slot);
            return rc;
        }
        if (rc == 1) judged_alive = 0; /* a whole slice without a release: judge again */
    }
}

void lock_release(shmipc_channel *ch, int role) {
    note_held(ch, role, false);
    atomic_store_explicit(lock_word(ch, role), 0, memory_order_release);
    /* Pairs with the fence of a waiter that registered, then tried the lock (wait.c); it also
     * orders the caller's commit store before the caller's wake-up of the other side. */
    atomic_thread_fence(memory_order_seq_cst);
    wake(ch, role);
}
