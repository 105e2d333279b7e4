/*
 * A crash at every step inside the guard (test_crash.c): process x makes an
 * operation on an object and is stopped at its first, second, ... store
 * (wh_crash_budget); then it dies, y reclaims, and the object must be
 * consistent, hold nothing of the dead, keep what the living hold, and work.
 * The cases are in crash_cases.c.
 */
#ifndef WH_TEST_CRASH_H
#define WH_TEST_CRASH_H

#include "state_fixture.h"

struct fx {
    struct tobj o;
    uint64_t x, x1, y, w, z, d, e; /* x: the process that crashes; x1: x's slot, older generation */
    int xidx, widx;
    uint32_t xtag, wtag;
    int64_t xsince;
    int res;
};

struct crash_case {
    const char *name;
    uint32_t kind, max_count;
    void (*setup)(struct fx *);
    void (*op)(struct fx *);   /* run by x with the crash budget */
    void (*done)(struct fx *); /* checks after the operation completed */
    void (*live)(struct fx *); /* after x died and y reclaimed: live others' holds, then dropped */
    int min_points;
};

extern const struct crash_case crash_cases[];
extern const size_t ncrash_cases;

/* An rwlock whose dead holders and marks a reclaim must remove, beside live ones; a reclaim. */
void su_rw_dead(struct fx *f);
void op_reclaim(struct fx *f);

#endif
