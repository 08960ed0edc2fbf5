/*
 * ready.c - readiness as a file descriptor: waiting for a channel in select/poll/epoll or an
 * event loop, without a thread per wait.
 *
 * A handle that asks for a descriptor (shmipc_channel_ready_fd) claims a ready slot of the
 * header (its identity in ready_owners[slot], as a sleeper claims a waiter slot) and binds a
 * datagram socket in Linux's abstract namespace, named from the channel id and the slot
 * ("\0shmipc-<id>-r<slot>"): the name vanishes with the last descriptor of the socket, so a
 * process that dies leaves nothing behind. The descriptor is that socket; it is readable while
 * a datagram is queued on it.
 *
 * Arming (ready_prepare), done by a call that would otherwise have to wait - a receive that
 * finds the ring empty, a send that finds it full, a call that finds a lock held - and by
 * shmipc_channel_ready_arm: drain the socket, raise the slot's epoch (if this handle was not
 * armed for that role, or a datagram was drained), set the slot's bit in ready_armed[role]
 * (seq_cst), fence (seq_cst), and let the caller re-check its condition. The other side, in
 * wake(), stores its position, fences, and loads ready_armed[role]: as with the sleeper masks
 * (core.h), at least one of the two sees the other, so no signal is missed. A signal is one
 * non-blocking sendto of one byte to the slot's name, sent by a handle at most once per epoch
 * of the slot (ready_sent): a producer streaming into an armed receiver signals it once, not
 * per message. The receiver clears its own bit (ready_drop) once it got what it waited for;
 * nobody else clears it except to repair a slot whose owner is proven dead, so a signaller
 * killed before its sendto costs no more than its own signal: the next commit signals again.
 *
 * Cost when nobody waits this way: wake() loads ready_armed[role] (one more load of a line
 * that only arming writes) and finds 0.
 *
 * Hazards: the abstract namespace belongs to the network namespace; processes in different
 * network namespaces (containers without a shared network) cannot signal each other's
 * descriptors. A signaller killed between its commit and its sendto leaves the descriptor
 * quiet until the next commit: pollers wait in slices (shmipc's own waits re-check every
 * 0.25 s), as sleepers on the semaphores do.
 */
#include "core.h" /* first: it defines _GNU_SOURCE */

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The abstract socket address of a ready slot; returns its length. */
static socklen_t ready_address(const uint8_t channel_id[16], int slot, struct sockaddr_un *a) {
    static const char hex[] = "0123456789abcdef";
    char name[64];
    int n = snprintf(name, sizeof name, "shmipc-");
    for (int i = 0; i < 16; i++) {
        name[n++] = hex[channel_id[i] >> 4];
        name[n++] = hex[channel_id[i] & 15];
    }
    n += snprintf(name + n, sizeof name - (size_t)n, "-r%d", slot);
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    a->sun_path[0] = '\0'; /* abstract: no file, gone with the socket */
    memcpy(a->sun_path + 1, name, (size_t)n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* Clear a slot's bits and free it; the caller owns the slot (its own, or a dead owner's it
 * took over). */
static void ready_clear_slot(shmipc_channel *ch, int slot) {
    uint64_t bit = (uint64_t)1 << slot;
    for (int role = 0; role < ROLES; role++)
        atomic_fetch_and_explicit(&ch->hdr->ready_armed[role], ~bit, memory_order_relaxed);
    /* Pairs with the acquire of a registrant's compare-and-swap: it sees the bits cleared. */
    atomic_store_explicit(&ch->hdr->ready_owners[slot], 0, memory_order_release);
}

/* Take over the slot of an owner proven dead (one of several repairers wins), and free it. */
static void ready_repair_slot(shmipc_channel *ch, int slot, uint64_t dead) {
    if (atomic_compare_exchange_strong_explicit(&ch->hdr->ready_owners[slot], &dead,
                                                identity_of_self(ch), memory_order_acq_rel,
                                                memory_order_relaxed))
        ready_clear_slot(ch, slot);
}

void ready_repair(shmipc_channel *ch) {
    uint64_t me = identity_of_self(ch);
    for (int i = 0; i < READY_SLOTS; i++) {
        uint64_t owner = atomic_load_explicit(&ch->hdr->ready_owners[i], memory_order_acquire);
        if (owner != 0 && owner != me && !identity_alive(ch, owner))
            ready_repair_slot(ch, i, owner);
    }
}

static int ready_register(shmipc_channel *ch, int *fd) {
    if (ch->ready_fd >= 0) { /* another thread registered meanwhile */
        *fd = ch->ready_fd;
        return SHMIPC_OK;
    }
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return SHMIPC_ESYSTEM; /* out of descriptors or memory */
    uint64_t me = identity_of_self(ch);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < READY_SLOTS; i++) {
            uint64_t expected = 0;
            if (atomic_load_explicit(&ch->hdr->ready_owners[i], memory_order_relaxed) != 0 ||
                !atomic_compare_exchange_strong_explicit(&ch->hdr->ready_owners[i], &expected,
                                                         me, memory_order_acq_rel,
                                                         memory_order_relaxed))
                continue;
            struct sockaddr_un a;
            socklen_t len = ready_address(ch->channel_id, i, &a);
            if (bind(s, (struct sockaddr *)&a, len) == 0) {
                /* Born readable: the one rule (wait, then call until empty, which arms) then
                 * holds from the first wait on, whatever happened before it. */
                static const char one = 1;
                (void)!sendto(s, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&a,
                              len);
                ch->ready_slot = i;
                atomic_store_explicit(&ch->ready_local, 0, memory_order_relaxed);
                ch->ready_fd = s;
                *fd = s;
                return SHMIPC_OK;
            }
            int error = errno;
            /* EADDRINUSE: a live socket still holds the name (a dead owner's forked child
             * inherited it): this slot cannot be signalled rightly, try the next. */
            atomic_store_explicit(&ch->hdr->ready_owners[i], 0, memory_order_release);
            if (error != EADDRINUSE) {
                close(s);
                return error == EACCES || error == EPERM ? SHMIPC_EPERM : SHMIPC_ESYSTEM;
            }
        }
        if (pass == 0) ready_repair(ch); /* then look again: slots of dead owners are free */
    }
    close(s);
    return SHMIPC_ENOSLOT;
}

int shmipc_channel_ready_fd(shmipc_channel *ch, int *fd) {
    refresh_after_fork(ch);
    *fd = ch->ready_fd;
    if (*fd >= 0) return SHMIPC_OK;
    pthread_mutex_lock(&ch->follow); /* one registration per handle, whatever the threads */
    int rc = ready_register(ch, fd);
    pthread_mutex_unlock(&ch->follow);
    return rc;
}

void ready_release(shmipc_channel *ch) {
    if (ch->ready_fd >= 0) {
        close(ch->ready_fd); /* the name is free from here on */
        ch->ready_fd = -1;
        ready_clear_slot(ch, ch->ready_slot);
        ch->ready_slot = -1;
        atomic_store_explicit(&ch->ready_local, 0, memory_order_relaxed);
    }
    int tx = atomic_exchange_explicit(&ch->ready_tx, -1, memory_order_acq_rel);
    if (tx >= 0) close(tx);
}

/* Read what is queued on the descriptor; true if anything was. Bounded: anyone in the network
 * namespace may send to the name (a spurious wake-up at worst); what a flood leaves queued
 * keeps the descriptor readable, which is allowed. */
static bool ready_drain(shmipc_channel *ch) {
    char buf[16];
    bool drained = false;
    for (int n = 0; n < 64 && recv(ch->ready_fd, buf, sizeof buf, MSG_DONTWAIT) >= 0; n++)
        drained = true;
    return drained;
}

void shmipc_channel_ready_quiet(shmipc_channel *ch) {
    refresh_after_fork(ch);
    if (ch->ready_fd < 0) return;
    ready_drain(ch);
    /* Disarmed: the next arming raises the epoch, so a signal drained here is never the one
     * a signaller's record says it sent for an arming to come. */
    ready_drop(ch, (1 << ROLES) - 1);
}

void ready_prepare(shmipc_channel *ch, int role) {
    int slot = ch->ready_slot;
    bool drained = ready_drain(ch);
    int bit = 1 << role;
    int local = atomic_fetch_or_explicit(&ch->ready_local, bit, memory_order_relaxed);
    /* A new epoch when this handle was not armed for the role (every signaller may signal it
     * once more), or when a signal was drained (its sender will not signal this epoch
     * again). Armed already and nothing drained: a signal for the epoch is still to come. */
    if (!(local & bit) || drained)
        atomic_fetch_add_explicit(&ch->hdr->ready_epochs[slot], 1, memory_order_relaxed);
    if (drained) atomic_fetch_add_explicit(&ch->ready_drains, 1, memory_order_relaxed);
    /* The epoch before the bit: a signaller that loads the bit (acquire) sees the epoch.
     * The fence pairs with the waker's fence between its commit and its load of the mask. */
    atomic_fetch_or_explicit(&ch->hdr->ready_armed[role], (uint64_t)1 << slot,
                             memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
}

void ready_drop(shmipc_channel *ch, int roles) {
    int slot = ch->ready_slot;
    int local = atomic_fetch_and_explicit(&ch->ready_local, ~roles, memory_order_relaxed) & roles;
    if (slot < 0) return;
    for (int role = 0; role < ROLES; role++)
        if (local & (1 << role))
            atomic_fetch_and_explicit(&ch->hdr->ready_armed[role], ~((uint64_t)1 << slot),
                                      memory_order_relaxed);
}

/* The socket this handle signals from (unbound), made on first use. */
static int ready_tx_socket(shmipc_channel *ch) {
    int tx = atomic_load_explicit(&ch->ready_tx, memory_order_acquire);
    if (tx >= 0) return tx;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    int expected = -1;
    if (!atomic_compare_exchange_strong_explicit(&ch->ready_tx, &expected, s,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        close(s); /* another thread made one meanwhile */
        return expected;
    }
    return s;
}

void ready_signal(shmipc_channel *ch, uint64_t armed) {
    while (armed != 0) {
        int slot = __builtin_ctzll(armed);
        armed &= armed - 1;
        if (slot >= READY_SLOTS) continue; /* a bit no slot has: a hostile header */
        /* Relaxed: the caller's acquire load of the mask (and its fence, for the Dekker
         * pair) orders this after the owner's raise of the epoch. */
        uint64_t epoch = atomic_load_explicit(&ch->hdr->ready_epochs[slot], memory_order_relaxed);
        if (atomic_load_explicit(&ch->ready_sent[slot], memory_order_relaxed) == epoch)
            continue; /* signalled this arming already */
        int tx = ready_tx_socket(ch);
        if (tx < 0) return;
        struct sockaddr_un a;
        socklen_t len = ready_address(ch->channel_id, slot, &a);
        static const char one = 1;
        if (sendto(tx, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&a, len) == 1 ||
            errno == EAGAIN || errno == EWOULDBLOCK) {
            /* Sent, or its queue is full: it is readable either way. Noted after the send: a
             * signaller killed before it leaves the epoch to the next one. */
            atomic_store_explicit(&ch->ready_sent[slot], epoch, memory_order_relaxed);
            continue;
        }
        if (errno == ECONNREFUSED || errno == ENOENT) {
            /* Nobody holds the name: its owner died (repair the slot), or cannot be reached
             * from here (another network namespace): do not try this epoch again. */
            uint64_t owner =
                atomic_load_explicit(&ch->hdr->ready_owners[slot], memory_order_acquire);
            if (owner != 0 && !identity_alive(ch, owner)) ready_repair_slot(ch, slot, owner);
            else atomic_store_explicit(&ch->ready_sent[slot], epoch, memory_order_relaxed);
        }
    }
}

uint64_t shmipc_channel_ready_drains(const shmipc_channel *ch) {
    return atomic_load_explicit(&ch->ready_drains, memory_order_relaxed);
}

/* Whether `what` may hold now, from the positions (no lock, no arming). */
static int ready_now(shmipc_channel *ch, int what) {
    struct shmipc_header *h = ch->hdr;
    uint64_t w = atomic_load_explicit(&h->write_position, memory_order_acquire);
    uint64_t r = atomic_load_explicit(&h->read_position, memory_order_acquire);
    int closed = atomic_load_explicit(&h->closed, memory_order_acquire) != 0;
    if (what == SHMIPC_READY_RECV) return w != r || closed ? 1 : 0;
    uint64_t used = w - r;
    return closed || used > ch->capacity || ch->capacity - used >= 2 * FRAME_HEADER ? 1 : 0;
}

int shmipc_channel_ready_arm(shmipc_channel *ch, int what) {
    refresh_after_fork(ch);
    if (ch->ready_fd < 0 || (what != SHMIPC_READY_RECV && what != SHMIPC_READY_SEND))
        return SHMIPC_EINVAL;
    ready_prepare(ch, what == SHMIPC_READY_RECV ? ROLE_ITEMS : ROLE_SPACE);
    return ready_now(ch, what); /* fenced: its loads are after the arming */
}

int shmipc_channel_ready_peek(shmipc_channel *ch, int what) {
    if (what != SHMIPC_READY_RECV && what != SHMIPC_READY_SEND) return SHMIPC_EINVAL;
    return ready_now(ch, what);
}
