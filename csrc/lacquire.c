/*
 * Acquiring: every try_*, acquire*, *upgrade* call starts here. The start
 * checks the arguments (lerr.c), honours a cancel token that is already
 * cancelled, and makes the first attempt without waiting; the common case
 * ends there, without entering Lua. A call that must wait gets a waiter
 * (lwaiter.c), which either blocks in C (acquire, try_acquire with a
 * timeout, upgrade) or is polled by the facade between calls to its sleep
 * function (the *_async forms, which are Lua functions because only Lua can
 * yield in every Lua version). Also info(), the last of the objects' methods.
 */
#include <math.h>
#include <stdatomic.h>

#include "lcore.h"

/* ---- signatures of the acquiring functions ---- */

#define SIG(name, self, mode, try, args) {name, self, mode, try, args}
enum {
    F_TRY, F_ACQ, F_TRY_ASYNC, F_ACQ_ASYNC,
};
/* [self][form]: lock and semaphore (MODE_LOCK), rwlock read/write/upgradeable, upgrade */
static const struct wh_sig sigs[][4] = {
#define FORMS(self, mode, base, up)                                                                \
    {SIG("try_" base, self, mode, 1, "to"), SIG(base, self, mode, 0, "wo"),                        \
     SIG("try_" base "_async", self, mode, 1, "to"), SIG(base "_async", self, mode, 0, "wo")}
    FORMS(S_LOCK, WH_MODE_LOCK, "acquire", 0),
    FORMS(S_SEMAPHORE, WH_MODE_LOCK, "acquire", 0),
    FORMS(S_RWLOCK, WH_MODE_READ, "acquire_read", 0),
    FORMS(S_RWLOCK, WH_MODE_WRITE, "acquire_write", 0),
    FORMS(S_RWLOCK, WH_MODE_UPGRADEABLE, "acquire_upgradeable_read", 0),
    FORMS(S_UPGRADEABLE, WH_MODE_UPGRADE, "upgrade", 1),
#undef FORMS
};
enum { G_LOCK, G_SEM, G_READ, G_WRITE, G_UPGR, G_UPGRADE };

/* ---- files removed or replaced by others ---- */

/* The object at its path is the object: after something removed or replaced u's file, u goes
 * on with the file now at the path (made again if there is none). Raises on failure. */
void wh_reopen(lua_State *L, struct lobj *u)
{
    struct wh_obj *old = u->o, *n;
    struct wh_err e;
    if (!atomic_load(&old->replaced))
        return;
    n = wh_obj_open(old->dir, old->name, u->kind, old->v.max_count, u->file_mode, &e);
    if (n == NULL)
        wh_raise(L, &e, old->name);
    u->o = n;
    wh_obj_unref(old);
}

/* wh_attempt without a waiter on u's object, following it to a new file if need be. */
static int attempt_obj(lua_State *L, struct lobj *u, uint32_t mode, uint64_t *held,
                       uint64_t *token, struct wh_err *e)
{
    for (int tries = 0;; tries++) {
        int r = wh_attempt_t(u->o, mode, u->ac_ns, NULL, 0, held, token, e);
        if (r >= 0 || e->code != WH_EREPLACED || tries == 3)
            return r;
        wh_reopen(L, u);
    }
}

/* ---- the acquiring calls ---- */

/*
 * The common start of every acquiring call described by sig, its arguments from stack index
 * 1 on, argument errors reported at `level`. Returns 1 with the result pushed when the call
 * is over; otherwise pushes a waiter (and returns 0).
 */
static int start(lua_State *L, const struct wh_sig *sig, int level, struct lwaiter **wp)
{
    struct wh_args a;
    struct wh_obj *o;
    struct wh_err e;
    int64_t ac;
    int handle = 0, r;
    uint64_t held = 0, token = 0;
    struct lhandle *h = NULL, *up = NULL;

    wh_checkargs(L, sig, 1, level, &a);
    if (sig->self == S_UPGRADEABLE) {
        up = wh_check_upgrade(L, 1, NULL);
        o = up->o;
        ac = wh_handle_ac(L, 1);
    } else {
        struct lobj *u = a.self;
        o = u->o;
        ac = u->ac_ns;
        h = wh_new_handle(L, u, sig->mode);
        handle = lua_gettop(L);
    }
    wh_check_cancel(L, a.cancel, NULL, o);
    if (up != NULL) {
        r = wh_attempt_t(o, sig->mode, ac, NULL, 0, &held, &token, &e);
    } else {
        r = attempt_obj(L, a.self, sig->mode, &held, &token, &e);
        o = ((struct lobj *)a.self)->o; /* perhaps the file now at the path */
    }
    if (r < 0)
        return wh_raise(L, &e, o->name);
    if (r == 1) {
        if (up != NULL) {
            up->flags |= H_UPGRADED;
            up->token = token;
            lua_pushboolean(L, 1);
        } else {
            wh_handle_hold(h, o, held, token, ((struct lobj *)a.self)->token_box[sig->mode]);
            wh_acquired(L, ((struct lobj *)a.self)->scope_worker);
        }
        return 1;
    }
    if (a.timeout == 0)
        return wh_not_acquired(L, sig->is_try, up != NULL, 0, o);
    *wp = wh_new_waiter(L, sig, 1, handle, o, ac, &a, wh_now());
    (*wp)->scope_worker = up == NULL && ((struct lobj *)a.self)->scope_worker;
    return 0;
}

/* A blocking form: try_acquire, acquire, try_upgrade, upgrade. */
static int simple_args(lua_State *L, int n)
{
    lua_Number t;
    if (n > 3 || (n == 3 && !lua_isnil(L, 3)))
        return 0;
    if (n < 2 || lua_isnil(L, 2))
        return 1;
    if (lua_type(L, 2) != LUA_TNUMBER)
        return 0;
    t = lua_tonumber(L, 2);
    return t >= 0 && (t <= WH_MAX_SECONDS || t == HUGE_VAL); /* NaN fails both */
}

static int blocking(lua_State *L, const struct wh_sig *sig)
{
    struct lwaiter *w;
    int r, n = lua_gettop(L);
    if (sig->self != S_UPGRADEABLE && simple_args(L, n)) {
        /* The common case first: a timeout or nothing, no options, and a free object. Called
         * as a method of the object it was made for (its upvalue), it is recognised at once. */
        struct lobj *u = lua_touserdata(L, 1);
        if (u != NULL && u == lua_touserdata(L, lua_upvalueindex(1)) && u->o != NULL) {
            struct lhandle *h = wh_new_handle(L, u, sig->mode);
            struct wh_err e;
            uint64_t held = 0, token = 0;
            r = attempt_obj(L, u, sig->mode, &held, &token, &e);
            if (r == 1) {
                wh_handle_hold(h, u->o, held, token, u->token_box[sig->mode]);
                if (wh_any_hook)
                    wh_acquired(L, u->scope_worker);
                return 1;
            }
            if (r < 0)
                return wh_raise(L, &e, u->o->name);
            if (sig->is_try && (n < 2 || lua_isnil(L, 2) || lua_tonumber(L, 2) == 0))
                return wh_not_acquired(L, 1, 0, 0, u->o);
            lua_settop(L, n); /* busy: wait below */
        }
    }
    if (start(L, sig, 1, &w))
        return 1;
    wh_getuv(L, -1);
    r = wh_block(L, w, lua_gettop(L));
    wh_close_waiter(w);
    return r;
}

/* An async form's start (the facade wraps it): result, or nil, waiter, sleep (or nil). */
static int async_start(lua_State *L, const struct wh_sig *sig)
{
    struct lwaiter *w;
    return start(L, sig, 2, &w) ? 1 : wh_async_wait(L);
}

#define METHOD(fn, g, form, how)                                                                   \
    static int fn(lua_State *L) { return how(L, &sigs[g][form]); }
METHOD(lock_try, G_LOCK, F_TRY, blocking)
METHOD(lock_acq, G_LOCK, F_ACQ, blocking)
METHOD(lock_try_async, G_LOCK, F_TRY_ASYNC, async_start)
METHOD(lock_acq_async, G_LOCK, F_ACQ_ASYNC, async_start)
METHOD(sem_try, G_SEM, F_TRY, blocking)
METHOD(sem_acq, G_SEM, F_ACQ, blocking)
METHOD(sem_try_async, G_SEM, F_TRY_ASYNC, async_start)
METHOD(sem_acq_async, G_SEM, F_ACQ_ASYNC, async_start)
METHOD(read_try, G_READ, F_TRY, blocking)
METHOD(read_acq, G_READ, F_ACQ, blocking)
METHOD(read_try_async, G_READ, F_TRY_ASYNC, async_start)
METHOD(read_acq_async, G_READ, F_ACQ_ASYNC, async_start)
METHOD(write_try, G_WRITE, F_TRY, blocking)
METHOD(write_acq, G_WRITE, F_ACQ, blocking)
METHOD(write_try_async, G_WRITE, F_TRY_ASYNC, async_start)
METHOD(write_acq_async, G_WRITE, F_ACQ_ASYNC, async_start)
METHOD(upgr_try, G_UPGR, F_TRY, blocking)
METHOD(upgr_acq, G_UPGR, F_ACQ, blocking)
METHOD(upgr_try_async, G_UPGR, F_TRY_ASYNC, async_start)
METHOD(upgr_acq_async, G_UPGR, F_ACQ_ASYNC, async_start)
METHOD(up_try, G_UPGRADE, F_TRY, blocking)
METHOD(up_acq, G_UPGRADE, F_ACQ, blocking)
METHOD(up_try_async, G_UPGRADE, F_TRY_ASYNC, async_start)
METHOD(up_acq_async, G_UPGRADE, F_ACQ_ASYNC, async_start)
#undef METHOD

/* ---- info ---- */

void wh_push_info(lua_State *L, struct wh_dir *d, uint32_t kind, const struct wh_info *in)
{
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, (lua_Integer)in->held);
    lua_setfield(L, -2, "held");
    if (kind == WH_KIND_RWLOCK) {
        lua_pushinteger(L, (lua_Integer)in->readers);
        lua_setfield(L, -2, "readers");
        lua_pushboolean(L, in->writer);
        lua_setfield(L, -2, "writer");
        lua_pushboolean(L, in->upgradeable);
        lua_setfield(L, -2, "upgradeable");
        lua_pushboolean(L, in->upgraded);
        lua_setfield(L, -2, "upgraded");
        lua_pushinteger(L, (lua_Integer)in->waiting_writers);
        lua_setfield(L, -2, "waiting_writers");
    }
    lua_pushinteger(L, (lua_Integer)in->waiting);
    lua_setfield(L, -2, "waiting");
    lua_pushinteger(L, (lua_Integer)in->token);
    lua_setfield(L, -2, "token");
    lua_createtable(L, (int)in->nholders, 0);
    for (uint32_t i = 0; i < in->nholders; i++) {
        lua_createtable(L, 0, 1);
        lua_pushinteger(L, (lua_Integer)wh_dir_pid(d, in->holders[i]));
        lua_setfield(L, -2, "pid");
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "holders");
}

static int info(lua_State *L, uint32_t kind, const char *tname)
{
    struct lobj *u = wh_toobj(L, 1, kind);
    struct wh_info in;
    struct wh_err e;
    if (u == NULL)
        return wh_argerror(L, 1, 1, "info", "%s expected, got %s", tname, wh_typename(L, 1));
    if (lua_gettop(L) > 1)
        return wh_argerror(L, 1, 1, "info", "no more than 0 arguments expected");
    if (wh_info(u->o, &in, &e) != 0)
        return wh_raise(L, &e, u->o->name);
    wh_push_info(L, u->o->dir, kind, &in);
    for (int i = 0; i < 4; i++) {
        static const char *const fields[] = {"name", "path", "kind", "max_count"};
        lua_getfield(L, 1, fields[i]);
        lua_setfield(L, -2, fields[i]);
    }
    return 1;
}

static int lock_info(lua_State *L) { return info(L, WH_KIND_LOCK, WH_T_LOCK); }
static int sem_info(lua_State *L) { return info(L, WH_KIND_SEMAPHORE, WH_T_SEMAPHORE); }
static int rw_info(lua_State *L) { return info(L, WH_KIND_RWLOCK, WH_T_RWLOCK); }

const luaL_Reg wh_lock_methods[] = {{"try_acquire", lock_try}, {"acquire", lock_acq},
                                    {"info", lock_info}, {NULL, NULL}};
const luaL_Reg wh_semaphore_methods[] = {{"try_acquire", sem_try}, {"acquire", sem_acq},
                                         {"info", sem_info}, {NULL, NULL}};
const luaL_Reg wh_rwlock_methods[] = {{"try_acquire_read", read_try},
                                      {"acquire_read", read_acq},
                                      {"try_acquire_write", write_try},
                                      {"acquire_write", write_acq},
                                      {"try_acquire_upgradeable_read", upgr_try},
                                      {"acquire_upgradeable_read", upgr_acq},
                                      {"info", rw_info},
                                      {NULL, NULL}};
const luaL_Reg wh_upgrade_methods[] = {{"try_upgrade", up_try}, {"upgrade", up_acq}, {NULL, NULL}};

/* The starts of the async forms, by "<kind>.<method>", for the facade to wrap. */
const luaL_Reg wh_async_starts[] = {{"lock.try_acquire_async", lock_try_async},
                                    {"lock.acquire_async", lock_acq_async},
                                    {"semaphore.try_acquire_async", sem_try_async},
                                    {"semaphore.acquire_async", sem_acq_async},
                                    {"rwlock.try_acquire_read_async", read_try_async},
                                    {"rwlock.acquire_read_async", read_acq_async},
                                    {"rwlock.try_acquire_write_async", write_try_async},
                                    {"rwlock.acquire_write_async", write_acq_async},
                                    {"rwlock.try_acquire_upgradeable_read_async", upgr_try_async},
                                    {"rwlock.acquire_upgradeable_read_async", upgr_acq_async},
                                    {"upgrade.try_upgrade_async", up_try_async},
                                    {"upgrade.upgrade_async", up_acq_async},
                                    {NULL, NULL}};

