/*
 * A crash at every step inside the guard: every operation of crash_cases.c,
 * stopped at each of its stores in turn (crash.h); and a chain of
 * reclaimers that crash in the middle of their reclaim.
 */
#include <stdio.h>
#include <string.h>

#include "crash.h"

static long crash_left;

static int crash_run(struct fx *f, void (*op)(struct fx *), long budget)
{
    wh_crash_budget = budget;
    if (setjmp(wh_crash_jmp) != 0)
        return 1;
    op(f);
    crash_left = wh_crash_budget;
    wh_crash_budget = 0;
    return 0;
}

/* y can use the object normally: every mode, then everything released. */
static void y_cycle(struct fx *f, const char *name, long k)
{
    struct tobj *o = &f->o;
    uint64_t y = f->y;
    switch (o->v.kind) {
    case WH_KIND_LOCK:
        CHECK(st_try(o, y, WH_MODE_LOCK) == 1, "%s/%ld: y acquires", name, k);
        CHECK(st_rel(o, WH_MODE_LOCK, y) == 1, "%s/%ld: y releases", name, k);
        break;
    case WH_KIND_SEMAPHORE:
        for (uint32_t i = 0; i < o->v.max_count; i++)
            CHECK(st_try(o, y, WH_MODE_LOCK) == 1, "%s/%ld: y takes ticket %u", name, k, i);
        CHECK(st_try(o, y, WH_MODE_LOCK) == 0, "%s/%ld: and no more", name, k);
        for (uint32_t i = 0; i < o->v.max_count; i++)
            CHECK(st_rel(o, WH_MODE_LOCK, y) == 1, "%s/%ld: y gives back %u", name, k, i);
        break;
    default:
        CHECK(st_try(o, y, WH_MODE_WRITE) == 1, "%s/%ld: y writes", name, k);
        CHECK(st_rel(o, WH_MODE_WRITE, y) == 1, "%s/%ld: y stops writing", name, k);
        CHECK(st_try(o, y, WH_MODE_READ) == 1, "%s/%ld: y reads", name, k);
        CHECK(st_try(o, y, WH_MODE_UPGRADEABLE) == 1, "%s/%ld: y upgradeable", name, k);
        CHECK(st_rel(o, WH_MODE_READ, y) == 1, "%s/%ld: y stops reading", name, k);
        CHECK(st_try(o, y, WH_MODE_UPGRADE) == 1, "%s/%ld: y upgrades", name, k);
        CHECK(st_rel(o, WH_MODE_UPGRADEABLE, y) == 1, "%s/%ld: y releases", name, k);
    }
    CHECK(owner_of(o) == 0 && upg_of(o) == 0 && (o->v.slots == NULL || total_of(o) == 0),
          "%s/%ld: free after y's cycle", name, k);
}

static void fx_init(struct fx *f, const struct crash_case *cc)
{
    memset(f, 0, sizeof *f);
    reg_reset();
    now_ns = 1000LL * 1000 * MS;
    tobj_init(&f->o, cc->kind, cc->max_count);
    f->x1 = spawn(3);
    f->x = spawn(3); /* x1 is x's slot's previous, dead, generation */
    f->y = spawn(4);
    f->w = spawn(6);
    f->z = spawn(7);
    f->d = spawn(9);
    f->e = spawn(11);
    f->xidx = f->widx = -1;
}

static long crash_points_total;

static void crash_case_run(const struct crash_case *cc)
{
    long k;
    int completed = 0;
    for (k = 1; k < 1000 && !completed; k++) {
        struct fx f;
        char why[300], label[200];
        int crashed;

        fx_init(&f, cc);
        if (cc->setup)
            cc->setup(&f);
        die(f.d);
        die(f.e);
        crashed = crash_run(&f, cc->op, k);
        if (!crashed) {
            completed = 1;
            crash_points_total += k - 1;
            CHECK(crash_left > 0, "%s: completed with budget %ld left", cc->name, crash_left);
            CHECK(k - 1 >= cc->min_points, "%s: only %ld crash points, expected at least %d",
                  cc->name, k - 1, cc->min_points);
            CHECK(st_ok(&f.o, why, sizeof why), "%s: completed into a broken state: %s", cc->name,
                  why);
            if (cc->done)
                cc->done(&f);
        } else {
            CHECK(wh_crash_budget == 0, "%s: budget %ld after the crash", cc->name,
                  wh_crash_budget);
        }
        /* x dies (crashed inside the guard, or later); y takes over and repairs. */
        die(f.x);
        st_reclaim(&f.o, f.y);
        snprintf(label, sizeof label, "%s, %s at step %ld", cc->name,
                 crashed ? "crash" : "death after completion", k);
        CHECK(st_ok(&f.o, why, sizeof why), "%s: invariants after reclaim: %s", label, why);
        CHECK_NOTHING(&f.o, f.x, label);
        CHECK_NOTHING(&f.o, f.x1, label);
        CHECK_NOTHING(&f.o, f.d, label);
        CHECK_NOTHING(&f.o, f.e, label);
        if (cc->live)
            cc->live(&f);
        y_cycle(&f, cc->name, k);
        CHECK(st_ok(&f.o, why, sizeof why), "%s/%ld: invariants after y's cycle: %s", cc->name, k,
              why);
        tobj_free(&f.o);
    }
    CHECK(completed, "%s never completed", cc->name);
    wh_crash_budget = 0;
}

static void test_crash_every_step(void)
{
    for (size_t i = 0; i < ncrash_cases; i++)
        crash_case_run(&crash_cases[i]);
    th_note("%zu operations, crashed at each of their %ld steps",
            ncrash_cases, crash_points_total);
    CHECK(wh_crash_budget == 0, "budget reset");
    CHECK(bad_actx == 0, "the liveness callback always got its context back");
}

/* A reclaimer that dies in the middle of its reclaim, then a second one that dies too, at
 * every pair of steps: the third reclaim still repairs everything, and keeps what the living
 * hold. */
static void tobj_clone(struct tobj *dst, const struct tobj *src)
{
    tobj_init(dst, src->v.kind, src->v.max_count);
    memcpy(dst->mem, src->mem, src->size);
}

static void test_crash_chain_of_reclaimers(void)
{
    static const struct crash_case cc = {"chain", WH_KIND_RWLOCK, 1, NULL, NULL, NULL, NULL, 0};
    long k1, k2, pairs = 0;
    for (k1 = 1; k1 < 100; k1++) {
        struct fx f;
        fx_init(&f, &cc);
        su_rw_dead(&f);
        die(f.d);
        die(f.e);
        st_try(&f.o, f.x, WH_MODE_READ);
        if (!crash_run(&f, op_reclaim, k1)) {
            tobj_free(&f.o);
            break;
        }
        die(f.x);
        for (k2 = 1; k2 < 100; k2++) {
            struct fx g = f;
            char why[300];
            int crashed;
            tobj_clone(&g.o, &f.o);
            g.x = spawn(20);
            crashed = crash_run(&g, op_reclaim, k2);
            die(g.x);
            st_reclaim(&g.o, g.y);
            pairs++;
            CHECK(st_ok(&g.o, why, sizeof why), "chain %ld/%ld: %s", k1, k2, why);
            CHECK_NOTHING(&g.o, f.x, "a chain of crashing reclaimers");
            CHECK_NOTHING(&g.o, f.d, "a chain of crashing reclaimers");
            CHECK_NOTHING(&g.o, f.e, "a chain of crashing reclaimers");
            CHECK(count_of(&g.o, f.z) == 1, "chain %ld/%ld: z's read kept", k1, k2);
            CHECK(entry_of(&g.o, f.w) == f.widx, "chain %ld/%ld: w's entry kept", k1, k2);
            tobj_free(&g.o);
            if (!crashed)
                break;
        }
        tobj_free(&f.o);
    }
    CHECK(pairs > 20, "only %ld pairs", pairs);
    wh_crash_budget = 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_crash_every_step);
    RUN(test_crash_chain_of_reclaimers);
    return th_done();
}
