/*
 * Processes killed with what they hold: a guard owner, a holder a waiter is
 * blocked on, holders of tickets, reads and marks, and processes SIGKILLed
 * wherever they happen to be.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "proc_fixture.h"

/* ---- guard takeover ---- */

static void test_guard_takeover(void)
{
    struct wh_obj *o = open_obj(dm, "guard", WH_KIND_LOCK, 1);
    struct wh_obj_header *h = o->v.h;
    uint64_t msg[3], held = 0;
    uint32_t seq;
    int64_t t0, took;
    int p[2], r;
    pid_t c;

    mkpipe(p);
    c = fork_child();
    if (c == 0) {
        /* Take the guard, start an acquisition under it, and die there. */
        uint64_t me = me_of(dm);
        int g = me ? wh_guard_lock(&h->guard, me, wh_now() + SEC, wh_dir_alive, dm) : -1;
        struct wh_ctx cx = {wh_dir_alive, dm, me, wh_now()};
        int t = g == WH_GUARD_OK ? wh_st_try(&o->v, &cx, WH_MODE_LOCK, -1, cx.now) : -1;
        msg[0] = me;
        msg[1] = (uint64_t)g;
        msg[2] = (uint64_t)t;
        put(p[1], msg, sizeof msg);
        park();
    }
    close(p[1]);
    if (!CHECK(get(p[0], msg, sizeof msg, REPLY_MS) == 0, "the child reported")) {
        kill_reap(c);
        goto out;
    }
    CHECK(msg[1] == WH_GUARD_OK && msg[2] == 1, "the child took the guard (%d) and the lock (%d)",
          (int)msg[1], (int)msg[2]);
    CHECK((atomic_load(&h->guard) & ~WH_GUARD_SLEEPERS) == msg[0], "the guard names the child");
    CHECK(atomic_load(&h->owner) == msg[0], "the child is the owner");

    /* A live guard owner, even a stopped one, keeps the guard: the wait is bounded. */
    kill(c, SIGSTOP);
    t0 = wh_now();
    r = attempt(o, WH_MODE_LOCK, &held);
    took = wh_now() - t0;
    CHECK(r == 0, "a live guard owner's guard is not taken over: %d", r);
    CHECK(took >= WH_GUARD_GRACE_NS && took < SEC, "a busy guard is waited for briefly: %lld ns",
          (long long)took);
    CHECK((atomic_load(&h->guard) & ~WH_GUARD_SLEEPERS) == msg[0], "the child keeps the guard");

    /* Once it is dead: takeover, repair, acquisition. */
    kill_reap(c);
    seq = atomic_load(&h->seq);
    t0 = wh_now();
    r = wh_attempt(o, WH_MODE_LOCK, AC_NS, NULL, t0 + LIVENESS_NS, &held, &(struct wh_err){0});
    took = wh_now() - t0;
    CHECK(r == 1, "acquired after taking the dead owner's guard over: %d", r);
    CHECK(took < LIVENESS_NS, "within 2 s: %lld ms", (long long)(took / MS));
    CHECK(held != 0 && held == wh_dir_current(dm) && atomic_load(&h->owner) == held,
          "we own the lock");
    CHECK(atomic_load(&h->guard) == 0, "the guard is free again: %llx",
          (unsigned long long)atomic_load(&h->guard));
    CHECK(atomic_load(&h->seq) != seq, "a takeover bumps seq to wake everyone");
    CHECK(wh_release(o, WH_MODE_LOCK, held) == 1, "released");
out:
    close(p[0]);
    wh_obj_unref(o);
}

/* ---- a blocked waiter and a killed holder ---- */

struct killer {
    struct wh_obj *o;
    pid_t pid;
    int saw_waiter;
    _Atomic int64_t killed_at;
};

static void *killer_main(void *arg)
{
    struct killer *k = arg;
    int64_t deadline = wh_now() + (int64_t)REPLY_MS * MS;
    /* Kill once the main thread is registered as a waiter, i.e. blocked in wh_wait. */
    while (atomic_load(&k->o->v.h->nwaiting) == 0 && wh_now() < deadline)
        wh_sleep_ns(MS);
    k->saw_waiter = atomic_load(&k->o->v.h->nwaiting) != 0;
    atomic_store(&k->killed_at, wh_now());
    kill(k->pid, SIGKILL);
    return NULL;
}

static void test_blocked_waiter_sees_kill(void)
{
    struct wh_obj *o = open_obj(dm, "waiter", WH_KIND_LOCK, 1);
    struct killer k = {o, 0, 0, 0};
    struct wh_waiter w;
    struct wh_err e;
    pthread_t th;
    uint64_t msg[2], held = 0;
    int64_t t0, took;
    int p[2], r;
    pid_t c;

    mkpipe(p);
    c = fork_child();
    if (c == 0) {
        msg[0] = (uint64_t)attempt(o, WH_MODE_LOCK, &msg[1]);
        put(p[1], msg, sizeof msg);
        park();
    }
    close(p[1]);
    if (!CHECK(get(p[0], msg, sizeof msg, REPLY_MS) == 0 && msg[0] == 1,
               "the child holds the lock")) {
        kill_reap(c);
        goto out;
    }
    CHECK(attempt(o, WH_MODE_LOCK, &held) == 0, "busy while the child holds it");

    /* A wait that times out leaves its entry for the caller to withdraw. */
    wh_waiter_init(&w, WH_MODE_LOCK, 1, wh_now());
    t0 = wh_now();
    r = wh_wait(o, WH_MODE_LOCK, AC_NS, &w, t0 + 150 * MS, &held, &e);
    took = wh_now() - t0;
    CHECK(r == 0, "the wait times out: %d", r);
    CHECK(took >= 150 * MS && took < LIVENESS_NS, "after its deadline: %lld ms",
          (long long)(took / MS));
    CHECK(w.idx >= 0 && atomic_load(&o->v.h->nwaiting) == 1, "its entry stays registered");
    wh_withdraw(o, &w);
    CHECK(w.idx < 0 && atomic_load(&o->v.h->nwaiting) == 0, "and is withdrawn");

    k.pid = c;
    if (!CHECK(pthread_create(&th, NULL, killer_main, &k) == 0, "thread")) {
        kill_reap(c);
        goto out;
    }
    r = wait_for(o, WH_MODE_LOCK, &held, &took);
    pthread_join(th, NULL);
    took = wh_now() - atomic_load(&k.killed_at);
    CHECK(k.saw_waiter, "the holder was killed while we were registered as a waiter");
    CHECK(r == 1, "the blocked wait acquires once the holder is killed: %d", r);
    CHECK(took < LIVENESS_NS, "within 2 s of the kill: %lld ms", (long long)(took / MS));
    th_note("acquired %lld ms after the holder was killed (abandonment check %lld ms)",
            (long long)(took / MS), (long long)(AC_NS / MS));
    CHECK(r != 1 || atomic_load(&o->v.h->owner) == held, "we own it");
    CHECK(atomic_load(&o->v.h->nwaiting) == 0, "no entry left behind");
    if (r == 1)
        CHECK(wh_release(o, WH_MODE_LOCK, held) == 1, "released");
    kill_reap(c);
out:
    close(p[0]);
    wh_obj_unref(o);
}

/* ---- semaphore tickets, read holds and waiting writers of killed children ---- */

/* A child that acquires `n` times in `mode` (with a registered wait entry if `waiting`), reports,
 * and parks. Returns its pid; *ok says whether it got what it asked for. */
static pid_t holder(struct wh_obj *o, uint32_t mode, int n, int waiting, int *ok)
{
    int p[2];
    int32_t res = 0;
    pid_t c;
    mkpipe(p);
    c = fork_child();
    if (c == 0) {
        uint64_t held;
        int got = 0;
        for (int i = 0; i < n; i++)
            got += attempt(o, mode, &held) == 1;
        if (waiting) {
            struct wh_waiter w;
            struct wh_err e;
            wh_waiter_init(&w, mode, 0, wh_now());
            w.interval = 30 * SEC; /* a long lease */
            /* busy, so this registers an entry with a long lease: only death removes it */
            if (wh_attempt(o, mode, AC_NS, &w, wh_now() + SEC, &held, &e) == 0 &&
                w.idx >= 0)
                got++;
        }
        res = got;
        put(p[1], &res, sizeof res);
        park();
    }
    close(p[1]);
    *ok = get(p[0], &res, sizeof res, REPLY_MS) == 0 && res == n + (waiting ? 1 : 0);
    close(p[0]);
    return c;
}

static void test_killed_holders(void)
{
    struct wh_obj *sem = open_obj(dm, "sem", WH_KIND_SEMAPHORE, 2);
    struct wh_obj *rw = open_obj(dm, "rw", WH_KIND_RWLOCK, 1);
    struct wh_info in;
    struct wh_err e;
    uint64_t h1 = 0, h2 = 0, h3 = 0;
    int64_t took;
    int ok, r;
    pid_t c;

    /* Semaphore tickets. */
    c = holder(sem, WH_MODE_LOCK, 2, 0, &ok);
    CHECK(ok, "the child holds both tickets");
    CHECK(attempt(sem, WH_MODE_LOCK, &h1) == 0, "none left");
    kill_reap(c);
    r = wait_for(sem, WH_MODE_LOCK, &h1, &took);
    CHECK(r == 1 && took < LIVENESS_NS, "a killed child's ticket comes back: %d in %lld ms", r,
          (long long)(took / MS));
    CHECK(attempt(sem, WH_MODE_LOCK, &h2) == 1, "both of them");
    CHECK(attempt(sem, WH_MODE_LOCK, &h3) == 0, "and no more than max_count");
    CHECK(atomic_load(&sem->v.h->total) == 2, "total %u", atomic_load(&sem->v.h->total));
    CHECK(wh_release(sem, WH_MODE_LOCK, h1) == 1 && wh_release(sem, WH_MODE_LOCK, h2) == 1,
          "released");
    CHECK(atomic_load(&sem->v.h->total) == 0, "all back");

    /* Read holds. */
    c = holder(rw, WH_MODE_READ, 2, 0, &ok);
    CHECK(ok, "the child reads twice");
    CHECK(wh_info(rw, &in, &e) == 0 && in.readers == 2 && in.held == 2, "info: %u readers",
          in.readers);
    CHECK(attempt(rw, WH_MODE_WRITE, &h1) == 0, "no writer beside the child's reads");
    kill_reap(c);
    r = wait_for(rw, WH_MODE_WRITE, &h1, &took);
    CHECK(r == 1 && took < LIVENESS_NS, "a killed reader's reads come back: %d in %lld ms", r,
          (long long)(took / MS));
    if (r == 1)
        CHECK(wh_release(rw, WH_MODE_WRITE, h1) == 1, "released");

    /* An upgradeable read. */
    c = holder(rw, WH_MODE_UPGRADEABLE, 1, 0, &ok);
    CHECK(ok, "the child holds the upgradeable read");
    CHECK(attempt(rw, WH_MODE_UPGRADEABLE, &h1) == 0, "only one upgradeable");
    kill_reap(c);
    r = wait_for(rw, WH_MODE_UPGRADEABLE, &h1, &took);
    CHECK(r == 1 && took < LIVENESS_NS, "a killed child's upgradeable read comes back: %d", r);
    CHECK(r != 1 || attempt(rw, WH_MODE_UPGRADE, &h2) == 1, "and can be upgraded");
    if (r == 1)
        CHECK(wh_release(rw, WH_MODE_UPGRADEABLE, h1) == 1, "released");
    CHECK(atomic_load(&rw->v.h->owner) == 0 && atomic_load(&rw->v.h->upgradeable) == 0, "free");

    /* A waiting writer's entry keeps new readers out until its process dies. */
    CHECK(attempt(rw, WH_MODE_READ, &h1) == 1, "we read");
    c = holder(rw, WH_MODE_WRITE, 0, 1, &ok);
    CHECK(ok, "the child waits to write");
    CHECK(atomic_load(&rw->v.h->nwriters) == 1, "one waiting writer");
    CHECK(attempt(rw, WH_MODE_READ, &h2) == 0, "a new read waits behind the waiting writer");
    kill_reap(c);
    r = wait_for(rw, WH_MODE_READ, &h2, &took);
    CHECK(r == 1 && took < LIVENESS_NS,
          "a killed child's waiting-writer entry stops blocking readers: %d in %lld ms", r,
          (long long)(took / MS));
    CHECK(atomic_load(&rw->v.h->nwriters) == 0, "its entry is gone");
    CHECK(wh_release(rw, WH_MODE_READ, h1) == 1, "released");
    if (r == 1)
        CHECK(wh_release(rw, WH_MODE_READ, h2) == 1, "released");

    /* info() also reclaims what the dead held. */
    c = holder(sem, WH_MODE_LOCK, 1, 0, &ok);
    CHECK(ok, "the child holds a ticket");
    kill_reap(c);
    CHECK(wh_info(sem, &in, &e) == 0 && in.held == 0, "info after the kill: held %u", in.held);
    wh_obj_unref(sem);
    wh_obj_unref(rw);
}

/* ---- kills anywhere ---- */

/* Processes hammering objects are SIGKILLed wherever they happen to be (inside the guard or
 * not): afterwards every object is consistent, holds nothing, and works. */
static void hammer(struct wh_obj **objs, int me, int ready_fd)
{
    char c = 'r';
    int said = 0;
    for (unsigned long i = 0;; i++) {
        struct wh_obj *o = objs[(i + (unsigned long)me) % 3];
        uint64_t held, h2;
        int64_t took;
        static const uint32_t rw_modes[] = {WH_MODE_WRITE, WH_MODE_UPGRADEABLE, WH_MODE_READ};
        uint32_t mode =
            o->v.kind == WH_KIND_RWLOCK ? rw_modes[(i / 3 + (unsigned long)me) % 3] : WH_MODE_LOCK;
        if (wait_for(o, mode, &held, &took) != 1)
            _exit(1);
        if (mode == WH_MODE_UPGRADEABLE && i % 2) {
            struct wh_waiter w;
            struct wh_err e;
            wh_waiter_init(&w, WH_MODE_UPGRADE, 1, wh_now());
            if (wh_wait(o, WH_MODE_UPGRADE, AC_NS, &w, wh_now() + 20 * SEC, &h2, &e) != 1)
                _exit(1);
        }
        if (!said) {
            put(ready_fd, &c, 1);
            said = 1;
        }
        sched_yield();
        wh_release(o, mode, held);
    }
}

static void test_kill_anywhere(void)
{
    enum { N = 3, ROUNDS = 30 };
    struct wh_obj *objs[3] = {open_obj(dm, "kill-lock", WH_KIND_LOCK, 1),
                              open_obj(dm, "kill-sem", WH_KIND_SEMAPHORE, 2),
                              open_obj(dm, "kill-rw", WH_KIND_RWLOCK, 1)};
    int guards_left = 0;
    for (int round = 0; round < ROUNDS; round++) {
        pid_t pids[N];
        int rp[2], ready = 0;
        mkpipe(rp);
        for (int i = 0; i < N; i++) {
            pids[i] = fork_child();
            if (pids[i] == 0)
                hammer(objs, i, rp[1]);
        }
        close(rp[1]);
        for (int i = 0; i < N; i++) {
            char c;
            ready += get(rp[0], &c, 1, REPLY_MS) == 0;
        }
        close(rp[0]);
        CHECK(ready == N, "round %d: %d of %d hammering", round, ready, N);
        /* Any moment will do, but one where a child holds a guard is the most interesting:
         * stop them all, look, and let them go on for a moment if no guard is held. */
        for (int tries = 0; tries < 300; tries++) {
            int held = 0;
            for (int i = 0; i < N; i++) {
                int st;
                kill(pids[i], SIGSTOP);
                while (waitpid(pids[i], &st, WUNTRACED) < 0 && errno == EINTR)
                    ;
            }
            for (int k = 0; k < 3; k++)
                held += atomic_load(&objs[k]->v.h->guard) != 0;
            if (held)
                break;
            for (int i = 0; i < N; i++)
                kill(pids[i], SIGCONT);
            wh_sleep_ns((tries % 7) * 100 * 1000);
        }
        for (int i = 0; i < N; i++)
            kill(pids[i], SIGKILL);
        for (int i = 0; i < N; i++)
            kill_reap(pids[i]);
        for (int k = 0; k < 3; k++)
            guards_left += atomic_load(&objs[k]->v.h->guard) != 0;
        for (int k = 0; k < 3; k++) {
            struct wh_obj *o = objs[k];
            struct wh_info in;
            struct wh_err e;
            char why[300];
            uint64_t held = 0;
            uint32_t mode = o->v.kind == WH_KIND_RWLOCK ? WH_MODE_WRITE : WH_MODE_LOCK;
            int r = wh_info(o, &in, &e); /* takes the guard over if need be, and reclaims */
            CHECK(r == 0 && in.held == 0 && in.waiting == 0,
                  "round %d, %s: after the kill, held %u, waiting %u", round,
                  wh_kind_name(o->v.kind), in.held, in.waiting);
            CHECK(atomic_load(&o->v.h->guard) == 0, "round %d: guard free", round);
            CHECK(wh_st_check(&o->v, why, sizeof why), "round %d, %s: %s", round,
                  wh_kind_name(o->v.kind), why);
            r = attempt(o, mode, &held);
            CHECK(r == 1, "round %d, %s: usable: %d", round, wh_kind_name(o->v.kind), r);
            if (r == 1)
                wh_release(o, mode, held);
        }
    }
    th_note("%d guards were held by a killed process", guards_left);
    for (int k = 0; k < 3; k++)
        wh_obj_unref(objs[k]);
}

int main(void)
{
    proc_setup("test-kill");
    RUN(test_guard_takeover);
    RUN(test_blocked_waiter_sees_kill);
    RUN(test_killed_holders);
    RUN(test_kill_anywhere);
    return proc_done(th_done());
}
