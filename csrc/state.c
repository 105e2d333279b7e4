/*
 * The per-kind state machines, on the mapped object, with the guard held.
 * Pure logic: no system calls except through c->alive. Shared memory is
 * untrusted: every shared field is loaded once into a local, checked, and
 * only then used; every loop is bounded by the process-local view.
 *
 * Crash safety (doc/FORMAT.md, "Repair"): a write touches the writer's own
 * entries, dead processes' entries, derived totals, or single words, and
 * entries are written before the totals derived from them, so a reclaim
 * that recomputes the totals from live entries repairs any prefix of a dead
 * writer's changes. Tests stop the writer after every store (CRASH_POINT).
 * What info() reports and the invariant check are in observe.c.
 */
#include "state.h"

#ifdef WH_CRASH_TEST
#include <setjmp.h>
extern long wh_crash_budget;
extern jmp_buf wh_crash_jmp;
#define CRASH_POINT()                                                                              \
    do {                                                                                           \
        if (wh_crash_budget > 0 && --wh_crash_budget == 0)                                         \
            longjmp(wh_crash_jmp, 1);                                                              \
    } while (0)
#else
#define CRASH_POINT() ((void)0)
#endif

#define ST(p, v)                                                                                   \
    do {                                                                                           \
        CRASH_POINT();                                                                             \
        atomic_store_explicit((p), (v), memory_order_relaxed);                                     \
    } while (0)

/* A hold of another identity of our own slot number is of an earlier generation of our slot,
 * so dead, unless a cleaner unlinked our registry file and that identity is a live process's
 * of the file at the path, which got our slot number (ours is then the dead identity): the
 * probe, which checks our file against the path, tells (model/README.md, finding 1). Only
 * leftovers pay for it. */
static int own_slot_stale(const struct wh_ctx *c, uint64_t id)
{
    return id != 0 && id != c->me && WH_IDENT_SLOT(id) == WH_IDENT_SLOT(c->me) &&
           !c->alive(c->actx, id);
}

/* ---- wait entries ---- */

static void recount_waits(const struct wh_view *v)
{
    uint32_t used, fut, writers;
    count_waits(v, &used, &fut, &writers);
    ST(&v->h->nwaiting, used);
    ST(&v->h->nwriters, writers);
    atomic_store(&v->h->nfutex, fut);
}

/*
 * Live waiters that come before an attempt in `mode` by a caller waiting since `since` in
 * entry `mine` (-1: none), counting at most `cap`: every waiting writer or upgrade before a
 * read or upgradeable read (writer preference); before anything else, the entries of the same
 * mode (never READ) that waited longer than the caller, and at least `min_age`; an UPGRADE
 * comes after nobody.
 */
static uint32_t count_ahead(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode,
                            int mine, int64_t since, uint32_t cap, int64_t min_age)
{
    uint32_t n = 0;
    if (atomic_load(&v->h->nwaiting) == 0 || mode == WH_MODE_UPGRADE)
        return 0;
    for (uint32_t i = 0; i < v->nwait && n < cap; i++) {
        uint64_t id;
        uint32_t m;
        int64_t s;
        if ((int)i == mine || !entry_live(&v->waits[i], c->now, &id, &m, &s))
            continue;
        if (is_rw(v) && (mode == WH_MODE_READ || mode == WH_MODE_UPGRADEABLE) &&
            (m == WH_MODE_WRITE || m == WH_MODE_UPGRADE))
            n++;
        else if (m == mode && mode != WH_MODE_READ && s <= c->now - min_age &&
                 (s < since || (s == since && (int)i < mine)))
            n++;
    }
    return n;
}

/* Those that come first now: a waiter of the same mode only once it has waited more than
 * WH_BARGE_NS (bounded barging). */
static uint32_t waiters_first(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode,
                              int mine, int64_t since, uint32_t cap)
{
    return count_ahead(v, c, mode, mine, since, cap, WH_BARGE_NS);
}

uint32_t wh_st_ahead(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode, int mine,
                     int64_t since)
{
    return count_ahead(v, c, mode, mine, since, UINT32_MAX, 0);
}

int wh_st_register(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode, int64_t since,
                   int64_t lease, uint32_t *tag)
{
    for (uint32_t i = 0; i < v->nwait; i++) {
        struct wh_wait_entry *e = &v->waits[i];
        /* Free, or expired: an owner that comes back finds its tag gone and registers again. */
        if (LD(&e->ident) != 0 && LD(&e->lease) >= c->now)
            continue;
        *tag = atomic_fetch_add_explicit(&v->h->next_tag, 1, memory_order_relaxed) + 1;
        ST(&e->ident, 0);
        ST(&e->since, since);
        ST(&e->lease, lease);
        ST(&e->mode, mode);
        ST(&e->tag, *tag);
        ST(&e->ident, c->me);
        recount_waits(v);
        return (int)i;
    }
    return -1;
}

static int owns_entry(const struct wh_view *v, int idx, uint32_t tag, uint64_t ident)
{
    return idx >= 0 && (uint32_t)idx < v->nwait && LD(&v->waits[idx].ident) == ident &&
           LD(&v->waits[idx].tag) == tag;
}

int wh_st_refresh(const struct wh_view *v, const struct wh_ctx *c, int idx, uint32_t tag,
                  int64_t lease)
{
    if (!owns_entry(v, idx, tag, c->me))
        return 0;
    ST(&v->waits[idx].lease, lease);
    return 1;
}

int wh_st_withdraw(const struct wh_view *v, int idx, uint32_t tag, uint64_t ident)
{
    if (!owns_entry(v, idx, tag, ident))
        return 0;
    ST(&v->waits[idx].ident, 0);
    recount_waits(v);
    return 1;
}

/* ---- holds ---- */

/* Our slot's entry, made ours: counts left by an earlier generation of the slot are dropped. */
static struct wh_slot_entry *own_entry(const struct wh_view *v, const struct wh_ctx *c)
{
    uint32_t slot = WH_IDENT_SLOT(c->me);
    struct wh_slot_entry *e;
    uint64_t id;
    if (slot >= v->nslots)
        return NULL;
    e = &v->slots[slot];
    id = LD(&e->ident);
    if (id != c->me) {
        uint32_t stale, total;
        if (id != 0 && !own_slot_stale(c, id))
            return NULL; /* a live process's entry of our slot number: take nothing */
        stale = LD(&e->count);
        total = LD(&v->h->total);
        if (stale != 0)
            ST(&e->count, 0);
        ST(&e->ident, c->me);
        if (stale != 0)
            ST(&v->h->total, stale < total ? total - stale : 0);
    }
    return e;
}

static int take_count(const struct wh_view *v, const struct wh_ctx *c)
{
    struct wh_slot_entry *e = own_entry(v, c);
    uint32_t cnt, total;
    if (e == NULL)
        return 0;
    cnt = LD(&e->count);
    total = LD(&v->h->total);
    if (cnt >= INT32_MAX || total >= INT32_MAX)
        return 0;
    ST(&e->count, cnt + 1);
    ST(&v->h->total, total + 1);
    return 1;
}

/* Drops the upgradeable read of `upg`, and the write of its upgrade if it has one, the write
 * first: a crash in between leaves a dead upgradeable holder, which reclaim removes. */
static void drop_upgradeable(struct wh_obj_header *h, uint64_t upg)
{
    if (LD(&h->owner) == upg)
        ST(&h->owner, 0);
    ST(&h->upgradeable, 0);
}

/* Leftovers of an earlier generation of our own slot are dead (no probe needed): clear them
 * before deciding, so they never stand in the new owner's way. */
static void tidy_own_slot(const struct wh_view *v, const struct wh_ctx *c)
{
    struct wh_obj_header *h = v->h;
    uint64_t owner = LD(&h->owner), upg = LD(&h->upgradeable);
    if (own_slot_stale(c, upg)) {
        drop_upgradeable(h, upg);
        owner = LD(&h->owner);
    }
    if (own_slot_stale(c, owner))
        ST(&h->owner, 0);
    if (has_slots(v))
        own_entry(v, c);
}

/* How many holds in `mode` the state admits now, ignoring waiters: 0 or 1, or the free
 * tickets of a semaphore. The one definition of who may take what. */
static uint32_t room(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode)
{
    const struct wh_obj_header *h = v->h;
    uint64_t owner = LD(&h->owner), upg = LD(&h->upgradeable);
    uint32_t total = LD(&h->total);
    switch (v->kind) {
    case WH_KIND_LOCK:
        return mode == WH_MODE_LOCK && owner == 0;
    case WH_KIND_SEMAPHORE:
        return mode == WH_MODE_LOCK && total < v->max_count ? v->max_count - total : 0;
    case WH_KIND_RWLOCK:
        switch (mode) {
        case WH_MODE_READ:
            return owner == 0;
        case WH_MODE_WRITE:
            return owner == 0 && upg == 0 && total == 0;
        case WH_MODE_UPGRADEABLE:
            return owner == 0 && upg == 0;
        case WH_MODE_UPGRADE:
            return owner == 0 && upg == c->me && total == 0;
        }
    }
    return 0;
}

int wh_st_admits(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode)
{
    return room(v, c, mode) > 0;
}

/* A new fencing token for an exclusive hold or a ticket, stored before the hold is taken: a
 * crash in between burns a token, never hands one out twice. */
static void bump_token(struct wh_obj_header *h)
{
    uint64_t t = LD(&h->token);
    ST(&h->token, t < WH_TOKEN_MAX ? t + 1 : t);
}

int wh_st_try(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode, int my_entry,
              int64_t since)
{
    struct wh_obj_header *h = v->h;
    uint32_t n;
    if (v->kind == WH_KIND_RWLOCK && mode == WH_MODE_UPGRADE) {
        /* Only the upgradeable holder upgrades; it waits for readers, not for waiting writers. */
        if (LD(&h->upgradeable) != c->me)
            return -1;
        if (LD(&h->owner) == c->me)
            return 1;
    }
    tidy_own_slot(v, c);
    n = room(v, c, mode);
    if (n == 0 || waiters_first(v, c, mode, my_entry, since, n) >= n)
        return 0;
    switch (mode) {
    case WH_MODE_LOCK:
        bump_token(h);
        if (has_slots(v))
            return take_count(v, c);
        ST(&h->owner, c->me);
        return 1;
    case WH_MODE_READ:
        return take_count(v, c);
    case WH_MODE_WRITE:
    case WH_MODE_UPGRADE:
        bump_token(h);
        ST(&h->owner, c->me);
        return 1;
    case WH_MODE_UPGRADEABLE:
        ST(&h->upgradeable, c->me);
        return 1;
    }
    return 0;
}

static int drop_count(const struct wh_view *v, uint64_t ident)
{
    uint32_t slot = WH_IDENT_SLOT(ident), cnt, total;
    struct wh_slot_entry *e;
    if (slot >= v->nslots)
        return 0;
    e = &v->slots[slot];
    cnt = LD(&e->count);
    if (LD(&e->ident) != ident || cnt == 0)
        return 0;
    total = LD(&v->h->total);
    ST(&e->count, cnt - 1);
    ST(&v->h->total, total > 0 ? total - 1 : 0);
    return 1;
}

int wh_st_release(const struct wh_view *v, uint32_t mode, uint64_t ident)
{
    struct wh_obj_header *h = v->h;
    switch (mode) {
    case WH_MODE_LOCK:
        if (has_slots(v))
            return drop_count(v, ident);
        __attribute__((fallthrough)); /* a lock: its single owner word */
    case WH_MODE_WRITE:
        if (LD(&h->owner) != ident)
            return 0;
        ST(&h->owner, 0);
        return 1;
    case WH_MODE_READ:
        return drop_count(v, ident);
    case WH_MODE_UPGRADEABLE:
        if (LD(&h->upgradeable) != ident)
            return 0;
        drop_upgradeable(h, ident);
        return 1;
    }
    return 0;
}

int wh_st_holds(const struct wh_view *v, uint32_t mode, uint64_t ident)
{
    const struct wh_obj_header *h = v->h;
    uint32_t slot = WH_IDENT_SLOT(ident);
    switch (mode) {
    case WH_MODE_LOCK:
        if (!has_slots(v))
            return LD(&h->owner) == ident;
        __attribute__((fallthrough)); /* a semaphore ticket */
    case WH_MODE_READ:
        return slot < v->nslots && LD(&v->slots[slot].ident) == ident &&
               LD(&v->slots[slot].count) != 0;
    case WH_MODE_WRITE:
        return LD(&h->owner) == ident;
    case WH_MODE_UPGRADEABLE:
        return LD(&h->upgradeable) == ident;
    }
    return 0;
}

/* ---- reclamation and repair ---- */

struct alive_cache {
    uint64_t id[16];
    int alive[16];
    int n;
};

static int alive_cached(const struct wh_ctx *c, struct alive_cache *ac, uint64_t id)
{
    int r;
    if (id == c->me)
        return 1;
    for (int i = 0; i < ac->n; i++)
        if (ac->id[i] == id)
            return ac->alive[i];
    r = c->alive(c->actx, id);
    if (ac->n < 16) {
        ac->id[ac->n] = id;
        ac->alive[ac->n++] = r;
    }
    return r;
}

/* Frees the wait entries of dead processes and expired ones; recounts. Returns 1 if any. */
static int reclaim_waits(const struct wh_view *v, const struct wh_ctx *c, struct alive_cache *ac)
{
    int changed = 0;
    for (uint32_t i = 0; i < v->nwait; i++) {
        struct wh_wait_entry *e = &v->waits[i];
        uint64_t id = LD(&e->ident);
        if (id == 0)
            continue;
        if (LD(&e->lease) < c->now || !alive_cached(c, ac, id)) {
            ST(&e->ident, 0);
            changed = 1;
        }
    }
    recount_waits(v);
    return changed;
}

/*
 * Removes every hold and wait entry of a dead process and every expired wait
 * entry, then recomputes the derived fields from the entries. Also the repair
 * after taking over the guard from a dead owner. Returns 1 if anything that
 * could admit a waiter changed.
 */
int wh_st_reclaim(const struct wh_view *v, const struct wh_ctx *c)
{
    struct wh_obj_header *h = v->h;
    struct alive_cache ac = {.n = 0};
    int changed = 0;
    uint64_t owner = LD(&h->owner), upg = LD(&h->upgradeable);

    if (v->kind == WH_KIND_SEMAPHORE && owner != 0) {
        ST(&h->owner, 0); /* unused by semaphores */
    } else if (owner != 0 && !alive_cached(c, &ac, owner)) {
        ST(&h->owner, 0);
        changed = 1;
    }
    if (upg != 0 && (!is_rw(v) || !alive_cached(c, &ac, upg))) {
        drop_upgradeable(h, upg);
        changed = 1;
    }
    if (has_slots(v)) {
        uint64_t sum = 0;
        for (uint32_t i = 0; i < v->nslots; i++) {
            struct wh_slot_entry *e = &v->slots[i];
            uint64_t id = LD(&e->ident);
            uint32_t cnt = LD(&e->count);
            if (id == 0 && cnt == 0)
                continue;
            if (id == 0 || WH_IDENT_SLOT(id) != i || !alive_cached(c, &ac, id)) {
                ST(&e->count, 0);
                ST(&e->ident, 0);
                changed |= cnt != 0;
                continue;
            }
            sum += cnt;
        }
        if (sum > INT32_MAX)
            sum = INT32_MAX; /* only a hostile writer gets here; attempts then fail */
        if (LD(&h->total) != (uint32_t)sum) {
            changed |= LD(&h->total) > (uint32_t)sum;
            ST(&h->total, (uint32_t)sum);
        }
    }
    changed |= reclaim_waits(v, c, &ac);
    atomic_store(&h->last_reclaim, c->now);
    return changed;
}

int wh_st_reclaim_waiters(const struct wh_view *v, const struct wh_ctx *c)
{
    struct alive_cache ac = {.n = 0};
    return reclaim_waits(v, c, &ac);
}
