/*
 * Timing policy: every delay, bound and lease of the library, defined once.
 * doc/FORMAT.md ("Timing") explains each; the Lua facade gets what it needs
 * from the waiters (their next delay), never a copy of these numbers.
 */
#ifndef WH_POLICY_H
#define WH_POLICY_H

#define WH_MS (1000LL * 1000)

/* The guard: spin, then sleep on it; probe the owner's liveness from FIRST_PROBE on, at most
 * once per PROBE_EVERY. A caller that does not want to wait still waits GRACE for a busy
 * guard (a state change in progress is not a busy object). */
#define WH_GUARD_SPINS 64
#define WH_GUARD_FIRST_PROBE_NS (WH_MS / 5)
#define WH_GUARD_PROBE_EVERY_NS WH_MS
#define WH_GUARD_GRACE_NS (10 * WH_MS)
/* release(), __gc, __close and withdrawing a mark wait at most this long for the guard; a
 * release that cannot be done in time is completed later by the process (ops.c, "pending"). */
#define WH_GUARD_RELEASE_NS (10 * WH_MS)

/* Objects */
#define WH_DEFAULT_MODE 0666
#define WH_DEFAULT_AC_NS (100 * WH_MS) /* abandonment_check */
#define WH_MIN_AC_NS WH_MS             /* smaller values are rounded up to this */

/* Blocking waits: a waiter without a mark (the wait table was full) gets no wake-up, so it
 * polls every UNREGISTERED_SLICE. */
#define WH_UNREGISTERED_SLICE_NS (2 * WH_MS)

/* Async waits: delays between polls start at POLL_MIN and grow by 3/2 up to POLL_MAX; a poll
 * skips the full attempt while nothing changed, but not for longer than REATTEMPT. */
#define WH_POLL_MIN_NS WH_MS
#define WH_POLL_MAX_NS (50 * WH_MS)
#define WH_REATTEMPT_NS (50 * WH_MS)

/* A mark's lease: how long after its latest refresh it still counts. */
#define WH_LEASE_MARGIN_NS (500 * WH_MS)

/* Files: the initialisation lock and the "in use" byte (a remover holds it for a moment). */
#define WH_INIT_WAIT_MS 5000
#define WH_INUSE_WAIT_MS 2000

#endif
