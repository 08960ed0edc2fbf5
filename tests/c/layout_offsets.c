/*
 * layout_offsets.c - prints where the C compiler puts each field of struct shmipc_header
 * (src/core.h), one "name offset" a line, and the public header's constants, for
 * tests/test_c_core.py to compare with shmipc/layout.py and docs/FORMAT.md, and a semaphore
 * name to compare with shmipc/sync.py. The one program here that includes the core's internal
 * header.
 */
#include <stddef.h>
#include <stdio.h>

#include "core.h"

#define FIELD(name) printf("%s %zu\n", #name, offsetof(struct shmipc_header, name))

int main(void) {
    FIELD(magic);
    FIELD(format_version);
    FIELD(header_size);
    FIELD(capacity);
    FIELD(kind);
    FIELD(record_size);
    FIELD(channel_id);
    FIELD(creator_pid);
    FIELD(schema_length);
    FIELD(created_ns);
    FIELD(header_crc);
    FIELD(schema);
    FIELD(write_position);
    FIELD(sent_total);
    FIELD(producer_lock);
    FIELD(read_position);
    FIELD(received_total);
    FIELD(consumer_lock);
    FIELD(closed);
    FIELD(semaphore_generation);
    FIELD(recoveries);
    FIELD(sleepers);
    FIELD(namespaces);
    FIELD(waiter_slots);
    FIELD(ready_armed);
    FIELD(ready_owners);
    FIELD(ready_epochs);
    FIELD(tasks_done);
    FIELD(queue_maxsize);
    printf("sizeof %zu\n", sizeof(struct shmipc_header));
    printf("SHMIPC_HEADER_SIZE %d\n", SHMIPC_HEADER_SIZE);
    printf("SHMIPC_FORMAT_VERSION %d\n", SHMIPC_FORMAT_VERSION);
    printf("SHMIPC_KIND_FRAMES %d\n", SHMIPC_KIND_FRAMES);
    printf("SHMIPC_KIND_RECORDS %d\n", SHMIPC_KIND_RECORDS);
    printf("SHMIPC_SEM_NAME_MAX %d\n", SHMIPC_SEM_NAME_MAX);
    uint8_t id[16];
    for (int i = 0; i < 16; i++) id[i] = (uint8_t)(i * 17);
    char name[SHMIPC_SEM_NAME_MAX];
    shmipc_semaphore_name(id, 7, 'p', name);
    printf("semaphore_name %s\n", name);
    return 0;
}
