/*
 * identity.c - who holds a lock, and whether that process is proven dead.
 *
 * An identity word names a process by pid, pid namespace and start time (see core.h). A lock
 * is taken over only from a holder proven dead: in the same pid namespace as the judge, its pid
 * is gone (kill(pid, 0) fails with ESRCH), or /proc shows another start time (the pid was
 * reused) or a zombie. Whatever cannot be judged - another namespace, an unknown one, a
 * process hidden by hidepid - counts as alive: a waiter waits, it never guesses. A stopped
 * process (SIGSTOP, a debugger) is alive.
 */
#include "core.h" /* first: it defines _GNU_SOURCE */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static _Atomic unsigned fork_epoch = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_in_child(void) {
    atomic_fetch_add_explicit(&fork_epoch, 1, memory_order_relaxed);
    forget_held_locks(); /* held by the parent's threads, not by this child */
}


static void install_atfork(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

void identity_init(void) { pthread_once(&atfork_once, install_atfork); }

void refresh_after_fork(shmipc_channel *ch) {
    if (__builtin_expect(ch->me_epoch == atomic_load_explicit(&fork_epoch, memory_order_relaxed),
                         1))
        return;
    /* A claim open at fork() belongs to the parent: it holds that lock, not this child. */
    ch->send_claimed = false;
    ch->recv_claimed = false;
    /* The readiness slot and its socket are the parent's: this child asks for its own. */
    if (ch->ready_fd >= 0) {
        close(ch->ready_fd);
        ch->ready_fd = -1;
        ch->ready_slot = -1;
        atomic_store_explicit(&ch->ready_local, 0, memory_order_relaxed);
    }
    identity_of_self(ch);
}

/* Read /proc/<pid>/stat: its state letter and start time (field 22). Returns 0 on success,
 * -1 with errno set otherwise. The command name (field 2) may hold spaces and parentheses, so
 * the fields are counted from the last ')'. */
static int proc_stat(pid_t pid, char *state, uint64_t *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int saved = errno;
    close(fd);
    if (n <= 0) {
        errno = n < 0 ? saved : EIO;
        return -1;
    }
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') {
        errno = EIO;
        return -1;
    }
    p += 2;
    *state = *p;
    for (int field = 3; field < 22; field++) { /* p is at field 3; step to field 22 */
        p = strchr(p, ' ');
        if (p == NULL) {
            errno = EIO;
            return -1;
        }
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 0;
}

/* The "Threads:" count of /proc/<pid>/status, or -1. A zombie thread-group leader whose other
 * threads still run is a live process. */
static long proc_threads(pid_t pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strstr(buf, "\nThreads:");
    return p ? strtol(p + 9, NULL, 10) : -1;
}

/* Index+1 of this process's pid namespace in the header's table, 0 if it cannot be known (no
 * /proc) or is not there; with `add`, a namespace not yet in the table is registered (0 if
 * the table is full). */
static unsigned namespace_index(struct shmipc_header *h, bool add) {
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) != 0 || st.st_ino == 0) return 0;
    uint64_t ino = (uint64_t)st.st_ino;
    for (unsigned i = 0; i < NAMESPACE_SLOTS; i++) {
        uint64_t seen = atomic_load_explicit(&h->namespaces[i], memory_order_acquire);
        if (seen == ino) return i + 1;
        if (seen == 0 && add) {
            uint64_t expected = 0;
            if (atomic_compare_exchange_strong_explicit(&h->namespaces[i], &expected, ino,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire) ||
                expected == ino)
                return i + 1;
        }
    }
    return 0;
}

static uint64_t identity_in(struct shmipc_header *h, bool add) {
    pid_t pid = getpid();
    char state;
    uint64_t start = 0;
    /* Without our own start time nobody could judge us: say "unknown namespace" then. */
    uint64_t ns = proc_stat(pid, &state, &start) == 0 ? namespace_index(h, add) : 0;
    return ((uint64_t)pid & ((1u << ID_PID_BITS) - 1)) | (ns << ID_NS_SHIFT) |
           ((start & (((uint64_t)1 << 36) - 1)) << ID_START_SHIFT);
}

uint64_t identity_of_self(shmipc_channel *ch) {
    unsigned epoch = atomic_load_explicit(&fork_epoch, memory_order_relaxed);
    if (__builtin_expect(ch->me != 0 && ch->me_epoch == epoch, 1)) return ch->me;
    ch->me = identity_in(ch->hdr, true);
    ch->me_epoch = epoch;
    return ch->me;
}

uint64_t identity_observer(struct shmipc_header *h) { return identity_in(h, false); }

int identity_judge(uint64_t me, uint64_t who, char *state) {
    char letter = '?';
    if (state != NULL) *state = letter;
    pid_t pid = (pid_t)ID_PID(who);
    if (pid == 0) return 0; /* not an identity at all: a garbage word holds nothing */
    if (ID_NS(who) == 0 || ID_NS(me) == 0 || ID_NS(who) != ID_NS(me)) return -1;
    if (pid == getpid()) { /* another thread of ours, or a previous user of our pid */
        if (state != NULL) *state = 'R';
        return ID_START(who) == ID_START(me);
    }
    if (kill(pid, 0) != 0 && errno == ESRCH) return 0;
    uint64_t start;
    if (proc_stat(pid, &letter, &start) != 0) {
        /* Gone since kill() (dead), or hidden from us by hidepid (cannot judge). */
        return kill(pid, 0) != 0 && errno == ESRCH ? 0 : -1;
    }
    if ((start & (((uint64_t)1 << 36) - 1)) != ID_START(who)) return 0; /* pid reused */
    if (state != NULL) *state = letter;
    if (letter == 'Z' || letter == 'X') return proc_threads(pid) > 1;
    return 1;
}

int identity_alive(shmipc_channel *ch, uint64_t who) {
    return identity_judge(identity_of_self(ch), who, NULL) != 0;
}

int shmipc_channel_holder_alive(shmipc_channel *ch, uint64_t holder) {
    return holder == 0 ? 0 : identity_alive(ch, holder);
}
