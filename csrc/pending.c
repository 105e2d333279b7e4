/*
 * Releases that could not wait for the guard. release(), __gc and __close
 * wait at most WH_GUARD_GRACE_NS for a busy guard (its owner may be stopped):
 * then the handle is released for the caller at once, and the hold is
 * recorded here and given back to the object later, by whichever comes first
 * of the next operation of this process on that object (ops.c, enter) and a
 * helper thread that keeps trying while anything is pending. If the process
 * ends first, its death gives the hold back like any other.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "dir.h"
#include "policy.h"

struct pending {
    struct pending *next;
    struct wh_obj *o; /* referenced */
    uint32_t mode;
    uint64_t ident;
};

static struct pending *pending; /* guarded by wh_mu */
static int helper_running;      /* likewise */

static void *helper(void *arg)
{
    (void)arg;
    for (;;) {
        struct wh_obj *o;
        pthread_mutex_lock(&wh_mu);
        if (pending == NULL) {
            helper_running = 0;
            pthread_mutex_unlock(&wh_mu);
            return NULL;
        }
        o = pending->o;
        wh_obj_ref(o);
        pthread_mutex_unlock(&wh_mu);
        wh_complete_pending(o); /* waits for the guard a while; then we look again */
        wh_obj_unref(o);
    }
}

void wh_pending_add(struct wh_obj *o, uint32_t mode, uint64_t ident)
{
    struct pending *p = malloc(sizeof *p);
    if (p == NULL)
        return; /* the hold stays until the process ends: nothing else is possible */
    wh_obj_ref(o);
    p->o = o;
    p->mode = mode;
    p->ident = ident;
    pthread_mutex_lock(&wh_mu);
    p->next = pending;
    pending = p;
    atomic_fetch_add(&o->npending, 1);
    if (!helper_running) {
        pthread_t t;
        pthread_attr_t attr;
        sigset_t all, old;
        sigfillset(&all);
        /* The helper takes no signal meant for the application. */
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        helper_running = pthread_create(&t, &attr, helper, NULL) == 0;
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    pthread_mutex_unlock(&wh_mu);
}

int wh_pending_apply(struct wh_obj *o)
{
    struct pending *mine = NULL, **pp;
    int any = 0;
    pthread_mutex_lock(&wh_mu);
    for (pp = &pending; *pp != NULL;) {
        struct pending *p = *pp;
        if (p->o == o) {
            *pp = p->next;
            p->next = mine;
            mine = p;
        } else {
            pp = &p->next;
        }
    }
    pthread_mutex_unlock(&wh_mu);
    while (mine != NULL) {
        struct pending *p = mine;
        mine = p->next;
        any |= wh_st_release(&o->v, p->mode, p->ident);
        atomic_fetch_sub(&o->npending, 1);
        /* Not the last reference: the caller holds one while it holds the guard. */
        atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel);
        free(p);
    }
    return any;
}

/* After fork, in the child (wh_mu held): the holds are the parent's, and so is the helper. */
void wh_pending_forget(void)
{
    while (pending != NULL) {
        struct pending *p = pending;
        pending = p->next;
        atomic_fetch_sub(&p->o->npending, 1);
        free(p); /* its reference is kept: the child's objects stay mapped */
    }
    helper_running = 0;
}
