/*
 * regression_open_record_channel.c - shmipc_channel_open accepted a record channel and let a C
 * producer put a message of any length into it, where Python readers expect records of
 * exactly record_size bytes. Now a C program may open a record channel, and the core holds
 * every program to the record size: a send of another length is SHMIPC_EKIND, nothing sent.
 *
 * usage: regression_open_record_channel RECORD_CHANNEL   (people{name:4s;age:i}: 8 bytes)
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
    shmipc_channel *ch = t_open(argv[1]);
    CHECK(shmipc_channel_record_size(ch) == 8);
    char record[8] = {'b', 0, 0, 0, 20, 0, 0, 0}; /* people(name=b"b", age=20) */
    CHECK_RC(shmipc_channel_send(ch, record, 7, 0, 0), SHMIPC_EKIND);
    CHECK_RC(shmipc_channel_send(ch, record, 9, 0, 0), SHMIPC_EKIND);
    size_t offset;
    CHECK_RC(shmipc_channel_send_claim(ch, 8, &offset, 0, 0), SHMIPC_OK);
    CHECK_RC(shmipc_channel_send_commit(ch, 4), SHMIPC_EKIND); /* aborted: nothing sent */
    CHECK_RC(shmipc_channel_send(ch, record, 8, 0, 0), SHMIPC_OK);
    char got[16];
    size_t len = 0;
    CHECK_RC(shmipc_channel_recv(ch, got, sizeof got, &len, 0, 0), SHMIPC_OK);
    CHECK(len == 8 && memcmp(got, record, 8) == 0);
    CHECK_RC(shmipc_channel_recv(ch, got, sizeof got, &len, 0, 0), SHMIPC_EEMPTY);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
