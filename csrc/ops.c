/*
 * Operations on an open object: take the guard (repairing after a dead
 * owner), run the state machine, drop the guard, wake sleepers. No system
 * call on the uncontended path.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "policy.h"
#include "wh.h"

/* The clock is read only where it is needed: not on the uncontended path. */
static void ctx_init(struct wh_ctx *c, struct wh_obj *o, uint64_t me)
{
    c->alive = wh_dir_alive;
    c->actx = o->dir;
    c->me = me;
    c->now = 0;
}

/* Takes the guard; after a takeover the state is repaired and everyone must be woken. Then
 * gives back this process's releases that could not wait for the guard (pending.c) first,
 * so that nothing of ours stands in our own way. */
static int enter_w(struct wh_obj *o, struct wh_ctx *c, int64_t deadline, int *wake, int *waited)
{
    int g = wh_guard_lock_w(&o->v.h->guard, c->me, deadline, wh_dir_alive, o->dir, waited);
    if (g == WH_GUARD_TAKEN_OVER) {
        c->now = wh_now();
        wh_st_reclaim(&o->v, c);
        *wake = 2;
    }
    if (g != WH_GUARD_BUSY && atomic_load_explicit(&o->npending, memory_order_relaxed) != 0 &&
        wh_pending_apply(o) && !*wake)
        *wake = 1;
    return g;
}

static int enter(struct wh_obj *o, struct wh_ctx *c, int64_t deadline, int *wake)
{
    int waited;
    return enter_w(o, c, deadline, wake, &waited);
}

/*
 * Bumps seq if something may admit a waiter, drops the guard, wakes futex
 * sleepers. Only guard holders write seq, and with nobody registered as
 * waiting nobody needs to see it change (a waiter registers, under the guard,
 * before it sleeps), so the uncontended path leaves it alone.
 */
static void leave(struct wh_obj *o, int wake, struct wh_waiter *w)
{
    struct wh_obj_header *h = o->v.h;
    uint32_t sleepers = atomic_load(&h->nfutex);
    if (wake == 2 || (wake && atomic_load(&h->nwaiting) != 0))
        atomic_store(&h->seq, atomic_load_explicit(&h->seq, memory_order_relaxed) + 1);
    else
        wake = 0;
    if (w != NULL)
        w->seq = atomic_load(&h->seq);
    wh_guard_unlock(&h->guard);
    if (wake == 2 || (wake && sleepers))
        wh_futex_wake_all(&h->seq);
}

void wh_waiter_init(struct wh_waiter *w, uint32_t mode, int futex, int64_t since)
{
    memset(w, 0, sizeof *w);
    w->idx = -1;
    w->mode = mode | (futex ? WH_WAIT_FUTEX : 0);
    w->since = since;
    w->interval = WH_POLL_MIN_NS;
}

int wh_attempt(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
               int64_t guard_deadline, uint64_t *held, struct wh_err *e)
{
    return wh_attempt_t(o, mode, ac_ns, w, guard_deadline, held, NULL, e);
}

/* Whether the holds of dead processes are to be looked for: abandonment_check (ac_ns) since the
 * last scan, or a last scan that is not in [0, now], which a file written before a reboot holds
 * (the monotonic clock starts again) or anything else wrote: a scan now, never an overflow. */
static int reclaim_due(struct wh_obj_header *h, int64_t now, int64_t ac_ns)
{
    int64_t last = atomic_load(&h->last_reclaim);
    return last < 0 || last > now || now - last >= ac_ns;
}

static int replaced(const struct wh_obj *o, struct wh_err *e)
{
    return wh_fail(e, WH_EREPLACED, ENOENT,
                   "the file of %s '%s' in %s was removed or replaced by something other than "
                   "waithandles (a tmp cleaner, or systemd-logind RemoveIPC?): use a lock "
                   "directory that cleaners leave alone",
                   wh_kind_name(o->v.kind), o->name, wh_dir_path(o->dir));
}

#define AGAIN 2 /* attempt_once: the identity changed while it waited for the guard */

static int attempt_once(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
                        int64_t guard_deadline, uint64_t *held, uint64_t *token, struct wh_err *e);

int wh_attempt_t(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
                 int64_t guard_deadline, uint64_t *held, uint64_t *token, struct wh_err *e)
{
    int r = AGAIN;
    for (int i = 0; i < 3 && r == AGAIN; i++)
        r = attempt_once(o, mode, ac_ns, w, guard_deadline, held, token, e);
    return r == AGAIN ? 0 : r;
}

static int attempt_once(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
                        int64_t guard_deadline, uint64_t *held, uint64_t *token, struct wh_err *e)
{
    const struct wh_view *v = &o->v;
    struct wh_ctx c;
    int wake = 0, r, mine = -1, g, waited;
    int64_t lease_ns = w != NULL ? WH_LEASE(w->interval) : 0;
    uint32_t seen = w != NULL ? w->seq : 0;
    int64_t coarse = wh_now_coarse(); /* one clock read for both rate-limited checks */
    uint64_t me = wh_dir_me_at(o->dir, coarse, e);

    if (me == 0) {
        wh_err_about(e, wh_kind_name(o->v.kind), o->name);
        return -1;
    }
    /* Never a hold on a file that is no longer the object (the caller opens the path again),
     * nor under an identity of a registry file that is no longer the directory's. A waiter
     * looks at the file every time; the uncontended path at both every few milliseconds; and
     * anyone who had to wait for the guard (its owner may have been stopped for long) looks
     * at both again inside it. */
    if (wh_obj_replaced_at(o, w != NULL ? 0 : coarse))
        return replaced(o, e);
    ctx_init(&c, o, me);
    g = enter_w(o, &c, guard_deadline, &wake, &waited);
    if (g == WH_GUARD_BUSY) {
        if (w != NULL)
            w->seq = atomic_load(&v->h->seq);
        return 0;
    }
    if (waited || g == WH_GUARD_TAKEN_OVER) {
        if (wh_obj_replaced_at(o, 0)) {
            leave(o, wake, w);
            return replaced(o, e);
        }
        uint64_t now_me = wh_dir_me_at(o->dir, INT64_MAX, e);
        if (now_me != me) { /* a new identity, or 0: an error */
            leave(o, wake, w);
            if (now_me != 0)
                return AGAIN;
            wh_err_about(e, wh_kind_name(o->v.kind), o->name);
            return -1;
        }
    }
    /* Leases and ages matter only when somebody waits. */
    if (c.now == 0 && (w != NULL || atomic_load(&v->h->nwaiting) != 0))
        c.now = wh_now();
    if (w != NULL) {
        if (w->idx >= 0 && (w->ident != me || !wh_st_refresh(v, &c, w->idx, w->tag, c.now + lease_ns)))
            w->idx = -1; /* reclaimed (lease ran out), or inherited across fork */
        mine = w->idx;
    }
    r = wh_st_try(v, &c, mode, mine, w ? w->since : c.now);
    if (r == 0 && c.now == 0)
        c.now = wh_now();
    if (r == 0 && reclaim_due(v->h, c.now, ac_ns)) {
        if (wh_st_reclaim(v, &c) && !wake)
            wake = 1;
        r = wh_st_try(v, &c, mode, mine, w ? w->since : c.now);
    } else if (r == 0 && atomic_load(&v->h->nwaiting) != 0 && wh_st_admits(v, &c, mode)) {
        /* Free but for waiters that come first: they must be alive now, not at the next
         * reclamation, or a dead waiter would turn away attempts on a free object. */
        if (wh_st_reclaim_waiters(v, &c)) {
            if (!wake)
                wake = 1;
            r = wh_st_try(v, &c, mode, mine, w ? w->since : c.now);
        }
    }
    if (r == 1) {
        *held = me;
        if (token != NULL) /* the one this acquisition took, for exclusive holds and tickets */
            *token = mode == WH_MODE_READ || mode == WH_MODE_UPGRADEABLE ? 0
                                                                        : atomic_load(&v->h->token);
        if (w != NULL && w->idx >= 0) {
            wh_st_withdraw(v, w->idx, w->tag, me);
            w->idx = -1;
        }
    } else if (r == 0 && w != NULL && w->idx < 0) {
        w->idx = wh_st_register(v, &c, w->mode, w->since, c.now + lease_ns, &w->tag);
        w->ident = me;
    }
    if (w != NULL) {
        w->last_attempt = c.now;
        if (r == 0)
            w->ahead = wh_st_ahead(v, &c, mode, w->idx, w->since);
    }
    leave(o, wake, w);
    if (w != NULL && (w->seq != seen || w->changed_at == 0))
        w->changed_at = c.now;
    if (r < 0)
        return wh_fail(e, WH_EINVALID_STATE, 0,
                       "%s '%s' is not held as an upgradeable read by this process",
                       wh_kind_name(v->kind), o->name);
    return r;
}

int wh_wait(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
            int64_t deadline, uint64_t *held, struct wh_err *e)
{
    return wh_wait_t(o, mode, ac_ns, w, deadline, held, NULL, e);
}

int wh_wait_t(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
              int64_t deadline, uint64_t *held, uint64_t *token, struct wh_err *e)
{
    /* The waiter wakes at least every `interval` to refresh its mark (and see whether a
     * reclamation is due), whatever abandonment_check is. */
    w->interval = ac_ns < WH_BLOCK_SLICE_NS ? ac_ns : WH_BLOCK_SLICE_NS;
    for (;;) {
        int64_t now, slice;
        int r = wh_attempt_t(o, mode, ac_ns, w, deadline, held, token, e);
        if (r != 0)
            return r;
        now = wh_now();
        if (now >= deadline)
            return 0;
        slice = deadline - now < w->interval ? deadline - now : w->interval;
        if (w->idx < 0 && slice > WH_UNREGISTERED_SLICE_NS)
            slice = WH_UNREGISTERED_SLICE_NS;
        wh_futex_wait(&o->v.h->seq, w->seq, slice);
    }
}

int wh_release(struct wh_obj *o, uint32_t mode, uint64_t ident)
{
    struct wh_ctx c;
    struct wh_err ignored;
    int wake = 0;
    uint64_t me = wh_dir_current(o->dir);
    if (me == 0 || me != ident) {
        /* A copy inherited across fork: the hold is the parent's. Or a hold taken under an
         * identity the process had before its registry file was replaced: lost, but what is
         * left of it is ours to clear. */
        if (wh_dir_ours(o->dir, ident, 0) != 1 || (me = wh_dir_me(o->dir, &ignored)) == 0)
            return 0;
    }
    ctx_init(&c, o, me);
    /* Deadline 0: at most WH_GUARD_GRACE_NS, even if the guard's owner is stopped. */
    if (enter(o, &c, 0, &wake) == WH_GUARD_BUSY) {
        wh_pending_add(o, mode, ident);
        return 1;
    }
    if (wh_st_release(&o->v, mode, ident) && !wake)
        wake = 1;
    leave(o, wake, NULL);
    return 1;
}

int wh_complete_pending(struct wh_obj *o)
{
    struct wh_ctx c;
    int wake = 1;
    uint64_t me = wh_dir_current(o->dir);
    if (me == 0)
        return 0;
    ctx_init(&c, o, me);
    if (enter(o, &c, wh_now() + WH_PENDING_TURN_NS, &wake) == WH_GUARD_BUSY)
        return 0;
    leave(o, wake, NULL); /* enter gave the releases back */
    return 1;
}

void wh_withdraw(struct wh_obj *o, struct wh_waiter *w)
{
    struct wh_ctx c;
    int wake = 0;
    uint64_t me = wh_dir_current(o->dir);
    if (w->idx < 0)
        return;
    if (me == 0 || me != w->ident) {
        w->idx = -1;
        return;
    }
    ctx_init(&c, o, me);
    if (enter(o, &c, 0, &wake) == WH_GUARD_BUSY) {
        w->idx = -1; /* its lease ends it soon */
        return;
    }
    c.now = wh_now();
    /* Others may have been waiting behind this entry. */
    if (wh_st_withdraw(&o->v, w->idx, w->tag, me) && !wake)
        wake = 1;
    w->idx = -1;
    leave(o, wake, NULL);
}

int wh_changed(struct wh_obj *o, const struct wh_waiter *w, int64_t ac_ns)
{
    int64_t now = wh_now();
    return atomic_load(&o->v.h->seq) != w->seq || now - w->last_attempt >= WH_LEASE(w->interval) / 2 ||
           reclaim_due(o->v.h, now, ac_ns);
}

int64_t wh_poll_delay(const struct wh_waiter *w, int64_t now)
{
    int64_t quiet = (now - w->changed_at) / WH_POLL_QUIET_DIV, d;
    if (w->ahead == 0) {
        d = quiet < WH_POLL_MIN_NS ? WH_POLL_MIN_NS : quiet;
        return d > WH_POLL_HEAD_MAX_NS ? WH_POLL_HEAD_MAX_NS : d;
    }
    /* The queue moves at most one waiter per poll interval of its head: k waiters ahead, it
     * cannot be first sooner than k intervals from now. */
    d = w->ahead >= WH_POLL_MAX_NS / WH_POLL_MIN_NS ? WH_POLL_MAX_NS
                                                    : WH_POLL_MIN_NS * (int64_t)(w->ahead + 1);
    if (d < quiet)
        d = quiet;
    return d > WH_POLL_MAX_NS ? WH_POLL_MAX_NS : d;
}

int wh_info(struct wh_obj *o, struct wh_info *out, struct wh_err *e)
{
    struct wh_ctx c;
    int wake = 0;
    uint64_t me = wh_dir_me(o->dir, e);
    if (me == 0)
        return -1;
    ctx_init(&c, o, me);
    c.now = wh_now();
    if (enter(o, &c, c.now + 1000000000LL, &wake) == WH_GUARD_BUSY) {
        wh_st_info(&o->v, &c, out); /* best effort: the guard's owner is stopped */
        return 0;
    }
    if (wh_st_reclaim(&o->v, &c) && !wake)
        wake = 1;
    wh_st_info(&o->v, &c, out);
    leave(o, wake, NULL);
    return 0;
}
