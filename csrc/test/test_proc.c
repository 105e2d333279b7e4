/*
 * Processes: identities and their liveness, fork, wake-ups of blocked
 * waiters, contention, and several processes creating one object at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proc_fixture.h"

/* ---- liveness of identities ---- */

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

/* ---- fork ---- */

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

/* ---- creating one object at once ---- */

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

int main(void)
{
    proc_setup("test-proc");
    RUN(test_liveness);
    RUN(test_fork);
    RUN(test_wakeups);
    RUN(test_contention);
    RUN(test_concurrent_create);
    return proc_done(th_done());
}
