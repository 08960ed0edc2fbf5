/*
 * test_tasks.c - a JoinableQueue's count of unfinished tasks, from C: every message sent is a
 * task; shmipc_channel_task_done refuses to pass the messages sent (EINVAL, nothing changed);
 * shmipc_channel_join_tasks times out while tasks remain and returns once a forked consumer
 * has marked every one done; shmipc_channel_wait_fewer waits for a queue's maxsize the same
 * way; shmipc_channel_messages_waiting counts what is sent and not received.
 *
 * usage: test_tasks CHANNEL   (a fresh frame channel)
 */
#include <sys/wait.h>

#include "check.h"

#define COUNT 200

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    uint64_t left = 99;
    char buf[16];
    size_t len;

    CHECK(shmipc_channel_tasks_unfinished(ch) == 0);
    CHECK_RC(shmipc_channel_task_done(ch, &left), SHMIPC_EINVAL);
    CHECK(left == 99 && shmipc_channel_tasks_unfinished(ch) == 0);
    CHECK_RC(shmipc_channel_join_tasks(ch, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_wait_fewer(ch, 0, 0, 0), SHMIPC_EINVAL);

    CHECK_RC(shmipc_channel_send(ch, "a", 1, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, "b", 1, 0, 0), SHMIPC_OK);
    CHECK(shmipc_channel_tasks_unfinished(ch) == 2 && shmipc_channel_messages_waiting(ch) == 2);
    CHECK_RC(shmipc_channel_join_tasks(ch, 0, 0), SHMIPC_EWOULDBLOCK);
    CHECK_RC(shmipc_channel_join_tasks(ch, SHMIPC_FOREVER, SHMIPC_TRY), SHMIPC_EWOULDBLOCK);
    int64_t t0 = t_now_ns();
    CHECK_RC(shmipc_channel_join_tasks(ch, 30 * MS, 0), SHMIPC_EWOULDBLOCK);
    CHECK(t_now_ns() - t0 >= 30 * MS);
    CHECK_RC(shmipc_channel_wait_fewer(ch, 2, 10 * MS, 0), SHMIPC_EWOULDBLOCK);
    CHECK_RC(shmipc_channel_wait_fewer(ch, 3, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(shmipc_channel_messages_waiting(ch) == 1 && shmipc_channel_tasks_unfinished(ch) == 2);
    CHECK_RC(shmipc_channel_task_done(ch, &left), SHMIPC_OK);
    CHECK(left == 1);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_task_done(ch, &left), SHMIPC_OK);
    CHECK(left == 0);
    CHECK_RC(shmipc_channel_task_done(ch, &left), SHMIPC_EINVAL); /* one too many */
    CHECK_RC(shmipc_channel_join_tasks(ch, 0, 0), SHMIPC_OK);

    /* A consumer in another process finishes the tasks slowly; join returns when it is done,
     * and not before. */
    for (int i = 0; i < COUNT; i++)
        CHECK_RC(shmipc_channel_send(ch, &i, sizeof i, 0, 0), SHMIPC_OK);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        for (int i = 0; i < COUNT; i++) {
            int got;
            CHECK_RC(shmipc_channel_recv(ch, &got, sizeof got, &len, 5000 * MS, 0), SHMIPC_OK);
            CHECK(got == i);
            if (i % 50 == 0) usleep(5000);
            CHECK_RC(shmipc_channel_task_done(ch, NULL), SHMIPC_OK);
        }
        _exit(0);
    }
    CHECK_RC(shmipc_channel_join_tasks(ch, 10000 * MS, 0), SHMIPC_OK);
    CHECK(shmipc_channel_tasks_unfinished(ch) == 0 && shmipc_channel_messages_waiting(ch) == 0);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
