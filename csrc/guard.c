/*
 * The guard serialises changes to an object's state. It is a 64-bit word
 * holding its owner's identity, so an owner that dies while holding it can
 * be recognised and replaced; bit 63 (SLEEPERS) says someone may sleep on it.
 *
 * Sleepers use the futex on the word's high half, which holds SLEEPERS, and
 * sleep only on a value with SLEEPERS set. Every drop clears the word and
 * wakes if SLEEPERS was set, so a sleeper either is woken by the next drop or,
 * if it comes too late for that wake-up (even when the same owner has taken
 * the guard again meanwhile, without SLEEPERS), finds the half changed and
 * does not sleep. The low half would not do: it stays the same when one owner
 * drops and retakes the guard (model/README.md, "Findings").
 */
#include <endian.h>
#include <stdatomic.h>

#include "policy.h"
#include "wh.h"

static const void *high_half(_Atomic uint64_t *g)
{
#if __BYTE_ORDER == __LITTLE_ENDIAN
    return (const char *)g + 4;
#else
    return (const void *)g;
#endif
}

#ifdef WH_CRASH_TEST
/* Tests act here as other processes would between setting SLEEPERS and sleeping. */
void (*wh_guard_before_sleep)(_Atomic uint64_t *g, const void *word, uint32_t val);
#define BEFORE_SLEEP(g, word, val)                                                                 \
    do {                                                                                           \
        if (wh_guard_before_sleep)                                                                 \
            wh_guard_before_sleep((g), (word), (val));                                             \
    } while (0)
#else
#define BEFORE_SLEEP(g, word, val) ((void)0)
#endif

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

int wh_guard_lock(_Atomic uint64_t *g, uint64_t me, int64_t deadline, wh_alive_fn alive, void *actx)
{
    int waited;
    return wh_guard_lock_w(g, me, deadline, alive, actx, &waited);
}

int wh_guard_lock_w(_Atomic uint64_t *g, uint64_t me, int64_t deadline, wh_alive_fn alive,
                    void *actx, int *waited)
{
    uint64_t cur = 0;
    int64_t now, next_probe;

    *waited = 0;
    if (atomic_compare_exchange_strong(g, &cur, me))
        return WH_GUARD_OK;
    for (int i = 0; i < WH_GUARD_SPINS; i++) {
        cpu_relax();
        cur = atomic_load_explicit(g, memory_order_relaxed);
        if (cur == 0 && atomic_compare_exchange_weak(g, &cur, me))
            return WH_GUARD_OK;
    }
    *waited = 1;
    now = wh_now();
    next_probe = now + WH_GUARD_FIRST_PROBE_NS;
    /* However short the caller's deadline, a busy guard gets a brief wait. */
    if (deadline < now + WH_GUARD_GRACE_NS)
        deadline = now + WH_GUARD_GRACE_NS;
    for (;;) {
        int64_t until;
        cur = atomic_load(g);
        if (cur == 0) {
            if (atomic_compare_exchange_weak(g, &cur, me))
                return WH_GUARD_OK;
            continue;
        }
        now = wh_now();
        if (now >= next_probe) {
            uint64_t owner = cur & ~WH_GUARD_SLEEPERS;
            if (owner != me && !alive(actx, owner)) {
                /* Keep the sleepers flag so our unlock wakes those who slept on the dead owner. */
                if (atomic_compare_exchange_strong(g, &cur, me | (cur & WH_GUARD_SLEEPERS)))
                    return WH_GUARD_TAKEN_OVER;
                continue;
            }
            next_probe = now + WH_GUARD_PROBE_EVERY_NS;
        }
        if (now >= deadline)
            return WH_GUARD_BUSY;
        if (!(cur & WH_GUARD_SLEEPERS)) {
            if (!atomic_compare_exchange_weak(g, &cur, cur | WH_GUARD_SLEEPERS))
                continue;
            cur |= WH_GUARD_SLEEPERS;
        }
        until = next_probe < deadline ? next_probe : deadline;
        BEFORE_SLEEP(g, high_half(g), (uint32_t)(cur >> 32));
        wh_futex_wait(high_half(g), (uint32_t)(cur >> 32), until - now);
    }
}

void wh_guard_unlock(_Atomic uint64_t *g)
{
    uint64_t old = atomic_exchange(g, 0);
    if (old & WH_GUARD_SLEEPERS)
        wh_futex_wake_all(high_half(g));
}
