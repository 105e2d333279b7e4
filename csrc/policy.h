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
/* release(), __gc, __close and withdrawing a mark wait no longer than GRACE either; a release
 * that cannot be done in time is completed later by the process (pending.c), a mark left
 * behind expires with its lease. The helper thread that completes releases waits for the
 * guard in turns of PENDING_TURN. */
#define WH_PENDING_TURN_NS (100 * WH_MS)

/* Objects */
#define WH_DEFAULT_MODE 0666
#define WH_DEFAULT_AC_NS (100 * WH_MS) /* abandonment_check */
#define WH_MIN_AC_NS WH_MS             /* smaller values are rounded up to this */

/* Marks (wait entries) carry a lease: a mark whose waiter stops refreshing it, because it is
 * stopped (SIGSTOP) or abandoned (a coroutine never resumed), stops counting LEASE(interval)
 * after its latest refresh, where interval is how often its waiter refreshes it: at most
 * 2 x 50 + 100 = 200 ms, whatever abandonment_check is; the slack lets a busy event loop
 * be late for a poll without losing its place. */
#define WH_LEASE_SLACK_NS (100 * WH_MS)
#define WH_LEASE(interval) (2 * (interval) + WH_LEASE_SLACK_NS)

/* Blocking waits sleep on the futex for at most min(abandonment_check, BLOCK_SLICE) at a time,
 * then attempt again (refreshing their mark); a waiter without a mark (the wait table was
 * full) gets no wake-up, so it polls every UNREGISTERED_SLICE. */
#define WH_BLOCK_SLICE_NS (50 * WH_MS)
#define WH_UNREGISTERED_SLICE_NS (2 * WH_MS)

/* Async waits poll; the delay before the next poll depends on the waiter's place in the queue
 * (waiters ahead of it) and on how long the object has been quiet (no change seen):
 *   first in line: quiet / 8, between POLL_MIN and POLL_HEAD_MAX: it takes the object about
 *     one poll after it is released, and polls less while a long hold goes on;
 *   k waiters ahead: (k + 1) x POLL_MIN, and at least quiet / 8, at most POLL_MAX: the queue
 *     cannot move faster than one waiter per POLL_MIN, so it polls before its turn comes.
 * A poll skips the full attempt while nothing changed, but refreshes the mark every half
 * lease. */
#define WH_POLL_MIN_NS (WH_MS / 2)
#define WH_POLL_HEAD_MAX_NS (8 * WH_MS)
#define WH_POLL_MAX_NS (50 * WH_MS)
#define WH_POLL_QUIET_DIV 8

/* Files others may unlink or replace (a tmp cleaner, logind RemoveIPC): the uncontended path
 * checks at most this often that an object's file and the registry file of the process's slot
 * are still linked at their paths; every slow path checks. */
#define WH_LINK_CHECK_NS (4 * WH_MS)

/* Files: the initialisation lock and the "in use" byte (a remover holds it for a moment). */
#define WH_INIT_WAIT_MS 5000
#define WH_INUSE_WAIT_MS 2000
/* Opening a name that something keeps removing (or creating and removing) is retried, with
 * short pauses, for this long. */
#define WH_OPEN_RETRY_NS (10LL * 1000 * WH_MS)

#endif
