/*
 * shmipc.h - the shmipc channel protocol, for C programs and for the Python extension.
 *
 * A channel is a ring buffer of frames in a MAP_SHARED mapping (a file, or an anonymous
 * mapping inherited across fork()), coordinated by four named POSIX semaphores that only wake
 * sleepers: the positions in the header are the truth. The file format is docs/FORMAT.md.
 *
 * Many producers and many consumers may use a channel at once; each message is delivered
 * exactly once, to one consumer, whole, and the messages of one producer arrive in the order
 * sent. A full ring blocks the sender; nothing is dropped or overwritten unread.
 *
 * Every function returns SHMIPC_OK (0) or a negative SHMIPC_E* code; none leaves the caller to
 * read errno. Timeouts are in nanoseconds: SHMIPC_FOREVER (-1) waits without limit, 0 does not
 * wait for data or room (a lock held by a running peer is still waited for a few ms).
 *
 * Hazards, for every function below:
 *  - fork(): a handle survives fork() and works in the child (its process identity is
 *    recomputed); a claim (see _claim) open at the time of fork belongs to the parent only.
 *  - A killed peer: a lock whose holder is proven dead (its pid is gone, or carries another
 *    start time, judged in the same pid namespace) is taken over; nothing a dead peer left
 *    half-written is ever visible. A stopped peer (SIGSTOP, a debugger) blocks its side until it
 *    continues or the caller's timeout expires: a lock never moves from a live process.
 *  - Threads: a handle may be used by several threads at once; shmipc_channel_close must not
 *    race with calls on other threads. A claim (see _claim) belongs to the handle: while one
 *    is open, other calls of the same kind on that handle return SHMIPC_EINVAL.
 *  - A channel file truncated by another program while mapped faults (SIGBUS) on access; no
 *    library can catch that. shmipc_channel_open checks the size.
 */
#ifndef SHMIPC_H
#define SHMIPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHMIPC_FORMAT_VERSION 2
#define SHMIPC_HEADER_SIZE 4096
#define SHMIPC_FOREVER ((int64_t)-1)

/* Return codes. */
enum {
    SHMIPC_OK = 0,
    SHMIPC_EFULL = -1,        /* no room before the timeout */
    SHMIPC_EEMPTY = -2,       /* no message before the timeout */
    SHMIPC_ECLOSED = -3,      /* the channel was closed for sending: no more sends */
    SHMIPC_EEND = -4,         /* closed for sending and drained: nothing more will come */
    SHMIPC_ETOOBIG = -5,      /* a message larger than shmipc_channel_max_message() */
    SHMIPC_ECORRUPT = -6,     /* a header field, position or frame failed validation */
    SHMIPC_ENOTCHANNEL = -7,  /* not a shmipc channel (wrong magic, not a regular file) */
    SHMIPC_EVERSION = -8,     /* a shmipc channel of another format version */
    SHMIPC_ENOSEM = -9,       /* a semaphore of the channel is missing or not a semaphore */
    SHMIPC_ENOENT = -10,      /* no file at the path */
    SHMIPC_EPERM = -11,       /* no permission for the file or its semaphores */
    SHMIPC_ESYSTEM = -12,     /* another operating-system error (out of memory, ...) */
    SHMIPC_EINTR = -13,       /* the interrupt callback asked to stop waiting */
    SHMIPC_EDEADLK = -14,     /* this thread already holds the lock it waits for */
    SHMIPC_ETOOSMALL = -15,   /* the caller's buffer is smaller than the message (kept) */
    SHMIPC_EINVAL = -16,      /* a bad argument, or a claim used out of order */
    SHMIPC_EKIND = -17,       /* a record channel: the message is not exactly record_size bytes */
    SHMIPC_EWOULDBLOCK = -18, /* SHMIPC_TRY only: the operation would have to wait */
    SHMIPC_EDUPLICATE = -19,  /* send_sequenced: that sequence was applied already */
    SHMIPC_ENOSLOT = -20      /* every readiness slot of the channel is taken (ready_fd) */
};

/* Channel kinds (the header's kind field). */
enum { SHMIPC_KIND_FRAMES = 1, SHMIPC_KIND_RECORDS = 2 };

/* Flags of the send/recv calls. */
enum {
    SHMIPC_TRY = 1  /* never wait, not even for a lock: return SHMIPC_EWOULDBLOCK instead */
};

typedef struct shmipc_channel shmipc_channel;

/* One received message inside the ring, for shmipc_channel_recv_claim_many. */
typedef struct {
    size_t offset;  /* byte offset of the payload from the start of the data area */
    size_t length;  /* payload bytes */
} shmipc_slice;

/* Called while a call sleeps, at least every 0.25 s and after every signal; a nonzero result
 * ends the wait with SHMIPC_EINTR (the call leaves no lock held and nothing half-done). */
typedef int (*shmipc_interrupt_fn)(void *arg);

/* A short English text for a return code. Never NULL. */
const char *shmipc_strerror(int code);

/* Open the channel file at `path` (created by Python's shmipc.Channel.create or
 * `python -m shmipc create`), validate its header and positions, map it and open its
 * semaphores. Returns SHMIPC_OK and a handle in *out, or ENOENT, EPERM, ENOTCHANNEL,
 * EVERSION, ECORRUPT (the header or the file size is wrong), ENOSEM (its semaphores are gone: opening it once from Python rebuilds them), ESYSTEM. */
int shmipc_channel_open(const char *path, shmipc_channel **out);

/* Attach to a channel in memory the caller has mapped (MAP_SHARED, `size` bytes from `base`,
 * which must stay mapped until shmipc_channel_close). Validates as shmipc_channel_open does and
 * opens the semaphores named in the header. Used by the Python extension. */
int shmipc_channel_attach(void *base, size_t size, shmipc_channel **out);

/* Release the handle: close its semaphores and, if shmipc_channel_open mapped it, unmap it.
 * The channel and its messages stay. NULL is ignored. */
void shmipc_channel_close(shmipc_channel *ch);

/* Set the seconds a blocked call polls the shared positions before it sleeps (default 50 us;
 * 0 sleeps at once). Per handle. */
void shmipc_channel_set_spin(shmipc_channel *ch, int64_t spin_ns);

/* Set the interrupt callback of this handle (NULL: waits are only ended by their timeout). */
void shmipc_channel_set_interrupt(shmipc_channel *ch, shmipc_interrupt_fn fn, void *arg);

/* Fixed facts of the channel. */
size_t shmipc_channel_capacity(const shmipc_channel *ch);     /* bytes of the data area */
size_t shmipc_channel_max_message(const shmipc_channel *ch);  /* capacity / 2 - 8 */
/* A record channel's record size (every message is exactly that long: sends of another
 * length return SHMIPC_EKIND), or 0 for a channel of byte frames. */
size_t shmipc_channel_record_size(const shmipc_channel *ch);
void *shmipc_channel_data(const shmipc_channel *ch);          /* start of the data area */

/* Send one message of `len` bytes. Blocks while the ring is full, up to timeout_ns.
 * Returns OK, EFULL (timeout), ECLOSED, ETOOBIG, ECORRUPT, EINTR, EDEADLK, EWOULDBLOCK. */
int shmipc_channel_send(shmipc_channel *ch, const void *data, size_t len, int64_t timeout_ns,
                        int flags);

/* Send `count` messages (msgs[i] is one message) in order under one lock acquisition, each
 * committed as soon as it is written, so consumers may take the first ones while later ones
 * wait for room. *sent (if not NULL) is set to the number sent, also on error. Every length
 * is checked before anything is written: ETOOBIG sends nothing. */
int shmipc_channel_sendv(shmipc_channel *ch, const struct iovec *msgs, size_t count,
                         size_t *sent, int64_t timeout_ns, int flags);

/* Send one message stamped with an application sequence number (a JetStream stream sequence,
 * say): the channel's applied sequence becomes `sequence` in the same commit as the message,
 * so a process killed at any instant leaves either both or neither. A sequence not above the
 * applied one returns SHMIPC_EDUPLICATE and sends nothing: redelivery after a crash is
 * idempotent. Meant for one sequenced producer per channel (a bridge); other producers may
 * send plain messages meanwhile. Returns as shmipc_channel_send, or EDUPLICATE. */
int shmipc_channel_send_sequenced(shmipc_channel *ch, const void *data, size_t len,
                                  uint64_t sequence, int64_t timeout_ns, int flags);

/* The applied sequence (0 before any sequenced send), read under the producer lock.
 * Returns OK, EFULL (the lock was not free before the timeout), EINTR. */
int shmipc_channel_applied_sequence(shmipc_channel *ch, uint64_t *sequence,
                                    int64_t timeout_ns);

/* The applied sequence of the channel whose header the caller mapped at `header` (4096 bytes;
 * read-only will do), read without any lock: a value it held at some instant of the call. For
 * tools that must change nothing (shmipc inspect); a sequenced producer uses
 * shmipc_channel_applied_sequence. */
uint64_t shmipc_header_applied_sequence(const void *header);

/* Zero-copy send: reserve room for a message of up to `len` bytes and return its offset in
 * the data area in *offset. The producer lock stays held until shmipc_channel_send_commit
 * (which makes the first `used` bytes, used <= len, one message) or
 * shmipc_channel_send_abort. Keep the claim short: other producers wait. If the process dies
 * holding it, nothing of it is visible and the lock is taken over. */
int shmipc_channel_send_claim(shmipc_channel *ch, size_t len, size_t *offset,
                              int64_t timeout_ns, int flags);
int shmipc_channel_send_commit(shmipc_channel *ch, size_t used);
void shmipc_channel_send_abort(shmipc_channel *ch);

/* Receive one message into buf (buflen bytes); *len is set to its length. Returns OK,
 * EEMPTY (timeout), EEND, ECORRUPT, EINTR, EDEADLK, EWOULDBLOCK, or ETOOSMALL with *len the
 * size needed (the message stays in the channel). */
int shmipc_channel_recv(shmipc_channel *ch, void *buf, size_t buflen, size_t *len,
                        int64_t timeout_ns, int flags);

/* Zero-copy receive: wait for a message and return where its payload lies in the data area.
 * The consumer lock stays held, and the message in the ring, until
 * shmipc_channel_recv_commit (it is consumed) or shmipc_channel_recv_abort (it stays for the
 * next receive). If the process dies holding it, another consumer receives the message. */
int shmipc_channel_recv_claim(shmipc_channel *ch, shmipc_slice *msg, int64_t timeout_ns,
                              int flags);

/* As shmipc_channel_recv_claim for up to `max` messages: waits for the first, then takes those
 * committed now; *count is set to how many. Commit or abort all of them at once. */
int shmipc_channel_recv_claim_many(shmipc_channel *ch, shmipc_slice *msgs, size_t max,
                                   size_t *count, int64_t timeout_ns, int flags);
int shmipc_channel_recv_commit(shmipc_channel *ch);
void shmipc_channel_recv_abort(shmipc_channel *ch);

/* As shmipc_channel_recv_claim_many, and positions[i] set to message i's read position: the
 * value read_position holds when message i is the next to receive (a padding frame before it
 * included). Positions are monotonic 64-bit counters that never repeat in a channel, so the
 * channel id and a position name a message for ever (the NATS bridge's message id). A kill
 * before the commit leaves the messages, at the same positions, to the next consumer.
 * Returns as shmipc_channel_recv_claim_many; EINVAL if positions is NULL. */
int shmipc_channel_recv_claim_positions(shmipc_channel *ch, shmipc_slice *msgs,
                                        uint64_t *positions, size_t max, size_t *count,
                                        int64_t timeout_ns, int flags);

/* The read position of the first message of this handle's open claim (one atomic load, no
 * lock: the claim holds the consumer lock). Returns OK, or EINVAL if no claim is open. */
int shmipc_channel_recv_position(shmipc_channel *ch, uint64_t *position);

/* Close the channel for sending, for every process: later sends return ECLOSED; receivers
 * drain what is left and then get EEND. Waits (up to timeout_ns) for a send in progress:
 * returns OK, EFULL (the producer lock stayed held until the timeout), EINTR. */
int shmipc_channel_close_send(shmipc_channel *ch, int64_t timeout_ns);

/* Readiness as a file descriptor, for select/poll/epoll and event loops.
 *
 * shmipc_channel_ready_fd returns (in *fd) a descriptor owned by the handle that becomes
 * readable when what this handle waits for may have happened: a message may be waiting, room
 * may be free, a lock it found held was released, or the channel was closed. The first call
 * claims one of the channel's 28 ready slots (SHMIPC_ENOSLOT when all are taken by live
 * handles; slots of dead processes are repaired) and binds a datagram socket in the abstract
 * namespace; later calls return the same descriptor; shmipc_channel_close releases both.
 * A new descriptor is readable at once (nothing is armed before the first call that finds
 * nothing to do), so the rule below holds from the first wait on.
 * Returns OK, ENOSLOT, EPERM, ESYSTEM (out of descriptors).
 *
 * The rule is one: wait until the descriptor is readable, then call with a timeout of 0 until
 * the call returns EEMPTY (or EFULL for a send); that call re-arms the descriptor, which then
 * stays quiet until what the call lacked may have changed. A spurious wake-up is possible, a
 * missed one is not (except as below). Never read the descriptor yourself.
 *
 * With a descriptor open, a call with a timeout of 0 on this handle waits for nothing, not
 * even for a lock held by another process for longer than a copy takes: it returns EEMPTY or
 * EFULL and arms the descriptor for the release (a holder proven dead is taken over at once).
 * Sends and receives with a timeout of 0 may be made from an event loop.
 *
 * shmipc_channel_ready_arm arms the descriptor without receiving or sending: `what` is
 * SHMIPC_READY_RECV (a message may be waiting) or SHMIPC_READY_SEND (room may be free).
 * Returns 1 if that holds now (or the channel was closed), 0 if armed: the descriptor becomes
 * readable once it may hold; EINVAL without a descriptor.
 *
 * Hazards: fork() - a child does not inherit the parent's descriptor (its copy is closed at
 * the child's first call on the handle; ask again). A peer killed between its commit and its
 * signal leaves the descriptor quiet until the next commit: poll with a timeout (shmipc's own
 * waits re-check every 0.25 s). Processes in different network namespaces cannot signal each
 * other's descriptors (the socket's name lives in the network namespace). */
enum { SHMIPC_READY_RECV = 1, SHMIPC_READY_SEND = 2 };
int shmipc_channel_ready_fd(shmipc_channel *ch, int *fd);
int shmipc_channel_ready_arm(shmipc_channel *ch, int what);

/* How many times a call on this handle drained a signal from its descriptor. A handle waited
 * on by several waiters of an event loop (one receiving, one sending) shares one descriptor:
 * a call of one that drained a signal may have taken the other's, so the loop wakes the others
 * when this count moves (shmipc.aio does). */
uint64_t shmipc_channel_ready_drains(const shmipc_channel *ch);

/* Nobody waits on this handle's descriptor any more: read what is queued on it and disarm
 * every role, so that no peer signals it until a call arms it again. For an event loop that
 * keeps the descriptor registered while nothing waits (shmipc.aio). */
void shmipc_channel_ready_quiet(shmipc_channel *ch);

/* As shmipc_channel_ready_arm without arming and without a descriptor: 1 if `what` may hold
 * now (from two position loads: cheap enough to poll), 0 if not, EINVAL for a bad `what`. */
int shmipc_channel_ready_peek(shmipc_channel *ch, int what);

/* --- Queues (shmipc.Queue, shmipc.JoinableQueue) -------------------------------------------
 * A JoinableQueue's task is a message: its unfinished tasks are the messages ever sent less the
 * task_done calls ever made (header field tasks_done). The count goes up in the commit of each
 * message, so a send needs no extra step. Nothing posts a wake-up when the count falls: the
 * waits below poll the counters in a sleep whose slices double from 20 us to 2 ms (they react
 * within 2 ms and use no CPU meanwhile), calling the interrupt callback after every signal and
 * every 2 ms slice.
 *
 * Hazards: a consumer killed after a receive and before its task_done leaves that task
 * unfinished for good (joiners then wait until their timeout), as with multiprocessing. */

/* Mark one task done. Returns OK (*unfinished, if not NULL, set to the tasks still
 * unfinished then), or EINVAL if no task is unfinished: task_done was called more times than
 * messages were sent, and nothing changed. */
int shmipc_channel_task_done(shmipc_channel *ch, uint64_t *unfinished);

/* Tasks unfinished now: messages ever sent less task_done calls ever made (never below 0). */
uint64_t shmipc_channel_tasks_unfinished(const shmipc_channel *ch);

/* Messages sent and not yet received now (a snapshot: approximate while others send and
 * receive). */
uint64_t shmipc_channel_messages_waiting(const shmipc_channel *ch);

/* Wait until no task is unfinished, up to timeout_ns. Returns OK, EWOULDBLOCK (tasks remain
 * at the timeout, or at once with SHMIPC_TRY or a timeout of 0), EINTR. */
int shmipc_channel_join_tasks(shmipc_channel *ch, int64_t timeout_ns, int flags);

/* Wait until fewer than max_messages messages wait in the channel (a queue's maxsize), up to
 * timeout_ns. Returns OK, EWOULDBLOCK (as for join_tasks), EINTR, or EINVAL if max_messages
 * is 0. Hazard: only a snapshot: several producers that pass it at once may each send, so a
 * bound enforced this way can be passed by up to (producers - 1) messages. */
int shmipc_channel_wait_fewer(shmipc_channel *ch, uint64_t max_messages, int64_t timeout_ns,
                              int flags);

/* A consistent-enough snapshot of the shared counters, for statistics. */
typedef struct {
    uint64_t write_position, read_position, sent, received, recoveries;
    uint64_t producer_lock, consumer_lock;      /* holder identity words, 0 when free */
    uint64_t receivers_waiting, senders_waiting; /* sleepers registered now */
    uint32_t closed, semaphore_generation;
} shmipc_state;
void shmipc_channel_state(const shmipc_channel *ch, shmipc_state *out);

/* Judge a holder identity word as this process would before taking a lock over:
 * 1 = alive or cannot be judged (another pid namespace, hidden by hidepid), 0 = proven dead. */
int shmipc_channel_holder_alive(shmipc_channel *ch, uint64_t holder);

/* The POSIX name of a channel's semaphore: "/shmipc-<32 hex digits of the id>-<role><gen>",
 * role one of 'i' (items), 's' (space), 'p' (producer lock), 'c' (consumer lock). `buf` holds
 * at least SHMIPC_SEM_NAME_MAX bytes. */
#define SHMIPC_SEM_NAME_MAX 64
void shmipc_semaphore_name(const uint8_t channel_id[16], uint32_t generation, char role,
                           char *buf);

#ifdef __cplusplus
}
#endif
#endif /* SHMIPC_H */
