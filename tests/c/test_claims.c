/*
 * test_claims.c - zero-copy claims. A send claim reserves room in the ring and holds the
 * producer lock: the message is invisible until committed, aborting sends nothing, and a claim
 * that does not fit the tail starts at offset 0 after a padding frame. A receive claim holds
 * the consumer lock: abort keeps the message, commit consumes it; claim_many takes several.
 * Claims used out of order return SHMIPC_EINVAL; waiting for a lock this thread holds through
 * another handle returns SHMIPC_EDEADLK; another thread waits for the claim's commit.
 *
 * usage: test_claims CHANNEL   (a fresh frame channel)
 */
#include <pthread.h>

#include "check.h"

struct sender {
    shmipc_channel *ch;
    int quick_rc, patient_rc;
    int64_t quick_ns;
};

static void *send_while_claimed(void *arg) {
    struct sender *s = arg;
    int64_t t0 = t_now_ns();
    s->quick_rc = shmipc_channel_send(s->ch, "t", 1, 0, 0); /* the lock is held: EFULL */
    s->quick_ns = t_now_ns() - t0;
    s->patient_rc = shmipc_channel_send(s->ch, "t", 1, 20000 * MS, 0); /* after the commit */
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]), *other = t_open(argv[1]);
    size_t cap = shmipc_channel_capacity(ch), max = shmipc_channel_max_message(ch);
    uint8_t *data = shmipc_channel_data(ch);
    char buf[4096];
    size_t len, offset;
    shmipc_state st;

    /* send claim: written in place, invisible until commit, committed shorter than claimed */
    CHECK_RC(shmipc_channel_send_claim(ch, 64, &offset, 0, 0), SHMIPC_OK);
    CHECK(offset == 8 && offset + 64 <= cap);
    memcpy(data + offset, "zero-copy", 9);
    shmipc_channel_state(ch, &st);
    CHECK(st.producer_lock != 0 && shmipc_channel_holder_alive(ch, st.producer_lock) == 1);
    CHECK(st.write_position == 0);
    CHECK_RC(shmipc_channel_recv(other, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    CHECK_RC(shmipc_channel_send(ch, "x", 1, 0, 0), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_send_claim(ch, 8, &offset, 0, 0), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_close_send(ch, 0), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_send(other, "x", 1, 0, 0), SHMIPC_EDEADLK);
    CHECK_RC(shmipc_channel_send_commit(ch, 65), SHMIPC_EINVAL); /* the claim stays open */
    CHECK_RC(shmipc_channel_send_commit(ch, 9), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send_commit(ch, 9), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_recv(other, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 9 && memcmp(buf, "zero-copy", 9) == 0);

    /* abort sends nothing and frees the lock */
    CHECK_RC(shmipc_channel_send_claim(ch, 16, &offset, 0, 0), SHMIPC_OK);
    memcpy(data + offset, "aborted", 7);
    shmipc_channel_send_abort(ch);
    shmipc_channel_send_abort(ch); /* no claim: nothing happens */
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == 1 && st.producer_lock == 0);

    /* a claim that does not fit the tail: padding, then offset 0 (its payload at 8) */
    CHECK_RC(shmipc_channel_send(ch, buf, max, 0, 0), SHMIPC_OK); /* w: 24 -> 24 + cap/2 */
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send_claim(ch, max, &offset, 0, 0), SHMIPC_OK);
    CHECK(offset == 8);
    memcpy(data + offset, "wrapped", 7);
    CHECK_RC(shmipc_channel_send_commit(ch, 7), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(other, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 7 && memcmp(buf, "wrapped", 7) == 0);

    /* another thread's send waits for the claim's commit (timeout 0: only the lock grace) */
    CHECK_RC(shmipc_channel_send_claim(ch, 8, &offset, 0, 0), SHMIPC_OK);
    memcpy(data + offset, "first", 5);
    struct sender s = {.ch = other};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, send_while_claimed, &s) == 0);
    usleep(100000);
    CHECK_RC(shmipc_channel_send_commit(ch, 5), SHMIPC_OK);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK_RC(s.quick_rc, SHMIPC_EFULL);
    CHECK(s.quick_ns < 2000 * MS);
    CHECK_RC(s.patient_rc, SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 5 && memcmp(buf, "first", 5) == 0);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 1 && buf[0] == 't');

    /* receive claims */
    const char *words[] = {"one", "two", "three", "four"};
    for (int i = 0; i < 4; i++)
        CHECK_RC(shmipc_channel_send(ch, words[i], strlen(words[i]), 0, 0), SHMIPC_OK);
    shmipc_slice slices[8];
    size_t count = 99;
    CHECK_RC(shmipc_channel_recv_claim(ch, &slices[0], 0, 0), SHMIPC_OK);
    CHECK(slices[0].length == 3 && slices[0].offset + slices[0].length <= cap);
    CHECK(memcmp(data + slices[0].offset, "one", 3) == 0);
    shmipc_channel_state(ch, &st);
    CHECK(st.consumer_lock != 0);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_recv_claim(ch, &slices[1], 0, 0), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_recv(other, buf, sizeof buf, &len, 0, 0), SHMIPC_EDEADLK);
    shmipc_channel_recv_abort(ch); /* the message stays */
    shmipc_channel_recv_abort(ch);
    CHECK_RC(shmipc_channel_recv_commit(ch), SHMIPC_EINVAL);
    CHECK_RC(shmipc_channel_recv_claim(other, &slices[0], 0, 0), SHMIPC_OK);
    CHECK(slices[0].length == 3 && memcmp(data + slices[0].offset, "one", 3) == 0);
    CHECK_RC(shmipc_channel_recv_commit(other), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv_claim_many(ch, slices, 0, &count, 0, 0), SHMIPC_EINVAL);
    CHECK(count == 0);
    CHECK_RC(shmipc_channel_recv_claim_many(ch, slices, 1, &count, 0, 0), SHMIPC_OK);
    CHECK(count == 1 && slices[0].length == 3 && memcmp(data + slices[0].offset, "two", 3) == 0);
    CHECK_RC(shmipc_channel_recv_commit(ch), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv_claim_many(ch, slices, 8, &count, 0, 0), SHMIPC_OK);
    CHECK(count == 2);
    CHECK(slices[0].length == 5 && memcmp(data + slices[0].offset, "three", 5) == 0);
    CHECK(slices[1].length == 4 && memcmp(data + slices[1].offset, "four", 4) == 0);
    CHECK_RC(shmipc_channel_recv_commit(ch), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == 9 && st.received == 9 && st.consumer_lock == 0 && st.producer_lock == 0);

    /* closing a handle aborts its open claims */
    CHECK_RC(shmipc_channel_send(ch, "kept", 4, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv_claim(ch, &slices[0], 0, 0), SHMIPC_OK);
    shmipc_channel *third = t_open(argv[1]);
    CHECK_RC(shmipc_channel_send_claim(third, 8, &offset, 0, 0), SHMIPC_OK);
    shmipc_channel_close(third);
    shmipc_channel_close(ch);
    CHECK_RC(shmipc_channel_recv(other, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 4 && memcmp(buf, "kept", 4) == 0);
    shmipc_channel_state(other, &st);
    CHECK(st.sent == 10 && st.consumer_lock == 0 && st.producer_lock == 0);
    shmipc_channel_close(other);
    puts("ok");
    return 0;
}
