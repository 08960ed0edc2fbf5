/*
 * test_close_send.c - closing for sending: later sends (plain, batch, claim) return
 * SHMIPC_ECLOSED; receivers drain what was sent before and then get SHMIPC_EEND, at once and
 * with every timeout; a receiver asleep on an empty channel is woken by the close.
 *
 * usage: test_close_send CHANNEL CHANNEL   (two fresh frame channels)
 */
#include <pthread.h>

#include "check.h"

struct receiver {
    shmipc_channel *ch;
    char got[64];
    int count, last_rc;
};

static void *receive_until_end(void *arg) {
    struct receiver *r = arg;
    char buf[16];
    size_t len;
    for (;;) {
        r->last_rc = shmipc_channel_recv(r->ch, buf, sizeof buf, &len, 30000 * MS, 0);
        if (r->last_rc != SHMIPC_OK) return NULL;
        CHECK(len == 1 && r->count < (int)sizeof r->got - 1);
        r->got[r->count++] = buf[0];
    }
}

int main(int argc, char **argv) {
    CHECK(argc >= 3);

    /* 1. Pending messages are drained after the close, then the end. */
    shmipc_channel *ch = t_open(argv[1]);
    CHECK_RC(shmipc_channel_send(ch, "a", 1, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, "b", 1, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_close_send(ch, 1000 * MS), SHMIPC_OK);
    CHECK_RC(shmipc_channel_close_send(ch, 1000 * MS), SHMIPC_OK); /* idempotent */
    CHECK_RC(shmipc_channel_send(ch, "c", 1, 0, 0), SHMIPC_ECLOSED);
    CHECK_RC(shmipc_channel_send(ch, "c", 1, SHMIPC_FOREVER, 0), SHMIPC_ECLOSED);
    size_t sent = 99, offset;
    struct iovec one = {"c", 1};
    CHECK_RC(shmipc_channel_sendv(ch, &one, 1, &sent, 0, 0), SHMIPC_ECLOSED);
    CHECK(sent == 0);
    CHECK_RC(shmipc_channel_send_claim(ch, 8, &offset, 0, 0), SHMIPC_ECLOSED);
    shmipc_state st;
    shmipc_channel_state(ch, &st);
    CHECK(st.closed == 1 && st.sent == 2 && st.producer_lock == 0);

    /* another handle (as another process would) sees the same */
    shmipc_channel *other = t_open(argv[1]);
    CHECK_RC(shmipc_channel_send(other, "c", 1, 0, 0), SHMIPC_ECLOSED);
    char buf[16];
    size_t len;
    CHECK_RC(shmipc_channel_recv(other, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 1 && buf[0] == 'a');
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, SHMIPC_FOREVER, 0), SHMIPC_OK);
    CHECK(len == 1 && buf[0] == 'b');
    int64_t t0 = t_now_ns();
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, SHMIPC_FOREVER, 0), SHMIPC_EEND);
    CHECK_RC(shmipc_channel_recv(other, buf, sizeof buf, &len, 0, 0), SHMIPC_EEND);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, SHMIPC_TRY), SHMIPC_EEND);
    shmipc_slice slice;
    size_t count = 9;
    CHECK_RC(shmipc_channel_recv_claim(ch, &slice, 5000 * MS, 0), SHMIPC_EEND);
    CHECK_RC(shmipc_channel_recv_claim_many(ch, &slice, 1, &count, 5000 * MS, 0), SHMIPC_EEND);
    CHECK(count == 0);
    CHECK(t_now_ns() - t0 < 2000 * MS); /* the end is reported at once, not after a timeout */
    shmipc_channel_close(other);
    shmipc_channel_close(ch);

    /* 2. A receiver asleep on the empty channel wakes up for the messages and for the close. */
    ch = t_open(argv[2]);
    shmipc_channel_set_spin(ch, 0);
    struct receiver r = {.ch = ch};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, receive_until_end, &r) == 0);
    usleep(50000);
    CHECK_RC(shmipc_channel_send(ch, "x", 1, 1000 * MS, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, "y", 1, 1000 * MS, 0), SHMIPC_OK);
    for (int i = 0; i < 200; i++) { /* until it is asleep again on the empty channel */
        shmipc_channel_state(ch, &st);
        if (st.read_position == st.write_position && st.receivers_waiting == 1) break;
        usleep(10000);
    }
    t0 = t_now_ns();
    CHECK_RC(shmipc_channel_close_send(ch, 1000 * MS), SHMIPC_OK);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(t_now_ns() - t0 < 5000 * MS); /* woken by the close, not by its 30 s timeout */
    CHECK_RC(r.last_rc, SHMIPC_EEND);
    CHECK(r.count == 2 && memcmp(r.got, "xy", 2) == 0);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
