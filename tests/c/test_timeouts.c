/*
 * test_timeouts.c - a receive on an empty ring ends with SHMIPC_EEMPTY and a send into a full
 * ring with SHMIPC_EFULL, at once for timeout 0 and after about the timeout otherwise;
 * SHMIPC_TRY answers SHMIPC_EWOULDBLOCK; nothing is lost or half-sent by a timeout. The
 * bounds on elapsed time are loose: the machines that run this are shared.
 *
 * usage: test_timeouts CHANNEL   (a fresh frame channel)
 */
#include "check.h"

#define PAYLOAD 100 /* a frame of 8 + 104 = 112 bytes */

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    shmipc_channel_set_spin(ch, 0); /* the sleeping path: no polling hides a wait */
    char buf[PAYLOAD], msg[PAYLOAD];
    size_t len = 7;

    /* empty ring */
    int64_t t0 = t_now_ns();
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    CHECK(t_now_ns() - t0 < 2000 * MS);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, SHMIPC_TRY), SHMIPC_EWOULDBLOCK);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, SHMIPC_FOREVER, SHMIPC_TRY),
             SHMIPC_EWOULDBLOCK);
    t0 = t_now_ns();
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 60 * MS, 0), SHMIPC_EEMPTY);
    int64_t waited = t_now_ns() - t0;
    CHECK(waited >= 55 * MS && waited < 5000 * MS);
    shmipc_slice slice;
    CHECK_RC(shmipc_channel_recv_claim(ch, &slice, 0, 0), SHMIPC_EEMPTY);

    /* fill the ring: capacity / 112 frames fit from position 0, the next one does not */
    size_t fits = shmipc_channel_capacity(ch) / (8 + 104), sent = 0;
    int rc;
    for (;;) {
        memset(msg, (int)sent, sizeof msg);
        if ((rc = shmipc_channel_send(ch, msg, sizeof msg, 0, 0)) != SHMIPC_OK) break;
        sent++;
    }
    CHECK_RC(rc, SHMIPC_EFULL);
    CHECK(sent == fits);
    CHECK_RC(shmipc_channel_send(ch, msg, sizeof msg, 0, SHMIPC_TRY), SHMIPC_EWOULDBLOCK);
    t0 = t_now_ns();
    CHECK_RC(shmipc_channel_send(ch, msg, sizeof msg, 60 * MS, 0), SHMIPC_EFULL);
    waited = t_now_ns() - t0;
    CHECK(waited >= 55 * MS && waited < 5000 * MS);
    size_t offset, done = 99;
    CHECK_RC(shmipc_channel_send_claim(ch, sizeof msg, &offset, 0, 0), SHMIPC_EFULL);
    struct iovec two[2] = {{msg, sizeof msg}, {msg, sizeof msg}};
    CHECK_RC(shmipc_channel_sendv(ch, two, 2, &done, 0, 0), SHMIPC_EFULL);
    CHECK(done == 0);
    /* a small message still fits the tail (less than one frame of 112 is left) */
    size_t tail = shmipc_channel_capacity(ch) - fits * 112;
    if (tail >= 16) {
        CHECK_RC(shmipc_channel_send(ch, "tail", 4, 0, 0), SHMIPC_OK);
        sent++;
    }

    shmipc_state st;
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == sent && st.producer_lock == 0 && st.consumer_lock == 0);
    CHECK(st.receivers_waiting == 0 && st.senders_waiting == 0);

    /* one received, one fits again; every message intact and in order */
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == PAYLOAD && buf[0] == 0 && buf[PAYLOAD - 1] == 0);
    memset(msg, 0x55, sizeof msg);
    CHECK_RC(shmipc_channel_send(ch, msg, sizeof msg, 0, 0), SHMIPC_OK);
    for (size_t i = 1; i < fits; i++) {
        CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
        CHECK(len == PAYLOAD && (size_t)(unsigned char)buf[0] == i % 256);
    }
    if (tail >= 16) {
        CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
        CHECK(len == 4 && memcmp(buf, "tail", 4) == 0);
    }
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_OK);
    CHECK(len == PAYLOAD && (unsigned char)buf[0] == 0x55);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);
    shmipc_channel_state(ch, &st);
    CHECK(st.write_position == st.read_position && st.sent == st.received);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
