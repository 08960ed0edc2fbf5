/*
 * test_toobig.c - a message larger than shmipc_channel_max_message() (capacity / 2 - 8) is
 * refused with SHMIPC_ETOOBIG by send, sendv (which then sends nothing of the batch) and
 * send_claim; one of exactly the maximum goes through whole, also where it must be preceded
 * by a padding frame at the end of the ring.
 *
 * usage: test_toobig CHANNEL   (a fresh frame channel)
 */
#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    size_t cap = shmipc_channel_capacity(ch), max = shmipc_channel_max_message(ch);
    CHECK(max == cap / 2 - 8);
    uint8_t *msg = malloc(max + 1), *buf = malloc(max + 1);
    CHECK(msg != NULL && buf != NULL);
    for (size_t i = 0; i <= max; i++) msg[i] = (uint8_t)(i * 7 + 1);
    size_t len, sent = 99, offset;

    CHECK_RC(shmipc_channel_send(ch, msg, max + 1, 0, 0), SHMIPC_ETOOBIG);
    CHECK_RC(shmipc_channel_send(ch, msg, max + 1, SHMIPC_FOREVER, SHMIPC_TRY), SHMIPC_ETOOBIG);
    CHECK_RC(shmipc_channel_send(ch, msg, SIZE_MAX, 0, 0), SHMIPC_ETOOBIG);
    CHECK_RC(shmipc_channel_send_claim(ch, max + 1, &offset, 0, 0), SHMIPC_ETOOBIG);
    CHECK_RC(shmipc_channel_send_claim(ch, (size_t)1 << 40, &offset, 0, 0), SHMIPC_ETOOBIG);
    struct iovec batch[3] = {{msg, 1}, {msg, max + 1}, {msg, 2}};
    CHECK_RC(shmipc_channel_sendv(ch, batch, 3, &sent, 0, 0), SHMIPC_ETOOBIG);
    CHECK(sent == 0);
    CHECK_RC(shmipc_channel_recv(ch, buf, max + 1, &len, 0, 0), SHMIPC_EEMPTY);
    shmipc_state st;
    shmipc_channel_state(ch, &st);
    CHECK(st.write_position == 0 && st.sent == 0 && st.producer_lock == 0);

    /* the largest message: from offset 0 ... */
    CHECK_RC(shmipc_channel_send(ch, msg, max, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, msg + 1, max, 0, 0), SHMIPC_OK); /* two fill the ring */
    CHECK_RC(shmipc_channel_send(ch, msg, 0, 0, 0), SHMIPC_EFULL);
    CHECK_RC(shmipc_channel_recv(ch, buf, max + 1, &len, 0, 0), SHMIPC_OK);
    CHECK(len == max && memcmp(buf, msg, max) == 0);
    CHECK_RC(shmipc_channel_recv(ch, buf, max, &len, 0, 0), SHMIPC_OK);
    CHECK(len == max && memcmp(buf, msg + 1, max) == 0);
    /* ... and from just past the middle, where it needs a padding frame first */
    CHECK_RC(shmipc_channel_send(ch, msg, max, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, buf, max + 1, &len, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, msg, 8, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, buf, max + 1, &len, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send(ch, msg + 1, max, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, buf, max + 1, &len, 0, 0), SHMIPC_OK);
    CHECK(len == max && memcmp(buf, msg + 1, max) == 0);
    shmipc_channel_state(ch, &st);
    CHECK(st.sent == 5 && st.received == 5 && st.read_position == st.write_position);
    /* max, max, max, 8 bytes, the padding frame, max */
    CHECK(st.write_position == 3 * (cap / 2) + 16 + (cap / 2 - 16) + cap / 2);
    free(msg);
    free(buf);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
