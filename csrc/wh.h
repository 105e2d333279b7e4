/*
 * Internal interfaces of the C core. Nothing here is exported from the
 * shared object: only luaopen_waithandles_core is visible.
 */
#ifndef WH_H
#define WH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "format.h"

/* Whatever the build flags, only luaopen_waithandles_core leaves the module. */
#pragma GCC visibility push(hidden)

/* ---- errors (err.c) ---- */

enum wh_code {
    WH_OK = 0,
    WH_ETIMEOUT,
    WH_ECANCELLED,
    WH_ERELEASED,
    WH_EINVALID_STATE,
    WH_EINVALID_NAME,
    WH_EMISMATCH,
    WH_ECORRUPT,
    WH_EUNSAFE,
    WH_EOS,
    WH_EREPLACED /* internal: the object's file is no longer the one at its path (code "os") */
};

struct wh_err {
    int code;
    int errnum;
    char msg[512];
};

const char *wh_code_name(int code);
/* Makes e's message name the object (kind 'name': ...) if it does not already. */
void wh_err_about(struct wh_err *e, const char *kind, const char *name);
/* Fills *e and returns -1. */
int wh_fail(struct wh_err *e, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- names (names.c) ---- */

#define WH_NAME_MAX 255
int wh_name_valid(const char *s, size_t len);
/* Writes the escaped name (NUL-terminated) and returns its length. */
size_t wh_safe_name(const char *s, size_t len, char out[WH_NAME_MAX + 1]);
void wh_sha256(const void *data, size_t len, uint8_t out[32]);

/* ---- time and futexes (wait.c) ---- */

#define WH_FOREVER INT64_MAX
int64_t wh_now(void); /* CLOCK_MONOTONIC, ns */
int64_t wh_now_coarse(void); /* CLOCK_MONOTONIC_COARSE: a few ms coarse, for rate limits */
int64_t wh_deadline_after(int64_t ns); /* now + ns, saturating; ns < 0 means forever */
void wh_sleep_ns(int64_t ns);
/* Sleeps while *word == val, at most ns (< 0: no limit). Returns 0, or ETIMEDOUT. */
int wh_futex_wait(const void *word, uint32_t val, int64_t ns);
void wh_futex_wake_all(const void *word);

/* ---- lock directories and the process registry (dir.c, registry.c) ---- */

struct wh_dir;
typedef int (*wh_alive_fn)(void *ctx, uint64_t ident);

/* Opens (creating the last component with dir_mode if it is missing) and
 * checks a lock directory. Directories live as long as the process. */
struct wh_dir *wh_dir_open(const char *path, int dir_mode, struct wh_err *e);
int wh_dir_fd(const struct wh_dir *d);
const char *wh_dir_path(const struct wh_dir *d);
/* Before attempt `tries` (0, 1, ...) of something another process keeps undoing: pauses a
 * little (not before the first); 0 once WH_OPEN_RETRY_NS have passed since the first. */
int wh_retry_pause(int tries, int64_t *deadline);
/* Opens or creates a file in d: creates with O_EXCL and fchmod(mode); never follows links. */
int wh_dir_openat(struct wh_dir *d, const char *name, int mode, int *created, struct wh_err *e);
/* Takes or drops the OFD lock on one byte; returns 0, or -1 with errno. */
int wh_ofd_lock(int fd, int type, off_t off, int wait_ms);
int wh_ofd_unlock(int fd, off_t off);

/* This process's identity in d: claims a slot on first use, and a new one when the registry
 * file of its slot is found unlinked or replaced (checked every WH_LINK_CHECK_NS); 0 on error. */
uint64_t wh_dir_me(struct wh_dir *d, struct wh_err *e);
uint64_t wh_dir_me_at(struct wh_dir *d, int64_t coarse, struct wh_err *e); /* wh_now_coarse() */
uint64_t wh_dir_current(struct wh_dir *d);              /* 0 if no slot is claimed */
/* wh_dir_current, after the rate-limited check of wh_dir_me that its registry file is linked. */
uint64_t wh_dir_current_checked(struct wh_dir *d);
/* 2 if id is this process's identity in d, 1 one it had before its registry file was replaced
 * (its holds are lost), 0 neither (another process's, or the parent's after fork). `exact`
 * checks now that the registry file of the current identity is still linked. */
int wh_dir_ours(struct wh_dir *d, uint64_t id, int exact);
int wh_dir_slot_fd(struct wh_dir *d);                   /* registry fd of our slot, or -1 */
int wh_dir_alive(void *d, uint64_t ident);              /* a wh_alive_fn */
uint32_t wh_dir_pid(struct wh_dir *d, uint64_t ident);  /* 0 if unknown */
void wh_registry_forget(struct wh_dir *d);              /* fork child: drop the inherited slot */
void wh_fork_init(void);                                 /* registers the fork handlers once */

/* ---- the state machines (state.c, observe.c): pure logic on a mapped object ---- */

struct wh_view { /* validated description of one mapped object */
    struct wh_obj_header *h;
    struct wh_wait_entry *waits;
    struct wh_slot_entry *slots; /* NULL for a lock */
    uint32_t kind, max_count, nslots, nwait;
};

struct wh_ctx { /* one operation of one process */
    wh_alive_fn alive;
    void *actx;
    uint64_t me;
    int64_t now;
};

struct wh_info {
    uint32_t held, readers, waiting_writers, waiting;
    uint64_t token;  /* the latest fencing token handed out */
    uint32_t ev_set; /* an event: set */
    int writer, upgradeable, upgraded;
    uint32_t nholders;
    uint64_t holders[64];
};

/* Guard held by the caller in all of these. */
int wh_st_try(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode, int my_entry,
              int64_t since);
int wh_st_release(const struct wh_view *v, uint32_t mode, uint64_t ident);
int wh_st_register(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode, int64_t since,
                   int64_t lease, uint32_t *tag);
int wh_st_refresh(const struct wh_view *v, const struct wh_ctx *c, int idx, uint32_t tag,
                  int64_t lease);
int wh_st_withdraw(const struct wh_view *v, int idx, uint32_t tag, uint64_t ident);
int wh_st_admits(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode);
/* Live waiters that come before a waiter in `mode` waiting since `since` in entry `mine`. */
uint32_t wh_st_ahead(const struct wh_view *v, const struct wh_ctx *c, uint32_t mode, int mine,
                     int64_t since);
int wh_st_reclaim(const struct wh_view *v, const struct wh_ctx *c);
/* Whether the state still records a hold in `mode` under ident (read without the guard). */
int wh_st_holds(const struct wh_view *v, uint32_t mode, uint64_t ident);
int wh_st_reclaim_waiters(const struct wh_view *v, const struct wh_ctx *c);
void wh_st_info(const struct wh_view *v, const struct wh_ctx *c, struct wh_info *out);
int wh_st_check(const struct wh_view *v, char *why, size_t whylen); /* invariants, for tests */

/* ---- the guard (guard.c) ---- */

enum { WH_GUARD_OK = 0, WH_GUARD_TAKEN_OVER = 1, WH_GUARD_BUSY = 2 };
/* A busy guard is waited for at least WH_GUARD_GRACE_NS (policy.h), however short the
 * caller's deadline. */
int wh_guard_lock(_Atomic uint64_t *g, uint64_t me, int64_t deadline, wh_alive_fn alive, void *actx);
/* The same; *waited is 1 if it had to wait past its spins (the world may have changed meanwhile). */
int wh_guard_lock_w(_Atomic uint64_t *g, uint64_t me, int64_t deadline, wh_alive_fn alive,
                    void *actx, int *waited);
void wh_guard_unlock(_Atomic uint64_t *g);

/* ---- object files (object.c) ---- */

struct wh_obj {
    struct wh_obj *next;
    _Atomic int refs; /* found in the list only while > 0 (see wh_obj_ref) */
    dev_t dev;
    ino_t ino;
    int fd; /* holds the shared "in use" lock */
    struct wh_dir *dir;
    void *base;
    size_t size;
    struct wh_view v;
    _Atomic int replaced;       /* its file was found unlinked or replaced (for good) */
    _Atomic int64_t next_check; /* coarse clock: when to look at the path again */
    _Atomic uint32_t npending; /* releases of this process waiting for the guard (pending.c) */
    char name[WH_NAME_MAX + 1];
};

struct wh_obj *wh_obj_open(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max_count,
                           int mode, struct wh_err *e);
void wh_obj_ref(struct wh_obj *o);
void wh_obj_unref(struct wh_obj *o);
/* 1 removed, 0 absent or in use, -1 error. */
int wh_obj_remove(struct wh_dir *d, const char *name, struct wh_err *e);
const char *wh_kind_name(uint32_t kind);
/* Whether o's file was unlinked or replaced at its path by something else: looked at now if
 * `exact`, else at most every WH_LINK_CHECK_NS. Once true, true for good. */
int wh_obj_replaced(struct wh_obj *o, int exact);
int wh_obj_replaced_at(struct wh_obj *o, int64_t coarse); /* coarse 0: exact */
/* Checks a private copy of an object header of any kind against the file size; fills the
 * immutable part of *v (not its pointers). */
int wh_obj_validate(struct wh_dir *d, const char *name, const struct wh_obj_header *h, off_t size,
                    struct wh_view *v, struct wh_err *e);
/* A snapshot of object `name` in d without opening it for use or claiming a slot (inspect.c):
 * 1 found, 0 absent, -1 error. Holds of dead processes are left out, as info() would. */
int wh_inspect(struct wh_dir *d, const char *name, uint32_t *kind, uint32_t *max_count,
               struct wh_info *out, struct wh_err *e);

/* ---- events (event.c): single words, no guard, no marks ---- */

void wh_event_set(struct wh_obj *o);   /* wakes every waiter */
void wh_event_reset(struct wh_obj *o);
int wh_event_is_set(struct wh_obj *o);
uint64_t wh_event_gen(struct wh_obj *o);
/* 1 if a wait that began at generation gen0 is over: set since, or (manual) set now; an
 * auto-reset event's signal is taken by exactly one such call. */
int wh_event_try(struct wh_obj *o, uint64_t gen0);
/* wh_event_try, sleeping on the futex until it succeeds or `until` (0 then). */
int wh_event_wait(struct wh_obj *o, uint64_t gen0, int64_t until);

/* ---- releases waiting for the guard (pending.c) ---- */

void wh_pending_add(struct wh_obj *o, uint32_t mode, uint64_t ident);
int wh_pending_apply(struct wh_obj *o); /* guard held; 1 if something was released */
void wh_pending_forget(void);           /* fork child, wh_mu held */

/* ---- operations (ops.c): guard + state + registry + futex ---- */

struct wh_waiter { /* one wait in progress */
    int idx;        /* wait entry, -1 if none */
    uint32_t tag;
    uint64_t ident; /* identity the entry was registered under */
    int64_t since;
    uint32_t mode;  /* WH_MODE_* | WH_WAIT_FUTEX */
    uint32_t seq;   /* seq seen by the latest attempt */
    int64_t last_attempt;
    int64_t interval;   /* how often the waiter attempts (refreshing its mark), ns */
    int64_t changed_at; /* when the latest attempt saw the object change (seq) */
    uint32_t ahead;     /* waiters that came before it at the latest attempt */
};

void wh_waiter_init(struct wh_waiter *w, uint32_t mode, int futex, int64_t since);
/* 1 acquired (*held = the identity to release with), 0 busy, -1 error. A waiter's mark gets
 * the lease WH_LEASE(w->interval). */
int wh_attempt(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
               int64_t guard_deadline, uint64_t *held, struct wh_err *e);
/* The same, and *token (if not NULL) gets the fencing token of what it took (0: none). */
int wh_attempt_t(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
                 int64_t guard_deadline, uint64_t *held, uint64_t *token, struct wh_err *e);
/* The delay before an async waiter's next poll (policy.h). */
int64_t wh_poll_delay(const struct wh_waiter *w, int64_t now);
/* Blocks until acquired or deadline; on a timeout or an error the entry stays registered
 * (the caller withdraws it). */
int wh_wait(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
            int64_t deadline, uint64_t *held, struct wh_err *e);
int wh_wait_t(struct wh_obj *o, uint32_t mode, int64_t ac_ns, struct wh_waiter *w,
              int64_t deadline, uint64_t *held, uint64_t *token, struct wh_err *e);
/* 1 released (maybe later: never waits longer than WH_GUARD_GRACE_NS), 0 not ours. */
int wh_release(struct wh_obj *o, uint32_t mode, uint64_t ident);
/* Gives back this process's pending releases of o; 0 if the guard stayed busy a while. */
int wh_complete_pending(struct wh_obj *o);
/* Withdraws w's mark; a guard busy for WH_GUARD_GRACE_NS leaves it to expire. */
void wh_withdraw(struct wh_obj *o, struct wh_waiter *w);
/* Whether an async poll must make a full attempt: the object changed, the mark needs a refresh,
 * or a reclamation is due. */
int wh_changed(struct wh_obj *o, const struct wh_waiter *w, int64_t ac_ns);
int wh_info(struct wh_obj *o, struct wh_info *out, struct wh_err *e);

#pragma GCC visibility pop

#endif
