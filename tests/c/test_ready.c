/*
 * test_ready.c - readiness as a file descriptor: a new descriptor is readable at once; a
 * receive that finds nothing arms it and drains it; a send signals it once per arming, not
 * per message; a held lock makes a timeout-0 call return at once and its release signals; a
 * full ring arms the sender's descriptor and a receive signals it; shmipc_channel_ready_arm;
 * the 28 slots run out with SHMIPC_ENOSLOT and come back on close; a forked child gets its own
 * descriptor that works.
 *
 * usage: test_ready CHANNEL   (a fresh frame channel of 4096 bytes)
 */
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "check.h"

static int readable(int fd, int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, timeout_ms);
    CHECK(n >= 0);
    return n == 1 && (p.revents & POLLIN);
}

/* Datagrams queued on the descriptor, consumed (tests only: users never read it). */
static int count_signals(int fd) {
    char b[8];
    int n = 0;
    while (recv(fd, b, sizeof b, MSG_DONTWAIT) > 0) n++;
    return n;
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *r = t_open(argv[1]), *s = t_open(argv[1]), *r2 = t_open(argv[1]);
    char buf[64];
    size_t len;
    int fd = -1, again = -1;

    CHECK_RC(shmipc_channel_ready_arm(r, SHMIPC_READY_RECV), SHMIPC_EINVAL); /* no fd yet */
    CHECK_RC(shmipc_channel_ready_fd(r, &fd), SHMIPC_OK);
    CHECK(fd >= 0);
    CHECK_RC(shmipc_channel_ready_fd(r, &again), SHMIPC_OK);
    CHECK(again == fd);
    CHECK(readable(fd, 0)); /* born readable */

    /* 1. Empty arms and drains; a send signals; one signal per arming. */
    CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    CHECK(!readable(fd, 0));
    for (int i = 0; i < 3; i++) CHECK_RC(shmipc_channel_send(s, "m", 1, 0, 0), SHMIPC_OK);
    CHECK(readable(fd, 5000));
    CHECK(count_signals(fd) == 1);
    for (int i = 0; i < 3; i++) CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0),
                                         SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    CHECK(!readable(fd, 0));
    CHECK_RC(shmipc_channel_send(s, "n", 1, 0, 0), SHMIPC_OK); /* a new arming: signalled */
    CHECK(readable(fd, 5000));

    /* 2. A consumer lock held by another process: timeout 0 returns at once, the release
     * signals. */
    int held[2], release[2];
    CHECK(pipe(held) == 0 && pipe(release) == 0);
    pid_t holder = fork();
    CHECK(holder >= 0);
    if (holder == 0) {
        shmipc_slice msg;
        CHECK_RC(shmipc_channel_recv_claim(r2, &msg, 0, 0), SHMIPC_OK);
        CHECK(write(held[1], "h", 1) == 1);
        CHECK(read(release[0], buf, 1) == 1);
        shmipc_channel_recv_abort(r2);
        _exit(0);
    }
    CHECK(read(held[0], buf, 1) == 1);
    CHECK_RC(shmipc_channel_send(s, "o", 1, 0, 0), SHMIPC_OK);
    int64_t t0 = t_now_ns();
    CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    CHECK(t_now_ns() - t0 < 2000 * MS); /* a hang guard: it does not wait for the lock */
    CHECK(!readable(fd, 0));
    CHECK(write(release[1], "r", 1) == 1);
    CHECK(readable(fd, 5000));
    int status;
    CHECK(waitpid(holder, &status, 0) == holder && WIFEXITED(status) && !WEXITSTATUS(status));
    CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 1 && buf[0] == 'n');
    CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 1 && buf[0] == 'o');

    /* 3. The sending side: a full ring arms the sender; a receive signals it. */
    int sfd = -1;
    CHECK_RC(shmipc_channel_ready_fd(s, &sfd), SHMIPC_OK);
    char big[1000];
    memset(big, 'x', sizeof big);
    int sent = 0;
    while (shmipc_channel_send(s, big, sizeof big, 0, 0) == SHMIPC_OK) sent++;
    CHECK(sent >= 2);
    CHECK(!readable(sfd, 0));
    CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_ETOOSMALL);
    char out[1000];
    CHECK_RC(shmipc_channel_recv(r, out, sizeof out, &len, 0, 0), SHMIPC_OK);
    CHECK(readable(sfd, 5000));
    CHECK_RC(shmipc_channel_send(s, big, sizeof big, 0, 0), SHMIPC_OK);
    while (shmipc_channel_recv(r, out, sizeof out, &len, 0, 0) == SHMIPC_OK) {
    }

    /* 4. ready_arm: 0 when armed on an empty ring, 1 when a message is waiting. */
    CHECK_RC(shmipc_channel_ready_arm(r, SHMIPC_READY_RECV), 0);
    CHECK(!readable(fd, 0));
    CHECK_RC(shmipc_channel_ready_arm(s, SHMIPC_READY_SEND), 1);
    CHECK_RC(shmipc_channel_send(s, "p", 1, 0, 0), SHMIPC_OK);
    CHECK(readable(fd, 5000));
    CHECK_RC(shmipc_channel_ready_arm(r, SHMIPC_READY_RECV), 1);
    CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);

    /* 5. A forked child asks for its own descriptor, and it is signalled. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int cfd = -1;
        CHECK_RC(shmipc_channel_ready_fd(r, &cfd), SHMIPC_OK);
        CHECK(readable(cfd, 0));
        CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
        CHECK(!readable(cfd, 0));
        CHECK_RC(shmipc_channel_send(s, "c", 1, 0, 0), SHMIPC_OK); /* wakes the parent too */
        CHECK(readable(cfd, 5000));
        CHECK_RC(shmipc_channel_recv(r, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
        CHECK(len == 1 && buf[0] == 'c');
        shmipc_channel_close(r);
        shmipc_channel_close(s);
        shmipc_channel_close(r2);
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* 6. 28 slots: r and s hold two; 26 more, then ENOSLOT; a close frees one. */
    shmipc_channel *more[27];
    for (int i = 0; i < 27; i++) more[i] = t_open(argv[1]);
    for (int i = 0; i < 26; i++) CHECK_RC(shmipc_channel_ready_fd(more[i], &again), SHMIPC_OK);
    CHECK_RC(shmipc_channel_ready_fd(more[26], &again), SHMIPC_ENOSLOT);
    shmipc_channel_close(more[0]);
    CHECK_RC(shmipc_channel_ready_fd(more[26], &again), SHMIPC_OK);
    for (int i = 1; i < 27; i++) shmipc_channel_close(more[i]);

    shmipc_channel_close(r);
    shmipc_channel_close(s);
    shmipc_channel_close(r2);
    puts("ok");
    return 0;
}
