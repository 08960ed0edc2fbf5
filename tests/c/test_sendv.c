/*
 * test_sendv.c - batches. shmipc_channel_sendv sends its messages in order under one lock
 * acquisition and commits what it has written before it waits for room, so a batch larger than
 * the ring goes through while a consumer takes its first messages; with timeout 0 into a ring
 * that holds only part of it, *sent says how many went in and exactly those are received.
 *
 * usage: test_sendv CHANNEL CHANNEL   (two fresh frame channels, capacity 4096)
 */
#include <pthread.h>

#include "check.h"

#define BATCH 500

struct consumer {
    shmipc_channel *ch;
    int received, rc;
};

/* Message i is i % 200 + 1 bytes of (uint8_t)i. */
static size_t length_of(int i) { return (size_t)(i % 200 + 1); }

static void *consume(void *arg) {
    struct consumer *c = arg;
    uint8_t buf[256];
    size_t len;
    while (c->received < BATCH) {
        c->rc = shmipc_channel_recv(c->ch, buf, sizeof buf, &len, 20000 * MS, 0);
        if (c->rc != SHMIPC_OK) return NULL;
        int i = c->received;
        if (len != length_of(i) || buf[0] != (uint8_t)i || buf[len - 1] != (uint8_t)i) {
            fprintf(stderr, "message %d: %zu bytes, first %u\n", i, len, buf[0]);
            c->rc = 99;
            return NULL;
        }
        c->received++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc >= 3);
    static uint8_t payload[BATCH][200];
    struct iovec msgs[BATCH];
    size_t total = 0;
    for (int i = 0; i < BATCH; i++) {
        memset(payload[i], i, sizeof payload[i]);
        msgs[i].iov_base = payload[i];
        msgs[i].iov_len = length_of(i);
        total += 8 + ((length_of(i) + 7) & ~(size_t)7);
    }

    /* 1. A batch many times the ring, with a consumer taking its first messages meanwhile. */
    shmipc_channel *ch = t_open(argv[1]);
    CHECK(total > 10 * shmipc_channel_capacity(ch));
    shmipc_channel_set_spin(ch, 0);
    struct consumer c = {.ch = t_open(argv[1])};
    shmipc_channel_set_spin(c.ch, 0);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, consume, &c) == 0);
    size_t sent = 0;
    CHECK_RC(shmipc_channel_sendv(ch, msgs, BATCH, &sent, 20000 * MS, 0), SHMIPC_OK);
    CHECK(sent == BATCH);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK_RC(c.rc, SHMIPC_OK);
    CHECK(c.received == BATCH);
    shmipc_state st;
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == BATCH && st.received == BATCH && st.write_position == st.read_position);
    CHECK_RC(shmipc_channel_sendv(ch, msgs, 0, &sent, 0, 0), SHMIPC_OK); /* nothing to do */
    CHECK(sent == 0);
    shmipc_channel_close(c.ch);
    shmipc_channel_close(ch);

    /* 2. Timeout 0 into a ring that holds only part of the batch. */
    ch = t_open(argv[2]);
    sent = 12345;
    CHECK_RC(shmipc_channel_sendv(ch, msgs, BATCH, &sent, 0, 0), SHMIPC_EFULL);
    CHECK(sent > 0 && sent < BATCH);
    size_t used = 0;
    for (size_t i = 0; i < sent; i++) used += 8 + ((length_of((int)i) + 7) & ~(size_t)7);
    CHECK(used <= shmipc_channel_capacity(ch));
    CHECK(used + 8 + ((length_of((int)sent) + 7) & ~(size_t)7) > shmipc_channel_capacity(ch));
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == sent && st.write_position == used && st.producer_lock == 0);
    /* the message that did not fit still does not */
    size_t none = 1;
    CHECK_RC(shmipc_channel_sendv(ch, msgs + sent, BATCH - sent, &none, 0, SHMIPC_TRY),
             SHMIPC_EWOULDBLOCK);
    CHECK(none == 0);
    uint8_t buf[256];
    size_t len;
    for (size_t i = 0; i < st.sent; i++) {
        CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
        CHECK(len == length_of((int)i) && buf[0] == (uint8_t)i);
    }
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
