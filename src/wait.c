/*
 * wait.c - sleeping and waking: the semaphores, the sleeper registry, deadlines.
 *
 * Semaphores are wake-ups, positions are the truth. A caller that must wait registers in a
 * waiter slot of the header (the slot holds its identity, a bit in the role's sleeper mask
 * says what it waits for), re-checks the positions after a seq_cst fence, and sleeps on the
 * role's semaphore in slices of at most SLICE_NS; after every slice it re-checks, so a wake-up
 * lost with a killed process costs at most one slice. The other side posts only when the mask
 * says somebody sleeps, and never more tokens than there are sleepers. A sleeper killed while
 * registered leaves its slot behind; sleepers repair such slots (dead owner, proven as for a
 * lock) at every slice, so the mask does not stay polluted.
 */
#include "core.h" /* first: it defines _GNU_SOURCE */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t budget_deadline(budget *b) {
    if (b->timeout_ns < 0) return -1;
    if (b->deadline == 0) b->deadline = now_ns() + b->timeout_ns;
    return b->deadline;
}

bool budget_expired(budget *b) {
    int64_t deadline = budget_deadline(b);
    return deadline >= 0 && now_ns() >= deadline;
}

/* --- semaphores ----------------------------------------------------------------------- */

int open_semaphores(shmipc_channel *ch, uint32_t generation, sem_t *out[ROLES]) {
    for (int role = 0; role < ROLES; role++) out[role] = SEM_FAILED;
    for (int role = 0; role < ROLES; role++) {
        char name[SHMIPC_SEM_NAME_MAX], path[SHMIPC_SEM_NAME_MAX + 16];
        shmipc_semaphore_name(ch->channel_id, generation, ROLE_LETTERS[role], name);
        /* sem_open maps the file without a size check: a file shorter than a sem_t would
         * fault (SIGBUS) on first use, so it is refused here. */
        snprintf(path, sizeof path, "/dev/shm/sem.%s", name + 1);
        struct stat st;
        int code = SHMIPC_OK;
        if (stat(path, &st) == 0 && (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(sem_t)))
            code = SHMIPC_ENOSEM;
        else if ((out[role] = sem_open(name, 0)) == SEM_FAILED)
            code = errno == EACCES ? SHMIPC_EPERM
                   : errno == ENOENT ? SHMIPC_ENOSEM
                                     : SHMIPC_ESYSTEM;
        if (code != SHMIPC_OK) {
            for (int k = 0; k < role; k++) sem_close(out[k]);
            for (int k = 0; k < ROLES; k++) out[k] = SEM_FAILED;
            return code;
        }
    }
    return SHMIPC_OK;
}

void follow_semaphore_generation(shmipc_channel *ch) {
    uint32_t generation =
        atomic_load_explicit(&ch->hdr->semaphore_generation, memory_order_acquire);
    if (generation == ch->sem_generation) return;
    /* Rebuilt by another process (after systemd's RemoveIPC or a cleanup removed them): the
     * old semaphores wake nobody any more. Follow the new ones; the old ones stay open until
     * the handle closes, as another thread may be inside a call on them. */
    pthread_mutex_lock(&ch->follow);
    sem_t *fresh[ROLES];
    if (generation != ch->sem_generation &&
        open_semaphores(ch, generation, fresh) == SHMIPC_OK) {
        if (ch->nretired == (int)(sizeof ch->retired / sizeof ch->retired[0])) {
            for (int role = 0; role < ROLES; role++) sem_close(ch->retired[0][role]);
            memmove(ch->retired[0], ch->retired[1], sizeof ch->retired - sizeof ch->retired[0]);
            ch->nretired--;
        }
        for (int role = 0; role < ROLES; role++) {
            ch->retired[ch->nretired][role] = sem_of(ch, role);
            atomic_store_explicit(&ch->sems[role], fresh[role], memory_order_release);
        }
        ch->nretired++;
        ch->sem_generation = generation;
    } /* else not created yet: the next slice tries again */
    pthread_mutex_unlock(&ch->follow);
}

/* --- the sleeper registry ------------------------------------------------------------- */

int slot_register(shmipc_channel *ch, int role) {
    uint64_t me = identity_of_self(ch);
    for (int i = 0; i < WAITER_SLOTS; i++) {
        uint64_t expected = 0;
        if (atomic_load_explicit(&ch->hdr->waiter_slots[i], memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong_explicit(&ch->hdr->waiter_slots[i], &expected, me,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            /* Pairs with the seq_cst fence the other side puts between its position store and
             * its load of this mask (see core.h). */
            atomic_fetch_or_explicit(&ch->hdr->sleepers[role], (uint64_t)1 << i,
                                     memory_order_seq_cst);
            atomic_thread_fence(memory_order_seq_cst);
            return i;
        }
    }
    return -1; /* every slot taken: the caller sleeps in short slices without registering */
}

void slot_unregister(shmipc_channel *ch, int slot) {
    if (slot < 0) return;
    for (int role = 0; role < ROLES; role++)
        atomic_fetch_and_explicit(&ch->hdr->sleepers[role], ~((uint64_t)1 << slot),
                                  memory_order_relaxed);
    atomic_store_explicit(&ch->hdr->waiter_slots[slot], 0, memory_order_release);
}

void repair_sleepers(shmipc_channel *ch) {
    uint64_t me = identity_of_self(ch);
    for (int i = 0; i < WAITER_SLOTS; i++) {
        uint64_t owner = atomic_load_explicit(&ch->hdr->waiter_slots[i], memory_order_acquire);
        if (owner == 0 || owner == me || identity_alive(ch, owner)) continue;
        /* Mark the slot ours while its bits are cleared, so that no new sleeper takes it in
         * between (it would lose its bit) and no other repairer works on it at once. */
        if (!atomic_compare_exchange_strong_explicit(&ch->hdr->waiter_slots[i], &owner, me,
                                                     memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue;
        slot_unregister(ch, i);
    }
}

/* --- sleeping and waking -------------------------------------------------------------- */

int sleep_on(shmipc_channel *ch, int role, int64_t deadline, bool registered) {
    follow_semaphore_generation(ch);
    /* Unregistered (every slot taken), nobody posts for us: poll in short slices instead. */
    int64_t until = now_ns() + (registered ? SLICE_NS : UNREGISTERED_SLICE_NS);
    if (deadline >= 0 && deadline < until) until = deadline;
    struct timespec ts = {until / 1000000000LL, until % 1000000000LL};
    KILLPOINT(KP_SLEEPING);
    if (sem_clockwait(sem_of(ch, role), CLOCK_MONOTONIC, &ts) == 0) {
        atomic_fetch_add_explicit(&ch->sleeps_woken, 1, memory_order_relaxed);
        return SHMIPC_OK;
    }
    int timed_out = errno == ETIMEDOUT;
    if (timed_out) {
        atomic_fetch_add_explicit(&ch->sleeps_expired, 1, memory_order_relaxed);
        repair_sleepers(ch);
    }
    /* PEP 475: after a signal, and after every slice, ask whether the wait should end. */
    if (ch->interrupt != NULL && ch->interrupt(ch->interrupt_arg) != 0) return SHMIPC_EINTR;
    return timed_out ? 1 : SHMIPC_OK;
}

void wake(shmipc_channel *ch, int role) {
    /* The caller fenced (seq_cst) after its commit, so a sleeper registered before the commit
     * is visible here, and one registered after it sees the commit. The same holds for a
     * waiter on a descriptor (acquire: it also orders the slot epochs, see ready.c). */
    uint64_t armed = atomic_load_explicit(&ch->hdr->ready_armed[role], memory_order_acquire);
    if (__builtin_expect(armed != 0, 0)) ready_signal(ch, armed);
    uint64_t sleeping = atomic_load_explicit(&ch->hdr->sleepers[role], memory_order_relaxed);
    if (sleeping == 0) return;
    sem_t *sem = sem_of(ch, role);
    int value = 0;
    sem_getvalue(sem, &value);
    if (value < __builtin_popcountll(sleeping)) sem_post(sem);
}

void wake_all(shmipc_channel *ch, int role) {
    uint64_t armed = atomic_load_explicit(&ch->hdr->ready_armed[role], memory_order_acquire);
    if (armed != 0) ready_signal(ch, armed);
    uint64_t sleeping = atomic_load_explicit(&ch->hdr->sleepers[role], memory_order_relaxed);
    sem_t *sem = sem_of(ch, role);
    int value = 0;
    sem_getvalue(sem, &value);
    for (int n = __builtin_popcountll(sleeping) - value; n > 0; n--) sem_post(sem);
}

/* --- locks this thread holds (to refuse waiting for oneself) -------------------------- */

static __thread struct {
    uint64_t channel;
    int role;
} held[8];
static __thread int nheld;

void forget_held_locks(void) { nheld = 0; }

int held_by_this_thread(const shmipc_channel *ch, int role) {
    uint64_t key = ch->key;
    for (int i = 0; i < nheld; i++)
        if (held[i].channel == key && held[i].role == role) return 1;
    return 0;
}

void note_held(const shmipc_channel *ch, int role, bool is_held) {
    uint64_t key = ch->key;
    if (is_held) {
        if (nheld < (int)(sizeof held / sizeof held[0])) {
            held[nheld].channel = key;
            held[nheld].role = role;
            nheld++;
        }
        return;
    }
    for (int i = 0; i < nheld; i++)
        if (held[i].channel == key && held[i].role == role) {
            held[i] = held[--nheld];
            return;
        }
}
