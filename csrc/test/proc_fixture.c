/*
 * The process tests' fixture (proc_fixture.h): children, pipes, the private
 * directory, and the core's calls as the tests make them.
 */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc_fixture.h"

char base[64];     /* the private temporary directory */
struct wh_dir *dm; /* base/main */
static int lifeline[2];

/* ---- processes and pipes ---- */

pid_t fork_child(void)
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

void park(void)
{
    char c;
    while (read(lifeline[0], &c, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

int put(int fd, const void *p, size_t n)
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

int get(int fd, void *p, size_t n, int timeout_ms)
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

void mkpipe(int p[2])
{
    if (pipe(p) != 0) {
        perror("pipe");
        exit(2);
    }
}

void kill_reap(pid_t pid)
{
    int st;
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

int reap(pid_t pid)
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

void path_of(char *buf, size_t n, const char *sub)
{
    snprintf(buf, n, "%s/%s", base, sub);
}

struct wh_obj *open_obj(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max)
{
    struct wh_err e;
    struct wh_obj *o = wh_obj_open(d, name, kind, max, 0600, &e);
    if (o == NULL) {
        printf("Bail out! cannot open %s: %s (%s)\n", name, wh_code_name(e.code), e.msg);
        exit(2);
    }
    return o;
}

int attempt(struct wh_obj *o, uint32_t mode, uint64_t *held)
{
    struct wh_err e;
    int r = wh_attempt(o, mode, AC_NS, NULL, wh_now(), held, &e);
    if (r < 0)
        th_note("wh_attempt: %s (%s)", wh_code_name(e.code), e.msg);
    return r;
}

int wait_for(struct wh_obj *o, uint32_t mode, uint64_t *held, int64_t *took)
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

uint64_t me_of(struct wh_dir *d)
{
    struct wh_err e;
    uint64_t me = wh_dir_me(d, &e);
    if (me == 0)
        th_note("wh_dir_me: %s", e.msg);
    return me;
}

/* ---- the run ---- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

void proc_setup(const char *name)
{
    struct wh_err e;
    char path[160];

    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    /* Orphaned grandchildren come to us, so we can reap what we kill. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    snprintf(base, sizeof base, "/tmp/wh-%s.XXXXXX", name);
    if (mkdtemp(base) == NULL || chmod(base, 0700) != 0) {
        perror("mkdtemp");
        exit(2);
    }
    if (pipe(lifeline) != 0) {
        perror("pipe");
        exit(2);
    }
    path_of(path, sizeof path, "main");
    dm = wh_dir_open(path, 0700, &e);
    if (dm == NULL) {
        printf("Bail out! cannot open lock directory %s: %s\n", path, e.msg);
        exit(2);
    }
}

int proc_done(int status)
{
    close(lifeline[1]); /* every parked child exits */
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}
