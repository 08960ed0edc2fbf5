/*
 * consumer.c - a C consumer on a channel file made by Python: prints every message it receives
 * until the channel is closed for sending and drained (see producer.c).
 *
 * Terminal 1:
 *
 *     python -m shmipc create /tmp/demo-c.shmipc --capacity 64K
 *     make c-examples
 *     build/consumer /tmp/demo-c.shmipc
 *
 * Terminal 2:
 *
 *     build/producer /tmp/demo-c.shmipc --count 5 --close
 *
 * The consumer prints "received 0: hello from C <pid>" .. "received 4: hello from C <pid>",
 * then "end of channel after 5 messages", and exits 0. A Python producer works the same way:
 * `printf 'one\ntwo\n' | python -m shmipc send --bytes --close /tmp/demo-c.shmipc` (on a fresh
 * channel) makes it print "received one", "received two", "end of channel after 2 messages".
 * Bytes that are not printable ASCII are printed as \xNN (a msgpack message from
 * Channel.send() shows as its msgpack bytes). Remove the channel with
 * `python -m shmipc unlink /tmp/demo-c.shmipc`.
 *
 * Options: --count N (exit 0 after N messages), --timeout SECONDS (the longest wait for the
 * next message, default 10; negative waits forever). Exit status: 0 end of channel (or N
 * messages), 1 a shmipc error (one line on stderr), 2 usage, 3 no message for --timeout
 * seconds, 130 Ctrl-C. Messages not yet received stay in the file for the next consumer.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmipc.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int signo) {
    (void)signo;
    interrupted = 1;
}

/* The core calls this while a receive sleeps (after every signal too): nonzero ends the wait
 * with SHMIPC_EINTR and the message, if one comes meanwhile, stays in the channel. */
static int stop_requested(void *arg) {
    (void)arg;
    return interrupted;
}

static void print_message(const unsigned char *p, size_t len) {
    fputs("received ", stdout);
    for (size_t i = 0; i < len; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') putchar(p[i]);
        else printf("\\x%02x", p[i]);
    }
    putchar('\n');
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s PATH [--count N] [--timeout SECONDS]\n", argv0);
    return 2;
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    long count = -1;
    double timeout_s = 10.0;
    char *end;
    for (int opt; (opt = getopt_long(argc, argv, "", options, NULL)) != -1;) {
        switch (opt) {
        case 'n':
            count = strtol(optarg, &end, 10);
            if (*end != '\0' || count < 0) return usage(argv[0]);
            break;
        case 't':
            timeout_s = strtod(optarg, &end);
            if (*end != '\0') return usage(argv[0]);
            break;
        default: return usage(argv[0]);
        }
    }
    if (optind != argc - 1) return usage(argv[0]);
    const char *path = argv[optind];
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint; /* no SA_RESTART: a sleeping receive notices at once */
    sigaction(SIGINT, &sa, NULL);

    shmipc_channel *ch;
    int rc = shmipc_channel_open(path, &ch);
    if (rc != SHMIPC_OK) {
        fprintf(stderr, "consumer: cannot open %s: %s\n", path, shmipc_strerror(rc));
        return 1;
    }
    shmipc_channel_set_interrupt(ch, stop_requested, NULL);
    int64_t timeout_ns = timeout_s < 0 ? SHMIPC_FOREVER : (int64_t)(timeout_s * 1e9);

    /* Start small; a message that does not fit is kept in the channel (SHMIPC_ETOOSMALL with
     * its length), so grow the buffer and receive it again. No message exceeds
     * shmipc_channel_max_message(). */
    size_t size = 256, len;
    unsigned char *buf = malloc(size);
    long received = 0;
    int status = -1;
    while (status < 0 && buf != NULL) {
        if (count >= 0 && received == count) {
            status = 0;
            break;
        }
        rc = shmipc_channel_recv(ch, buf, size, &len, timeout_ns, 0);
        switch (rc) {
        case SHMIPC_OK:
            print_message(buf, len);
            received++;
            break;
        case SHMIPC_ETOOSMALL: {
            unsigned char *bigger = realloc(buf, len);
            if (bigger == NULL) {
                fprintf(stderr, "consumer: out of memory for a message of %zu bytes\n", len);
                status = 1;
                break;
            }
            buf = bigger;
            size = len;
            break;
        }
        case SHMIPC_EEND:
            printf("end of channel after %ld messages\n", received);
            status = 0;
            break;
        case SHMIPC_EEMPTY:
            fprintf(stderr, "consumer: %s (%.3g s) after %ld messages\n", shmipc_strerror(rc),
                    timeout_s, received);
            status = 3;
            break;
        case SHMIPC_EINTR: status = 130; break;
        default:
            fprintf(stderr, "consumer: %s\n", shmipc_strerror(rc));
            status = 1;
        }
        if (interrupted) status = 130;
    }
    if (buf == NULL) {
        fprintf(stderr, "consumer: out of memory\n");
        status = 1;
    }
    free(buf);
    shmipc_channel_close(ch);
    return status;
}
