/*
 * header.c - validating a channel header read from shared memory, the semaphore names, and
 * the texts of the return codes. Everything read here is untrusted input: another process, a
 * crashed peer or another program may have written anything into the mapping.
 */
#include "core.h" /* first: it defines _GNU_SOURCE */

#include <stdio.h>
#include <string.h>

const char ROLE_LETTERS[ROLES] = {'i', 's', 'p', 'c'};

/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), bitwise: the header is small
 * and validated once per attach. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1u));
    }
    return ~crc;
}

uint32_t header_crc(const struct shmipc_header *h) {
    uint8_t fixed[64];
    memcpy(fixed, h, sizeof fixed); /* bytes 0..63: the crc field itself starts at 64 */
    uint32_t n = h->schema_length <= SCHEMA_MAX ? h->schema_length : SCHEMA_MAX;
    return crc32_update(crc32_update(0, fixed, sizeof fixed), (const uint8_t *)h->schema, n);
}

int header_validate(const void *base, size_t size) {
    const struct shmipc_header *h = base;
    if (size < sizeof h->magic || memcmp(h->magic, SHMIPC_MAGIC, 8) != 0)
        return SHMIPC_ENOTCHANNEL;
    if (size < SHMIPC_HEADER_SIZE) return SHMIPC_ECORRUPT;
    if (h->format_version != SHMIPC_FORMAT_VERSION) return SHMIPC_EVERSION;
    if (h->schema_length > SCHEMA_MAX) return SHMIPC_ECORRUPT;
    if (header_crc(h) != h->header_crc) return SHMIPC_ECORRUPT;
    uint64_t cap = h->capacity;
    if (h->header_size != SHMIPC_HEADER_SIZE || cap < MIN_CAPACITY || cap > MAX_CAPACITY ||
        (cap & (cap - 1)) != 0)
        return SHMIPC_ECORRUPT;
    if (h->kind != SHMIPC_KIND_FRAMES && h->kind != SHMIPC_KIND_RECORDS) return SHMIPC_ECORRUPT;
    if (h->kind == SHMIPC_KIND_RECORDS && (h->record_size == 0 || h->record_size > cap / 2 - 8))
        return SHMIPC_ECORRUPT;
    if (size != SHMIPC_HEADER_SIZE + cap) return SHMIPC_ECORRUPT;
    uint64_t w = atomic_load_explicit(&((struct shmipc_header *)h)->write_position,
                                      memory_order_acquire);
    uint64_t r = atomic_load_explicit(&((struct shmipc_header *)h)->read_position,
                                      memory_order_acquire);
    if ((w & 7) || (r & 7) || w - r > cap) return SHMIPC_ECORRUPT;
    return SHMIPC_OK;
}

void shmipc_semaphore_name(const uint8_t channel_id[16], uint32_t generation, char role,
                           char *buf) {
    static const char hex[] = "0123456789abcdef";
    char id[33];
    for (int i = 0; i < 16; i++) {
        id[2 * i] = hex[channel_id[i] >> 4];
        id[2 * i + 1] = hex[channel_id[i] & 15];
    }
    id[32] = 0;
    snprintf(buf, SHMIPC_SEM_NAME_MAX, "/shmipc-%s-%c%u", id, role, (unsigned)generation);
}

const char *shmipc_strerror(int code) {
    switch (code) {
    case SHMIPC_OK: return "success";
    case SHMIPC_EFULL: return "no room in the ring before the timeout";
    case SHMIPC_EEMPTY: return "no message before the timeout";
    case SHMIPC_ECLOSED: return "the channel was closed for sending";
    case SHMIPC_EEND: return "the channel was closed for sending and is drained";
    case SHMIPC_ETOOBIG: return "the message is larger than the channel takes";
    case SHMIPC_ECORRUPT: return "the channel failed validation (corrupt or overwritten)";
    case SHMIPC_ENOTCHANNEL: return "not a shmipc channel";
    case SHMIPC_EVERSION: return "a shmipc channel of another format version";
    case SHMIPC_ENOSEM: return "a semaphore of the channel is missing; open it from Python to "
                               "rebuild them";
    case SHMIPC_ENOENT: return "no such file";
    case SHMIPC_EPERM: return "permission denied";
    case SHMIPC_ESYSTEM: return "an operating-system error";
    case SHMIPC_EINTR: return "interrupted";
    case SHMIPC_EDEADLK: return "this thread already holds the lock it would wait for";
    case SHMIPC_ETOOSMALL: return "the buffer is smaller than the message";
    case SHMIPC_EINVAL: return "invalid argument";
    case SHMIPC_EKIND: return "another kind of channel (frames or records)";
    case SHMIPC_EWOULDBLOCK: return "the operation would wait";
    case SHMIPC_EDUPLICATE: return "that sequence was applied already";
    case SHMIPC_ENOSLOT: return "every readiness slot of the channel is taken";
    default: return "unknown shmipc error";
    }
}
