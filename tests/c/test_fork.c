/*
 * test_fork.c - a handle inherited across fork(): the child sends and receives with it as its
 * own process (its identity, the pid in the lock word, is recomputed), and the parent receives
 * every message of the child in order, and the reverse.
 *
 * usage: test_fork CHANNEL   (a fresh frame channel)
 */
#include <sys/wait.h>

#include "check.h"

#define COUNT 2000
#define PID_MASK ((1u << 22) - 1) /* bits 0..21 of an identity word: the pid */

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    int go[2], held[2];
    CHECK(pipe(go) == 0 && pipe(held) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        /* Hold a send claim, and let the parent look at the lock word meanwhile. */
        size_t offset;
        CHECK_RC(shmipc_channel_send_claim(ch, 8, &offset, 5000 * MS, 0), SHMIPC_OK);
        memcpy((char *)shmipc_channel_data(ch) + offset, "claim", 5);
        CHECK(write(held[1], "h", 1) == 1);
        char c;
        CHECK(read(go[0], &c, 1) == 1);
        CHECK_RC(shmipc_channel_send_commit(ch, 5), SHMIPC_OK);
        for (uint32_t i = 0; i < COUNT; i++)
            CHECK_RC(shmipc_channel_send(ch, &i, sizeof i, 20000 * MS, 0), SHMIPC_OK);
        /* and, once the parent has them all, receive what it sends back */
        CHECK(read(go[0], &c, 1) == 1);
        for (uint32_t i = 0; i < COUNT; i++) {
            uint64_t v;
            size_t len;
            CHECK_RC(shmipc_channel_recv(ch, &v, sizeof v, &len, 20000 * MS, 0), SHMIPC_OK);
            CHECK(len == sizeof v && v == (uint64_t)i << 32);
        }
        shmipc_channel_close(ch);
        _exit(0);
    }
    char c;
    CHECK(read(held[0], &c, 1) == 1);
    shmipc_state st;
    shmipc_channel_state(ch, &st);
    CHECK((st.producer_lock & PID_MASK) == (uint64_t)child);
    CHECK(shmipc_channel_holder_alive(ch, st.producer_lock) == 1);
    CHECK_RC(shmipc_channel_send(ch, "p", 1, 0, 0), SHMIPC_EFULL); /* the child holds it */
    CHECK(write(go[1], "g", 1) == 1);

    char buf[16];
    size_t len;
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 20000 * MS, 0), SHMIPC_OK);
    CHECK(len == 5 && memcmp(buf, "claim", 5) == 0);
    for (uint32_t i = 0; i < COUNT; i++) {
        uint32_t v;
        CHECK_RC(shmipc_channel_recv(ch, &v, sizeof v, &len, 20000 * MS, 0), SHMIPC_OK);
        CHECK(len == sizeof v && v == i);
    }
    CHECK(write(go[1], "g", 1) == 1);
    for (uint32_t i = 0; i < COUNT; i++) {
        uint64_t v = (uint64_t)i << 32;
        CHECK_RC(shmipc_channel_send(ch, &v, sizeof v, 20000 * MS, 0), SHMIPC_OK);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == 2 * COUNT + 1 && st.received == 2 * COUNT + 1);
    CHECK(st.producer_lock == 0 && st.consumer_lock == 0 && st.recoveries == 0);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
