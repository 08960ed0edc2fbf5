/*
 * core.h - internal to the shmipc core: the header as a C struct, the handle, and the pieces
 * the source files share. docs/FORMAT.md draws the same layout; shmipc/layout.py holds it as
 * struct constants; tests/test_c_core.py checks that the three agree.
 *
 * Memory order. Every shared word is a C11 atomic and every access names its order:
 *  - write_position: stored with release by the producer after the frame bytes (the commit),
 *    loaded with acquire by consumers before they read frame bytes.
 *  - read_position: stored with release by the consumer after it copied the bytes out, loaded
 *    with acquire by producers before they overwrite them.
 *  - the lock words: taken with an acq_rel compare-and-swap, released with a release store.
 *  - the sleeper masks (registration for a wake-up) form a Dekker pair with the positions:
 *    a sleeper sets its bit, issues a seq_cst fence and re-reads the position; the other side
 *    stores the position, issues a seq_cst fence and reads the mask. At least one of the two
 *    sees the other, so no wake-up is lost. Nothing here assumes x86's ordering.
 *  - the readiness masks (ready_armed, for waiters on a file descriptor) are the same Dekker
 *    pair: the waiter raises its slot's epoch, sets its bit (seq_cst), fences and re-checks;
 *    wake() loads the mask after the waker's fence (see ready.c).
 */
#ifndef SHMIPC_CORE_H
#define SHMIPC_CORE_H

#define _GNU_SOURCE 1
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shmipc.h"

/* The core's internal functions are global symbols of every program linked with it: they
 * carry the library's prefix, so that none collides with a name of that program. */
#define ROLE_LETTERS shmipc__role_letters
#define identity_of_self shmipc__identity_of_self
#define identity_observer shmipc__identity_observer
#define identity_judge shmipc__identity_judge
#define identity_alive shmipc__identity_alive
#define identity_init shmipc__identity_init
#define refresh_after_fork shmipc__refresh_after_fork
#define lock_acquire shmipc__lock_acquire
#define lock_release shmipc__lock_release
#define now_ns shmipc__now_ns
#define budget_deadline shmipc__budget_deadline
#define budget_expired shmipc__budget_expired
#define slot_register shmipc__slot_register
#define slot_unregister shmipc__slot_unregister
#define sleep_on shmipc__sleep_on
#define wake shmipc__wake
#define wake_all shmipc__wake_all
#define repair_sleepers shmipc__repair_sleepers
#define follow_semaphore_generation shmipc__follow_semaphore_generation
#define open_semaphores shmipc__open_semaphores
#define cpu_relax shmipc__cpu_relax
#define held_by_this_thread shmipc__held_by_this_thread
#define note_held shmipc__note_held
#define forget_held_locks shmipc__forget_held_locks
#define header_validate shmipc__header_validate
#define header_crc shmipc__header_crc
#define ready_prepare shmipc__ready_prepare
#define ready_signal shmipc__ready_signal
#define ready_drop shmipc__ready_drop
#define ready_release shmipc__ready_release
#define ready_repair shmipc__ready_repair

#define SHMIPC_MAGIC "SHMIPC\x1a\n"
#define MIN_CAPACITY 4096u
#define MAX_CAPACITY ((uint64_t)1 << 34)
#define SCHEMA_MAX 256u
#define FRAME_HEADER 8u
#define TAG_MESSAGE 1u
#define TAG_PADDING 2u
#define WAITER_SLOTS 64
#define NAMESPACE_SLOTS 16
#define READY_SLOTS 28 /* handles per channel with a readiness descriptor (fileno) */
#define SLICE_NS 250000000LL /* a sleeper re-checks positions and lock holders this often */
#define UNREGISTERED_SLICE_NS 2000000LL /* ... and this often when no waiter slot was free */

/* Roles: semaphore, sleeper mask. */
enum { ROLE_ITEMS = 0, ROLE_SPACE = 1, ROLE_PLOCK = 2, ROLE_CLOCK = 3, ROLES = 4 };
extern const char ROLE_LETTERS[ROLES];

/* Identity word of a process (a lock holder or a registered sleeper); 0 means nobody.
 *   bits  0..21  pid (pid_max is at most 2**22)
 *   bits 22..27  index+1 of the holder's pid namespace in the header's table, 0 = unknown
 *   bits 28..63  process start time in clock ticks since boot, modulo 2**36 */
#define ID_PID_BITS 22
#define ID_NS_SHIFT 22
#define ID_NS_BITS 6
#define ID_START_SHIFT 28
#define ID_PID(w) ((uint32_t)((w) & ((1u << ID_PID_BITS) - 1)))
#define ID_NS(w) ((unsigned)(((w) >> ID_NS_SHIFT) & ((1u << ID_NS_BITS) - 1)))
#define ID_START(w) ((w) >> ID_START_SHIFT)

struct shmipc_header {
    /* fixed part: written once at creation, CRC-32 over bytes 0..63 (crc as 0) + schema */
    char magic[8];                          /*    0 */
    uint32_t format_version;                /*    8 */
    uint32_t header_size;                   /*   12 */
    uint64_t capacity;                      /*   16 */
    uint32_t kind;                          /*   24 */
    uint32_t record_size;                   /*   28 */
    uint8_t channel_id[16];                 /*   32 */
    uint32_t creator_pid;                   /*   48 */
    uint32_t schema_length;                 /*   52 */
    uint64_t created_ns;                    /*   56 */
    uint32_t header_crc;                    /*   64 */
    uint8_t reserved0[60];                  /*   68 */
    char schema[256];                       /*  128 */
    /* producers' cache line */
    _Atomic uint64_t write_position;        /*  384 the commit of producers */
    _Atomic uint64_t sent_total;            /*  392 */
    _Atomic uint64_t producer_lock;         /*  400 holder identity, 0 = free */
    uint8_t reserved1[40];                  /*  408 */
    /* consumers' cache line */
    _Atomic uint64_t read_position;         /*  448 the commit of consumers */
    _Atomic uint64_t received_total;        /*  456 */
    _Atomic uint64_t consumer_lock;         /*  464 */
    uint8_t reserved2[40];                  /*  472 */
    /* rarely written */
    _Atomic uint32_t closed;                /*  512 1 once closed for sending */
    _Atomic uint32_t semaphore_generation;  /*  516 in the semaphore names */
    _Atomic uint64_t recoveries;            /*  520 locks taken over from dead holders */
    uint8_t reserved3[48];                  /*  528 */
    _Atomic uint64_t sleepers[ROLES];       /*  576 bit i: waiter slot i sleeps on role */
    uint8_t reserved4[32];                  /*  608 */
    _Atomic uint64_t namespaces[NAMESPACE_SLOTS]; /* 640 pid namespace inodes seen, 0 = free */
    /* the sequence stamped by shmipc_channel_send_sequenced, committed with its message: it is
     * sequence_last once write_position has reached sequence_end, else sequence_previous */
    _Atomic uint64_t sequence_last;         /*  768 */
    _Atomic uint64_t sequence_previous;     /*  776 */
    _Atomic uint64_t sequence_end;          /*  784 */
    uint8_t reserved5[232];                 /*  792 */
    _Atomic uint64_t waiter_slots[WAITER_SLOTS];  /* 1024 identity of each slot's owner */
    /* readiness: waiters on a file descriptor (ready.c); the armed masks sit alone on their
     * cache line, which every wake-up loads and only an arming or disarming waiter writes */
    _Atomic uint64_t ready_armed[ROLES];    /* 1536 bit i: ready slot i wants a signal for role */
    uint8_t ready_reserved[32];             /* 1568 */
    _Atomic uint64_t ready_owners[READY_SLOTS]; /* 1600 identity of each ready slot's owner */
    _Atomic uint64_t ready_epochs[READY_SLOTS]; /* 1824 raised by the owner as it arms */
    /* shmipc.Queue / JoinableQueue (bytes 2048..2303): see tasks.c */
    _Atomic uint64_t tasks_done;            /* 2048 task_done() calls ever (JoinableQueue) */
    _Atomic uint64_t queue_maxsize;         /* 2056 the Queue's maxsize, 0 = unbounded */
    uint8_t reserved7[240];                 /* 2064 .. 2304 */
    uint8_t reserved8[1792];                /* 2304 .. 4096 */
};

_Static_assert(sizeof(struct shmipc_header) == SHMIPC_HEADER_SIZE, "header is one page");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "8-byte atomics");

/* Set in a test build only through the extension's _killpoint(): see killpoint.c. */
extern _Atomic int shmipc_killpoints_armed;
void shmipc_killpoint_hit(int point);
#define KILLPOINT(p)                                                                   \
    do {                                                                               \
        if (__builtin_expect(atomic_load_explicit(&shmipc_killpoints_armed,            \
                                                  memory_order_relaxed), 0))           \
            shmipc_killpoint_hit(p);                                                   \
    } while (0)
enum {
    KP_LOCKED = 1,      /* a lock was just taken (the holder word is stored: one step) */
    KP_SEND_COPIED,     /* a frame is written, the write position not yet stored */
    KP_SEND_COMMITTED,  /* the write position is stored, the lock still held */
    KP_RECV_COPIED,     /* a message is copied out (or claimed), the read position not stored */
    KP_RECV_COMMITTED,  /* the read position is stored, the lock still held */
    KP_SLEEPING,        /* registered as a sleeper, about to sleep */
    KP_TAKEOVER,        /* a dead holder's lock was just taken over */
    KP_COUNT
};

struct shmipc_channel {
    struct shmipc_header *hdr;
    uint8_t *data;
    uint64_t capacity, mask, max_message;
    void *map_base;  /* non-NULL when shmipc_channel_open mapped it (we unmap it) */
    size_t map_size;
    sem_t *_Atomic sems[ROLES]; /* swapped by follow_semaphore_generation under `follow` */
    pthread_mutex_t follow;
    uint32_t sem_generation;
    uint64_t key; /* the first 8 bytes of the channel id, copied at attach */
    uint8_t channel_id[16]; /* from the validated copy of the header, never re-read */
    uint32_t record_size;   /* records channel: every message is exactly this long; else 0 */
    sem_t *retired[8][ROLES]; /* semaphores of older generations, closed with the handle */
    int nretired;
    int64_t spin_ns;             /* the configured spin, 0 = sleep at once */
    _Atomic int64_t spin_learned[2]; /* the spin each side uses now: see spin_for in channel.c */
    shmipc_interrupt_fn interrupt;
    void *interrupt_arg;
    /* this process as a holder: recomputed after fork */
    uint64_t me;
    unsigned me_epoch;
    /* positions last seen of the other side (a producer's view of read_position, a consumer's
     * view of write_position); only ever behind the truth, refreshed when they look full or
     * empty. Guarded by the respective lock. */
    uint64_t seen_read, seen_write;
    /* sleeps of this handle that ended by a token, and without one (diagnostics) */
    _Atomic uint64_t sleeps_woken, sleeps_expired;
    /* readiness (ready.c): the datagram socket bound to this handle's ready slot, -1 = none;
     * the roles this handle has armed (bit per role); the socket it signals others from; the
     * epoch of each ready slot this handle signalled last (one signal per arming) */
    int ready_fd, ready_slot;
    _Atomic int ready_local;
    _Atomic int ready_tx;
    _Atomic uint64_t ready_drains; /* armings that drained a signal (maybe another waiter's) */
    _Atomic uint64_t ready_sent[READY_SLOTS];
    /* open claims: the lock held and where */
    bool send_claimed, recv_claimed;
    uint64_t send_position, send_room, recv_next, recv_count;
};

static inline sem_t *sem_of(shmipc_channel *ch, int role) {
    return atomic_load_explicit(&ch->sems[role], memory_order_acquire);
}

/* identity.c */
uint64_t identity_of_self(shmipc_channel *ch);          /* registers our namespace */
uint64_t identity_observer(struct shmipc_header *h);    /* changes nothing in the header */
/* 1 alive, 0 proven dead, -1 cannot be judged; *state (if not NULL) the /proc state letter. */
int identity_judge(uint64_t me, uint64_t who, char *state);
int identity_alive(shmipc_channel *ch, uint64_t who);   /* alive or cannot be judged */
void refresh_after_fork(shmipc_channel *ch);            /* first thing in every call */
void identity_init(void);                               /* once, before the first handle */

/* How long a call may wait. Its deadline is read from the clock only when the call is first
 * about to wait, so a call that never waits never reads the clock. */
typedef struct {
    int64_t timeout_ns; /* < 0: forever */
    int64_t deadline;   /* 0 until first needed */
} budget;
static inline budget budget_of(int64_t timeout_ns) { return (budget){timeout_ns, 0}; }
int64_t budget_deadline(budget *b);              /* absolute CLOCK_MONOTONIC ns, -1 forever */
bool budget_expired(budget *b);
#define LOCK_GRACE_NS 5000000LL /* a call that does not wait still waits this long for a lock */

/* lock.c */
/* Take a lock, waiting up to the budget (at least LOCK_GRACE_NS if `grace`). */
int lock_acquire(shmipc_channel *ch, int role, budget *b, bool grace, int flags);
void lock_release(shmipc_channel *ch, int role);

/* wait.c */
int64_t now_ns(void);
int slot_register(shmipc_channel *ch, int role);
void slot_unregister(shmipc_channel *ch, int slot);
/* Sleep on a role's semaphore until a token, the end of a slice or the deadline: SHMIPC_OK
 * (woken, or a signal), 1 (the slice ended without a token), SHMIPC_EINTR. */
int sleep_on(shmipc_channel *ch, int role, int64_t deadline, bool registered);
void wake(shmipc_channel *ch, int role);
void wake_all(shmipc_channel *ch, int role);
void repair_sleepers(shmipc_channel *ch);
void follow_semaphore_generation(shmipc_channel *ch);
int open_semaphores(shmipc_channel *ch, uint32_t generation, sem_t *out[ROLES]);
void cpu_relax(void);
int held_by_this_thread(const shmipc_channel *ch, int role);
void note_held(const shmipc_channel *ch, int role, bool held);
void forget_held_locks(void);

/* ready.c */
static inline bool ready_on(const shmipc_channel *ch) { return ch->ready_fd >= 0; }
/* A call that may not wait: with a readiness descriptor open, a timeout of 0 waits for
 * nothing, not even a lock (the descriptor is armed instead). */
static inline bool ready_nowait(const shmipc_channel *ch, const budget *b) {
    return ch->ready_fd >= 0 && b->timeout_ns == 0;
}
/* Arm `role` for this handle's descriptor (drain it, raise the epoch, set the bit, fence):
 * the caller re-checks its condition afterwards, and a change from here on signals it. */
void ready_prepare(shmipc_channel *ch, int role);
/* Drop this handle's arming of the roles in `roles` (a bit per role): it got what it wanted. */
void ready_drop(shmipc_channel *ch, int roles);
static inline void ready_disarm(shmipc_channel *ch, int roles) {
    if (__builtin_expect(atomic_load_explicit(&ch->ready_local, memory_order_relaxed) & roles, 0))
        ready_drop(ch, roles);
}
void ready_signal(shmipc_channel *ch, uint64_t armed);      /* from wake(): `armed` was loaded */
void ready_release(shmipc_channel *ch);                     /* unregister, close the socket */
void ready_repair(shmipc_channel *ch);                      /* clear slots of dead owners */

/* header.c */
int header_validate(const void *base, size_t size);
uint32_t header_crc(const struct shmipc_header *h);

#endif /* SHMIPC_CORE_H */
