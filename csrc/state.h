/*
 * What the state machines (state.c) and the look at their state (observe.c)
 * share: how a shared word is read, and the facts every kind's rules ask of
 * an object. Shared memory is untrusted: a word is loaded once into a local,
 * checked, and only then used.
 */
#ifndef WH_STATE_H
#define WH_STATE_H

#include <stdatomic.h>

#include "wh.h"

#define LD(p) atomic_load_explicit((p), memory_order_relaxed)

static inline int is_rw(const struct wh_view *v) { return v->kind == WH_KIND_RWLOCK; }
static inline int has_slots(const struct wh_view *v) { return v->slots != NULL; }

/* A wait entry that counts now (taken, lease not expired): 1 with its identity, mode and
 * since; 0 if it does not. */
static inline int entry_live(const struct wh_wait_entry *e, int64_t now, uint64_t *id,
                             uint32_t *mode, int64_t *since)
{
    *id = LD(&e->ident);
    if (*id == 0 || LD(&e->lease) < now)
        return 0;
    *mode = LD(&e->mode) & WH_WAIT_MODE_MASK;
    *since = LD(&e->since);
    return 1;
}

/* The wait counts the header keeps, as the entries say: taken entries, those of them on the
 * futex, and those waiting to write or upgrade. Expired entries count until reclaimed. */
static inline void count_waits(const struct wh_view *v, uint32_t *used, uint32_t *fut,
                               uint32_t *writers)
{
    *used = *fut = *writers = 0;
    for (uint32_t i = 0; i < v->nwait; i++) {
        uint32_t m;
        if (LD(&v->waits[i].ident) == 0)
            continue;
        m = LD(&v->waits[i].mode);
        (*used)++;
        *fut += (m & WH_WAIT_FUTEX) != 0;
        m &= WH_WAIT_MODE_MASK;
        *writers += m == WH_MODE_WRITE || m == WH_MODE_UPGRADE;
    }
}

#endif
