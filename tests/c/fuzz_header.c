/*
 * fuzz_header.c - hostile headers and frames against the core's C entry points.
 *
 * The channel at CHANNEL (made by Python, so its semaphores exist) is first given unread
 * messages whose frames run across the end of the ring (a padding frame among them). Then each
 * case copies the file, overwrites fields of the live header, frame headers, other bytes and now
 * and then a fixed field (with the CRC made right again, so the checks after the CRC are
 * reached) or the size, and either attaches to the copy in private memory
 * (shmipc_channel_attach) or writes it to SCRATCH and opens that (shmipc_channel_open). An
 * open channel then gets a few receives, claims, sends and batches with timeout 0 (or
 * SHMIPC_TRY), and between them more hostile writes into the mapping, as a peer could make.
 *
 * It must never crash (it runs under ASan/UBSan too), every call must return one of the codes
 * shmipc.h lists for it, and every slice or claimed offset the core hands out must lie inside
 * the data area. The copies keep the channel id, so they attach to the real channel's
 * semaphores; a fuzzed generation or id ends in SHMIPC_ENOSEM, a clean refusal.
 *
 * usage: fuzz_header CHANNEL SEED CASES SCRATCH
 * prints: cases=N opened=N received=N sent=N claimed=N  and the open codes seen; exits 0, or 1
 *         naming the case and the call that broke a rule.
 */
#include <sys/mman.h>

#include "check.h"

static uint64_t rng;
static uint64_t next_random(void) { /* splitmix64: cases are reproducible from the seed */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t n) { return n ? next_random() % n : 0; }
static int chance(int percent) { return (int)below(100) < percent; }

static uint8_t *original;
static size_t file_size;
static uint64_t capacity;
static uint64_t frame_offsets[256]; /* offsets in the file of the frame headers below w */
static int nframes;
static int case_no;
static const char *call_name;

#define BIT(code) (1u << -(code))
#define ANY_WAIT (BIT(SHMIPC_EINTR) | BIT(SHMIPC_EDEADLK) | BIT(SHMIPC_EWOULDBLOCK))
static const unsigned OPEN_CODES =
    BIT(SHMIPC_OK) | BIT(SHMIPC_ENOENT) | BIT(SHMIPC_EPERM) | BIT(SHMIPC_ENOTCHANNEL) |
    BIT(SHMIPC_EVERSION) | BIT(SHMIPC_ECORRUPT) | BIT(SHMIPC_EKIND) | BIT(SHMIPC_ENOSEM) |
    BIT(SHMIPC_ESYSTEM);
/* EKIND: a fuzzed kind field may make it a record channel, which takes one length only. */
static const unsigned SEND_CODES = BIT(SHMIPC_OK) | BIT(SHMIPC_EFULL) | BIT(SHMIPC_ECLOSED) |
                                   BIT(SHMIPC_ETOOBIG) | BIT(SHMIPC_ECORRUPT) |
                                   BIT(SHMIPC_EKIND) | ANY_WAIT;
static const unsigned RECV_CODES = BIT(SHMIPC_OK) | BIT(SHMIPC_EEMPTY) | BIT(SHMIPC_EEND) |
                                   BIT(SHMIPC_ECORRUPT) | BIT(SHMIPC_ETOOSMALL) | ANY_WAIT;
static const unsigned CLOSE_CODES = BIT(SHMIPC_OK) | BIT(SHMIPC_EFULL) | ANY_WAIT;

static void allowed(int rc, unsigned codes) {
    if (rc > 0 || rc < SHMIPC_EWOULDBLOCK || !(codes & BIT(rc)) ||
        strcmp(shmipc_strerror(rc), "unknown shmipc error") == 0) {
        fprintf(stderr, "case %d: %s returned %d (%s), not a code it may return\n", case_no,
                call_name, rc, shmipc_strerror(rc));
        exit(1);
    }
}

static void inside(uint64_t offset, uint64_t length, uint64_t cap) {
    if (offset > cap || length > cap - offset) {
        fprintf(stderr, "case %d: %s handed out [%llu, +%llu) outside a data area of %llu\n",
                case_no, call_name, (unsigned long long)offset, (unsigned long long)length,
                (unsigned long long)cap);
        exit(1);
    }
}

/* --- mutations ------------------------------------------------------------------------ */

static uint64_t interesting(void) {
    static const uint64_t values[] = {0, 1, 7, 8, 16, 255, 4088, 4096, 4097, 8192, 1u << 31,
                                      0xFFFFFFFFu, 1ULL << 32, (1ULL << 32) | 8,
                                      (2ULL << 32) | 8, 1ULL << 63, ~0ULL - 7, ~0ULL};
    switch (below(4)) {
    case 0: return values[below(sizeof values / sizeof values[0])];
    case 1: return below(1u << 16);
    case 2: return next_random();
    default: return capacity + 8 * below(4) - 16;
    }
}

/* A live header field (8-byte aligned word in 384..4095). */
static void mutate_live(uint8_t *h) {
    static const uint16_t words[] = {T_WRITE_POSITION, T_WRITE_POSITION, T_WRITE_POSITION,
                                     T_READ_POSITION,  T_READ_POSITION,  T_READ_POSITION,
                                     392,              456,              T_PRODUCER_LOCK,
                                     T_CONSUMER_LOCK,  T_CLOSED,         520,
                                     T_SLEEPERS,       T_SLEEPERS + 8,   T_SLEEPERS + 16,
                                     T_SLEEPERS + 24,  T_NAMESPACES,     T_WAITER_SLOTS};
    uint16_t at = words[below(sizeof words / sizeof words[0])];
    if (at == T_NAMESPACES) at += (uint16_t)(8 * below(16));
    if (at == T_WAITER_SLOTS) at += (uint16_t)(8 * below(64));
    uint64_t v = t_get64(h + at);
    switch (below(4)) {
    case 0: v = interesting(); break;
    case 1: v += 8 * (below(2 * capacity / 8 + 16) - capacity / 8 - 8); break; /* a shift */
    case 2: v ^= 1ULL << below(64); break;
    default: v = v & 0xFFFFFFFF00000000ULL; break; /* e.g. closed = 0 */
    }
    t_put64(h + at, v);
}

/* A frame header that was below the write position; `limit`: the bytes mapped. */
static void mutate_frame(uint8_t *file, uint64_t limit) {
    if (nframes == 0) return;
    uint64_t at = frame_offsets[below((uint64_t)nframes)];
    if (at + 8 > limit) return;
    uint8_t *frame = file + at;
    uint64_t v = t_get64(frame);
    switch (below(5)) {
    case 0: v = (v & 0xFFFFFFFF00000000ULL) | (interesting() & 0xFFFFFFFFu); break; /* length */
    case 1: v = (v & 0xFFFFFFFFu) | (below(4) << 32); break;                        /* tag */
    case 2: v ^= 1ULL << below(64); break;
    case 3: v = (v & 0xFFFFFFFF00000000ULL) | ((v + 8 * below(9) - 32) & 0xFFFFFFFFu); break;
    default: v = interesting(); break;
    }
    t_put64(frame, v);
}

/* A fixed field; the CRC is recomputed so the checks after it are reached. */
static void mutate_fixed(uint8_t *h) {
    static const uint8_t fields[] = {T_VERSION, T_HEADER_SIZE, T_CAPACITY, T_KIND,
                                     T_RECORD_SIZE, 52};
    uint8_t at = fields[below(sizeof fields)];
    if (at == T_CAPACITY) t_put64(h + at, chance(50) ? capacity >> below(3) : interesting());
    else if (at == T_KIND) t_put32(h + at, (uint32_t)below(4));
    else t_put32(h + at, chance(50) ? (uint32_t)below(300) : (uint32_t)interesting());
    t_fix_crc(h);
}

static void mutate(uint8_t *file, size_t *size) {
    int kind = (int)below(100);
    if (kind < 35) mutate_live(file);
    else if (kind < 70) mutate_frame(file, file_size);
    else if (kind < 78) file[384 + below(4096 - 384)] = (uint8_t)next_random();
    else if (kind < 83) file[4096 + below(capacity)] = (uint8_t)next_random();
    else if (kind < 91) mutate_fixed(file);
    else if (kind < 95) file[below(384)] ^= (uint8_t)(1u << below(8)); /* CRC now wrong */
    else *size = chance(50) ? below(file_size) : file_size + 8 * (1 + below(600)); /* size */
}

/* --- operations on an open channel ---------------------------------------------------- */

struct tally {
    int opened, received, sent, claimed;
    int open_codes[32];
};

static void operate(shmipc_channel *ch, uint8_t *mapping, struct tally *t, int *got, int *put) {
    uint64_t cap = shmipc_channel_capacity(ch), max = shmipc_channel_max_message(ch);
    uint8_t *data = shmipc_channel_data(ch);
    if (data != mapping + 4096 || max != cap / 2 - 8) {
        fprintf(stderr, "case %d: the handle's facts are wrong\n", case_no);
        exit(1);
    }
    static uint8_t buf[1 << 16], payload[1 << 16];
    shmipc_slice slices[8];
    size_t len, count, offset, sent;
    int flags = chance(60) ? SHMIPC_TRY : 0;
    for (int op = 0, ops = 1 + (int)below(8); op < ops; op++) {
        if (chance(20)) { /* a hostile peer writes meanwhile */
            if (chance(50)) mutate_live(mapping);
            else mutate_frame(mapping, 4096 + cap);
        }
        int rc;
        switch (below(8)) {
        case 0:
        case 1: {
            size_t buflen = chance(20) ? below(64) : sizeof buf;
            call_name = "shmipc_channel_recv";
            rc = shmipc_channel_recv(ch, buf, buflen, &len, 0, flags);
            allowed(rc, RECV_CODES);
            if (rc == SHMIPC_OK) {
                inside(0, len, buflen);
                *got = 1;
            }
            break;
        }
        case 2: {
            size_t max_count = 1 + below(8);
            call_name = "shmipc_channel_recv_claim_many";
            rc = shmipc_channel_recv_claim_many(ch, slices, max_count, &count, 0, flags);
            allowed(rc, RECV_CODES & ~BIT(SHMIPC_ETOOSMALL));
            if (rc != SHMIPC_OK) break;
            if (count < 1 || count > max_count) {
                fprintf(stderr, "case %d: claim_many claimed %zu of %zu\n", case_no, count,
                        max_count);
                exit(1);
            }
            uint64_t sum = 0;
            for (size_t i = 0; i < count; i++) {
                inside(slices[i].offset, slices[i].length, cap);
                for (size_t k = 0; k < slices[i].length; k++) sum += data[slices[i].offset + k];
            }
            buf[0] = (uint8_t)sum; /* the bytes were read (ASan checks every one) */
            *got = 1;
            t->claimed++;
            if (chance(50)) {
                call_name = "shmipc_channel_recv_commit";
                allowed(shmipc_channel_recv_commit(ch), BIT(SHMIPC_OK));
            } else {
                shmipc_channel_recv_abort(ch);
            }
            break;
        }
        case 3:
        case 4: {
            size_t n = chance(10) ? max + below(64) : below(chance(50) ? 64 : max + 1);
            memset(payload, 'p', n < sizeof payload ? n : sizeof payload);
            call_name = "shmipc_channel_send";
            rc = shmipc_channel_send(ch, payload, n < sizeof payload ? n : sizeof payload, 0,
                                     flags);
            allowed(rc, SEND_CODES);
            if (rc == SHMIPC_OK) *put = 1;
            break;
        }
        case 5: {
            struct iovec iov[4];
            size_t n = 1 + below(4);
            for (size_t i = 0; i < n; i++) {
                iov[i].iov_base = payload;
                iov[i].iov_len = below(chance(80) ? 200 : max + 32);
            }
            call_name = "shmipc_channel_sendv";
            rc = shmipc_channel_sendv(ch, iov, n, &sent, 0, flags);
            allowed(rc, SEND_CODES);
            if (sent > n || (rc == SHMIPC_OK && sent != n)) {
                fprintf(stderr, "case %d: sendv sent %zu of %zu (rc %d)\n", case_no, sent, n,
                        rc);
                exit(1);
            }
            if (sent) *put = 1;
            break;
        }
        case 6: {
            size_t n = below(chance(90) ? 256 : max + 16);
            call_name = "shmipc_channel_send_claim";
            rc = shmipc_channel_send_claim(ch, n, &offset, 0, flags);
            allowed(rc, SEND_CODES);
            if (rc != SHMIPC_OK) break;
            inside(offset, n, cap);
            memset(data + offset, 'c', n); /* ASan checks every byte */
            t->claimed++;
            if (chance(70)) {
                size_t used = chance(90) ? below(n + 1) : n + 1;
                call_name = "shmipc_channel_send_commit";
                rc = shmipc_channel_send_commit(ch, used);
                allowed(rc, used <= n ? BIT(SHMIPC_OK) | BIT(SHMIPC_EKIND) : BIT(SHMIPC_EINVAL));
                if (rc == SHMIPC_OK) *put = 1;
                else shmipc_channel_send_abort(ch);
            } else {
                shmipc_channel_send_abort(ch);
            }
            break;
        }
        default: {
            if (chance(30)) {
                call_name = "shmipc_channel_close_send";
                allowed(shmipc_channel_close_send(ch, 0), CLOSE_CODES);
            }
            shmipc_state st;
            shmipc_channel_state(ch, &st);
            break;
        }
        }
    }
}

/* Give the channel unread frames that run across the end of the ring, then read the file. */
static void prepare(const char *path) {
    shmipc_channel *ch = t_open(path);
    uint64_t cap = shmipc_channel_capacity(ch);
    uint8_t msg[512];
    size_t len;
    shmipc_state st;
    for (int i = 0;; i++) {
        shmipc_channel_state(ch, &st);
        if (st.write_position > cap + cap / 8) break;
        size_t n = (size_t)(i * 37 % 300);
        memset(msg, i, n);
        if (shmipc_channel_send(ch, msg, n, 0, 0) != SHMIPC_OK) {
            CHECK_RC(shmipc_channel_recv(ch, msg, sizeof msg, &len, 0, 0), SHMIPC_OK);
            i--;
        }
    }
    for (;;) { /* leave about half the ring unread, with the end of the ring inside it */
        shmipc_channel_state(ch, &st);
        if (st.write_position - st.read_position < cap / 2) break;
        CHECK_RC(shmipc_channel_recv(ch, msg, sizeof msg, &len, 0, 0), SHMIPC_OK);
    }
    shmipc_channel_close(ch);
    original = t_read_file(path, &file_size);
    capacity = t_get64(original + T_CAPACITY);
    uint64_t r = t_get64(original + T_READ_POSITION), w = t_get64(original + T_WRITE_POSITION);
    CHECK(file_size == 4096 + capacity && r / capacity != w / capacity);
    int padded = 0;
    while (r < w && nframes < (int)(sizeof frame_offsets / sizeof frame_offsets[0])) {
        uint64_t offset = r & (capacity - 1), header = t_get64(original + 4096 + offset);
        frame_offsets[nframes++] = 4096 + offset;
        if (header >> 32 == 2) {
            padded = 1;
            r += capacity - offset;
        } else {
            r += 8 + (((header & 0xFFFFFFFFu) + 7) & ~7ULL);
        }
    }
    CHECK(padded && r == w && nframes > 4);
}

int main(int argc, char **argv) {
    CHECK(argc == 5);
    rng = strtoull(argv[2], NULL, 10);
    int cases = atoi(argv[3]);
    char scratch[4096];
    snprintf(scratch, sizeof scratch, "%s/fuzzed.shmipc", argv[4]);
    prepare(argv[1]);
    uint8_t *copy = malloc(file_size + 8 * 601);
    CHECK(copy != NULL);
    struct tally t = {0};
    for (case_no = 0; case_no < cases; case_no++) {
        size_t size = file_size;
        memcpy(copy, original, file_size);
        memset(copy + file_size, 0, 8 * 601);
        for (int m = 0, n = 1 + (int)below(4); m < n; m++) mutate(copy, &size);

        shmipc_channel *ch = (shmipc_channel *)1;
        uint8_t *mapping = NULL;
        size_t mapped = 0;
        int rc;
        if (chance(25)) { /* through a file: shmipc_channel_open maps it itself */
            t_write_file(scratch, copy, size);
            call_name = "shmipc_channel_open";
            rc = shmipc_channel_open(scratch, &ch);
            if (rc == SHMIPC_OK) mapping = (uint8_t *)shmipc_channel_data(ch) - 4096;
        } else { /* a private copy in memory, as the Python binding attaches */
            mapped = size > 0 ? size : 1;
            mapping = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                           0);
            CHECK(mapping != MAP_FAILED);
            memcpy(mapping, copy, size);
            call_name = "shmipc_channel_attach";
            rc = shmipc_channel_attach(mapping, size, &ch);
        }
        allowed(rc, OPEN_CODES);
        t.open_codes[-rc]++;
        if ((rc == SHMIPC_OK) != (ch != NULL)) {
            fprintf(stderr, "case %d: %s returned %d with handle %p\n", case_no, call_name, rc,
                    (void *)ch);
            exit(1);
        }
        if (rc == SHMIPC_OK) {
            int got = 0, put = 0;
            t.opened++;
            if (chance(50)) shmipc_channel_set_spin(ch, 0);
            operate(ch, mapping, &t, &got, &put);
            t.received += got;
            t.sent += put;
            shmipc_channel_close(ch);
        }
        if (mapped) munmap(mapping, mapped);
    }
    unlink(scratch);
    free(copy);
    free(original);
    printf("cases=%d opened=%d received=%d sent=%d claimed=%d\n", cases, t.opened, t.received,
           t.sent, t.claimed);
    for (int code = 0; code < 32; code++)
        if (t.open_codes[code]) printf("open %d %s: %d\n", -code, shmipc_strerror(-code),
                                       t.open_codes[code]);
    return 0;
}
