/*
 * Named events: a manual-reset event stays set until reset and lets every
 * wait return; an auto-reset event lets exactly one wait return per set
 * (setting it while it is set changes nothing). The state is two words
 * changed by single atomic operations, so neither the guard nor the registry
 * is needed, nothing needs repair after a crash, and a waiter that dies
 * leaves nothing behind. A wait that began at generation g returns once the
 * event is set, or (manual-reset) once it was set since g even if it was
 * reset meanwhile: a set never misses a waiter. Setters bump seq after the
 * state, and waiters read seq before it, so no wake-up is lost.
 */
#include <stdatomic.h>

#include "wh.h"

void wh_event_set(struct wh_obj *o)
{
    struct wh_obj_header *h = o->v.h;
    atomic_store(&h->ev_set, 1);
    atomic_fetch_add(&h->ev_gen, 1);
    atomic_fetch_add(&h->seq, 1);
    wh_futex_wake_all(&h->seq);
}

void wh_event_reset(struct wh_obj *o) { atomic_store(&o->v.h->ev_set, 0); }

int wh_event_is_set(struct wh_obj *o) { return atomic_load(&o->v.h->ev_set) != 0; }

uint64_t wh_event_gen(struct wh_obj *o) { return atomic_load(&o->v.h->ev_gen); }

int wh_event_try(struct wh_obj *o, uint64_t gen0)
{
    struct wh_obj_header *h = o->v.h;
    if (o->v.max_count == WH_EVENT_AUTO) {
        uint32_t one = 1;
        return atomic_compare_exchange_strong(&h->ev_set, &one, 0);
    }
    return atomic_load(&h->ev_set) != 0 || atomic_load(&h->ev_gen) != gen0;
}

int wh_event_wait(struct wh_obj *o, uint64_t gen0, int64_t until)
{
    for (;;) {
        uint32_t seq = atomic_load(&o->v.h->seq);
        int64_t now;
        if (wh_event_try(o, gen0))
            return 1;
        now = wh_now();
        if (now >= until)
            return 0;
        wh_futex_wait(&o->v.h->seq, seq, until - now);
    }
}
