/*
 * The Lua glue of waithandles.core, shared by its units:
 *   lerr.c      error objects, argument checks (one signature table), settings
 *   ltypes.c    the userdata types: objects, providers, tokens
 *   lhandle.c   handles and composites
 *   lacquire.c  acquiring: the first attempt, the acquiring methods, info()
 *   lwaiter.c   waits in progress: cancellation, blocking and async steps
 *   levent.c    events
 *   llook.c     inspect and list, without using; the descriptors of a hold
 *   lngx.c      OpenResty: holds that end with their request
 *   lcore.c     luaopen, constructors, yieldability, the facade's hooks
 * Every function reachable from Lua checks its userdata arguments before it
 * touches them: metatables are reachable through debug.getmetatable.
 */
#ifndef WH_LCORE_H
#define WH_LCORE_H

#include "compat.h"
#include "wh.h"

#pragma GCC visibility push(hidden)

#define WH_T_LOCK "waithandles.Lock"
#define WH_T_SEMAPHORE "waithandles.Semaphore"
#define WH_T_RWLOCK "waithandles.RWLock"
#define WH_T_EVENT "waithandles.Event"
#define WH_T_HANDLE "waithandles.Handle"
#define WH_T_UPGRADE "waithandles.UpgradeableHandle" /* registry key of its methods */
#define WH_T_COMPOSITE "waithandles.Composite" /* registry key; its __name is WH_T_HANDLE */
#define WH_T_PROVIDER "waithandles.Provider"
#define WH_T_TOKEN "waithandles.CancelToken"
#define WH_T_WAITER "waithandles.Waiter"
#define WH_T_ERROR "waithandles.Error"

#define WH_MAX_SECONDS 2147483.647

/* ---- objects (ltypes.c) ---- */

struct lobj { /* userdata of the three object types */
    struct wh_obj *o; /* NULL once collected */
    int64_t ac_ns;    /* abandonment_check */
    uint32_t kind;
    int scope_worker; /* option scope = "worker": holds outlive their OpenResty request */
    int file_mode;    /* option mode: for a file made again after something removed it */
    int mtref[WH_MODE_UPGRADEABLE + 1];          /* registry refs of its handle metatables */
    uint64_t *token_box[WH_MODE_UPGRADEABLE + 1]; /* where h.token of lock and write handles is */
    const void *cookie[WH_MODE_UPGRADEABLE + 1]; /* their addresses; [0]: its own metatable's */
};

/* Integer keys of an object's user value table; its string keys are its public fields. */
enum { UV_SLEEP = 8 };

/* The object at idx if it is one of kind `kind` (0: any kind), else NULL. */
struct lobj *wh_toobj(lua_State *L, int idx, uint32_t kind);
const char *wh_obj_typename(uint32_t kind);

/* ---- handles ---- */

#define H_HELD 1u
#define H_UPGRADED 2u

struct lhandle {
    const void *cookie; /* address of its metatable: proves the userdata is one of ours */
    struct wh_obj *o;   /* referenced while held */
    uint64_t ident;     /* process identity the hold was taken under */
    uint32_t mode;
    uint32_t flags;
    uint64_t token; /* fencing token of the hold (h.token), 0 if it has none */
    void *ngx_bind; /* its binding to the nginx request that releases it (lngx.c), or NULL */
};

struct lhandle *wh_tohandle(lua_State *L, int idx); /* NULL if not a handle */
/* Pushes a new, not yet held handle of object u. Allocated before any change to shared
 * state, so a memory error never leaves a hold without a handle. */
struct lhandle *wh_new_handle(lua_State *L, const struct lobj *u, uint32_t mode);
/* Records the hold taken (identity and fencing token) in handle h, and the token in the box of
 * its object's handles (NULL: none; see wh_new_handle_mt). */
void wh_handle_hold(struct lhandle *h, struct wh_obj *o, uint64_t ident, uint64_t token,
                    uint64_t *box);
/* Marks the handle released first, then releases; 1 if this call released it. */
int wh_handle_release(struct lhandle *h);
int wh_handle_held(const struct lhandle *h);
/* What the metatable of the handle at hidx keeps of its object: a field (kind, name), the
 * abandonment_check and the sleep option (or nil). */
void wh_push_handle_field(lua_State *L, int hidx, const char *field);
int64_t wh_handle_ac(lua_State *L, int hidx);
void wh_push_handle_sleep(lua_State *L, int hidx);

/* ---- argument checks and errors (lerr.c) ---- */

/* What the first argument must be. */
enum wh_self { S_NONE, S_LOCK, S_SEMAPHORE, S_RWLOCK, S_UPGRADEABLE, S_PROVIDER, S_EVENT };

/* Argument kinds, one letter each in wh_sig.args. */
#define A_TRY_TIMEOUT 't'  /* timeout, default 0 */
#define A_WAIT_TIMEOUT 'w' /* timeout, default forever */
#define A_CALL_OPTS 'o'    /* per-call options: cancel, sleep */
#define A_CTOR_OPTS 'c'    /* constructor / provider options */
#define A_EVENT_OPTS 'E'   /* an event's constructor options: also auto_reset, initial */
#define A_NAME 's'         /* an object name (a string) */
#define A_COUNT 'n'        /* max_count: an integer 1 .. 2^31-1 */
#define A_NAMES 'a'        /* a non-empty array of strings */
#define A_STRING 'S'       /* any string */

struct wh_sig {
    const char *fname;
    uint8_t self;     /* enum wh_self */
    uint8_t mode;     /* what an acquiring function acquires (enum wh_mode) */
    uint8_t is_try;   /* try_*: nil/false when not acquired in time, no "timeout" error */
    const char *args; /* argument kinds after self, in order */
};

struct wh_args {
    void *self;      /* the checked first argument */
    double timeout;  /* seconds; HUGE_VAL = forever */
    int opts;        /* stack index of the options table, 0 if none */
    int cancel;      /* stack index of opts.cancel, 0 if none */
    int sleep;       /* stack index of opts.sleep, 0 if none */
};

/* Checks the arguments at stack positions first.. against sig, raising argument errors at
 * stack level `level` (1: the caller of a C function). Pushes opts.cancel and opts.sleep. */
void wh_checkargs(lua_State *L, const struct wh_sig *sig, int first, int level, struct wh_args *a);
int wh_argerror(lua_State *L, int level, int argn, const char *fname, const char *fmt, ...);
const char *wh_typename(lua_State *L, int idx); /* for messages: __name, or the type */

void wh_push_error(lua_State *L, const char *code, const char *msg, const char *name, int errnum);
int wh_raise(lua_State *L, const struct wh_err *e, const char *name);
int wh_raise_code(lua_State *L, int code, const char *name, const char *fmt, ...);

/* Settings of a new object: per-object options (table at opts, or 0) over the provider's. */
struct wh_settings {
    const char *dir;
    int dir_mode;
    int mode;
    int exact;
    int64_t ac_ns;
    int sleep; /* stack index of the sleep function, 0 if none */
    int scope_worker;
};
void wh_settings(lua_State *L, int provider, int opts, struct wh_settings *s);
void wh_check_ctor_opts(lua_State *L, int idx, int level, int argn, const char *fname);
/* The file name of the name at idx: escaped, or checked (raising invalid_name) if exact. */
const char *wh_object_name(lua_State *L, int idx, int exact, char out[WH_NAME_MAX + 1]);

/* ---- acquiring (lacquire.c) and waits in progress (lwaiter.c) ---- */

/* A wait in progress (waithandles.Waiter): its mark in the wait table, withdrawn by __gc if all
 * else fails. An event's wait (mode WH_MODE_EVENT) has no mark. */
#define WH_MODE_EVENT 0x80u
struct lwaiter {
    struct wh_obj *o; /* referenced; NULL once closed */
    struct wh_waiter w;
    int64_t ac_ns, deadline;
    double t; /* the timeout, for messages */
    uint32_t mode;
    int is_try;
    int scope_worker;
    uint64_t ev_gen0; /* an event's wait: the generation it began at */
};

/* The waiter's user value: what the wait is for, and its options. */
enum { W_SUBJECT = 1, W_HANDLE, W_CANCEL, W_SLEEP };

/* Raises "cancelled" (after withdrawing w, which may be NULL) if the cancel option at idx says
 * so; an error of a cancel function propagates unchanged, also after withdrawing. */
void wh_check_cancel(lua_State *L, int idx, struct lwaiter *w, const struct wh_obj *o);
/* After something removed or replaced u's file, u goes on with the file now at the path. */
void wh_reopen(lua_State *L, struct lobj *u);
/* Moves the waiter w to the file now at its object's path (its object is W_SUBJECT of the
 * user value at uv), reopening the object. */
void wh_waiter_follow(lua_State *L, struct lwaiter *w, int uv);
void wh_close_waiter(struct lwaiter *w);
/* What a call returns (or raises) when it did not get what it waited for in t seconds. */
int wh_not_acquired(lua_State *L, int is_try, int upgrade, double t, const struct wh_obj *o);
/* The held upgradeable handle at idx, or raises "released" / "invalid_state" (after
 * withdrawing w, which may be NULL): released comes first, whatever else is true of it. */
struct lhandle *wh_check_upgrade(lua_State *L, int idx, struct lwaiter *w);
/* Pushes a waiter for the call sig whose subject (object or handle) is at `subject`, its
 * preallocated result handle at `handle` (0: an upgrade), options a, waiting since `since`. */
struct lwaiter *wh_new_waiter(lua_State *L, const struct wh_sig *sig, int subject, int handle,
                              struct wh_obj *o, int64_t ac_ns, const struct wh_args *a,
                              int64_t since);
/* Blocks (in C) until w (its user value at uv) acquires, times out or is cancelled; leaves
 * the result pushed. */
int wh_block(lua_State *L, struct lwaiter *w, int uv);
/* What an async form's start returns once it must wait, its waiter on top: nil, the waiter,
 * its sleep function (or nil). */
int wh_async_wait(lua_State *L);

void wh_open_waiters(lua_State *L); /* registers the waiter type */
/* Pushes the table of info(): held, waiting, holders (pids from d), and the rwlock fields. */
void wh_push_info(lua_State *L, struct wh_dir *d, uint32_t kind, const struct wh_info *in);

/* ---- OpenResty: holds that end with their request (lngx.c) ---- */

/* After an acquisition whose handle is on top of the stack. */
void wh_acquired(lua_State *L, int scope_worker);
extern int wh_any_hook;
void wh_ngx_disarm(struct lhandle *h);
extern const luaL_Reg wh_ngx_funcs[];

/* ---- events (levent.c) ---- */

int wh_event_poll(lua_State *L, struct lwaiter *w);  /* w:poll() of an event's wait */
int wh_event_block(lua_State *L, struct lwaiter *w); /* w:block() */
extern const luaL_Reg wh_event_methods[], wh_event_starts[];
int wh_l_event(lua_State *L);   /* waithandles.event: upvalue 1 the default provider */
int wh_l_p_event(lua_State *L); /* p:event */

/* ---- looking without using (llook.c) ---- */

int wh_l_slot_fd(lua_State *L);
extern const luaL_Reg wh_look_funcs[];   /* module functions: upvalue 1 the default provider */
extern const luaL_Reg wh_look_methods[]; /* provider methods */
extern const luaL_Reg wh_lock_methods[], wh_semaphore_methods[], wh_rwlock_methods[];
extern const luaL_Reg wh_upgrade_methods[], wh_async_starts[];

/* ---- handle types (lhandle.c) ---- */

void wh_new_handle_mt(lua_State *L, const struct wh_settings *s, const char *hkind,
                      const char *name, int upgradeable, uint64_t **box);
void wh_open_handles(lua_State *L);
extern const luaL_Reg wh_handle_funcs[];

/* ---- types (ltypes.c) and module (lcore.c) ---- */

/* Sets __name and __metatable of the metatable at mt (absolute) to name. */
void wh_set_type_name(lua_State *L, int mt, const char *name);
void wh_new_type(lua_State *L, const char *tname, const luaL_Reg *meta, const luaL_Reg *methods,
                 lua_CFunction index);

void wh_open_types(lua_State *L);
int wh_new_object(lua_State *L, uint32_t kind, int provider, int name, uint32_t max_count,
                  int opts, const char *fname);
extern const luaL_Reg wh_type_funcs[], wh_provider_methods[];

/* 1 if the running coroutine can yield, 0 if not, -1 if only Lua can tell (5.2). */
int wh_lua_yieldable(lua_State *L);

#pragma GCC visibility pop

#endif
