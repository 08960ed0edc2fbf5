/*
 * check.h - what the C tests of the core share: checks that name the failing line and the
 * return code, a monotonic clock, and file helpers. Each test program is one behaviour; it
 * takes the path of a fresh channel file made by Python (tests/test_c_core.py), prints "ok"
 * and exits 0, or names the failed check on stderr and exits 1.
 *
 * Only the public header is used: these programs are what a C user of the core can write.
 * Names here are prefixed `t_` so that none can collide with the core's.
 */
#ifndef SHMIPC_TEST_CHECK_H
#define SHMIPC_TEST_CHECK_H

#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmipc.h"

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);       \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define CHECK_RC(expr, want)                                                               \
    do {                                                                                   \
        int t_rc_ = (expr), t_want_ = (want);                                              \
        if (t_rc_ != t_want_) {                                                            \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", __FILE__,    \
                    __LINE__, #expr, t_rc_, shmipc_strerror(t_rc_), t_want_,               \
                    shmipc_strerror(t_want_));                                             \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define MS 1000000LL /* nanoseconds */

static inline int64_t t_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline shmipc_channel *t_open(const char *path) {
    shmipc_channel *ch = NULL;
    CHECK_RC(shmipc_channel_open(path, &ch), SHMIPC_OK);
    CHECK(ch != NULL);
    return ch;
}

/* The whole file at `path` in a malloc'd buffer; *size its length. */
static inline uint8_t *t_read_file(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    CHECK(buf != NULL);
    CHECK(pread(fd, buf, (size_t)st.st_size, 0) == st.st_size);
    close(fd);
    *size = (size_t)st.st_size;
    return buf;
}

/* Replace the file at `path` with `size` bytes from `buf`. */
static inline void t_write_file(const char *path, const void *buf, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, buf, size) == (ssize_t)size);
    close(fd);
}

static inline uint64_t t_get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* the format is little-endian, as is every machine these tests run on */
}

static inline void t_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void t_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* The header CRC of docs/FORMAT.md: zlib's CRC-32 of bytes 0..63 with the crc field (64..67,
 * outside that range) ignored, continued over schema_length bytes of schema at 128. Stored at
 * 64 by t_fix_crc, so a test can change a fixed field and reach the checks after the CRC. */
static inline uint32_t t_crc32(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1u));
    }
    return ~crc;
}

static inline void t_fix_crc(uint8_t *header) {
    uint32_t schema_length;
    memcpy(&schema_length, header + 52, 4);
    if (schema_length > 256) schema_length = 256;
    uint32_t crc = t_crc32(t_crc32(0, header, 64), header + 128, schema_length);
    t_put32(header + 64, crc);
}

/* Header offsets of docs/FORMAT.md used by the tests. */
enum {
    T_VERSION = 8, T_HEADER_SIZE = 12, T_CAPACITY = 16, T_KIND = 24, T_RECORD_SIZE = 28,
    T_CHANNEL_ID = 32, T_CRC = 64, T_WRITE_POSITION = 384, T_PRODUCER_LOCK = 400,
    T_READ_POSITION = 448, T_CONSUMER_LOCK = 464, T_CLOSED = 512, T_GENERATION = 516,
    T_SLEEPERS = 576, T_NAMESPACES = 640, T_WAITER_SLOTS = 1024
};

#endif
