/*
 * testing.h - for the test suite only: kill points compiled into the protocol.
 *
 * A kill point is a named step of the protocol (core.h lists them). Armed in a process, the
 * n-th time that process reaches the point it sends itself `signo` (SIGKILL to die there,
 * SIGSTOP to stall there until a SIGCONT). Disarmed, a point costs one predictable branch.
 */
#ifndef SHMIPC_TESTING_H
#define SHMIPC_TESTING_H

/* Arm `point` (1..KP_COUNT-1) to fire on its `after`-th hit with signal `signo`; point 0
 * disarms. Returns 0, or -1 for a point that does not exist. */
int shmipc_killpoint_arm(int point, int after, int signo);

/* The names of the points, indexed by number (index 0 is ""), and how many there are. */
extern const char *const shmipc_killpoint_names[];
extern const int shmipc_killpoint_count;

#endif
