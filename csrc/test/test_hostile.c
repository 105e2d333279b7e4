/*
 * Hostile shared memory: entries in the wrong slot, counts that would wrap,
 * impossible identities, garbage modes and extreme times. Every attempt fails
 * or keeps the invariants; reclamation repairs what it can.
 */
#include <stdio.h>

#include "state_fixture.h"

/* Every attempt on a hostile object fails, or succeeds without breaking invariants that held. */
static void hostile_attempts(struct tobj *o, uint64_t y, const char *what)
{
    static const uint32_t modes[] = {WH_MODE_LOCK, WH_MODE_READ, WH_MODE_WRITE, WH_MODE_UPGRADEABLE,
                                     WH_MODE_UPGRADE};
    char why[300];
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        int was_ok = st_ok(o, why, sizeof why);
        int r = st_try(o, y, modes[i]);
        CHECK(r >= -1 && r <= 1, "%s: try returned %d", what, r);
        if (r == 1 && was_ok)
            CHECK(st_ok(o, why, sizeof why),
                  "%s: an attempt in mode %u succeeded into a broken state: %s", what, modes[i],
                  why);
    }
    st_rel(o, WH_MODE_LOCK, y);
    st_rel(o, WH_MODE_READ, y);
    st_rel(o, WH_MODE_WRITE, y);
    st_rel(o, WH_MODE_UPGRADEABLE, y);
}

static void test_hostile(void)
{
    struct tobj o;
    uint64_t a, b, y;
    uint32_t tag;
    char why[300];

    reg_reset();
    a = spawn(1);
    b = spawn(2);
    y = spawn(3);

    /* A slot entry naming another slot is not a hold: reclaim drops it. */
    tobj_init(&o, WH_KIND_SEMAPHORE, 4);
    STORE(&o.v.slots[7].ident, a); /* a lives in slot 1 */
    STORE(&o.v.slots[7].count, 3);
    STORE(&o.v.h->total, 3);
    CHECK(!st_ok(&o, why, sizeof why), "the check notices a misplaced entry");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 0, "a cannot release through another slot's entry");
    CHECK(st_reclaim(&o, y) == 1, "reclaimed");
    CHECK(LD(&o.v.slots[7].count) == 0 && LD(&o.v.slots[7].ident) == 0 && total_of(&o) == 0,
          "dropped");
    CHECK_OK(&o, "misplaced entry");
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 1 && st_rel(&o, WH_MODE_LOCK, y) == 1, "usable");
    tobj_free(&o);

    /* Huge counts of live processes: totals saturate, attempts fail, nothing wraps. */
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    STORE(&o.v.slots[1].ident, a);
    STORE(&o.v.slots[1].count, 0x80000000u);
    STORE(&o.v.slots[2].ident, b);
    STORE(&o.v.slots[2].count, 0x80000000u); /* the sum is 2^32: must not wrap to 0 */
    STORE(&o.v.h->total, 0);
    st_reclaim(&o, y);
    CHECK(total_of(&o) != 0, "readers' total does not wrap to 0");
    CHECK(st_try(&o, y, WH_MODE_WRITE) == 0, "no writer beside 2^32 reads");
    CHECK(st_try(&o, y, WH_MODE_UPGRADEABLE) == 1 && st_try(&o, y, WH_MODE_UPGRADE) == 0,
          "no upgrade beside them");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, y) == 1, "released");
    CHECK(st_try(&o, a, WH_MODE_READ) == 0 || count_of(&o, a) == 0x80000001u,
          "a read either fails or counts on without wrapping");
    hostile_attempts(&o, y, "huge reads");
    CHECK(owner_of(&o) == 0, "no writer ever got in");
    tobj_free(&o);

    tobj_init(&o, WH_KIND_SEMAPHORE, 3);
    STORE(&o.v.slots[1].ident, a);
    STORE(&o.v.slots[1].count, 0xffffffffu);
    STORE(&o.v.h->total, 1);
    st_reclaim(&o, y);
    CHECK(total_of(&o) >= 3, "total recomputed: %u", total_of(&o));
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 0, "no ticket beyond max_count");
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 0, "not even for the holder");
    CHECK(count_of(&o, a) == 0xffffffffu, "the count did not wrap");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 1 && count_of(&o, a) == 0xfffffffeu,
          "release counts down");
    hostile_attempts(&o, y, "huge tickets");
    tobj_free(&o);

    /* A garbage total on a free semaphore is repaired by reclaim. */
    tobj_init(&o, WH_KIND_SEMAPHORE, 3);
    STORE(&o.v.h->total, 0xffffffffu);
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 0, "a garbage total reads as full");
    CHECK(st_reclaim(&o, y) == 1 && total_of(&o) == 0, "reclaim recomputes it");
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 1, "usable again");
    /* Owner words on a semaphore mean nothing; reclaim clears them. */
    STORE(&o.v.h->owner, a);
    STORE(&o.v.h->upgradeable, b);
    CHECK(st_try(&o, b, WH_MODE_LOCK) == 1, "tickets ignore the owner words");
    st_reclaim(&o, y);
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "cleared");
    CHECK(total_of(&o) == 2, "tickets kept: %u", total_of(&o));
    CHECK_OK(&o, "semaphore owner words");
    tobj_free(&o);

    /* Idents with bit 63 set, out-of-range slots, generation 0, garbage modes. */
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    STORE(&o.v.h->owner, a | WH_GUARD_SLEEPERS);
    STORE(&o.v.h->upgradeable, WH_IDENT(0xfffe, 5));
    STORE(&o.v.slots[1].ident, a | WH_GUARD_SLEEPERS);
    STORE(&o.v.slots[1].count, 4);
    STORE(&o.v.slots[9].ident, WH_IDENT(9, 0));
    STORE(&o.v.slots[9].count, 1);
    STORE(&o.v.slots[11].ident, 0);
    STORE(&o.v.slots[11].count, 6);
    STORE(&o.v.h->total, 11);
    STORE(&o.v.waits[0].ident, b | WH_GUARD_SLEEPERS);
    STORE(&o.v.waits[0].lease, INT64_MAX);
    STORE(&o.v.waits[0].mode, WH_MODE_WRITE);
    STORE(&o.v.waits[1].ident, b);
    STORE(&o.v.waits[1].lease, INT64_MAX);
    STORE(&o.v.waits[1].since, INT64_MIN);
    STORE(&o.v.waits[1].mode, 0xdeadbe07u);
    STORE(&o.v.waits[2].ident, b);
    STORE(&o.v.waits[2].lease, INT64_MAX);
    STORE(&o.v.waits[2].since, INT64_MAX);
    STORE(&o.v.waits[2].mode, 0xffffff00u | WH_MODE_UPGRADEABLE);
    STORE(&o.v.h->nwaiting, 0x7fffffff);
    hostile_attempts(&o, y, "hostile idents before reclaim");
    st_reclaim(&o, y);
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "words with impossible idents cleared");
    CHECK(total_of(&o) == 0 && LD(&o.v.slots[1].count) == 0 && LD(&o.v.slots[9].count) == 0 &&
              LD(&o.v.slots[11].count) == 0,
          "impossible slot entries cleared (total %u)", total_of(&o));
    CHECK(LD(&o.v.waits[0].ident) == 0, "wait entry with bit 63 freed");
    CHECK(LD(&o.v.waits[1].ident) == b && LD(&o.v.waits[2].ident) == b,
          "live entries with odd modes stay");
    CHECK_OK(&o, "hostile idents");
    CHECK(st_try(&o, y, WH_MODE_READ) == 1, "a garbage mode entry does not block readers");
    CHECK(st_rel(&o, WH_MODE_READ, y) == 1, "released");
    CHECK(st_try(&o, y, WH_MODE_WRITE) == 1, "nor writers");
    CHECK(st_rel(&o, WH_MODE_WRITE, y) == 1, "released");
    /* Entries with the extreme `since` values order correctly, without overflow (UBSan). */
    STORE(&o.v.waits[1].mode, WH_MODE_WRITE);
    CHECK(st_try(&o, y, WH_MODE_WRITE) == 0, "a writer entry since INT64_MIN comes first");
    CHECK(st_try_w(&o, y, WH_MODE_WRITE, -1, INT64_MIN) == 1,
          "but not before a caller waiting since INT64_MIN with a lower index");
    CHECK(st_rel(&o, WH_MODE_WRITE, y) == 1, "released");
    STORE(&o.v.waits[1].mode, 0xdeadbe07u);
    CHECK(st_try(&o, y, WH_MODE_UPGRADEABLE) == 1, "an upgradeable entry since INT64_MAX is young");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, y) == 1, "released");
    STORE(&o.v.waits[2].since, INT64_MIN);
    CHECK(st_try(&o, y, WH_MODE_UPGRADEABLE) == 0, "one since INT64_MIN is old");
    CHECK_OK(&o, "extreme times");
    hostile_attempts(&o, y, "hostile times");
    tobj_free(&o);

    /* A lock with an upgradeable word: reclaim clears it. */
    tobj_init(&o, WH_KIND_LOCK, 1);
    STORE(&o.v.h->upgradeable, b);
    st_reclaim(&o, y);
    CHECK(upg_of(&o) == 0, "cleared");
    CHECK_OK(&o, "lock upgradeable word");
    /* A guard-word-like owner (bit 63) of the caller's own slot is stale, not ours. */
    STORE(&o.v.h->owner, y | WH_GUARD_SLEEPERS);
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 1, "own slot with bit 63 is cleared");
    CHECK(owner_of(&o) == y, "owner is y");
    STORE(&o.v.h->next_tag, 0xffffffffu);
    CHECK(st_reg(&o, a, WH_MODE_LOCK, now_ns, now_ns + MS, &tag) >= 0, "tag wraps harmlessly");
    CHECK_OK(&o, "lock tag wrap");
    tobj_free(&o);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_hostile);
    return th_done();
}
