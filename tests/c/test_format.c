/*
 * test_format.c - what shmipc_channel_open and shmipc_channel_attach say about files that are
 * not good channels, in the order docs/FORMAT.md gives: no file (ENOENT), not a regular file or
 * a wrong magic (ENOTCHANNEL), another format version (EVERSION), a bad CRC, header size,
 * capacity, kind, file size or position (ECORRUPT), semaphores that do not exist (ENOSEM).
 * Each case is a copy of a good channel file with one thing changed (the CRC recomputed where
 * the change is in the fixed part, so the check after it is reached).
 *
 * usage: test_format CHANNEL   (a fresh frame channel; copies are written beside it)
 */
#include <sys/mman.h>

#include "check.h"

static const char *base_path;
static uint8_t *good;
static size_t good_size;

/* Write `bytes` (size bytes) beside the channel, open it, and attach to a copy in memory. */
static void expect(const char *what, const uint8_t *bytes, size_t size, int want_open,
                   int want_attach, int line) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", base_path, what);
    t_write_file(path, bytes, size);
    shmipc_channel *ch = (shmipc_channel *)1;
    int rc = shmipc_channel_open(path, &ch);
    if (rc != want_open || (rc != SHMIPC_OK && ch != NULL)) {
        fprintf(stderr, "line %d, %s: open returned %d (%s), expected %d (%s)\n", line, what,
                rc, shmipc_strerror(rc), want_open, shmipc_strerror(want_open));
        exit(1);
    }
    shmipc_channel_close(ch);
    unlink(path);
    if (size == 0) return;
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    memcpy(mem, bytes, size);
    ch = (shmipc_channel *)1;
    rc = shmipc_channel_attach(mem, size, &ch);
    if (rc != want_attach || (rc != SHMIPC_OK && ch != NULL)) {
        fprintf(stderr, "line %d, %s: attach returned %d (%s), expected %d (%s)\n", line,
                what, rc, shmipc_strerror(rc), want_attach, shmipc_strerror(want_attach));
        exit(1);
    }
    shmipc_channel_close(ch);
    munmap(mem, size);
}
#define EXPECT(what, bytes, size, want) expect(what, bytes, size, want, want, __LINE__)

/* A fresh copy of the good file with a 64-bit or 32-bit field replaced. */
static uint8_t *with64(size_t offset, uint64_t value, int fix_crc) {
    uint8_t *copy = malloc(good_size);
    CHECK(copy != NULL);
    memcpy(copy, good, good_size);
    t_put64(copy + offset, value);
    if (fix_crc) t_fix_crc(copy);
    return copy;
}

static uint8_t *with32(size_t offset, uint32_t value, int fix_crc) {
    uint8_t *copy = with64(0, t_get64(good), 0);
    t_put32(copy + offset, value);
    if (fix_crc) t_fix_crc(copy);
    return copy;
}

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    base_path = argv[1];
    good = t_read_file(base_path, &good_size);
    uint64_t cap = t_get64(good + T_CAPACITY);
    CHECK(good_size == 4096 + cap);
    uint8_t *bad;
    char path[4096];

    /* the good file itself, both ways */
    EXPECT("good", good, good_size, SHMIPC_OK);

    /* nothing there, a directory, too short for a magic, an empty file */
    shmipc_channel *ch = (shmipc_channel *)1;
    snprintf(path, sizeof path, "%s.missing", base_path);
    CHECK_RC(shmipc_channel_open(path, &ch), SHMIPC_ENOENT);
    CHECK(ch == NULL);
    snprintf(path, sizeof path, "%s.dir", base_path);
    CHECK(mkdir(path, 0700) == 0);
    CHECK_RC(shmipc_channel_open(path, &ch), SHMIPC_ENOTCHANNEL);
    rmdir(path);
    expect("empty", good, 0, SHMIPC_ENOTCHANNEL, 0, __LINE__);
    expect("seven", good, 7, SHMIPC_ENOTCHANNEL, SHMIPC_ENOTCHANNEL, __LINE__);
    CHECK_RC(shmipc_channel_attach(NULL, good_size, &ch), SHMIPC_EINVAL);

    /* magic, version: checked before anything else */
    bad = with64(0, 0x0a1a43504949484dULL, 0); /* "MHIIPC\x1a\n" */
    EXPECT("magic", bad, good_size, SHMIPC_ENOTCHANNEL);
    free(bad);
    bad = with32(T_VERSION, 1, 0);
    EXPECT("version1", bad, good_size, SHMIPC_EVERSION);
    free(bad);
    bad = with32(T_VERSION, 3, 1);
    EXPECT("version3", bad, good_size, SHMIPC_EVERSION);
    free(bad);

    /* truncated or extended: the size does not match header_size + capacity */
    EXPECT("header_only", good, 4096, SHMIPC_ECORRUPT);
    EXPECT("short_header", good, 100, SHMIPC_ECORRUPT);
    EXPECT("truncated", good, good_size - 1, SHMIPC_ECORRUPT);
    EXPECT("truncated_page", good, good_size - 4096, SHMIPC_ECORRUPT);
    bad = calloc(1, good_size + 4096);
    CHECK(bad != NULL);
    memcpy(bad, good, good_size);
    EXPECT("extended", bad, good_size + 4096, SHMIPC_ECORRUPT);
    free(bad);

    /* the fixed part: a changed byte breaks the CRC; with the CRC fixed, each field's check */
    bad = with32(T_CRC, ~*(uint32_t *)(good + T_CRC), 0);
    EXPECT("crc", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with32(48, 1, 0); /* creator_pid, covered by the CRC */
    EXPECT("creator_pid", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with32(T_HEADER_SIZE, 8192, 1);
    EXPECT("header_size", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with64(T_CAPACITY, cap * 2, 1); /* a good capacity for another size of file */
    EXPECT("capacity", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with64(T_CAPACITY, cap - 8, 1); /* not a power of two */
    EXPECT("capacity_odd", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with64(T_CAPACITY, 0, 1);
    EXPECT("capacity_zero", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with32(T_KIND, 3, 1);
    EXPECT("kind", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with32(T_KIND, 2, 1); /* records of size 0 */
    EXPECT("record_size", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with32(52, 257, 1); /* schema_length */
    EXPECT("schema_length", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);

    /* the live part: positions outside the ring or off the 8-byte grid */
    bad = with64(T_WRITE_POSITION, cap + 8, 0); /* more than the ring holds unread */
    EXPECT("write_ahead", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with64(T_READ_POSITION, 8, 0); /* read ahead of write */
    EXPECT("read_ahead", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with64(T_WRITE_POSITION, 4, 0);
    EXPECT("write_unaligned", bad, good_size, SHMIPC_ECORRUPT);
    free(bad);
    bad = with64(T_WRITE_POSITION, cap, 0); /* a full ring is a valid state */
    EXPECT("write_full", bad, good_size, SHMIPC_OK);
    free(bad);
    bad = with64(T_READ_POSITION, (uint64_t)0 - cap, 0); /* positions wrap modulo 2**64 */
    EXPECT("wrapped", bad, good_size, SHMIPC_OK);
    free(bad);

    /* the semaphores of another generation do not exist */
    bad = with32(T_GENERATION, *(uint32_t *)(good + T_GENERATION) + 1000, 0);
    EXPECT("generation", bad, good_size, SHMIPC_ENOSEM);
    free(bad);
    bad = with64(T_CHANNEL_ID, 0x0123456789abcdefULL, 1); /* another id, a valid CRC */
    EXPECT("channel_id", bad, good_size, SHMIPC_ENOSEM);
    free(bad);

    /* every code has a text, and unknown codes too */
    for (int code = 1; code >= -20; code--) CHECK(shmipc_strerror(code) != NULL);
    CHECK(strcmp(shmipc_strerror(-999), "unknown shmipc error") == 0);
    free(good);
    puts("ok");
    return 0;
}
