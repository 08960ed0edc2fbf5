/*
 * regression_internal_symbols.c - a C program linked with the core may name its own functions as it
 * likes: the core exports only shmipc_* names. The core's internal functions are global
 * symbols with generic names (now_ns, wake, sleep_on, lock_acquire, header_validate, ...), so
 * a program that defines one of them does not link ("multiple definition of `wake'"), and in
 * a shared library one of them would silently replace the core's own.
 *
 * usage: regression_internal_symbols CHANNEL   (a fresh frame channel). The test is that it links.
 */
#include "check.h"

/* Ordinary names for an application's own helpers. */
int64_t now_ns(void) { return t_now_ns(); }
void wake(void) {}
int lock_acquire(void) { return 0; }

int main(int argc, char **argv) {
    CHECK(argc >= 2);
    shmipc_channel *ch = t_open(argv[1]);
    wake();
    CHECK(lock_acquire() == 0 && now_ns() > 0);
    CHECK_RC(shmipc_channel_send(ch, "x", 1, 0, 0), SHMIPC_OK);
    shmipc_channel_close(ch);
    puts("ok");
    return 0;
}
