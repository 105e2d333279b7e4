/*
 * Multi-process tests of the C core against real files, OFD locks, futexes
 * and SIGKILL. Everything happens in a private temporary directory that is
 * removed at the end. Processes synchronise through pipes; the only timing
 * assertions are generous liveness bounds ("within 2 s").
 *
 * Children never print TAP: they report through pipes and the parent checks.
 * Every child parks on the read end of a "lifeline" pipe whose write end only
 * the test process holds, so no child outlives the run, whatever happens.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "policy.h"
#include "wh.h"

#define SEC         (1000LL * 1000 * 1000)
#define MS          (1000LL * 1000)
#define AC_NS       (100 * MS) /* abandonment_check of every wait here */
#define LIVENESS_NS (2 * SEC)  /* a dead holder's things come back well within this */
#define REPLY_MS    10000      /* how long a child may take to answer */

static char base[64];     /* the private temporary directory */
static struct wh_dir *dm; /* base/main */
static int lifeline[2];

/* ---- processes and pipes ---- */

static pid_t fork_child(void)
{
    pid_t p;
    fflush(stdout);
    fflush(stderr);
    p = fork();
    if (p < 0) {
        perror("fork");
        exit(2);
    }
    if (p == 0 && lifeline[1] >= 0) {
        close(lifeline[1]);
        lifeline[1] = -1; /* so that a grandchild does not close whatever reuses the number */
    }
    return p;
}

/* A child's last act: wait until killed or until the test process is gone. */
static void park(void)
{
    char c;
    while (read(lifeline[0], &c, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

/* Writes n bytes; 0, or -1 if the reader is gone. */
static int put(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes within timeout_ms; 0, or -1 on timeout or EOF. */
static int get(int fd, void *p, size_t n, int timeout_ms)
{
    char *s = p;
    int64_t deadline = wh_now() + (int64_t)timeout_ms * MS;
    while (n > 0) {
        struct pollfd pf = {fd, POLLIN, 0};
        int64_t left = deadline - wh_now();
        ssize_t r;
        if (left <= 0)
            return -1;
        if (poll(&pf, 1, (int)(left / MS) + 1) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (!(pf.revents & (POLLIN | POLLHUP)))
            continue;
        r = read(fd, s, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

static void mkpipe(int p[2])
{
    if (pipe(p) != 0) {
        perror("pipe");
        exit(2);
    }
}

static void kill_reap(pid_t pid)
{
    int st;
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

/* Waits (bounded) for a child that is expected to exit by itself; returns its exit code or -1. */
static int reap(pid_t pid)
{
    int64_t deadline = wh_now() + (int64_t)REPLY_MS * MS;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (wh_now() >= deadline) {
            kill_reap(pid);
            return -1;
        }
        wh_sleep_ns(MS);
    }
}

/* ---- files and objects ---- */

static void path_of(char *buf, size_t n, const char *sub)
{
    snprintf(buf, n, "%s/%s", base, sub);
}

static struct wh_obj *open_obj(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max)
{
    struct wh_err e;
    struct wh_obj *o = wh_obj_open(d, name, kind, max, 0600, &e);
    if (o == NULL) {
        CHECK(0, "cannot open %s: %s (%s)", name, wh_code_name(e.code), e.msg);
        exit(2);
    }
    return o;
}

/* One attempt that does not want to wait, as try_acquire(0) makes it. */
static int attempt(struct wh_obj *o, uint32_t mode, uint64_t *held)
{
    struct wh_err e;
    int r = wh_attempt(o, mode, AC_NS, NULL, wh_now(), held, &e);
    if (r < 0)
        th_note("wh_attempt: %s (%s)", wh_code_name(e.code), e.msg);
    return r;
}

/* Blocks for `mode` (up to 20 s); returns 1 and the time it took, or what wh_wait returned. */
static int wait_for(struct wh_obj *o, uint32_t mode, uint64_t *held, int64_t *took)
{
    struct wh_waiter w;
    struct wh_err e;
    int64_t t0 = wh_now();
    int r;
    wh_waiter_init(&w, mode, 1, t0);
    r = wh_wait(o, mode, AC_NS, &w, t0 + 20 * SEC, held, &e);
    *took = wh_now() - t0;
    if (r != 1) {
        th_note("wh_wait returned %d: %s (%s)", r, wh_code_name(e.code), e.msg);
        wh_withdraw(o, &w);
    }
    return r;
}

static uint64_t me_of(struct wh_dir *d)
{
    struct wh_err e;
    uint64_t me = wh_dir_me(d, &e);
    if (me == 0)
        th_note("wh_dir_me: %s", e.msg);
    return me;
}

/* ---- 1. guard takeover ---- */

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

/* ---- 2. a blocked waiter and a killed holder ---- */

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

/* ---- 3. liveness of identities ---- */

static uint64_t child_identity(pid_t *pid, int p[2])
{
    uint64_t id = 0;
    mkpipe(p);
    *pid = fork_child();
    if (*pid == 0) {
        id = me_of(dm);
        put(p[1], &id, sizeof id);
        park();
    }
    close(p[1]);
    if (get(p[0], &id, sizeof id, REPLY_MS) != 0)
        id = 0;
    close(p[0]);
    return id;
}

static void set_hint(uint32_t slot)
{
    char path[128];
    uint32_t hint = slot % WH_SHARD_SLOTS;
    int fd;
    snprintf(path, sizeof path, "%s/main/" WH_REG_PREFIX "%02u", base, slot / WH_SHARD_SLOTS);
    fd = open(path, O_RDWR | O_CLOEXEC);
    CHECK(fd >= 0 && pwrite(fd, &hint, sizeof hint, offsetof(struct wh_reg_header, hint)) ==
                         (ssize_t)sizeof hint,
          "hint written to %s", path);
    if (fd >= 0)
        close(fd);
}

static void test_liveness(void)
{
    uint64_t me = me_of(dm), id1, id2;
    uint32_t slot;
    pid_t c1, c2;
    int p[2];

    CHECK(me != 0 && wh_dir_alive(dm, me) == 1, "our own identity is alive");
    CHECK(wh_dir_alive(dm, WH_IDENT(WH_IDENT_SLOT(me), WH_IDENT_GEN(me) + 1)) == 0,
          "a later generation of our own slot is not us");
    if (WH_IDENT_GEN(me) > 1)
        CHECK(wh_dir_alive(dm, WH_IDENT(WH_IDENT_SLOT(me), WH_IDENT_GEN(me) - 1)) == 0,
              "an earlier generation of our own slot is dead");

    id1 = child_identity(&c1, p);
    if (!CHECK(id1 != 0, "the child claimed an identity")) {
        kill_reap(c1);
        return;
    }
    slot = WH_IDENT_SLOT(id1);
    CHECK(WH_IDENT_SLOT(id1) != WH_IDENT_SLOT(me), "the child has a slot of its own");
    CHECK(wh_dir_alive(dm, id1) == 1, "a live child's identity is alive");
    CHECK(wh_dir_pid(dm, id1) == (uint32_t)c1, "its pid is recorded: %u vs %d", wh_dir_pid(dm, id1),
          (int)c1);
    kill_reap(c1);
    CHECK(wh_dir_alive(dm, id1) == 0, "a killed and reaped child's identity is dead");

    /* The next process to claim that slot gets the next generation. */
    set_hint(slot);
    id2 = child_identity(&c2, p);
    CHECK(WH_IDENT_SLOT(id2) == slot, "the slot is reused: %u vs %u", WH_IDENT_SLOT(id2), slot);
    CHECK(WH_IDENT_GEN(id2) == WH_IDENT_GEN(id1) + 1, "with generation %llu + 1: %llu",
          (unsigned long long)WH_IDENT_GEN(id1), (unsigned long long)WH_IDENT_GEN(id2));
    CHECK(wh_dir_alive(dm, id2) == 1, "the new owner is alive");
    CHECK(wh_dir_alive(dm, id1) == 0, "the old identity stays dead");

    /* A read lock on the slot's byte, which anyone who can read the registry can take, does not
     * make a dead identity look alive. */
    kill_reap(c2);
    {
        char path[128];
        struct flock fl;
        int fd;
        snprintf(path, sizeof path, "%s/main/" WH_REG_PREFIX "%02u", base, slot / WH_SHARD_SLOTS);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_RDLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = WH_LK_SLOT0 + slot % WH_SHARD_SLOTS;
        fl.l_len = 1;
        CHECK(fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0, "read lock taken on the slot byte");
        CHECK(wh_dir_alive(dm, id2) == 0, "a read lock does not fake a live slot");
        if (fd >= 0)
            close(fd);
    }

    CHECK(wh_dir_alive(dm, WH_IDENT(slot, WH_IDENT_GEN(id2) + 100)) == 0,
          "a generation never claimed is dead");
    CHECK(wh_dir_alive(dm, WH_IDENT(WH_MAX_SLOTS - 1, 1)) == 0, "a slot never claimed is dead");
    CHECK(wh_dir_alive(dm, WH_IDENT(WH_MAX_SLOTS + 5, 1)) == 0, "a slot out of range is dead");
    CHECK(wh_dir_alive(dm, WH_IDENT(slot, 0)) == 0, "generation 0 is nobody");
    CHECK(wh_dir_alive(dm, 0) == 0, "0 is nobody");
    CHECK(wh_dir_alive(dm, me | WH_GUARD_SLEEPERS) == 0, "bit 63 is never part of an identity");
}

/* ---- 4. fork ---- */

static void test_fork(void)
{
    struct wh_obj *o = open_obj(dm, "fork", WH_KIND_LOCK, 1);
    uint64_t held = 0, msg[7], gmsg[3];
    int64_t took;
    int p[2], g[2], r;
    pid_t c, gc;

    if (!CHECK(attempt(o, WH_MODE_LOCK, &held) == 1, "the parent holds the lock"))
        goto out;
    mkpipe(p);
    c = fork_child();
    if (c == 0) {
        uint64_t other = 0;
        msg[0] = wh_dir_current(dm);
        msg[1] = (uint64_t)wh_release(o, WH_MODE_LOCK, held);
        msg[2] = atomic_load(&o->v.h->owner);
        msg[3] = (uint64_t)attempt(o, WH_MODE_LOCK, &other);
        msg[4] = wh_dir_current(dm);
        msg[5] = (uint64_t)wh_release(o, WH_MODE_LOCK, held); /* now with an identity of its own */
        msg[6] = (uint64_t)wh_dir_alive(dm, held);
        put(p[1], msg, sizeof msg);
        _exit(0);
    }
    close(p[1]);
    if (CHECK(get(p[0], msg, sizeof msg, REPLY_MS) == 0, "the child reported")) {
        CHECK(msg[0] == 0, "a forked child has no identity: %llx", (unsigned long long)msg[0]);
        CHECK(msg[1] == 0, "the child's release of the parent's hold is a no-op");
        CHECK(msg[2] == held, "and leaves it held");
        CHECK(msg[3] == 0, "the child itself finds the lock busy");
        CHECK(msg[4] != 0 && msg[4] != held && WH_IDENT_SLOT(msg[4]) != WH_IDENT_SLOT(held),
              "and has claimed a slot of its own");
        CHECK(msg[5] == 0, "with which it cannot release the parent's hold either");
        CHECK(msg[6] == 1, "to the child, its live parent is alive");
    }
    CHECK(reap(c) == 0, "the child exited");
    close(p[0]);
    CHECK(atomic_load(&o->v.h->owner) == held, "the parent still holds");
    CHECK(wh_release(o, WH_MODE_LOCK, held) == 1, "and releases");

    /* A holder that forked a child that lives on still gives its holds back when it dies. */
    mkpipe(p);
    mkpipe(g);
    c = fork_child();
    if (c == 0) {
        uint64_t h1 = 0;
        msg[0] = (uint64_t)attempt(o, WH_MODE_LOCK, &h1);
        msg[1] = h1;
        if (fork_child() == 0) {
            gmsg[0] = (uint64_t)getpid();
            gmsg[1] = wh_dir_current(dm);
            gmsg[2] = (uint64_t)wh_dir_alive(dm, h1);
            put(g[1], gmsg, sizeof gmsg);
            park();
        }
        put(p[1], msg, 2 * sizeof msg[0]);
        park();
    }
    close(p[1]);
    close(g[1]);
    gc = 0;
    if (!CHECK(get(p[0], msg, 2 * sizeof msg[0], REPLY_MS) == 0 &&
                   get(g[0], gmsg, sizeof gmsg, REPLY_MS) == 0,
               "child and grandchild reported")) {
        kill_reap(c);
        goto out2;
    }
    gc = (pid_t)gmsg[0];
    CHECK(msg[0] == 1, "the child holds the lock");
    CHECK(gmsg[1] == 0, "the grandchild has no identity");
    CHECK(gmsg[2] == 1, "and sees its live parent alive");
    CHECK(attempt(o, WH_MODE_LOCK, &held) == 0, "busy");
    kill_reap(c);
    CHECK(kill(gc, 0) == 0, "the grandchild lives on");
    r = wait_for(o, WH_MODE_LOCK, &held, &took);
    CHECK(r == 1, "the dead child's lock comes back although its child lives: %d", r);
    CHECK(took < LIVENESS_NS, "within 2 s: %lld ms", (long long)(took / MS));
    if (r == 1)
        CHECK(wh_release(o, WH_MODE_LOCK, held) == 1, "released");
out2:
    if (gc > 0)
        kill_reap(gc); /* ours to reap: we are a child subreaper */
    close(p[0]);
    close(g[0]);
out:
    wh_obj_unref(o);
}

/* ---- 5. semaphore tickets, read holds and waiting writers of killed children ---- */

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

/* ---- releases and withdrawals wake blocked waiters at once ---- */

/* A child that takes `mode` on o (or, with `withdraw`, registers as a waiter for it), says so,
 * waits until `nwait` wait entries exist (ours among them: we are blocked), then notes the time
 * and releases (or withdraws). */
static pid_t waker(struct wh_obj *o, uint32_t mode, int withdraw, uint32_t nwait, int p[2])
{
    pid_t c;
    mkpipe(p);
    c = fork_child();
    if (c == 0) {
        struct wh_waiter w;
        struct wh_err e;
        uint64_t held = 0;
        int64_t t, deadline;
        int ok;
        if (withdraw) {
            wh_waiter_init(&w, mode, 1, wh_now());
            w.interval = 30 * SEC; /* a long lease */
            ok = wh_attempt(o, mode, AC_NS, &w, wh_now(), &held, &e) == 0 && w.idx >= 0;
        } else {
            ok = attempt(o, mode, &held) == 1;
        }
        t = ok;
        put(p[1], &t, sizeof t);
        deadline = wh_now() + (int64_t)REPLY_MS * MS;
        while (atomic_load(&o->v.h->nwaiting) < nwait && wh_now() < deadline)
            wh_sleep_ns(MS);
        t = wh_now();
        put(p[1], &t, sizeof t);
        if (withdraw)
            wh_withdraw(o, &w);
        else
            wh_release(o, mode, held);
        park();
    }
    close(p[1]);
    return c;
}

/* Blocks on o in `mode` with an abandonment check of 10 s: only a wake-up gets it in time. */
static void expect_woken(struct wh_obj *o, uint32_t mode, uint32_t wmode, int withdraw,
                         const char *what)
{
    struct wh_waiter w;
    struct wh_err e;
    uint64_t held = 0, first = 0;
    int64_t ready = 0, t_release = 0, t_got;
    int p[2], r;
    pid_t c;
    /* A waiter registers only when the object is busy: we hold it already (shared). */
    if (withdraw && !CHECK(attempt(o, mode, &first) == 1, "%s: first hold", what))
        return;
    c = waker(o, wmode, withdraw, withdraw ? 2 : 1, p);
    if (!CHECK(get(p[0], &ready, sizeof ready, REPLY_MS) == 0 && ready == 1, "%s: child ready",
               what)) {
        kill_reap(c);
        close(p[0]);
        return;
    }
    wh_waiter_init(&w, mode, 1, wh_now());
    r = wh_wait(o, mode, 10 * SEC, &w, wh_now() + 20 * SEC, &held, &e);
    t_got = wh_now();
    CHECK(get(p[0], &t_release, sizeof t_release, REPLY_MS) == 0, "%s: child released", what);
    CHECK(r == 1, "%s: acquired: %d", what, r);
    CHECK(t_got - t_release < LIVENESS_NS,
          "%s: woken %lld ms after the release (its abandonment "
          "check is 10 s)",
          what, (long long)((t_got - t_release) / MS));
    if (r == 1)
        CHECK(wh_release(o, mode, held) == 1, "%s: released", what);
    else
        wh_withdraw(o, &w);
    if (first != 0)
        CHECK(wh_release(o, mode, first) == 1, "%s: first hold released", what);
    kill_reap(c);
    close(p[0]);
}

static void test_wakeups(void)
{
    struct wh_obj *lk = open_obj(dm, "wake-lock", WH_KIND_LOCK, 1);
    struct wh_obj *sem = open_obj(dm, "wake-sem", WH_KIND_SEMAPHORE, 1);
    struct wh_obj *rw = open_obj(dm, "wake-rw", WH_KIND_RWLOCK, 1);
    expect_woken(lk, WH_MODE_LOCK, WH_MODE_LOCK, 0, "lock release");
    expect_woken(sem, WH_MODE_LOCK, WH_MODE_LOCK, 0, "semaphore release");
    expect_woken(rw, WH_MODE_WRITE, WH_MODE_READ, 0, "read release, writer waiting");
    expect_woken(rw, WH_MODE_READ, WH_MODE_WRITE, 0, "write release, reader waiting");
    expect_woken(rw, WH_MODE_READ, WH_MODE_WRITE, 1, "waiting writer withdraws, reader waiting");
    CHECK(atomic_load(&rw->v.h->nwaiting) == 0, "no entries left");
    wh_obj_unref(lk);
    wh_obj_unref(sem);
    wh_obj_unref(rw);
}

/* ---- 6. removal ---- */

static void test_remove(void)
{
    struct wh_err e;
    struct wh_obj *o;
    struct stat st;
    uint64_t held = 0;
    char cmd = 'x', ack;
    int p[2], q[2], r;
    pid_t c;

    CHECK(wh_obj_remove(dm, "rm", &e) == 0, "removing what does not exist: 0");
    mkpipe(p);
    mkpipe(q);
    c = fork_child();
    if (c == 0) {
        struct wh_obj *co = wh_obj_open(dm, "rm", WH_KIND_LOCK, 1, 0600, &e);
        uint64_t h = 0;
        ack = co != NULL && attempt(co, WH_MODE_LOCK, &h) == 1 ? 'y' : 'n';
        put(p[1], &ack, 1);
        if (get(q[0], &cmd, 1, REPLY_MS) == 0 && co != NULL)
            wh_obj_unref(co); /* still holding the lock: the file says so */
        put(p[1], &ack, 1);
        park();
    }
    close(p[1]);
    close(q[0]);
    if (!CHECK(get(p[0], &ack, 1, REPLY_MS) == 0 && ack == 'y', "the child opened and locked")) {
        kill_reap(c);
        goto out;
    }
    r = wh_obj_remove(dm, "rm", &e);
    CHECK(r == 0, "not removed while another process has it open: %d", r);
    CHECK(fstatat(wh_dir_fd(dm), "rm", &st, AT_SYMLINK_NOFOLLOW) == 0, "the file is still there");
    CHECK(put(q[1], &cmd, 1) == 0 && get(p[0], &ack, 1, REPLY_MS) == 0, "the child closed it");
    r = wh_obj_remove(dm, "rm", &e);
    CHECK(r == 1, "removed once nobody has it open: %d (%s)", r, r < 0 ? e.msg : "");
    CHECK(fstatat(wh_dir_fd(dm), "rm", &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT, "gone");

    /* Re-opening creates a fresh object: the child (alive, and owner in the old file) holds
     * nothing in it. */
    o = open_obj(dm, "rm", WH_KIND_LOCK, 1);
    CHECK(atomic_load(&o->v.h->owner) == 0, "fresh state");
    CHECK(attempt(o, WH_MODE_LOCK, &held) == 1, "acquired while the old file's owner lives");
    CHECK(wh_release(o, WH_MODE_LOCK, held) == 1, "released");
    CHECK(wh_obj_remove(dm, "rm", &e) == 0, "not removed while this process has it open");
    wh_obj_unref(o);
    CHECK(wh_obj_remove(dm, "rm", &e) == 1, "removed after the last unref");
    kill_reap(c);
out:
    close(p[0]);
    close(q[1]);
}

/* ---- 7. hostile files and directories ---- */

static void make_header(struct wh_obj_header *h, uint32_t kind, uint32_t max_count)
{
    uint32_t wait_off = sizeof *h,
             slot_off = wait_off + WH_WAIT_ENTRIES * sizeof(struct wh_wait_entry);
    memset(h, 0, sizeof *h);
    memcpy(h->magic, WH_OBJ_MAGIC, 8);
    h->version = WH_FORMAT_VERSION;
    h->header_size = sizeof *h;
    h->kind = kind;
    h->max_count = kind == WH_KIND_SEMAPHORE ? max_count : 1;
    h->nslots = kind == WH_KIND_LOCK ? 0 : WH_MAX_SLOTS;
    h->nwait = WH_WAIT_ENTRIES;
    h->wait_off = wait_off;
    h->slot_off = kind == WH_KIND_LOCK ? 0 : slot_off;
    h->file_size =
        kind == WH_KIND_LOCK ? slot_off : slot_off + WH_MAX_SLOTS * sizeof(struct wh_slot_entry);
}

static void write_file(struct wh_dir *d, const char *name, const void *data, size_t len)
{
    int fd = openat(wh_dir_fd(d), name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, data, len) == (ssize_t)len, "wrote %s", name);
    if (fd >= 0)
        close(fd);
}

/* The whole file, into a malloc'd buffer. */
static unsigned char *slurp(int dirfd, const char *name, size_t *len)
{
    struct stat st;
    unsigned char *buf;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    *len = 0;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf != NULL && pread(fd, buf, (size_t)st.st_size, 0) == st.st_size)
        *len = (size_t)st.st_size;
    close(fd);
    return buf;
}

/* Opening `name` as (kind, max) fails with `code` and leaves the file exactly as it was. */
static void expect_refused(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max,
                           int code, const char *what)
{
    struct wh_err e;
    struct wh_obj *o;
    size_t n1, n2;
    unsigned char *before = slurp(wh_dir_fd(d), name, &n1), *after;
    memset(&e, 0, sizeof e);
    o = wh_obj_open(d, name, kind, max, 0600, &e);
    CHECK(o == NULL, "%s: opened", what);
    if (o != NULL) {
        wh_obj_unref(o);
    } else {
        CHECK(e.code == code, "%s: code %s, expected %s (%s)", what, wh_code_name(e.code),
              wh_code_name(code), e.msg);
        CHECK(strstr(e.msg, name) != NULL, "%s: the message names the file: %s", what, e.msg);
    }
    after = slurp(wh_dir_fd(d), name, &n2);
    CHECK(n1 == n2 && (n1 == 0 || (before && after && memcmp(before, after, n1) == 0)),
          "%s: the file was left untouched (%zu -> %zu bytes)", what, n1, n2);
    free(before);
    free(after);
}

static void test_hostile_files(void)
{
    struct wh_obj_header h;
    struct wh_err e;
    struct wh_dir *d;
    struct wh_obj *o;
    struct stat st;
    unsigned char *buf;
    char path[160], target[160];
    size_t lock_size, rw_size, n;
    uint64_t held;

    path_of(path, sizeof path, "hostile");
    d = wh_dir_open(path, 0700, &e);
    if (!CHECK(d != NULL, "hostile dir: %s", e.msg))
        return;
    make_header(&h, WH_KIND_LOCK, 1);
    lock_size = (size_t)h.file_size;
    make_header(&h, WH_KIND_RWLOCK, 1);
    rw_size = (size_t)h.file_size;
    buf = calloc(1, rw_size);
    if (buf == NULL)
        exit(2);

    memset(buf, 0xA5, lock_size);
    write_file(d, "garbage", buf, lock_size);
    expect_refused(d, "garbage", WH_KIND_LOCK, 1, WH_ECORRUPT, "a file of garbage");
    write_file(d, "garbage-short", buf, 17);
    expect_refused(d, "garbage-short", WH_KIND_LOCK, 1, WH_ECORRUPT, "17 bytes of garbage");

    make_header(&h, WH_KIND_LOCK, 1);
    memset(buf, 0, rw_size);
    memcpy(buf, &h, sizeof h);
    write_file(d, "truncated", buf, 100);
    expect_refused(d, "truncated", WH_KIND_LOCK, 1, WH_ECORRUPT, "a file cut inside its header");

    memcpy(buf, &h, sizeof h);
    memcpy(buf, "WAITHDL9", 8);
    write_file(d, "magic", buf, lock_size);
    expect_refused(d, "magic", WH_KIND_LOCK, 1, WH_ECORRUPT, "wrong magic");

    h.version = WH_FORMAT_VERSION + 1;
    memcpy(buf, &h, sizeof h);
    write_file(d, "version", buf, lock_size);
    expect_refused(d, "version", WH_KIND_LOCK, 1, WH_EMISMATCH, "another format version");
    write_file(d, "version-short", buf, sizeof h);
    expect_refused(d, "version-short", WH_KIND_LOCK, 1, WH_EMISMATCH,
                   "another format version, header only");

    make_header(&h, WH_KIND_LOCK, 1);
    h.nwait = 1000;
    memcpy(buf, &h, sizeof h);
    write_file(d, "layout", buf, lock_size);
    expect_refused(d, "layout", WH_KIND_LOCK, 1, WH_ECORRUPT, "a bad layout");

    make_header(&h, WH_KIND_LOCK, 1);
    h.kind = 9;
    memcpy(buf, &h, sizeof h);
    write_file(d, "kind9", buf, rw_size);
    expect_refused(d, "kind9", WH_KIND_LOCK, 1, WH_ECORRUPT, "an unknown kind");

    make_header(&h, WH_KIND_SEMAPHORE, 3);
    h.max_count = 0;
    memcpy(buf, &h, sizeof h);
    write_file(d, "max0", buf, rw_size);
    expect_refused(d, "max0", WH_KIND_SEMAPHORE, 1, WH_ECORRUPT, "max_count 0");

    make_header(&h, WH_KIND_RWLOCK, 1);
    h.file_size = 1ULL << 40;
    memcpy(buf, &h, sizeof h);
    write_file(d, "huge", buf, rw_size);
    expect_refused(d, "huge", WH_KIND_RWLOCK, 1, WH_ECORRUPT, "a header claiming 1 TiB");

    make_header(&h, WH_KIND_RWLOCK, 1);
    memcpy(buf, &h, sizeof h);
    write_file(d, "rwfile", buf, rw_size);
    expect_refused(d, "rwfile", WH_KIND_LOCK, 1, WH_EMISMATCH, "an rwlock opened as a lock");
    make_header(&h, WH_KIND_SEMAPHORE, 3);
    memcpy(buf, &h, sizeof h);
    write_file(d, "sem3", buf, rw_size);
    expect_refused(d, "sem3", WH_KIND_SEMAPHORE, 4, WH_EMISMATCH, "another max_count");
    o = wh_obj_open(d, "sem3", WH_KIND_SEMAPHORE, 3, 0600, &e);
    CHECK(o != NULL, "the right max_count opens it: %s", o ? "" : e.msg);
    if (o != NULL) {
        expect_refused(d, "sem3", WH_KIND_SEMAPHORE, 4, WH_EMISMATCH,
                       "another max_count while it is open");
        wh_obj_unref(o);
    }

    /* An empty file (its creator died first) is initialised. */
    write_file(d, "empty", buf, 0);
    o = wh_obj_open(d, "empty", WH_KIND_RWLOCK, 1, 0600, &e);
    if (CHECK(o != NULL, "an empty file is initialised: %s", o ? "" : e.msg)) {
        CHECK(fstatat(wh_dir_fd(d), "empty", &st, 0) == 0 && (size_t)st.st_size == rw_size,
              "to its full size");
        CHECK(memcmp(o->v.h->magic, WH_OBJ_MAGIC, 8) == 0 && o->v.h->kind == WH_KIND_RWLOCK,
              "with a valid header");
        CHECK(attempt(o, WH_MODE_WRITE, &held) == 1 && wh_release(o, WH_MODE_WRITE, held) == 1,
              "and works");
        wh_obj_unref(o);
    }
    /* A valid header without the rest (its creator died after writing it) is completed. */
    make_header(&h, WH_KIND_LOCK, 1);
    memset(buf, 0, rw_size);
    memcpy(buf, &h, sizeof h);
    write_file(d, "header-only", buf, sizeof h + 5);
    o = wh_obj_open(d, "header-only", WH_KIND_LOCK, 1, 0600, &e);
    if (CHECK(o != NULL, "a file with a valid header is completed: %s", o ? "" : e.msg)) {
        CHECK(fstatat(wh_dir_fd(d), "header-only", &st, 0) == 0 && (size_t)st.st_size == lock_size,
              "to its full size");
        CHECK(attempt(o, WH_MODE_LOCK, &held) == 1 && wh_release(o, WH_MODE_LOCK, held) == 1,
              "and works");
        wh_obj_unref(o);
    }

    /* Symbolic links are never followed; their targets are left alone. */
    path_of(target, sizeof target, "precious");
    {
        int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0 && write(fd, "precious", 8) == 8, "target written");
        if (fd >= 0)
            close(fd);
    }
    CHECK(symlinkat(target, wh_dir_fd(d), "link") == 0, "symlink");
    o = wh_obj_open(d, "link", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a symlink at the path: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    {
        int tfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        unsigned char *t = slurp(tfd, "precious", &n);
        CHECK(n == 8 && t != NULL && memcmp(t, "precious", 8) == 0, "the target is untouched");
        free(t);
        close(tfd);
    }
    CHECK(wh_obj_remove(d, "link", &e) == -1 && e.code == WH_EUNSAFE, "remove refuses a symlink");
    CHECK(fstatat(wh_dir_fd(d), "link", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode),
          "and leaves it");
    path_of(target, sizeof target, "never-created");
    CHECK(symlinkat(target, wh_dir_fd(d), "dangling") == 0, "dangling symlink");
    o = wh_obj_open(d, "dangling", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a dangling symlink: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    CHECK(stat(target, &st) != 0 && errno == ENOENT, "its target was not created");

    /* Other things that are not regular files. */
    CHECK(mkdirat(wh_dir_fd(d), "adir", 0700) == 0, "mkdir");
    o = wh_obj_open(d, "adir", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a directory at the path: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    CHECK(mkfifoat(wh_dir_fd(d), "fifo", 0600) == 0, "mkfifo");
    o = wh_obj_open(d, "fifo", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a FIFO at the path: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    free(buf);
}

static void test_unsafe_dirs(void)
{
    struct wh_err e;
    struct wh_dir *d;
    char path[160], sub[200], target[160];

    path_of(path, sizeof path, "ww");
    CHECK(mkdir(path, 0700) == 0 && chmod(path, 0777) == 0, "world-writable dir made");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE,
          "a world-writable directory without the sticky bit: %s", d ? "accepted" : e.msg);
    snprintf(sub, sizeof sub, "%s/inner", path);
    CHECK(mkdir(sub, 0700) == 0, "mkdir inner");
    d = wh_dir_open(sub, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE, "a path through one: %s", d ? "accepted" : e.msg);
    CHECK(chmod(path, 0770) == 0, "chmod 0770");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE, "group-writable without the sticky bit: %s",
          d ? "accepted" : e.msg);
    CHECK(chmod(path, 01777) == 0, "chmod 01777");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d != NULL, "a sticky world-writable directory is fine: %s", d ? "" : e.msg);

    path_of(path, sizeof path, "dirlink");
    path_of(sub, sizeof sub, "main");
    CHECK(symlink(sub, path) == 0, "symlink to a directory");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE, "a lock directory that is a symlink: %s",
          d ? "accepted" : e.msg);

    /* A symbolic link before the last component is followed if we (or root) own it. */
    path_of(path, sizeof path, "real");
    snprintf(sub, sizeof sub, "%s/inner", path);
    CHECK(mkdir(path, 0700) == 0 && mkdir(sub, 0700) == 0, "mkdir real/inner");
    d = wh_dir_open(sub, 0700, &e);
    CHECK(d != NULL, "real/inner: %s", d ? "" : e.msg);
    path_of(path, sizeof path, "lnk");
    path_of(target, sizeof target, "real");
    CHECK(symlink(target, path) == 0, "symlink lnk -> real");
    snprintf(sub, sizeof sub, "%s/inner", path);
    {
        struct wh_dir *d2 = wh_dir_open(sub, 0700, &e);
        CHECK(d2 != NULL && d2 == d, "a path through our own symlink is the same directory: %s",
              d2 ? "" : e.msg);
    }
    if (geteuid() == 0) {
        CHECK(lchown(path, 12345, 12345) == 0, "lchown");
        d = wh_dir_open(sub, 0700, &e);
        CHECK(d == NULL && e.code == WH_EUNSAFE, "a path through another user's symlink: %s",
              d ? "accepted" : e.msg);
        path_of(path, sizeof path, "theirs");
        CHECK(mkdir(path, 0700) == 0 && chown(path, 12345, 12345) == 0, "another user's dir");
        d = wh_dir_open(path, 0700, &e);
        CHECK(d == NULL && e.code == WH_EUNSAFE, "a directory another user owns: %s",
              d ? "accepted" : e.msg);
    } else {
        th_note("not root: another user's symlinks and directories not tested");
    }

    path_of(path, sizeof path, "afile");
    {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    }
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && (e.code == WH_EUNSAFE || e.code == WH_EOS),
          "a lock directory that is a file: %s", d ? "accepted" : e.msg);
}

/* A registry shard that is not one: no identity, so no acquisition, and a clear error. */
static void test_hostile_registry(void)
{
    static const struct {
        const char *dir;
        uint32_t version, nslots; /* 0: garbage instead of a header */
        int code;
    } cases[] = {{"reg-garbage", 0, 0, WH_ECORRUPT},
                 {"reg-version", WH_FORMAT_VERSION + 1, WH_SHARD_SLOTS, WH_EMISMATCH},
                 {"reg-layout", WH_FORMAT_VERSION, 7, WH_ECORRUPT}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct wh_reg_header rh;
        struct wh_err e;
        struct wh_dir *d;
        struct wh_obj *o;
        unsigned char buf[WH_REG_FILE_SIZE];
        uint64_t held = 0;
        char path[160];
        int r;

        path_of(path, sizeof path, cases[i].dir);
        d = wh_dir_open(path, 0700, &e);
        if (!CHECK(d != NULL, "%s: %s", cases[i].dir, d ? "" : e.msg))
            continue;
        memset(buf, 0x5A, sizeof buf);
        if (cases[i].version != 0) {
            memset(&rh, 0, sizeof rh);
            memcpy(rh.magic, WH_REG_MAGIC, 8);
            rh.version = cases[i].version;
            rh.header_size = sizeof rh;
            rh.shard = 0;
            rh.nslots = cases[i].nslots;
            rh.slot_size = sizeof(struct wh_reg_slot);
            memcpy(buf, &rh, sizeof rh);
        }
        write_file(d, WH_REG_PREFIX "00", buf, sizeof buf);
        o = wh_obj_open(d, "obj", WH_KIND_LOCK, 1, 0600, &e);
        if (!CHECK(o != NULL, "%s: the object opens: %s", cases[i].dir, o ? "" : e.msg))
            continue;
        memset(&e, 0, sizeof e);
        r = wh_attempt(o, WH_MODE_LOCK, AC_NS, NULL, wh_now(), &held, &e);
        CHECK(r == -1 && e.code == cases[i].code, "%s: attempt %d, code %s (%s)", cases[i].dir, r,
              wh_code_name(e.code), e.msg);
        CHECK(atomic_load(&o->v.h->owner) == 0 && atomic_load(&o->v.h->guard) == 0,
              "%s: nothing taken", cases[i].dir);
        CHECK(wh_dir_current(d) == 0, "%s: no identity", cases[i].dir);
        wh_obj_unref(o);
    }
}

/* Several processes create and initialise one new object at the same moment: every one of them
 * gets the same valid object. */
static void test_concurrent_create(void)
{
    enum { N = 4, ROUNDS = 5 };
    for (int round = 0; round < ROUNDS; round++) {
        char name[32];
        int go[2], rep[2], okc = 0;
        pid_t pids[N];
        snprintf(name, sizeof name, "born-together-%d", round);
        mkpipe(go);
        mkpipe(rep);
        for (int i = 0; i < N; i++) {
            pids[i] = fork_child();
            if (pids[i] == 0) {
                struct wh_err e;
                struct wh_obj *o;
                char c, res = 'n';
                close(go[1]);
                while (read(go[0], &c, 1) < 0 && errno == EINTR) /* EOF: go */
                    ;
                o = wh_obj_open(dm, name, round % 2 ? WH_KIND_RWLOCK : WH_KIND_SEMAPHORE, 2, 0600,
                                &e);
                if (o != NULL) {
                    uint64_t held;
                    int64_t took;
                    uint32_t mode = round % 2 ? WH_MODE_WRITE : WH_MODE_LOCK;
                    if (wait_for(o, mode, &held, &took) == 1 && wh_release(o, mode, held) == 1)
                        res = 'y';
                } else {
                    th_note("child %d: %s", i, e.msg);
                }
                put(rep[1], &res, 1);
                _exit(0);
            }
        }
        close(go[0]);
        close(rep[1]);
        close(go[1]); /* all start at once */
        for (int i = 0; i < N; i++) {
            char res = 0;
            if (get(rep[0], &res, 1, REPLY_MS) == 0 && res == 'y')
                okc++;
        }
        for (int i = 0; i < N; i++)
            reap(pids[i]);
        close(rep[0]);
        CHECK(okc == N, "round %d: %d of %d processes opened and used the new object", round, okc,
              N);
    }
}

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

/* ---- contention between processes ---- */

struct shared {
    _Atomic int inside, max_inside, violations, readers, writers;
    long counter;
};

static void bump_max(struct shared *s, int n)
{
    int m = atomic_load(&s->max_inside);
    while (n > m && !atomic_compare_exchange_weak(&s->max_inside, &m, n))
        ;
}

/* Children that each take `mode` `iters` times on o, doing something that exclusion protects. */
static void contend(struct wh_obj *o, uint32_t mode, int iters, struct shared *s, int limit)
{
    for (int i = 0; i < iters; i++) {
        uint64_t held;
        int64_t took;
        int n;
        if (wait_for(o, mode, &held, &took) != 1) {
            atomic_fetch_add(&s->violations, 1000);
            _exit(1);
        }
        if (mode == WH_MODE_READ) {
            atomic_fetch_add(&s->readers, 1);
            if (atomic_load(&s->writers) != 0)
                atomic_fetch_add(&s->violations, 1);
            sched_yield();
            atomic_fetch_sub(&s->readers, 1);
        } else {
            long v;
            n = atomic_fetch_add(&s->inside, 1) + 1;
            bump_max(s, n);
            if (n > limit)
                atomic_fetch_add(&s->violations, 1);
            if (mode == WH_MODE_WRITE) {
                atomic_fetch_add(&s->writers, 1);
                if (atomic_load(&s->readers) != 0)
                    atomic_fetch_add(&s->violations, 1);
            }
            v = s->counter; /* a plain read-modify-write: only exclusion keeps it exact */
            sched_yield();
            s->counter = v + 1;
            if (mode == WH_MODE_WRITE)
                atomic_fetch_sub(&s->writers, 1);
            atomic_fetch_sub(&s->inside, 1);
        }
        if (wh_release(o, mode, held) != 1)
            atomic_fetch_add(&s->violations, 1000);
    }
}

/* Children in `modes` contend for o; at most `limit` may be inside at once. With limit 1 the
 * counter must come out exact; with more inside at once it may not. */
static void run_contention(const char *what, struct wh_obj *o, const uint32_t *modes, int nproc,
                           int iters, int limit)
{
    struct shared *s =
        mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pids[8];
    long expect = 0;
    if (s == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(s, 0, sizeof *s);
    for (int i = 0; i < nproc; i++) {
        pids[i] = fork_child();
        if (pids[i] == 0) {
            contend(o, modes[i], iters, s, limit);
            _exit(0);
        }
        if (modes[i] != WH_MODE_READ)
            expect += iters;
    }
    for (int i = 0; i < nproc; i++)
        CHECK(reap(pids[i]) == 0, "%s: child %d finished", what, i);
    CHECK(atomic_load(&s->violations) == 0, "%s: %d exclusion violations", what,
          atomic_load(&s->violations));
    CHECK(limit > 1 || s->counter == expect, "%s: counter %ld, expected %ld", what, s->counter,
          expect);
    CHECK(atomic_load(&s->max_inside) <= limit, "%s: %d inside at once, limit %d", what,
          atomic_load(&s->max_inside), limit);
    CHECK(atomic_load(&o->v.h->owner) == 0 && atomic_load(&o->v.h->nwaiting) == 0 &&
              (o->v.slots == NULL || atomic_load(&o->v.h->total) == 0),
          "%s: everything released", what);
    munmap(s, sizeof *s);
}

static void test_contention(void)
{
    static const uint32_t locks[] = {WH_MODE_LOCK, WH_MODE_LOCK, WH_MODE_LOCK};
    static const uint32_t rws[] = {WH_MODE_WRITE, WH_MODE_READ, WH_MODE_WRITE, WH_MODE_READ};
    struct wh_obj *lk = open_obj(dm, "contended-lock", WH_KIND_LOCK, 1);
    struct wh_obj *sem = open_obj(dm, "contended-sem", WH_KIND_SEMAPHORE, 2);
    struct wh_obj *rw = open_obj(dm, "contended-rw", WH_KIND_RWLOCK, 1);
    run_contention("lock", lk, locks, 3, 300, 1);
    run_contention("semaphore", sem, locks, 3, 300, 2);
    run_contention("rwlock", rw, rws, 4, 200, 1);
    wh_obj_unref(lk);
    wh_obj_unref(sem);
    wh_obj_unref(rw);
}

/* ---- main ---- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

int main(void)
{
    struct wh_err e;
    char path[160];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    /* Orphaned grandchildren come to us, so we can reap what we kill. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    snprintf(base, sizeof base, "/tmp/wh-test-proc.XXXXXX");
    if (mkdtemp(base) == NULL || chmod(base, 0700) != 0) {
        perror("mkdtemp");
        return 2;
    }
    if (pipe(lifeline) != 0) {
        perror("pipe");
        return 2;
    }
    path_of(path, sizeof path, "main");
    dm = wh_dir_open(path, 0700, &e);
    if (dm == NULL) {
        printf("Bail out! cannot open lock directory %s: %s\n", path, e.msg);
        return 2;
    }

    RUN(test_guard_takeover);
    RUN(test_blocked_waiter_sees_kill);
    RUN(test_liveness);
    RUN(test_fork);
    RUN(test_killed_holders);
    RUN(test_wakeups);
    RUN(test_remove);
    RUN(test_hostile_files);
    RUN(test_unsafe_dirs);
    RUN(test_hostile_registry);
    RUN(test_contention);
    RUN(test_concurrent_create);
    RUN(test_kill_anywhere);

    rc = th_done();
    close(lifeline[1]); /* every parked child exits */
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
