/*
 * bug_open_record_channel.c - shmipc.h says shmipc_channel_open returns SHMIPC_EKIND for a
 * record channel (kind 2), and shmipc_channel_open is for frame channels only: a C producer
 * could otherwise put a message of any length into a channel whose Python readers expect
 * records of exactly record_size bytes. The core's open accepts it instead.
 *
 * usage: bug_open_record_channel RECORD_CHANNEL   (made by `python -m shmipc create --record`)
 */
#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    size_t size;
    uint8_t *file = t_read_file(argv[1], &size);
    uint32_t kind;
    memcpy(&kind, file + T_KIND, 4);
    CHECK(kind == SHMIPC_KIND_RECORDS);
    free(file);
    shmipc_channel *ch = (shmipc_channel *)1;
    CHECK_RC(shmipc_channel_open(argv[1], &ch), SHMIPC_EKIND);
    CHECK(ch == NULL);
    puts("ok");
    return 0;
}
