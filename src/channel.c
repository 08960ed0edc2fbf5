/*
 * channel.c - the ring: frames, the two commits, sending and receiving, claims, batches.
 *
 * A frame is an 8-byte header (little-endian uint64 `length | tag << 32`), the payload, and
 * padding to 8 bytes. A frame never wraps: when it does not fit before the end of the data
 * area, a padding frame (TAG_PADDING, its length the bytes it skips after its own header)
 * fills the tail and the frame starts at offset 0. A message may take at most half the ring
 * (less a header), so it always fits an empty ring, whatever the offset.
 *
 * The positions are monotonic byte counters modulo 2**64; capacity is a power of two, so
 * `position & (capacity - 1)` stays continuous through the wrap. The position is the commit:
 * a producer writes the frame, then stores write_position (release); a consumer loads it
 * (acquire) and only then reads the frames below it, copies them out, then stores
 * read_position (release). A process killed before its store leaves nothing half-visible.
 *
 * Every header, length and position read from the mapping is validated before use; a value
 * that cannot be right returns SHMIPC_ECORRUPT and nothing outside the ring is touched.
 */
#include "core.h" /* first: it defines _GNU_SOURCE */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SPIN_NS 50000LL

static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static inline _Atomic uint64_t *word_at(shmipc_channel *ch, uint64_t offset) {
    return (_Atomic uint64_t *)(ch->data + offset);
}

/* --- attaching ------------------------------------------------------------------------ */

int shmipc_channel_attach(void *base, size_t size, shmipc_channel **out) {
    *out = NULL;
    identity_init(); /* the fork handler, before any identity is cached */
    if (base == NULL) return SHMIPC_EINVAL;
    if (size < 8) return SHMIPC_ENOTCHANNEL;
    if (size < SHMIPC_HEADER_SIZE)
        return memcmp(base, SHMIPC_MAGIC, 8) == 0 ? SHMIPC_ECORRUPT : SHMIPC_ENOTCHANNEL;
    /* Validate a private copy, then use only the copy's fixed fields: another process cannot
     * change them between the check and the use. */
    struct shmipc_header *fixed = malloc(sizeof *fixed);
    if (fixed == NULL) return SHMIPC_ESYSTEM;
    memcpy(fixed, base, sizeof *fixed);
    int rc = header_validate(fixed, size);
    shmipc_channel *ch = rc == SHMIPC_OK ? calloc(1, sizeof *ch) : NULL;
    if (rc == SHMIPC_OK && ch == NULL) rc = SHMIPC_ESYSTEM;
    if (rc != SHMIPC_OK) {
        free(fixed);
        return rc;
    }
    uint64_t capacity = fixed->capacity, key;
    memcpy(&key, fixed->channel_id, sizeof key);
    memcpy(ch->channel_id, fixed->channel_id, sizeof ch->channel_id);
    ch->record_size = fixed->kind == SHMIPC_KIND_RECORDS ? fixed->record_size : 0;
    free(fixed);

    ch->hdr = base;
    ch->data = (uint8_t *)base + SHMIPC_HEADER_SIZE;
    ch->capacity = capacity;
    ch->mask = capacity - 1;
    ch->max_message = capacity / 2 - FRAME_HEADER;
    ch->key = key;
    ch->spin_ns = DEFAULT_SPIN_NS;
    ch->ready_fd = ch->ready_slot = -1;
    atomic_init(&ch->ready_tx, -1);
    pthread_mutex_init(&ch->follow, NULL);
    ch->sem_generation =
        atomic_load_explicit(&ch->hdr->semaphore_generation, memory_order_acquire);
    sem_t *sems[ROLES];
    rc = open_semaphores(ch, ch->sem_generation, sems);
    if (rc != SHMIPC_OK) {
        pthread_mutex_destroy(&ch->follow);
        free(ch);
        return rc;
    }
    for (int role = 0; role < ROLES; role++) atomic_init(&ch->sems[role], sems[role]);
    ch->seen_read = atomic_load_explicit(&ch->hdr->read_position, memory_order_acquire);
    ch->seen_write = atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire);
    identity_of_self(ch);
    *out = ch;
    return SHMIPC_OK;
}

int shmipc_channel_open(const char *path, shmipc_channel **out) {
    *out = NULL;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? SHMIPC_ENOENT
               : errno == EACCES || errno == EPERM ? SHMIPC_EPERM
               : errno == EISDIR ? SHMIPC_ENOTCHANNEL
                                 : SHMIPC_ESYSTEM;
    struct stat st;
    int rc = SHMIPC_OK;
    uint8_t head[SHMIPC_HEADER_SIZE];
    if (fstat(fd, &st) != 0) rc = SHMIPC_ESYSTEM;
    else if (!S_ISREG(st.st_mode) || st.st_size < 8) rc = SHMIPC_ENOTCHANNEL;
    else {
        ssize_t n = pread(fd, head, sizeof head, 0);
        if (n < 8) rc = SHMIPC_ENOTCHANNEL;
        else rc = header_validate(head, (size_t)n < sizeof head ? (size_t)n : (size_t)st.st_size);
    }
    void *base = MAP_FAILED;
    if (rc == SHMIPC_OK) {
        base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) rc = SHMIPC_ESYSTEM;
    }
    close(fd);
    if (rc != SHMIPC_OK) return rc;
    rc = shmipc_channel_attach(base, (size_t)st.st_size, out);
    if (rc != SHMIPC_OK) {
        munmap(base, (size_t)st.st_size);
        return rc;
    }
    (*out)->map_base = base;
    (*out)->map_size = (size_t)st.st_size;
    return SHMIPC_OK;
}

void shmipc_channel_close(shmipc_channel *ch) {
    if (ch == NULL) return;
    refresh_after_fork(ch); /* a claim open at fork() is the parent's: not ours to abort */
    shmipc_channel_send_abort(ch);
    shmipc_channel_recv_abort(ch);
    ready_release(ch);
    for (int role = 0; role < ROLES; role++) sem_close(sem_of(ch, role));
    for (int k = 0; k < ch->nretired; k++)
        for (int role = 0; role < ROLES; role++) sem_close(ch->retired[k][role]);
    pthread_mutex_destroy(&ch->follow);
    if (ch->map_base != NULL) munmap(ch->map_base, ch->map_size);
    free(ch);
}

void shmipc_channel_set_spin(shmipc_channel *ch, int64_t spin_ns) {
    ch->spin_ns = spin_ns > 0 ? spin_ns : 0;
    atomic_store_explicit(&ch->spin_learned[0], 0, memory_order_relaxed);
    atomic_store_explicit(&ch->spin_learned[1], 0, memory_order_relaxed);
}

void shmipc_channel_set_interrupt(shmipc_channel *ch, shmipc_interrupt_fn fn, void *arg) {
    ch->interrupt = fn;
    ch->interrupt_arg = arg;
}

size_t shmipc_channel_capacity(const shmipc_channel *ch) { return ch->capacity; }
size_t shmipc_channel_max_message(const shmipc_channel *ch) { return ch->max_message; }
size_t shmipc_channel_record_size(const shmipc_channel *ch) { return ch->record_size; }

/* A record channel takes messages of exactly record_size bytes, from every program. */
static int check_length(const shmipc_channel *ch, size_t len) {
    if (len > ch->max_message) return SHMIPC_ETOOBIG;
    if (ch->record_size != 0 && len != ch->record_size) return SHMIPC_EKIND;
    return SHMIPC_OK;
}
void *shmipc_channel_data(const shmipc_channel *ch) { return ch->data; }

/* --- producers ------------------------------------------------------------------------ */

/* Bytes the frame of `len` payload bytes takes at position w, its padding included. */
static uint64_t room_needed(const shmipc_channel *ch, uint64_t w, uint64_t len) {
    uint64_t size = FRAME_HEADER + align8(len), tail = ch->capacity - (w & ch->mask);
    return size <= tail ? size : tail + size;
}

/* Refresh the producer's view of read_position; ECORRUPT if it is impossible. */
static int refresh_read(shmipc_channel *ch, uint64_t w, uint64_t *free_bytes) {
    uint64_t r = atomic_load_explicit(&ch->hdr->read_position, memory_order_acquire);
    if (w - r > ch->capacity || (r & 7)) return SHMIPC_ECORRUPT;
    ch->seen_read = r;
    *free_bytes = ch->capacity - (w - r);
    return SHMIPC_OK;
}

/* Adaptive spin, per handle and side (0: consumers waiting for a message, 1: a producer
 * waiting for room). A waiter polls the other side's position for the spin, then sleeps. When
 * it slept and the other side came back soon after (a peer with a steady pace a little slower
 * than the spin: a 1 MiB copy, say), the next spin doubles, up to SPIN_CEILING times the
 * configured one; after a long wait it halves back. So a steady stream is caught by polling
 * instead of a sleep and a wake-up per message, and an idle waiter still sleeps within
 * SPIN_CEILING x spin (800 us by default) of going idle. spin 0 never polls. */
#define SPIN_CEILING 16

static int64_t spin_for(shmipc_channel *ch, int side) {
    int64_t learned = atomic_load_explicit(&ch->spin_learned[side], memory_order_relaxed);
    return learned > ch->spin_ns ? learned : ch->spin_ns;
}

static void spin_learn(shmipc_channel *ch, int side, int64_t spin, int64_t waited) {
    if (ch->spin_ns <= 0) return;
    int64_t next = waited < 4 * spin ? 2 * spin : spin / 2;
    if (next > SPIN_CEILING * ch->spin_ns) next = SPIN_CEILING * ch->spin_ns;
    atomic_store_explicit(&ch->spin_learned[side], next, memory_order_relaxed);
}

/* Under the producer lock: wait until `need` bytes are free at w. */
static int wait_room(shmipc_channel *ch, uint64_t w, uint64_t need, budget *b, int flags) {
    uint64_t free_bytes, used = w - ch->seen_read;
    if (used <= ch->capacity && ch->capacity - used >= need) return SHMIPC_OK;
    int rc = refresh_read(ch, w, &free_bytes);
    if (rc != SHMIPC_OK) return rc;
    if (free_bytes >= need) {
        ready_disarm(ch, 1 << ROLE_SPACE);
        return SHMIPC_OK;
    }
    if ((flags & SHMIPC_TRY) || budget_expired(b)) {
        if (ready_on(ch)) { /* a consumer's commit from here on signals the descriptor */
            ready_prepare(ch, ROLE_SPACE);
            if ((rc = refresh_read(ch, w, &free_bytes)) != SHMIPC_OK || free_bytes >= need)
                return rc;
        }
        return flags & SHMIPC_TRY ? SHMIPC_EWOULDBLOCK : SHMIPC_EFULL;
    }
    int64_t spin = spin_for(ch, 1), started = now_ns();
    if (spin > 0) { /* a consumer is usually on its way: poll its position first */
        int64_t until = started + spin;
        for (int polls = 1;; polls++) {
            cpu_relax();
            if ((rc = refresh_read(ch, w, &free_bytes)) != SHMIPC_OK || free_bytes >= need)
                return rc;
            if ((polls & 15) == 0 && now_ns() >= until) break;
        }
    }
    int slot = -1;
    for (;;) {
        if (slot < 0) slot = slot_register(ch, ROLE_SPACE); /* fenced: the load below is after */
        if ((rc = refresh_read(ch, w, &free_bytes)) != SHMIPC_OK || free_bytes >= need) break;
        if (budget_expired(b)) {
            rc = SHMIPC_EFULL;
            break;
        }
        if ((rc = sleep_on(ch, ROLE_SPACE, budget_deadline(b), slot >= 0)) == SHMIPC_EINTR)
            break;
        rc = SHMIPC_OK;
    }
    slot_unregister(ch, slot);
    if (rc == SHMIPC_OK) spin_learn(ch, 1, spin, now_ns() - started);
    return rc;
}

/* Write one frame at w (room checked) and return the position after it. Not yet committed. */
static uint64_t write_frame(shmipc_channel *ch, uint64_t w, const void *payload, uint64_t len) {
    uint64_t offset = w & ch->mask, size = FRAME_HEADER + align8(len);
    uint64_t tail = ch->capacity - offset;
    if (size > tail) {
        atomic_store_explicit(word_at(ch, offset), (tail - FRAME_HEADER) |
                              ((uint64_t)TAG_PADDING << 32), memory_order_relaxed);
        w += tail;
        offset = 0;
    }
    if (len != 0) memcpy(ch->data + offset + FRAME_HEADER, payload, len); /* NULL if empty */
    atomic_store_explicit(word_at(ch, offset), len | ((uint64_t)TAG_MESSAGE << 32),
                          memory_order_relaxed);
    return w + size;
}

/* Store the write position: the frames below it become visible (pairs with the consumers'
 * acquire load in wait_items). */
static void commit_write(shmipc_channel *ch, uint64_t w, uint64_t count) {
    KILLPOINT(KP_SEND_COPIED);
    atomic_store_explicit(&ch->hdr->write_position, w, memory_order_release);
    KILLPOINT(KP_SEND_COMMITTED);
    uint64_t sent = atomic_load_explicit(&ch->hdr->sent_total, memory_order_relaxed);
    atomic_store_explicit(&ch->hdr->sent_total, sent + count, memory_order_relaxed);
}

/* Release the producer lock; its fence orders the commit before the load of the receivers'
 * mask (the Dekker pair with a receiver going to sleep). */
static void release_producer(shmipc_channel *ch) {
    lock_release(ch, ROLE_PLOCK);
    wake(ch, ROLE_ITEMS);
}

/* Take the producer lock and read the write position; the channel must be open for sends. */
static int begin_send(shmipc_channel *ch, budget *b, int flags, uint64_t *w) {
    int rc = lock_acquire(ch, ROLE_PLOCK, b, true, flags);
    if (rc != SHMIPC_OK) return rc;
    if (atomic_load_explicit(&ch->hdr->closed, memory_order_acquire)) rc = SHMIPC_ECLOSED;
    else if ((*w = atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire)) & 7)
        rc = SHMIPC_ECORRUPT;
    if (rc != SHMIPC_OK) lock_release(ch, ROLE_PLOCK);
    return rc;
}

int shmipc_channel_send(shmipc_channel *ch, const void *data, size_t len, int64_t timeout_ns,
                        int flags) {
    struct iovec one = {(void *)data, len};
    return shmipc_channel_sendv(ch, &one, 1, NULL, timeout_ns, flags);
}

int shmipc_channel_sendv(shmipc_channel *ch, const struct iovec *msgs, size_t count,
                         size_t *sent, int64_t timeout_ns, int flags) {
    refresh_after_fork(ch);
    if (sent != NULL) *sent = 0;
    if (ch->send_claimed) return SHMIPC_EINVAL;
    for (size_t i = 0; i < count; i++) {
        int rc = check_length(ch, msgs[i].iov_len);
        if (rc != SHMIPC_OK) return rc;
    }
    if (count == 0) return SHMIPC_OK;
    budget b = budget_of(timeout_ns);
    uint64_t w;
    int rc = begin_send(ch, &b, flags, &w);
    if (rc != SHMIPC_OK) return rc;
    if (flags & SHMIPC_TRY) {
        /* All or nothing without waiting: a batch that would have to wait part-way is left
         * whole to the waiting call, so that it goes in under one lock acquisition. */
        uint64_t end = w, free_bytes;
        for (size_t i = 0; i < count; i++) end += room_needed(ch, end, msgs[i].iov_len);
        uint64_t used = w - ch->seen_read;
        if (used > ch->capacity || ch->capacity - used < end - w) {
            rc = refresh_read(ch, w, &free_bytes);
            if (rc == SHMIPC_OK && free_bytes < end - w && ready_on(ch)) {
                ready_prepare(ch, ROLE_SPACE); /* a consumer's commit signals from here on */
                rc = refresh_read(ch, w, &free_bytes);
            }
            if (rc == SHMIPC_OK && free_bytes < end - w) rc = SHMIPC_EWOULDBLOCK;
            if (rc != SHMIPC_OK) {
                release_producer(ch);
                return rc;
            }
        }
    }
    size_t done = 0, pending = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t need = room_needed(ch, w, msgs[i].iov_len);
        uint64_t used = w - ch->seen_read;
        if (used > ch->capacity || ch->capacity - used < need) {
            if (pending) { /* let consumers have what is written while this waits for room */
                commit_write(ch, w, pending);
                done += pending;
                pending = 0;
                atomic_thread_fence(memory_order_seq_cst);
                wake(ch, ROLE_ITEMS);
            }
            if ((rc = wait_room(ch, w, need, &b, flags)) != SHMIPC_OK) break;
        }
        w = write_frame(ch, w, msgs[i].iov_base, msgs[i].iov_len);
        pending++;
    }
    if (pending) {
        commit_write(ch, w, pending);
        done += pending;
    }
    release_producer(ch);
    if (sent != NULL) *sent = done;
    return rc;
}

/* Under the producer lock: the applied sequence as of write position w. */
static uint64_t applied_sequence(shmipc_channel *ch, uint64_t w) {
    uint64_t end = atomic_load_explicit(&ch->hdr->sequence_end, memory_order_acquire);
    return (int64_t)(w - end) >= 0
               ? atomic_load_explicit(&ch->hdr->sequence_last, memory_order_acquire)
               : atomic_load_explicit(&ch->hdr->sequence_previous, memory_order_acquire);
}

int shmipc_channel_send_sequenced(shmipc_channel *ch, const void *data, size_t len,
                                  uint64_t sequence, int64_t timeout_ns, int flags) {
    refresh_after_fork(ch);
    if (ch->send_claimed) return SHMIPC_EINVAL;
    int rc = check_length(ch, len);
    if (rc != SHMIPC_OK) return rc;
    budget b = budget_of(timeout_ns);
    uint64_t w;
    if ((rc = begin_send(ch, &b, flags, &w)) != SHMIPC_OK) return rc;
    uint64_t done = applied_sequence(ch, w), need = room_needed(ch, w, len);
    if (sequence <= done) rc = SHMIPC_EDUPLICATE;
    else rc = wait_room(ch, w, need, &b, flags);
    if (rc == SHMIPC_OK) {
        /* Each store leaves a consistent answer: previous = the answer now; end = past the
         * new frame (not reached: the answer is previous); last = the new sequence (still
         * previous); the commit of write_position below makes it the answer. */
        atomic_store_explicit(&ch->hdr->sequence_previous, done, memory_order_release);
        atomic_store_explicit(&ch->hdr->sequence_end, w + need, memory_order_release);
        atomic_store_explicit(&ch->hdr->sequence_last, sequence, memory_order_release);
        commit_write(ch, write_frame(ch, w, data, len), 1);
    }
    release_producer(ch);
    return rc;
}

int shmipc_channel_applied_sequence(shmipc_channel *ch, uint64_t *sequence,
                                    int64_t timeout_ns) {
    refresh_after_fork(ch);
    budget b = budget_of(timeout_ns);
    int rc = lock_acquire(ch, ROLE_PLOCK, &b, true, 0);
    if (rc != SHMIPC_OK) return rc;
    *sequence = applied_sequence(
        ch, atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire));
    lock_release(ch, ROLE_PLOCK);
    return SHMIPC_OK;
}

uint64_t shmipc_header_applied_sequence(const void *header) {
    /* Loads only (the mapping may be read-only), in the reverse order of send_sequenced's
     * stores (previous, end, last, then the commit of write_position), each acquire pairing
     * with the release store of the same field: a `last` seen new implies `end` and
     * `previous` seen new, and an `end` seen new implies `previous` seen new. So every
     * combination answers a value the applied sequence held at some instant of the call. */
    struct shmipc_header *h = (struct shmipc_header *)(uintptr_t)header;
    uint64_t w = atomic_load_explicit(&h->write_position, memory_order_acquire);
    uint64_t last = atomic_load_explicit(&h->sequence_last, memory_order_acquire);
    uint64_t end = atomic_load_explicit(&h->sequence_end, memory_order_acquire);
    uint64_t previous = atomic_load_explicit(&h->sequence_previous, memory_order_acquire);
    return (int64_t)(w - end) >= 0 ? last : previous;
}

int shmipc_channel_send_claim(shmipc_channel *ch, size_t len, size_t *offset,
                              int64_t timeout_ns, int flags) {
    refresh_after_fork(ch);
    if (ch->send_claimed) return SHMIPC_EINVAL;
    if (len > ch->max_message) return SHMIPC_ETOOBIG;
    budget b = budget_of(timeout_ns);
    uint64_t w;
    int rc = begin_send(ch, &b, flags, &w);
    if (rc != SHMIPC_OK) return rc;
    if ((rc = wait_room(ch, w, room_needed(ch, w, len), &b, flags)) != SHMIPC_OK) {
        release_producer(ch);
        return rc;
    }
    uint64_t tail = ch->capacity - (w & ch->mask);
    if (FRAME_HEADER + align8(len) > tail) { /* pad to the end now: invisible until commit */
        atomic_store_explicit(word_at(ch, w & ch->mask),
                              (tail - FRAME_HEADER) | ((uint64_t)TAG_PADDING << 32),
                              memory_order_relaxed);
        w += tail;
    }
    ch->send_claimed = true;
    ch->send_position = w;
    ch->send_room = len;
    *offset = (w & ch->mask) + FRAME_HEADER;
    return SHMIPC_OK;
}

int shmipc_channel_send_commit(shmipc_channel *ch, size_t used) {
    refresh_after_fork(ch);
    if (!ch->send_claimed || used > ch->send_room) return SHMIPC_EINVAL;
    if (check_length(ch, used) != SHMIPC_OK) {
        shmipc_channel_send_abort(ch);
        return SHMIPC_EKIND;
    }
    uint64_t w = ch->send_position;
    atomic_store_explicit(word_at(ch, w & ch->mask), used | ((uint64_t)TAG_MESSAGE << 32),
                          memory_order_relaxed);
    ch->send_claimed = false;
    commit_write(ch, w + FRAME_HEADER + align8(used), 1);
    release_producer(ch);
    return SHMIPC_OK;
}

void shmipc_channel_send_abort(shmipc_channel *ch) {
    refresh_after_fork(ch);
    if (!ch->send_claimed) return;
    ch->send_claimed = false;
    release_producer(ch); /* nothing was committed: the bytes are overwritten by the next */
}

int shmipc_channel_close_send(shmipc_channel *ch, int64_t timeout_ns) {
    refresh_after_fork(ch);
    if (ch->send_claimed) return SHMIPC_EINVAL;
    budget b = budget_of(timeout_ns);
    int rc = lock_acquire(ch, ROLE_PLOCK, &b, false, 0);
    if (rc != SHMIPC_OK) return rc;
    atomic_store_explicit(&ch->hdr->closed, 1, memory_order_release);
    lock_release(ch, ROLE_PLOCK);
    wake_all(ch, ROLE_ITEMS); /* every sleeper re-checks and sees the end */
    wake(ch, ROLE_SPACE);     /* and a sender waiting for room on a descriptor, ChannelClosed */
    return SHMIPC_OK;
}

/* --- consumers ------------------------------------------------------------------------ */

/* Release the consumer lock, then wake a producer waiting for room; pass a wake-up on to
 * another sleeping consumer if messages remain. */
static void release_consumer(shmipc_channel *ch, bool more) {
    lock_release(ch, ROLE_CLOCK);
    wake(ch, ROLE_SPACE);
    if (more) wake(ch, ROLE_ITEMS);
}

/* Take the consumer lock with a message committed below the write position: on SHMIPC_OK the
 * lock is held and *r, *w are the positions. Waits (spin, then sleep) up to the deadline. */
static int wait_items(shmipc_channel *ch, budget *b, int flags, uint64_t *r, uint64_t *w) {
    int slot = -1, rc;
    bool spun = ch->spin_ns <= 0, slept = false, armed = false;
    int64_t spin = 0, started = 0;
    for (;;) {
        if ((rc = lock_acquire(ch, ROLE_CLOCK, b, true, flags)) != SHMIPC_OK)
            break;
        *r = atomic_load_explicit(&ch->hdr->read_position, memory_order_acquire);
        *w = ch->seen_write;
        if (*w == *r || *w - *r > ch->capacity)
            *w = ch->seen_write =
                atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire);
        if (*w - *r > ch->capacity || (*r & 7)) {
            rc = SHMIPC_ECORRUPT;
        } else if (*w != *r) {
            slot_unregister(ch, slot);
            ready_disarm(ch, 1 << ROLE_ITEMS);
            if (slept) spin_learn(ch, 0, spin, now_ns() - started);
            return SHMIPC_OK; /* the lock stays held */
        } else if (atomic_load_explicit(&ch->hdr->closed, memory_order_acquire)) {
            /* closed is stored after the last commit: a write position loaded after it is
             * final */
            *w = atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire);
            if (*w != *r) {
                ch->seen_write = *w;
                slot_unregister(ch, slot);
                return SHMIPC_OK;
            }
            rc = SHMIPC_EEND;
        } else if (flags & SHMIPC_TRY) {
            rc = SHMIPC_EWOULDBLOCK;
        } else if (budget_expired(b)) {
            rc = SHMIPC_EEMPTY;
        }
        lock_release(ch, ROLE_CLOCK);
        if (rc == SHMIPC_EEND) wake(ch, ROLE_ITEMS); /* pass the news on to the next sleeper */
        if ((rc == SHMIPC_EWOULDBLOCK || rc == SHMIPC_EEMPTY) && ready_on(ch) && !armed) {
            /* Not waiting here: arm the descriptor, then re-check (fenced), so that a commit
             * either is seen now or signals it. */
            armed = true;
            ready_prepare(ch, ROLE_ITEMS);
            if (atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire) != *r ||
                atomic_load_explicit(&ch->hdr->closed, memory_order_acquire)) {
                rc = SHMIPC_OK;
                continue;
            }
        }
        if (rc != SHMIPC_OK) break;
        uint64_t empty_at = *r;
        if (!spun) { /* poll the write position (no lock, no system call) before sleeping */
            spun = true;
            spin = spin_for(ch, 0);
            started = now_ns();
            int64_t until = started + spin;
            for (int polls = 1;; polls++) {
                cpu_relax();
                if (atomic_load_explicit(&ch->hdr->write_position, memory_order_relaxed) !=
                        empty_at ||
                    atomic_load_explicit(&ch->hdr->closed, memory_order_relaxed))
                    break;
                if ((polls & 15) == 0 && now_ns() >= until) break;
            }
            continue;
        }
        if (slot < 0) slot = slot_register(ch, ROLE_ITEMS); /* fenced: the loads below are after */
        if (atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire) != empty_at ||
            atomic_load_explicit(&ch->hdr->closed, memory_order_acquire))
            continue;
        slept = true;
        if ((rc = sleep_on(ch, ROLE_ITEMS, budget_deadline(b), slot >= 0)) == SHMIPC_EINTR)
            break;
    }
    slot_unregister(ch, slot);
    return rc;
}

/* Locate the frame at r (below w, both validated): its payload's offset and length, and the
 * position after it. Skips a padding frame. */
static int locate_frame(shmipc_channel *ch, uint64_t r, uint64_t w, shmipc_slice *msg,
                        uint64_t *next) {
    uint64_t available = w - r, offset = r & ch->mask;
    uint64_t header = atomic_load_explicit(word_at(ch, offset), memory_order_relaxed);
    if (header >> 32 == TAG_PADDING) {
        uint64_t skip = ch->capacity - offset;
        if ((header & 0xFFFFFFFFu) != skip - FRAME_HEADER || skip >= available)
            return SHMIPC_ECORRUPT;
        r += skip;
        available -= skip;
        offset = 0;
        header = atomic_load_explicit(word_at(ch, 0), memory_order_relaxed);
    }
    uint64_t length = header & 0xFFFFFFFFu, size = FRAME_HEADER + align8(length);
    if (header >> 32 != TAG_MESSAGE || size > available || offset + size > ch->capacity ||
        (ch->record_size != 0 && length != ch->record_size))
        return SHMIPC_ECORRUPT;
    msg->offset = offset + FRAME_HEADER;
    msg->length = length;
    *next = r + size;
    return SHMIPC_OK;
}

/* The claim of shmipc_channel_recv_claim_many; positions (may be NULL) gets each message's
 * read position. */
static int claim_many(shmipc_channel *ch, shmipc_slice *msgs, uint64_t *positions, size_t max,
                      size_t *count, int64_t timeout_ns, int flags) {
    refresh_after_fork(ch);
    *count = 0;
    if (ch->recv_claimed || max == 0) return SHMIPC_EINVAL;
    uint64_t r, w;
    budget b = budget_of(timeout_ns);
    int rc = wait_items(ch, &b, flags, &r, &w);
    if (rc != SHMIPC_OK) return rc;
    uint64_t start = r;
    size_t n = 0;
    while (n < max) {
        if (r == w) { /* take what was committed meanwhile too */
            w = atomic_load_explicit(&ch->hdr->write_position, memory_order_acquire);
            if (w == r) break;
            if (w - start > ch->capacity) {
                rc = SHMIPC_ECORRUPT;
                break;
            }
            ch->seen_write = w;
        }
        if (positions != NULL) positions[n] = r; /* before a padding frame, as a lone claim */
        if ((rc = locate_frame(ch, r, w, &msgs[n], &r)) != SHMIPC_OK) break;
        n++;
    }
    if (rc != SHMIPC_OK) {
        release_consumer(ch, false);
        return rc;
    }
    KILLPOINT(KP_RECV_COPIED);
    ch->recv_claimed = true;
    ch->recv_next = r;
    ch->recv_count = n;
    *count = n;
    return SHMIPC_OK;
}

int shmipc_channel_recv_claim_many(shmipc_channel *ch, shmipc_slice *msgs, size_t max,
                                   size_t *count, int64_t timeout_ns, int flags) {
    return claim_many(ch, msgs, NULL, max, count, timeout_ns, flags);
}

int shmipc_channel_recv_claim_positions(shmipc_channel *ch, shmipc_slice *msgs,
                                        uint64_t *positions, size_t max, size_t *count,
                                        int64_t timeout_ns, int flags) {
    if (positions == NULL) {
        *count = 0;
        return SHMIPC_EINVAL;
    }
    return claim_many(ch, msgs, positions, max, count, timeout_ns, flags);
}

int shmipc_channel_recv_position(shmipc_channel *ch, uint64_t *position) {
    refresh_after_fork(ch);
    if (!ch->recv_claimed) return SHMIPC_EINVAL;
    /* Under the consumer lock this handle holds, nobody else stores read_position: its value
     * is where the claim starts (our own load; acquire for symmetry with every other load). */
    *position = atomic_load_explicit(&ch->hdr->read_position, memory_order_acquire);
    return SHMIPC_OK;
}

int shmipc_channel_recv_claim(shmipc_channel *ch, shmipc_slice *msg, int64_t timeout_ns,
                              int flags) {
    size_t count;
    return shmipc_channel_recv_claim_many(ch, msg, 1, &count, timeout_ns, flags);
}

int shmipc_channel_recv_commit(shmipc_channel *ch) {
    refresh_after_fork(ch);
    if (!ch->recv_claimed) return SHMIPC_EINVAL;
    ch->recv_claimed = false;
    /* The commit: the bytes below it may be overwritten from here on (pairs with the
     * producers' acquire load in refresh_read). */
    atomic_store_explicit(&ch->hdr->read_position, ch->recv_next, memory_order_release);
    KILLPOINT(KP_RECV_COMMITTED);
    uint64_t received = atomic_load_explicit(&ch->hdr->received_total, memory_order_relaxed);
    atomic_store_explicit(&ch->hdr->received_total, received + ch->recv_count,
                          memory_order_relaxed);
    release_consumer(ch, ch->recv_next != ch->seen_write);
    return SHMIPC_OK;
}

void shmipc_channel_recv_abort(shmipc_channel *ch) {
    refresh_after_fork(ch);
    if (!ch->recv_claimed) return;
    ch->recv_claimed = false;
    release_consumer(ch, true); /* the messages stay: somebody else may take them */
}

int shmipc_channel_recv(shmipc_channel *ch, void *buf, size_t buflen, size_t *len,
                        int64_t timeout_ns, int flags) {
    shmipc_slice msg;
    int rc = shmipc_channel_recv_claim(ch, &msg, timeout_ns, flags);
    if (rc != SHMIPC_OK) return rc;
    *len = msg.length;
    if (msg.length > buflen) {
        shmipc_channel_recv_abort(ch);
        return SHMIPC_ETOOSMALL;
    }
    if (msg.length != 0) memcpy(buf, ch->data + msg.offset, msg.length); /* buf may be NULL */
    return shmipc_channel_recv_commit(ch);
}

/* --- state ---------------------------------------------------------------------------- */

void shmipc_channel_state(const shmipc_channel *ch, shmipc_state *out) {
    struct shmipc_header *h = ch->hdr;
    out->write_position = atomic_load_explicit(&h->write_position, memory_order_acquire);
    out->read_position = atomic_load_explicit(&h->read_position, memory_order_acquire);
    out->sent = atomic_load_explicit(&h->sent_total, memory_order_relaxed);
    out->received = atomic_load_explicit(&h->received_total, memory_order_relaxed);
    out->recoveries = atomic_load_explicit(&h->recoveries, memory_order_relaxed);
    out->producer_lock = atomic_load_explicit(&h->producer_lock, memory_order_relaxed);
    out->consumer_lock = atomic_load_explicit(&h->consumer_lock, memory_order_relaxed);
    out->receivers_waiting = (uint64_t)__builtin_popcountll(
        atomic_load_explicit(&h->sleepers[ROLE_ITEMS], memory_order_relaxed));
    out->senders_waiting = (uint64_t)__builtin_popcountll(
        atomic_load_explicit(&h->sleepers[ROLE_SPACE], memory_order_relaxed));
    out->closed = atomic_load_explicit(&h->closed, memory_order_relaxed);
    out->semaphore_generation =
        atomic_load_explicit(&h->semaphore_generation, memory_order_relaxed);
}
