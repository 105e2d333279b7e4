/*
 * Randomized: actors on several objects make random operations, crash in the
 * middle of them, die, and come back in reused slots; after every step the
 * state agrees with what the live actors believe they hold.
 */
#include <stdio.h>
#include <string.h>

#include "state_fixture.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

#define NACT      6
#define NOBJ      3
#define ACT_SLOT0 40

struct actor {
    uint64_t id;
    int alive;
    int lock;         /* believes it holds the lock */
    uint32_t tickets; /* semaphore */
    uint32_t reads;
    int write, upg, upgraded;
    int widx[NOBJ];
    uint32_t wtag[NOBJ], wmode[NOBJ];
    int64_t wsince[NOBJ];
};

static struct actor acts[NACT];
static struct tobj robj[NOBJ];

static void actor_reset(struct actor *a)
{
    uint64_t id = a->id;
    memset(a, 0, sizeof *a);
    a->id = id;
    for (int i = 0; i < NOBJ; i++)
        a->widx[i] = -1;
}

static void actor_spawn(int i)
{
    acts[i].id = spawn(ACT_SLOT0 + (uint32_t)i);
    actor_reset(&acts[i]);
    acts[i].alive = 1;
}

static void actor_die(int i)
{
    die(acts[i].id);
    actor_reset(&acts[i]);
    acts[i].alive = 0;
}

struct rop {
    int act, obj, what;
    uint32_t mode;
    int res;
};

enum { R_TRY, R_RELEASE, R_RELEASE_NOT_HELD, R_REGISTER, R_REFRESH, R_WITHDRAW, R_RECLAIM };

static uint32_t random_mode(int obj, struct actor *a)
{
    static const uint32_t rw[] = {WH_MODE_READ, WH_MODE_WRITE, WH_MODE_UPGRADEABLE,
                                  WH_MODE_UPGRADE};
    if (obj != 2)
        return WH_MODE_LOCK;
    if (a->upg && !a->upgraded && rnd(2))
        return WH_MODE_UPGRADE;
    return rw[rnd(4)];
}

static int holds_mode(struct actor *a, int obj, uint32_t mode)
{
    switch (obj) {
    case 0:
        return a->lock;
    case 1:
        return a->tickets > 0;
    }
    switch (mode) {
    case WH_MODE_READ:
        return a->reads > 0;
    case WH_MODE_WRITE:
        return a->write;
    case WH_MODE_UPGRADEABLE:
        return a->upg;
    }
    return 0;
}

static void note_acquired(struct actor *a, int obj, uint32_t mode)
{
    if (obj == 0)
        a->lock = 1;
    else if (obj == 1)
        a->tickets++;
    else if (mode == WH_MODE_READ)
        a->reads++;
    else if (mode == WH_MODE_WRITE)
        a->write = 1;
    else if (mode == WH_MODE_UPGRADEABLE)
        a->upg = 1;
    else if (mode == WH_MODE_UPGRADE)
        a->upgraded = 1;
}

static void note_released(struct actor *a, int obj, uint32_t mode)
{
    if (obj == 0)
        a->lock = 0;
    else if (obj == 1)
        a->tickets--;
    else if (mode == WH_MODE_READ)
        a->reads--;
    else if (mode == WH_MODE_WRITE)
        a->write = 0;
    else if (mode == WH_MODE_UPGRADEABLE)
        a->upg = a->upgraded = 0;
}

static int64_t rlease(void)
{
    return now_ns + (int64_t)rnd(300) * MS;
}

/* One operation of one actor, as it would run under the guard. Beliefs are updated inside, so
 * a crash anywhere leaves them to be discarded with the actor. */
static void rop_exec(struct rop *r)
{
    struct actor *a = &acts[r->act];
    struct tobj *o = &robj[r->obj];
    struct wh_ctx c = ctx_of(a->id);
    int *idx = &a->widx[r->obj];
    switch (r->what) {
    case R_TRY: {
        int mine = -1;
        int64_t since = now_ns;
        if (*idx >= 0) {
            if (wh_st_refresh(&o->v, &c, *idx, a->wtag[r->obj], rlease())) {
                mine = *idx;
                since = a->wsince[r->obj];
                r->mode = a->wmode[r->obj] & WH_WAIT_MODE_MASK;
            } else {
                *idx = -1;
            }
        }
        r->res = wh_st_try(&o->v, &c, r->mode, mine, since);
        if (r->res == 1) {
            note_acquired(a, r->obj, r->mode);
            if (mine >= 0) {
                wh_st_withdraw(&o->v, mine, a->wtag[r->obj], a->id);
                *idx = -1;
            }
        } else if (r->res == 0 && *idx < 0 && rnd(2)) {
            a->wmode[r->obj] = r->mode | (rnd(2) ? WH_WAIT_FUTEX : 0);
            a->wsince[r->obj] = now_ns;
            *idx = wh_st_register(&o->v, &c, a->wmode[r->obj], now_ns, rlease(), &a->wtag[r->obj]);
        }
        break;
    }
    case R_RELEASE:
        r->res = wh_st_release(&o->v, r->mode, a->id);
        if (r->res == 1)
            note_released(a, r->obj, r->mode);
        break;
    case R_RELEASE_NOT_HELD:
        r->res = wh_st_release(&o->v, r->mode, a->id);
        break;
    case R_REGISTER:
        if (*idx < 0) {
            a->wmode[r->obj] = r->mode | WH_WAIT_FUTEX;
            a->wsince[r->obj] = now_ns;
            *idx = wh_st_register(&o->v, &c, a->wmode[r->obj], now_ns, rlease(), &a->wtag[r->obj]);
        }
        r->res = *idx >= 0;
        break;
    case R_REFRESH:
        r->res = *idx >= 0 && wh_st_refresh(&o->v, &c, *idx, a->wtag[r->obj], rlease());
        if (!r->res)
            *idx = -1;
        break;
    case R_WITHDRAW:
        r->res = *idx >= 0 && wh_st_withdraw(&o->v, *idx, a->wtag[r->obj], a->id);
        *idx = -1;
        break;
    case R_RECLAIM:
        r->res = wh_st_reclaim(&o->v, &c);
        break;
    }
}

static int rop_crash(struct rop *r, long budget)
{
    wh_crash_budget = budget;
    if (setjmp(wh_crash_jmp) != 0)
        return 1;
    rop_exec(r);
    wh_crash_budget = 0;
    return 0;
}

/* The state against the live actors' beliefs. `exact`: just reclaimed, so nothing of the dead
 * may remain. */
static int model_check(int obj, int exact, long step)
{
    struct tobj *o = &robj[obj];
    char why[300];
    int bad = 0;
    uint64_t writer = 0, upgh = 0;
    uint32_t nlock = 0, sum = 0, nwriter = 0, nupg = 0;

    if (!CHECK(st_ok(o, why, sizeof why), "step %ld, object %d: %s", step, obj, why))
        bad = 1;
    for (int i = 0; i < NACT; i++) {
        struct actor *a = &acts[i];
        if (!a->alive)
            continue;
        if (obj == 0 && a->lock) {
            nlock++;
            bad |= !CHECK(owner_of(o) == a->id, "step %ld: lock believer %d is not the owner", step,
                          i);
        }
        if (obj == 1) {
            sum += a->tickets;
            bad |= !CHECK(count_of(o, a->id) == a->tickets, "step %ld: actor %d tickets %u vs %u",
                          step, i, count_of(o, a->id), a->tickets);
        }
        if (obj == 2) {
            sum += a->reads;
            bad |= !CHECK(count_of(o, a->id) == a->reads, "step %ld: actor %d reads %u vs %u", step,
                          i, count_of(o, a->id), a->reads);
            if (a->write || a->upgraded) {
                nwriter++;
                writer = a->id;
            }
            if (a->upg) {
                nupg++;
                upgh = a->id;
            }
            bad |= !CHECK(!a->upgraded || a->upg, "step %ld: upgraded without upgradeable", step);
        }
    }
    if (obj == 0)
        bad |= !CHECK(nlock <= 1, "step %ld: %u processes believe they hold the lock", step, nlock);
    if (obj == 1)
        bad |= !CHECK(sum <= o->v.max_count && total_of(o) <= o->v.max_count,
                      "step %ld: semaphore: %u believed, total %u, max %u", step, sum, total_of(o),
                      o->v.max_count);
    if (obj == 2) {
        bad |= !CHECK(nwriter <= 1 && nupg <= 1, "step %ld: %u writers, %u upgradeable", step,
                      nwriter, nupg);
        bad |= !CHECK(nwriter == 0 || sum == 0, "step %ld: a writer beside %u reads", step, sum);
        bad |= !CHECK(nwriter == 0 || nupg == 0 || writer == upgh,
                      "step %ld: a writer beside another upgradeable", step);
        if (nwriter)
            bad |= !CHECK(owner_of(o) == writer, "step %ld: owner word", step);
        if (nupg)
            bad |= !CHECK(upg_of(o) == upgh, "step %ld: upgradeable word", step);
    }
    if (exact) {
        if (obj == 0)
            bad |= !CHECK(nlock == 1 || owner_of(o) == 0, "step %ld: a dead owner survived", step);
        if (obj == 1)
            bad |= !CHECK(total_of(o) == sum, "step %ld: total %u, live tickets %u", step,
                          total_of(o), sum);
        if (obj == 2) {
            bad |= !CHECK(total_of(o) == sum, "step %ld: total %u, live reads %u", step,
                          total_of(o), sum);
            bad |= !CHECK(owner_of(o) == writer && upg_of(o) == upgh,
                          "step %ld: words %llx/%llx, live %llx/%llx", step,
                          (unsigned long long)owner_of(o), (unsigned long long)upg_of(o),
                          (unsigned long long)writer, (unsigned long long)upgh);
        }
        for (uint32_t i = 0; i < o->v.nwait; i++) {
            uint64_t id = LD(&o->v.waits[i].ident);
            int live = 0;
            if (id == 0)
                continue;
            for (int j = 0; j < NACT; j++)
                live |= acts[j].alive && acts[j].id == id;
            bad |= !CHECK(live && LD(&o->v.waits[i].lease) >= now_ns,
                          "step %ld: wait entry %u of %llx survived a reclaim", step, i,
                          (unsigned long long)id);
        }
    }
    return !bad;
}

static int pick_live(void)
{
    int n = 0, cand[NACT];
    for (int i = 0; i < NACT; i++)
        if (acts[i].alive)
            cand[n++] = i;
    if (n == 0) {
        int i = (int)rnd(NACT);
        actor_spawn(i);
        return i;
    }
    return cand[rnd((uint32_t)n)];
}

/* A live actor reclaims `obj` and the result is checked exactly; a free object must then be
 * acquirable by someone with nothing in the way. */
static int reclaim_and_check(int obj, long step, unsigned long *reclaims)
{
    int y = pick_live();
    struct tobj *o = &robj[obj];
    st_reclaim(o, acts[y].id);
    (*reclaims)++;
    if (!model_check(obj, 1, step))
        return 0;
    if (nwaiting_of(o) == 0 && owner_of(o) == 0 && upg_of(o) == 0 &&
        (o->v.slots == NULL || total_of(o) == 0)) {
        uint32_t mode = obj == 2 ? WH_MODE_WRITE : WH_MODE_LOCK;
        int r = st_try(o, acts[y].id, mode);
        if (!CHECK(r == 1, "step %ld: a free object refused actor %d", step, y))
            return 0;
        note_acquired(&acts[y], obj, mode);
    }
    return 1;
}

static void test_randomized(void)
{
    unsigned long crashes = 0, reclaims = 0, acquired = 0, deaths = 0, busy = 0;
    long step;
    reg_reset();
    now_ns = 5000LL * 1000 * MS;
    tobj_init(&robj[0], WH_KIND_LOCK, 1);
    tobj_init(&robj[1], WH_KIND_SEMAPHORE, 3);
    tobj_init(&robj[2], WH_KIND_RWLOCK, 1);
    memset(acts, 0, sizeof acts);
    for (int i = 0; i < NACT; i++)
        actor_spawn(i);

    for (step = 0; step < 6000; step++) {
        struct rop r;
        struct actor *a;
        uint32_t dice = rnd(100);
        int ok = 1;

        now_ns += (int64_t)rnd(6) * MS;
        r.act = pick_live();
        a = &acts[r.act];
        r.obj = (int)rnd(NOBJ);
        r.mode = random_mode(r.obj, a);
        r.res = -2;
        if (dice < 3) {
            /* dies outside the guard: its holds stay until a reclaim */
            actor_die(r.act);
            deaths++;
        } else if (dice < 6) {
            /* a dead actor's slot is reused by a new process */
            int i = (int)rnd(NACT);
            if (!acts[i].alive)
                actor_spawn(i);
        } else {
            int crash = rnd(100) < 12;
            if (dice < 45) {
                r.what = R_TRY;
            } else if (dice < 70) {
                /* release something held, else something not held */
                uint32_t modes[4] = {WH_MODE_READ, WH_MODE_WRITE, WH_MODE_UPGRADEABLE, 0};
                r.what = R_RELEASE_NOT_HELD;
                if (r.obj != 2) {
                    r.mode = WH_MODE_LOCK;
                    if (holds_mode(a, r.obj, r.mode))
                        r.what = R_RELEASE;
                } else {
                    r.mode = modes[rnd(3)];
                    if (holds_mode(a, 2, r.mode))
                        r.what = R_RELEASE;
                    else if (r.mode == WH_MODE_WRITE && a->upgraded)
                        r.mode = WH_MODE_UPGRADEABLE, r.what = R_RELEASE;
                }
            } else if (dice < 78) {
                r.what = R_REGISTER;
            } else if (dice < 85) {
                r.what = R_REFRESH;
            } else if (dice < 91) {
                r.what = R_WITHDRAW;
            } else {
                r.what = R_RECLAIM;
            }
            if (crash && rop_crash(&r, 1 + (long)rnd(8))) {
                /* died inside the guard: the next guard owner takes over and repairs */
                char why[200];
                uint64_t dead = a->id;
                int obj = r.obj;
                crashes++;
                actor_die(r.act);
                ok = reclaim_and_check(obj, step, &reclaims);
                if (ok) {
                    ok = holds_nothing(&robj[obj], dead, why, sizeof why);
                    CHECK(ok, "step %ld: a crashed process still %s", step, why);
                }
            } else {
                if (!crash)
                    rop_exec(&r);
                if (r.what == R_TRY) {
                    if (r.mode == WH_MODE_UPGRADE)
                        ok = CHECK((r.res == -1) == !a->upg,
                                   "step %ld: upgrade returned %d, upg %d", step, r.res, a->upg);
                    else
                        ok = CHECK(r.res == 0 || r.res == 1, "step %ld: try returned %d", step,
                                   r.res);
                    if (r.res == 1)
                        acquired++;
                    else
                        busy++;
                } else if (r.what == R_RELEASE) {
                    ok = CHECK(r.res == 1, "step %ld: releasing a held mode %u returned %d", step,
                               r.mode, r.res);
                } else if (r.what == R_RELEASE_NOT_HELD) {
                    ok = CHECK(r.res == 0, "step %ld: releasing mode %u not held returned %d", step,
                               r.mode, r.res);
                }
                if (ok && r.what == R_RECLAIM)
                    ok = model_check(r.obj, 1, step);
            }
        }
        for (int i = 0; ok && i < NOBJ; i++)
            ok = model_check(i, 0, step);
        if (!ok)
            break;
        if (rnd(50) == 0)
            ok = reclaim_and_check((int)rnd(NOBJ), step, &reclaims);
        if (!ok)
            break;
    }
    th_note("randomized: %ld steps, %lu crashes, %lu deaths, %lu reclaims, %lu acquired, %lu busy",
            step, crashes, deaths, reclaims, acquired, busy);
    CHECK(crashes > 100 && acquired > 500 && busy > 100, "the run exercised little");
    wh_crash_budget = 0;
    for (int i = 0; i < NOBJ; i++)
        tobj_free(&robj[i]);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_randomized);
    return th_done();
}
