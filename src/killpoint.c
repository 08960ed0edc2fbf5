/*
 * killpoint.c - kill points for the test suite (see testing.h). The library never arms them.
 */
#include "core.h" /* first: it defines _GNU_SOURCE */

#include <signal.h>
#include <unistd.h>

#include "testing.h"

_Atomic int shmipc_killpoints_armed;
static _Atomic int armed_point, countdown, armed_signal;

const char *const shmipc_killpoint_names[] = {
    "", "locked", "send_copied", "send_committed", "recv_copied", "recv_committed",
    "sleeping", "takeover",
};
const int shmipc_killpoint_count = KP_COUNT;
_Static_assert(sizeof shmipc_killpoint_names / sizeof shmipc_killpoint_names[0] == KP_COUNT,
               "one name per kill point");

int shmipc_killpoint_arm(int point, int after, int signo) {
    if (point < 0 || point >= KP_COUNT) return -1;
    atomic_store(&shmipc_killpoints_armed, 0);
    atomic_store(&armed_point, point);
    atomic_store(&countdown, after > 0 ? after : 1);
    atomic_store(&armed_signal, signo);
    atomic_store(&shmipc_killpoints_armed, point != 0);
    return 0;
}

void shmipc_killpoint_hit(int point) {
    if (point != atomic_load(&armed_point) || atomic_fetch_sub(&countdown, 1) != 1) return;
    atomic_store(&shmipc_killpoints_armed, 0); /* fire once */
    kill(getpid(), atomic_load(&armed_signal));
}
