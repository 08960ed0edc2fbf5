/*
 * test_toosmall.c - a receive into a buffer smaller than the message returns SHMIPC_ETOOSMALL
 * with the length it needs and keeps the message, at the head of the channel and in order;
 * a receive with a big enough buffer then gets it once. Zero-length messages work.
 *
 * usage: test_toosmall CHANNEL   (a fresh frame channel)
 */
#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    char msg[100], buf[128];
    for (int i = 0; i < 100; i++) msg[i] = (char)('A' + i % 26);
    size_t len = 0;

    CHECK_RC(shmipc_channel_send(ch, msg, 100, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, "next", 4, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, buf, 10, &len, 0, 0), SHMIPC_ETOOSMALL);
    CHECK(len == 100);
    len = 0;
    CHECK_RC(shmipc_channel_recv(ch, buf, 99, &len, 0, SHMIPC_TRY), SHMIPC_ETOOSMALL);
    CHECK(len == 100);
    CHECK_RC(shmipc_channel_recv(ch, NULL, 0, &len, 0, 0), SHMIPC_ETOOSMALL);
    CHECK(len == 100);

    /* nothing was consumed, and no lock is left held */
    shmipc_state st;
    shmipc_channel_state(ch, &st);
    CHECK(st.read_position == 0 && st.received == 0 && st.consumer_lock == 0);
    shmipc_channel *other = t_open(argv[1]); /* another consumer sees the same head */
    CHECK_RC(shmipc_channel_recv(other, buf, 50, &len, 0, 0), SHMIPC_ETOOSMALL);
    CHECK(len == 100);
    shmipc_channel_close(other);

    CHECK_RC(shmipc_channel_recv(ch, buf, 100, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 100 && memcmp(buf, msg, 100) == 0);
    CHECK_RC(shmipc_channel_recv(ch, buf, 3, &len, 0, 0), SHMIPC_ETOOSMALL);
    CHECK(len == 4);
    CHECK_RC(shmipc_channel_recv(ch, buf, 4, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 4 && memcmp(buf, "next", 4) == 0);
    CHECK_RC(shmipc_channel_recv(ch, buf, sizeof buf, &len, 0, 0), SHMIPC_EEMPTY);

    /* an empty message fits an empty buffer */
    CHECK_RC(shmipc_channel_send(ch, "", 0, 0, 0), SHMIPC_OK);
    len = 77;
    CHECK_RC(shmipc_channel_recv(ch, buf, 0, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 0);
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == 3 && st.received == 3 && st.write_position == st.read_position);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
