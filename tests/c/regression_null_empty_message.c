/*
 * regression_null_empty_message.c - an empty message needs no bytes: sending one from NULL, or
 * receiving one into NULL with buflen 0, is a natural call (shmipc.h does not forbid it). The
 * core passes the NULL to memcpy with length 0 (write_frame, shmipc_channel_recv), which is
 * undefined behaviour in C (memcpy's arguments are declared nonnull, and the compiler may
 * assume so); UBSan reports "null pointer passed as argument". This program passes in a plain
 * build and fails under -fsanitize=undefined.
 *
 * usage: regression_null_empty_message CHANNEL   (a fresh frame channel)
 */
#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    size_t len = 1;
    CHECK_RC(shmipc_channel_send(ch, NULL, 0, 0, 0), SHMIPC_OK);
    struct iovec none = {NULL, 0};
    CHECK_RC(shmipc_channel_sendv(ch, &none, 1, NULL, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_recv(ch, NULL, 0, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 0);
    CHECK_RC(shmipc_channel_recv(ch, NULL, 0, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 0);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
