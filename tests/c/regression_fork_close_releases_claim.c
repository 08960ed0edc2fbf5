/*
 * regression_fork_close_releases_claim.c - shmipc.h: "a claim open at the time of fork belongs to the
 * parent only". A child that closes its inherited handle, or calls commit/abort on it, must
 * leave the parent's claim and lock alone. The core's shmipc_channel_close, _send_commit,
 * _send_abort, _recv_commit and _recv_abort do not first notice the fork
 * (refresh_after_fork), so the child's close aborts the parent's claims: it stores 0 into the
 * producer and consumer lock words the parent holds. Another producer may then write into the
 * ring under the parent's claim, and another consumer receive the message the parent is
 * receiving (delivered twice).
 *
 * usage: regression_fork_close_releases_claim CHANNEL   (a fresh frame channel)
 */
#include <sys/wait.h>

#include "check.h"

static void run_child(void (*body)(shmipc_channel *), shmipc_channel *ch) {
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        body(ch);
        _exit(0);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void close_it(shmipc_channel *ch) { shmipc_channel_close(ch); }

static void commit_it(shmipc_channel *ch) {
    /* not the child's claim: it has none to commit */
    CHECK_RC(shmipc_channel_send_commit(ch, 4), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_recv_commit(ch), SHMIPC_EINVAL);
}

static void abort_it(shmipc_channel *ch) {
    shmipc_channel_send_abort(ch);
    shmipc_channel_recv_abort(ch);
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    void (*bodies[])(shmipc_channel *) = {close_it, commit_it, abort_it};
    const char *names[] = {"close", "commit", "abort"};
    for (int k = 0; k < 3; k++) {
        CHECK_RC(shmipc_channel_send(ch, "mine", 4, 0, 0), SHMIPC_OK);
        shmipc_slice msg;
        CHECK_RC(shmipc_channel_recv_claim(ch, &msg, 0, 0), SHMIPC_OK);
        size_t offset;
        CHECK_RC(shmipc_channel_send_claim(ch, 8, &offset, 0, 0), SHMIPC_OK);
        shmipc_state before, after;
        shmipc_channel_state(ch, &before);
        run_child(bodies[k], ch);
        shmipc_channel_state(ch, &after);
        if (after.producer_lock != before.producer_lock ||
            after.consumer_lock != before.consumer_lock || after.sent != before.sent ||
            after.received != before.received) {
            fprintf(stderr,
                    "a forked child's %s changed the parent's claims: producer lock %#llx -> "
                    "%#llx, consumer lock %#llx -> %#llx, sent %llu -> %llu, received %llu -> "
                    "%llu\n",
                    names[k], (unsigned long long)before.producer_lock,
                    (unsigned long long)after.producer_lock,
                    (unsigned long long)before.consumer_lock,
                    (unsigned long long)after.consumer_lock, (unsigned long long)before.sent,
                    (unsigned long long)after.sent, (unsigned long long)before.received,
                    (unsigned long long)after.received);
            exit(1);
        }
        CHECK_RC(shmipc_channel_recv_commit(ch), SHMIPC_OK);
        shmipc_channel_send_abort(ch);
    }
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
