/*
 * The guard word's sleep/wake protocol (csrc/guard.c) in one thread: a waiter
 * never sleeps on a guard that was dropped after it set SLEEPERS. The other
 * processes act through the hook the test build calls before a waiter sleeps.
 */
#include <stdio.h>
#include <string.h>

#include "state_fixture.h"

extern void (*wh_guard_before_sleep)(_Atomic uint64_t *g, const void *word, uint32_t val);

#define G_OWNER  WH_IDENT(0, 1)
#define G_WAITER WH_IDENT(1, 1)
#define G_TAKER  WH_IDENT(2, 1)

static struct {
    int calls, takeover;
    int lost_sleep;     /* a FUTEX_WAIT would sleep with no drop left to wake it */
    int sleeps_flagged; /* every sleep compares a value with SLEEPERS set */
    int dead;           /* the owner is dead (the takeover case) */
} gh;

static int g_alive(void *ctx, uint64_t ident)
{
    (void)ctx;
    return !(gh.dead && ident == G_OWNER);
}

/* FUTEX_WAIT(word, val) sleeps iff word == val; only a drop of a word with SLEEPERS wakes. */
static void check_sleep_is_woken(_Atomic uint64_t *g, const void *word, uint32_t val)
{
    int sleeps = __atomic_load_n((const uint32_t *)word, __ATOMIC_SEQ_CST) == val;
    if (sleeps && !(atomic_load(g) & WH_GUARD_SLEEPERS))
        gh.lost_sleep = 1;
}

/*
 * Called with the SLEEPERS flag just set, before FUTEX_WAIT(word, val). First call, as other
 * processes would act in that window: the owner drops the guard (its wake-up finds nobody
 * asleep yet) and takes it again, without SLEEPERS; or, for a takeover, another process takes
 * the guard over from the dead owner, keeping SLEEPERS. Either way, if the waiter still
 * sleeps, a later drop must wake it. Second call: the guard is dropped for good.
 */
static void guard_hook(_Atomic uint64_t *g, const void *word, uint32_t val)
{
    gh.calls++;
    gh.sleeps_flagged &= (val & (uint32_t)(WH_GUARD_SLEEPERS >> 32)) != 0;
    if (gh.calls == 1 && !gh.takeover) {
        uint64_t z = 0;
        wh_guard_unlock(g);
        atomic_compare_exchange_strong(g, &z, G_OWNER);
        check_sleep_is_woken(g, word, val);
    } else if (gh.calls == 1) {
        uint64_t cur = atomic_load(g);
        CHECK(cur == (G_OWNER | WH_GUARD_SLEEPERS), "the waiter flagged the owner: %llx",
              (unsigned long long)cur);
        atomic_store(g, G_TAKER | (cur & WH_GUARD_SLEEPERS)); /* the takeover's CAS */
        check_sleep_is_woken(g, word, val);
        gh.dead = 0;
        wh_guard_unlock(g); /* the taker's drop */
    } else if (atomic_load(g) != 0) {
        wh_guard_unlock(g);
    }
}

static void guard_case(int takeover)
{
    _Atomic uint64_t g = G_OWNER;
    int r;

    memset(&gh, 0, sizeof gh);
    gh.sleeps_flagged = 1;
    gh.takeover = takeover;
    gh.dead = takeover;
    wh_guard_before_sleep = guard_hook;
    /* The dead owner is probed only after 200 us: the hook runs first. */
    r = wh_guard_lock(&g, G_WAITER, wh_now() + 2 * (int64_t)1000000000, g_alive, NULL);
    wh_guard_before_sleep = NULL;
    CHECK(r == WH_GUARD_OK, "the waiter got the guard: %d", r);
    CHECK(atomic_load(&g) == G_WAITER, "the guard names the waiter: %llx",
          (unsigned long long)atomic_load(&g));
    CHECK(gh.calls >= 1, "the waiter went to sleep at least once");
    CHECK(gh.sleeps_flagged, "every sleep compares a value with SLEEPERS set");
    CHECK(!gh.lost_sleep, "%s, the waiter's FUTEX_WAIT would sleep with no drop left to wake it",
          takeover ? "after a takeover" : "after the owner dropped and retook the guard");
    wh_guard_unlock(&g);
    CHECK(atomic_load(&g) == 0, "dropped");
}

static void test_guard_sleepers(void)
{
    guard_case(0);
    guard_case(1);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_guard_sleepers);
    return th_done();
}
