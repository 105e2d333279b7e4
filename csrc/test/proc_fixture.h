/*
 * The fixture of the process tests: the C core against real files, OFD
 * locks, futexes and SIGKILL. Everything happens in a private temporary
 * directory that is removed at the end. Processes synchronise through pipes;
 * the only timing assertions are generous liveness bounds ("within 2 s").
 *
 * Children never print TAP: they report through pipes and the parent checks.
 * Every child parks on the read end of a "lifeline" pipe whose write end only
 * the test process holds, so no child outlives the run, whatever happens.
 */
#ifndef WH_TEST_PROC_FIXTURE_H
#define WH_TEST_PROC_FIXTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "policy.h"
#include "wh.h"

#define SEC         (1000LL * 1000 * 1000)
#define MS          (1000LL * 1000)
#define AC_NS       (100 * MS) /* abandonment_check of every wait here */
#define LIVENESS_NS (2 * SEC)  /* a dead holder's things come back well within this */
#define REPLY_MS    10000      /* how long a child may take to answer */

extern char base[64];     /* the private temporary directory */
extern struct wh_dir *dm; /* base/main */

/* Before the first test: /tmp/wh-<name>.XXXXXX, its lock directory "main", the lifeline. */
void proc_setup(const char *name);
/* After the last: every parked child ended, the directory removed; returns status (th_done's:
 * the harness counts in the test's own file). */
int proc_done(int status);

/* ---- processes and pipes ---- */

pid_t fork_child(void);
/* A child's last act: wait until killed or until the test process is gone. */
void park(void) __attribute__((noreturn));
/* Writes n bytes; 0, or -1 if the reader is gone. */
int put(int fd, const void *p, size_t n);
/* Reads exactly n bytes within timeout_ms; 0, or -1 on timeout or EOF. */
int get(int fd, void *p, size_t n, int timeout_ms);
void mkpipe(int p[2]);
void kill_reap(pid_t pid);
/* Waits (bounded) for a child that is expected to exit by itself; its exit code or -1. */
int reap(pid_t pid);

/* ---- files and objects ---- */

void path_of(char *buf, size_t n, const char *sub); /* base/sub */
struct wh_obj *open_obj(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max);
/* One attempt that does not want to wait, as try_acquire(0) makes it. */
int attempt(struct wh_obj *o, uint32_t mode, uint64_t *held);
/* Blocks for `mode` (up to 20 s); returns 1 and the time it took, or what wh_wait returned. */
int wait_for(struct wh_obj *o, uint32_t mode, uint64_t *held, int64_t *took);
uint64_t me_of(struct wh_dir *d);

#endif
