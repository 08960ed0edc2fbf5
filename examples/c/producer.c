/*
 * producer.c - a C producer on a channel file made by Python: sends numbered raw-byte messages.
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
 * The producer prints "sent 0: hello from C <pid>" .. "sent 4: hello from C <pid>" and exits 0.
 * The consumer prints "received 0: hello from C <pid>" .. "received 4: ...", then
 * "end of channel after 5 messages", and exits 0: --close closed the channel for sending once
 * the five were sent, so it ends when drained. Without --close the consumer waits for more
 * (and a later producer may continue); it gives up after --timeout seconds without a message.
 * Python reads the same messages: `python -m shmipc recv --bytes /tmp/demo-c.shmipc`, or
 * shmipc.Channel.open(path).recv_bytes(). Start the producer first and the messages wait in
 * the file until a consumer comes.
 *
 * A channel closed for sending stays closed: another producer run then fails with "the channel
 * was closed for sending" (exit 1). Remove the channel and its semaphores with
 * `python -m shmipc unlink /tmp/demo-c.shmipc`.
 *
 * Options: --count N (messages, default 5), --close (close the channel for sending after them),
 * --timeout SECONDS (how long one send may wait for room, default 5), --interval SECONDS
 * (pause between sends). Exit status: 0 sent, 1 a shmipc error (one line on stderr), 2 usage,
 * 3 the ring stayed full for --timeout seconds (nobody receives), 130 Ctrl-C.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmipc.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int signo) {
    (void)signo;
    interrupted = 1;
}

/* The core calls this while a send sleeps (after every signal too): nonzero ends the wait with
 * SHMIPC_EINTR, with no lock held and nothing half-sent. */
static int stop_requested(void *arg) {
    (void)arg;
    return interrupted;
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s PATH [--count N] [--close] [--timeout SECONDS] [--interval SECONDS]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"count", required_argument, NULL, 'n'},
        {"close", no_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'},
        {"interval", required_argument, NULL, 'i'},
        {NULL, 0, NULL, 0},
    };
    long count = 5;
    int close_after = 0;
    double timeout_s = 5.0, interval_s = 0.0;
    char *end;
    for (int opt; (opt = getopt_long(argc, argv, "", options, NULL)) != -1;) {
        switch (opt) {
        case 'n':
            count = strtol(optarg, &end, 10);
            if (*end != '\0' || count < 0) return usage(argv[0]);
            break;
        case 'c': close_after = 1; break;
        case 't':
            timeout_s = strtod(optarg, &end);
            if (*end != '\0') return usage(argv[0]);
            break;
        case 'i':
            interval_s = strtod(optarg, &end);
            if (*end != '\0' || interval_s < 0) return usage(argv[0]);
            break;
        default: return usage(argv[0]);
        }
    }
    if (optind != argc - 1) return usage(argv[0]);
    const char *path = argv[optind];
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint; /* no SA_RESTART: a sleeping send notices at once */
    sigaction(SIGINT, &sa, NULL);

    shmipc_channel *ch;
    int rc = shmipc_channel_open(path, &ch);
    if (rc != SHMIPC_OK) {
        fprintf(stderr, "producer: cannot open %s: %s\n", path, shmipc_strerror(rc));
        return 1;
    }
    shmipc_channel_set_interrupt(ch, stop_requested, NULL);
    int64_t timeout_ns = timeout_s < 0 ? SHMIPC_FOREVER : (int64_t)(timeout_s * 1e9);

    int status = 0;
    for (long seq = 0; seq < count && status == 0; seq++) {
        char message[96];
        int len = snprintf(message, sizeof message, "%ld: hello from C %ld", seq, (long)getpid());
        /* Raw bytes, no terminating NUL: Python's recv_bytes() gets exactly these. */
        rc = shmipc_channel_send(ch, message, (size_t)len, timeout_ns, 0);
        if (rc == SHMIPC_OK) {
            printf("sent %s\n", message);
        } else if (rc == SHMIPC_EFULL) {
            fprintf(stderr, "producer: message %ld: %s (%.3g s); is a consumer running?\n", seq,
                    shmipc_strerror(rc), timeout_s);
            status = 3;
        } else if (rc == SHMIPC_EINTR) {
            status = 130;
        } else {
            fprintf(stderr, "producer: message %ld: %s\n", seq, shmipc_strerror(rc));
            status = 1;
        }
        if (status == 0 && interval_s > 0) {
            struct timespec pause = {(time_t)interval_s,
                                     (long)((interval_s - (time_t)interval_s) * 1e9)};
            nanosleep(&pause, NULL); /* cut short by Ctrl-C */
        }
        if (interrupted) status = 130;
    }
    if (status == 0 && close_after) {
        rc = shmipc_channel_close_send(ch, timeout_ns);
        if (rc != SHMIPC_OK) {
            fprintf(stderr, "producer: close for sending: %s\n", shmipc_strerror(rc));
            status = 1;
        }
    }
    shmipc_channel_close(ch);
    return status;
}
