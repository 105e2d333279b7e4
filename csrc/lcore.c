/*
 * waithandles.core: the Lua face of the C core. Userdata types, argument
 * checks, error objects, and the non-blocking and blocking steps that
 * lua/waithandles/init.lua builds its API from.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "lglue.h"

#define ERROR_MT "waithandles.Error"
#define OBJECT_MT "waithandles.Object"
#define WAITER_MT "waithandles.Waiter"
#define TOKEN_MT "waithandles.CancelToken"
#define HANDLE_NAME "waithandles.Handle"
#define MAX_SECONDS 2147483.647

/* Their addresses mark our metatables: a check without a string lookup on the hot path. */
static char handle_marker, object_marker;

static int has_marker(lua_State *L, int idx, void *marker)
{
    int ok = 0;
    if (lua_getmetatable(L, idx)) {
        lua_pushlightuserdata(L, marker);
        lua_rawget(L, -2);
        ok = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    return ok;
}

/* ---- error objects ---- */

static void push_error(lua_State *L, const char *code, const char *msg, const char *name,
                       int errnum)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    if (name != NULL) {
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
    }
    if (errnum != 0) {
        lua_pushinteger(L, errnum);
        lua_setfield(L, -2, "errno");
    }
    luaL_getmetatable(L, ERROR_MT);
    lua_setmetatable(L, -2);
}

static int raise_error(lua_State *L, const struct wh_err *e, const char *name)
{
    push_error(L, wh_code_name(e->code), e->msg, name, e->code == WH_EOS ? e->errnum : 0);
    return lua_error(L);
}

/* core.error(code, message [, name [, errno]]) -> error object */
static int l_error(lua_State *L)
{
    const char *code = luaL_checkstring(L, 1), *msg = luaL_checkstring(L, 2);
    const char *name = luaL_optstring(L, 3, NULL);
    push_error(L, code, msg, name, (int)luaL_optinteger(L, 4, 0));
    return 1;
}

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "waithandles: %s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
    return 1;
}

/* ---- argument checks (API.md "Timeouts and per-call options") ---- */

/* Raises "bad argument #argn to 'fname' (...)", positioned at stack level `level`. */
static int argerror(lua_State *L, int level, int argn, const char *fname, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, level);
    lua_pushfstring(L, "bad argument #%d to '%s' (", argn, fname);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_pushliteral(L, ")");
    lua_concat(L, 4);
    return lua_error(L);
}

/* A timeout in seconds: nil gives the default (0, or HUGE_VAL = forever). */
static double check_timeout(lua_State *L, int idx, int level, int argn, const char *fname,
                            int forever)
{
    double t;
    if (lua_isnoneornil(L, idx))
        return forever ? HUGE_VAL : 0;
    if (lua_type(L, idx) != LUA_TNUMBER)
        argerror(L, level, argn, fname, "timeout must be a number of seconds, got %s",
                 luaL_typename(L, idx));
    t = lua_tonumber(L, idx);
    if (t != t)
        argerror(L, level, argn, fname, "timeout is NaN");
    if (t < 0)
        argerror(L, level, argn, fname, "timeout must not be negative");
    if (t > MAX_SECONDS && t != HUGE_VAL)
        argerror(L, level, argn, fname,
                 "timeout must be at most 2147483.647 s (2^31-1 ms) or math.huge");
    return t;
}

static int64_t seconds_to_ns(double t)
{
    return t == HUGE_VAL ? -1 : (int64_t)(t * 1e9);
}

/* A deadline t seconds from now; t <= 0 (time already up) is now, never "forever". */
static int64_t deadline_of(double t)
{
    return t > 0 ? wh_deadline_after(seconds_to_ns(t)) : wh_now();
}

/* core.check_timeout(value, argn, fname, forever, level) -> seconds (math.huge = forever) */
static int l_check_timeout(lua_State *L)
{
    int argn = (int)luaL_checkinteger(L, 2), level = (int)luaL_optinteger(L, 5, 2);
    const char *fname = luaL_checkstring(L, 3);
    lua_pushnumber(L, check_timeout(L, 1, level, argn, fname, lua_toboolean(L, 4)));
    return 1;
}

static int is_integer(lua_State *L, int idx, lua_Number lo, lua_Number hi)
{
    lua_Number n;
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    n = lua_tonumber(L, idx);
    return n >= lo && n <= hi && floor(n) == n;
}

/* Checks one option's value; returns 0 if `key` is not an option of this kind. */
static int check_option(lua_State *L, const char *key, int ctor, int level, int argn,
                        const char *fname)
{
    int v = lua_gettop(L);
    if (strcmp(key, "sleep") == 0) {
        if (!lua_isfunction(L, v))
            argerror(L, level, argn, fname, "option 'sleep' must be a function, got %s",
                     luaL_typename(L, v));
    } else if (!ctor && strcmp(key, "cancel") == 0) {
        if (!lua_isfunction(L, v) && wh_testudata(L, v, TOKEN_MT) == NULL)
            argerror(L, level, argn, fname,
                     "option 'cancel' must be a cancel token or a function, got %s",
                     luaL_typename(L, v));
    } else if (ctor && strcmp(key, "exact_name") == 0) {
        if (!lua_isboolean(L, v))
            argerror(L, level, argn, fname, "option 'exact_name' must be a boolean, got %s",
                     luaL_typename(L, v));
    } else if (ctor && strcmp(key, "dir") == 0) {
        size_t len;
        const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tolstring(L, v, &len) : NULL;
        if (s == NULL || len == 0 || strlen(s) != len)
            argerror(L, level, argn, fname,
                     "option 'dir' must be a non-empty path without NUL bytes, got %s",
                     luaL_typename(L, v));
    } else if (ctor && strcmp(key, "mode") == 0) {
        if (!is_integer(L, v, 0, 4095))
            argerror(L, level, argn, fname,
                     "option 'mode' must be an integer from 0 to 4095 (e.g. 438 = 0666)");
    } else if (ctor && strcmp(key, "abandonment_check") == 0) {
        lua_Number n = lua_type(L, v) == LUA_TNUMBER ? lua_tonumber(L, v) : -1;
        if (!(n > 0 && n <= MAX_SECONDS))
            argerror(L, level, argn, fname,
                     "option 'abandonment_check' must be a number of seconds > 0 and at most "
                     "2147483.647");
    } else {
        return 0;
    }
    return 1;
}

/* core.check_options(t, argn, fname, kind, level): kind "call" (cancel, sleep) or "ctor". */
static int l_check_options(lua_State *L)
{
    int argn = (int)luaL_checkinteger(L, 2), level = (int)luaL_optinteger(L, 5, 2);
    const char *fname = luaL_checkstring(L, 3);
    int ctor = strcmp(luaL_checkstring(L, 4), "ctor") == 0;
    if (lua_isnoneornil(L, 1))
        return 0;
    if (!lua_istable(L, 1))
        argerror(L, level, argn, fname, "options table expected, got %s", luaL_typename(L, 1));
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        /* Never lua_tostring a key: it would break lua_next. */
        if (lua_type(L, -2) != LUA_TSTRING)
            argerror(L, level, argn, fname, "unknown option (a %s key)", luaL_typename(L, -2));
        if (!check_option(L, lua_tostring(L, -2), ctor, level, argn, fname))
            argerror(L, level, argn, fname, "unknown option '%s'%s", lua_tostring(L, -2),
                     ctor ? "" : " (per-call options are 'cancel' and 'sleep')");
        lua_pop(L, 1);
    }
    return 0;
}

/* ---- names ---- */

static int l_safe_name(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char out[WH_NAME_MAX + 1];
    size_t n = wh_safe_name(s, len, out);
    lua_pushlstring(L, out, n);
    return 1;
}

static int l_valid_name(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, wh_name_valid(s, len));
    return 1;
}

/* ---- cancel tokens ---- */

static int l_cancel_token(lua_State *L)
{
    int *flag = lua_newuserdata(L, sizeof *flag);
    *flag = 0;
    luaL_getmetatable(L, TOKEN_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int l_token_cancel(lua_State *L)
{
    *(int *)luaL_checkudata(L, 1, TOKEN_MT) = 1;
    return 0;
}

static int l_token_is_cancelled(lua_State *L)
{
    lua_pushboolean(L, *(int *)luaL_checkudata(L, 1, TOKEN_MT));
    return 1;
}

static int l_token_tostring(lua_State *L)
{
    int *flag = luaL_checkudata(L, 1, TOKEN_MT);
    lua_pushfstring(L, "waithandles.cancel_token(%s)", *flag ? "cancelled" : "not cancelled");
    return 1;
}

/* ---- objects ---- */

struct lobj {
    struct wh_obj *o;
    int64_t ac_ns; /* abandonment_check */
};

static int obj_gc(lua_State *L)
{
    struct lobj *u = luaL_checkudata(L, 1, OBJECT_MT);
    if (u->o != NULL) {
        struct wh_obj *o = u->o;
        u->o = NULL;
        wh_obj_unref(o);
    }
    return 0;
}

/* core.open(kind, dir, dir_mode, name, max_count, mode, abandonment_check) -> userdata */
static int l_open(lua_State *L)
{
    uint32_t kind = (uint32_t)luaL_checkinteger(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    int dir_mode = (int)luaL_checkinteger(L, 3);
    size_t len;
    const char *name = luaL_checklstring(L, 4, &len);
    uint32_t max_count = (uint32_t)luaL_checkinteger(L, 5);
    int mode = (int)luaL_checkinteger(L, 6);
    double ac = luaL_checknumber(L, 7);
    struct wh_err e;
    struct wh_dir *d;
    struct lobj *u;

    luaL_argcheck(L, kind >= WH_KIND_LOCK && kind <= WH_KIND_RWLOCK, 1, "bad kind");
    luaL_argcheck(L, wh_name_valid(name, len), 4, "not a valid escaped name");
    u = lua_newuserdata(L, sizeof *u);
    u->o = NULL;
    u->ac_ns = (int64_t)(ac * 1e9);
    luaL_getmetatable(L, OBJECT_MT);
    lua_setmetatable(L, -2);
    d = wh_dir_open(dir, dir_mode, mode, &e);
    if (d == NULL || (u->o = wh_obj_open(d, name, kind, max_count, mode, &e)) == NULL)
        return raise_error(L, &e, name);
    return 1;
}

/* The userdata of the object table at idx (its [1]). */
static struct lobj *check_obj(lua_State *L, int idx)
{
    struct lobj *u;
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_argerror(L, idx, "waithandles object expected");
    lua_rawgeti(L, idx, 1);
    u = lua_touserdata(L, -1);
    if (u != NULL && !has_marker(L, -1, &object_marker))
        u = NULL;
    lua_pop(L, 1);
    if (u == NULL || u->o == NULL)
        luaL_argerror(L, idx, "waithandles object expected");
    return u;
}

struct wh_obj *wh_lua_checkobj(lua_State *L, int idx) { return check_obj(L, idx)->o; }

int wh_lua_raise(lua_State *L, const struct wh_err *e, const char *name)
{
    return raise_error(L, e, name);
}

/* ---- handles ---- */

#define H_HELD 1u
#define H_UPGRADED 2u

struct lhandle {
    struct wh_obj *o;   /* referenced while held */
    uint64_t ident;     /* process identity the hold was taken under */
    uint32_t mode;
    uint32_t flags;
    const void *cookie; /* address of its metatable: lets the per-object methods check it fast */
};

/* The handle at idx, or NULL if the value there is not one. */
static struct lhandle *test_handle(lua_State *L, int idx)
{
    struct lhandle *h = lua_touserdata(L, idx);
    return h != NULL && has_marker(L, idx, &handle_marker) ? h : NULL;
}

static struct lhandle *check_handle(lua_State *L, int idx)
{
    struct lhandle *h = test_handle(L, idx);
    if (h == NULL)
        luaL_argerror(L, idx, "waithandles handle expected");
    return h;
}

/* Pushes a new, not yet held handle in `mode` whose metatable is at mtidx and has the address
 * `cookie`. Allocation comes before any change to shared state, so a memory error never
 * leaves a hold without a handle. */
static struct lhandle *new_handle_at(lua_State *L, uint32_t mode, int mtidx, const void *cookie)
{
    struct lhandle *h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    h->mode = mode;
    h->cookie = cookie;
    lua_pushvalue(L, mtidx);
    lua_setmetatable(L, -2);
    return h;
}

static struct lhandle *new_handle(lua_State *L, uint32_t mode, int mtidx)
{
    return new_handle_at(L, mode, mtidx, lua_topointer(L, mtidx));
}

/* Pushes the handle metatable of the object table at objidx for `mode` (its [2][mode]), or
 * nil; returns whether it is a table. */
static int push_handle_mt(lua_State *L, int objidx, uint32_t mode)
{
    lua_rawgeti(L, objidx, 2);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, (int)mode);
        lua_remove(L, -2);
    }
    return lua_istable(L, -1);
}

/* new_handle for the object table at objidx. */
static struct lhandle *push_handle(lua_State *L, int objidx, uint32_t mode)
{
    struct lhandle *h;
    if (!push_handle_mt(L, objidx, mode))
        luaL_error(L, "waithandles: object has no handle metatable for mode %d", (int)mode);
    h = new_handle(L, mode, lua_gettop(L));
    lua_remove(L, -2); /* the metatable */
    return h;
}

static void hold(struct lhandle *h, struct wh_obj *o, uint64_t ident)
{
    wh_obj_ref(o);
    h->o = o;
    h->ident = ident;
    h->flags |= H_HELD;
}

/* Marks the handle released first, then releases; returns 1 if this call released it. */
static int handle_release(struct lhandle *h)
{
    struct wh_obj *o = h->o;
    int r;
    if (!(h->flags & H_HELD) || o == NULL)
        return 0;
    h->flags &= ~H_HELD;
    h->o = NULL;
    r = wh_release(o, h->mode, h->ident);
    wh_obj_unref(o);
    return r;
}

static int handle_held(const struct lhandle *h)
{
    return (h->flags & H_HELD) && h->o != NULL && wh_dir_current(h->o->dir) == h->ident;
}

static int l_release(lua_State *L)
{
    lua_pushboolean(L, handle_release(check_handle(L, 1)));
    return 1;
}

/* The per-object release and is_held: upvalue 1 is the handle metatable of that object. A
 * userdata of our size carrying that metatable's address is one of its handles: Lua code cannot
 * write into userdata, so it cannot forge one. Anything else gets the full check. */
static struct lhandle *check_own_handle(lua_State *L)
{
    struct lhandle *h = lua_touserdata(L, 1);
    if (h != NULL && wh_rawlen(L, 1) == sizeof *h && h->cookie == lua_topointer(L, lua_upvalueindex(1)))
        return h;
    return check_handle(L, 1); /* a handle of another object, or an error */
}

static int l_own_release(lua_State *L)
{
    lua_pushboolean(L, handle_release(check_own_handle(L)));
    return 1;
}

/* __gc and __close: silent and idempotent. */
static int handle_gc(lua_State *L)
{
    struct lhandle *h = lua_touserdata(L, 1);
    if (h != NULL)
        handle_release(h);
    return 0;
}

static int l_is_held(lua_State *L)
{
    lua_pushboolean(L, handle_held(check_handle(L, 1)));
    return 1;
}

static int l_own_is_held(lua_State *L)
{
    lua_pushboolean(L, handle_held(check_own_handle(L)));
    return 1;
}

/* core.is_handle(v) -> boolean */
static int l_is_handle(lua_State *L)
{
    lua_pushboolean(L, test_handle(L, 1) != NULL);
    return 1;
}

static int l_is_upgraded(lua_State *L)
{
    lua_pushboolean(L, (check_handle(L, 1)->flags & H_UPGRADED) != 0);
    return 1;
}

static int handle_tostring(lua_State *L)
{
    struct lhandle *h = check_handle(L, 1);
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "_fields");
    lua_getfield(L, -1, "kind");
    lua_getfield(L, -2, "name");
    lua_pushfstring(L, "waithandles.handle(%s '%s', %s%s)", lua_tostring(L, -2),
                    lua_tostring(L, -1), handle_held(h) ? "held" : "released",
                    (h->flags & H_UPGRADED) ? ", upgraded" : "");
    return 1;
}

/* __index of upgradeable-read handles: `upgraded` is live state. */
static int upgradeable_index(lua_State *L)
{
    const char *key = lua_tostring(L, 2);
    if (key != NULL && strcmp(key, "upgraded") == 0) {
        lua_pushboolean(L, (((struct lhandle *)lua_touserdata(L, 1))->flags & H_UPGRADED) != 0);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
    return 1;
}

/* core.handle_mt(kind, name, methods, upgradeable) -> metatable for one object's handles */
static int l_handle_mt(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_newtable(L); /* 5: metatable */
    lua_createtable(L, 0, 2); /* 6: fields, falling back on methods */
    lua_pushvalue(L, 1);
    lua_setfield(L, 6, "kind");
    lua_pushvalue(L, 2);
    lua_setfield(L, 6, "name");
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, 6);
    lua_pushvalue(L, 6);
    lua_setfield(L, 5, "_fields");
    /* The methods every handle has, as closures over this metatable: found in one lookup. */
    lua_pushvalue(L, 5);
    lua_pushcclosure(L, l_own_release, 1);
    lua_setfield(L, 6, "release");
    lua_pushvalue(L, 5);
    lua_pushcclosure(L, l_own_is_held, 1);
    lua_setfield(L, 6, "is_held");
    if (lua_toboolean(L, 4)) {
        lua_pushvalue(L, 6);
        lua_pushcclosure(L, upgradeable_index, 1);
    } else {
        lua_pushvalue(L, 6);
    }
    lua_setfield(L, 5, "__index");
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, 5, "__gc");
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, 5, "__close");
    lua_pushcfunction(L, handle_tostring);
    lua_setfield(L, 5, "__tostring");
    lua_pushliteral(L, HANDLE_NAME);
    lua_setfield(L, 5, "__name");
    lua_pushlightuserdata(L, &handle_marker);
    lua_pushboolean(L, 1);
    lua_rawset(L, 5);
    lua_settop(L, 5);
    return 1;
}

/* ---- waiters: one wait in progress, with its entry in the object's wait table ---- */

struct lwaiter {
    struct wh_obj *o;
    struct wh_waiter w;
    int64_t ac_ns;
};

static int waiter_gc(lua_State *L)
{
    struct lwaiter *w = luaL_checkudata(L, 1, WAITER_MT);
    if (w->o != NULL) {
        struct wh_obj *o = w->o;
        w->o = NULL;
        wh_withdraw(o, &w->w);
        wh_obj_unref(o);
    }
    return 0;
}

static struct lwaiter *check_waiter(lua_State *L, int idx)
{
    struct lwaiter *w = luaL_checkudata(L, idx, WAITER_MT);
    if (w->o == NULL)
        luaL_argerror(L, idx, "waiter already closed");
    return w;
}

static int l_waiter_withdraw(lua_State *L)
{
    struct lwaiter *w = check_waiter(L, 1);
    wh_withdraw(w->o, &w->w);
    return 0;
}

static int l_waiter_changed(lua_State *L)
{
    struct lwaiter *w = check_waiter(L, 1);
    lua_pushboolean(L, w->w.idx < 0 || wh_changed(w->o, &w->w, w->ac_ns));
    return 1;
}

static int l_waiter_registered(lua_State *L)
{
    lua_pushboolean(L, check_waiter(L, 1)->w.idx >= 0);
    return 1;
}

/* core.waiter(obj_or_handle, mode, futex, since) -> waiter */
static int l_waiter(lua_State *L)
{
    uint32_t mode = (uint32_t)luaL_checkinteger(L, 2);
    int futex = lua_toboolean(L, 3);
    double since = luaL_optnumber(L, 4, -1);
    struct wh_obj *o;
    int64_t ac;
    struct lwaiter *w;
    if (lua_type(L, 1) == LUA_TTABLE) {
        struct lobj *u = check_obj(L, 1);
        o = u->o;
        ac = u->ac_ns;
    } else {
        struct lhandle *h = check_handle(L, 1);
        if (h->o == NULL)
            luaL_argerror(L, 1, "handle is released");
        o = h->o;
        ac = (int64_t)(luaL_checknumber(L, 5) * 1e9);
    }
    w = lua_newuserdata(L, sizeof *w);
    wh_waiter_init(&w->w, mode, futex, since < 0 ? wh_now() : (int64_t)(since * 1e9));
    w->ac_ns = ac;
    wh_obj_ref(o);
    w->o = o;
    luaL_getmetatable(L, WAITER_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- acquiring ---- */

static double opt_lease(lua_State *L, int idx)
{
    double s = luaL_optnumber(L, idx, 1.0);
    return s > 0 ? s : 1.0;
}

/* Ends an acquiring step r (wh_attempt / wh_wait) whose handle h is on top of the stack: raises
 * on error, leaves nil instead of h if nothing was acquired, else records the hold in h. */
static int finish(lua_State *L, struct lhandle *h, struct wh_obj *o, int r, uint64_t held,
                  const struct wh_err *e)
{
    if (r < 0)
        return raise_error(L, e, o->name);
    if (r == 0) {
        lua_pushnil(L);
        return 1;
    }
    hold(h, o, held);
    return 1;
}

/* One attempt for the object table at 1 in `mode`; w may be NULL. Pushes handle or nil. */
static int attempt(lua_State *L, uint32_t mode, struct lwaiter *w, double lease_s)
{
    struct lobj *u = check_obj(L, 1);
    struct lhandle *h = push_handle(L, 1, mode);
    struct wh_err e;
    uint64_t held = 0;
    int r = wh_attempt(u->o, mode, u->ac_ns, w ? &w->w : NULL, (int64_t)(lease_s * 1e9), 0, &held,
                       &e);
    return finish(L, h, u->o, r, held, &e);
}

/* core.attempt(obj, mode [, waiter [, lease]]) -> handle or nil */
static int l_attempt(lua_State *L)
{
    uint32_t mode = (uint32_t)luaL_checkinteger(L, 2);
    struct lwaiter *w = lua_isnoneornil(L, 3) ? NULL : check_waiter(L, 3);
    return attempt(L, mode, w, opt_lease(L, 4));
}

/* core.wait(obj, waiter, seconds) -> handle or nil; blocks, sliced by abandonment_check */
static int l_wait(lua_State *L)
{
    struct lobj *u = check_obj(L, 1);
    struct lwaiter *w = check_waiter(L, 2);
    int64_t deadline = deadline_of(luaL_checknumber(L, 3));
    uint32_t mode = w->w.mode & WH_WAIT_MODE_MASK;
    struct lhandle *h = push_handle(L, 1, mode);
    struct wh_err e;
    uint64_t held = 0;
    int r = wh_wait(u->o, mode, u->ac_ns, &w->w, deadline, &held, &e);
    if (r < 0)
        wh_withdraw(u->o, &w->w);
    return finish(L, h, u->o, r, held, &e);
}

/* The handle at idx, which must be a held upgradeable read; w (may be NULL) is withdrawn first
 * if it is not, so a failed step never leaves the wait's claim behind. */
static struct lhandle *check_upgradeable(lua_State *L, int idx, struct lwaiter *w)
{
    struct lhandle *h = check_handle(L, idx);
    struct wh_err e;
    const char *name;
    if (h->mode == WH_MODE_UPGRADEABLE && handle_held(h))
        return h;
    lua_getmetatable(L, idx);
    lua_getfield(L, -1, "_fields");
    lua_getfield(L, -1, "name");
    name = lua_tostring(L, -1);
    if (w != NULL) /* check_waiter made sure it is open */
        wh_withdraw(w->o, &w->w);
    if (h->mode != WH_MODE_UPGRADEABLE)
        wh_fail(&e, WH_EINVALID_STATE, 0, "only an upgradeable read handle can be upgraded");
    else
        wh_fail(&e, WH_ERELEASED, 0,
                "the handle of rwlock '%s' was released; it cannot be upgraded", name);
    raise_error(L, &e, name);
    return NULL;
}

/* core.upgrade(h, waiter|nil, lease|nil, ac, seconds|nil) -> boolean; seconds: block that long */
static int l_upgrade(lua_State *L)
{
    struct lwaiter *w = lua_isnoneornil(L, 2) ? NULL : check_waiter(L, 2);
    struct lhandle *h = check_upgradeable(L, 1, w);
    int64_t ac = (int64_t)(luaL_checknumber(L, 4) * 1e9);
    struct wh_err e;
    uint64_t held;
    int r;
    if (h->flags & H_UPGRADED) {
        wh_fail(&e, WH_EINVALID_STATE, 0, "'%s' was already upgraded; a handle upgrades once",
                h->o->name);
        return raise_error(L, &e, h->o->name);
    }
    if (lua_isnoneornil(L, 5))
        r = wh_attempt(h->o, WH_MODE_UPGRADE, ac, w ? &w->w : NULL,
                       (int64_t)(opt_lease(L, 3) * 1e9), 0, &held, &e);
    else if (w == NULL)
        return luaL_argerror(L, 2, "a blocking upgrade needs a waiter");
    else
        r = wh_wait(h->o, WH_MODE_UPGRADE, ac, &w->w, deadline_of(luaL_checknumber(L, 5)), &held,
                    &e);
    if (r < 0) {
        if (w != NULL)
            wh_withdraw(h->o, &w->w);
        return raise_error(L, &e, h->o->name);
    }
    if (r == 1)
        h->flags |= H_UPGRADED;
    lua_pushboolean(L, r == 1);
    return 1;
}

/*
 * The C body of one object's try_acquire / acquire (and the rwlock forms).
 * Upvalues: 1 a struct fast (everything the common case needs, in one
 * lookup), 2 the handle metatable, 3 the Lua implementation, 4 the object's
 * userdata (kept alive; fast->u points into it). Calls whose arguments need
 * no checking and no waiting are served here; the rest go to the Lua code.
 */
struct fast {
    struct lobj *u;
    const void *cookie; /* address of the handle metatable (saves lua_topointer per call) */
    uint32_t mode;
    int try_style;
};

static int l_fast(lua_State *L)
{
    int n = lua_gettop(L);
    const struct fast *f = lua_touserdata(L, lua_upvalueindex(1));
    if (n == 1 || (f->try_style && n == 2 &&
                   (lua_isnil(L, 2) || (lua_type(L, 2) == LUA_TNUMBER && lua_tonumber(L, 2) == 0)))) {
        struct lhandle *h = new_handle_at(L, f->mode, lua_upvalueindex(2), f->cookie);
        struct wh_err e;
        uint64_t held = 0;
        int r = wh_attempt(f->u->o, f->mode, f->u->ac_ns, NULL, 0, 0, &held, &e);
        if (r != 0 || f->try_style)
            return finish(L, h, f->u->o, r, held, &e);
        lua_settop(L, n); /* acquire: busy, so wait in Lua */
    }
    lua_pushvalue(L, lua_upvalueindex(3));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* core.fast(obj, mode, slow, try_style) -> function for that object */
static int l_make_fast(lua_State *L)
{
    struct lobj *u = check_obj(L, 1);
    uint32_t mode = (uint32_t)luaL_checkinteger(L, 2);
    struct fast *f;
    luaL_checktype(L, 3, LUA_TFUNCTION);
    f = lua_newuserdata(L, sizeof *f); /* 1 */
    luaL_argcheck(L, push_handle_mt(L, 1, mode), 2, "no handle metatable for this mode"); /* 2 */
    f->u = u;
    f->cookie = lua_topointer(L, -1);
    f->mode = mode;
    f->try_style = lua_toboolean(L, 4);
    lua_pushvalue(L, 3);     /* 3: Lua implementation */
    lua_rawgeti(L, 1, 1);    /* 4: the object's userdata */
    lua_pushcclosure(L, l_fast, 4);
    return 1;
}

/* ---- the rest ---- */

void wh_lua_push_info(lua_State *L, struct wh_dir *d, uint32_t kind, const struct wh_info *in)
{
    lua_createtable(L, 0, 8);
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
    lua_createtable(L, (int)in->nholders, 0);
    for (uint32_t i = 0; i < in->nholders; i++) {
        lua_createtable(L, 0, 1);
        lua_pushinteger(L, (lua_Integer)wh_dir_pid(d, in->holders[i]));
        lua_setfield(L, -2, "pid");
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "holders");
}

static int l_info(lua_State *L)
{
    struct lobj *u = check_obj(L, 1);
    struct wh_info in;
    struct wh_err e;
    if (wh_info(u->o, &in, &e) != 0)
        return raise_error(L, &e, u->o->name);
    wh_lua_push_info(L, u->o->dir, u->o->v.kind, &in);
    return 1;
}

/* core.remove(dir, dir_mode, name) -> boolean */
static int l_remove(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    size_t len;
    const char *name = luaL_checklstring(L, 3, &len);
    struct wh_err e;
    struct wh_dir *d;
    int r;
    luaL_argcheck(L, wh_name_valid(name, len), 3, "not a valid escaped name");
    d = wh_dir_open(dir, -1, 0666, &e);
    if (d == NULL) {
        if (e.code == WH_EOS && e.errnum == ENOENT)
            return lua_pushboolean(L, 0), 1;
        return raise_error(L, &e, name);
    }
    r = wh_obj_remove(d, name, &e);
    if (r < 0)
        return raise_error(L, &e, name);
    lua_pushboolean(L, r);
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)wh_now() / 1e9);
    return 1;
}

/* core.yieldable() -> boolean, or nil where the C API cannot tell (5.1, 5.2) */
static int l_yieldable(lua_State *L)
{
#if WH_HAVE_ISYIELDABLE
    lua_pushboolean(L, lua_isyieldable(L));
#else
    lua_pushnil(L);
#endif
    return 1;
}

static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    if (s > 0)
        wh_sleep_ns((int64_t)(s * 1e9));
    return 0;
}

static void new_type(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    wh_setfuncs(L, meta, 0);
    if (methods != NULL) {
        wh_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_waithandles_core(lua_State *L)
{
    static const luaL_Reg error_meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
    static const luaL_Reg object_meta[] = {{"__gc", obj_gc}, {NULL, NULL}};
    static const luaL_Reg waiter_meta[] = {{"__gc", waiter_gc}, {NULL, NULL}};
    static const luaL_Reg waiter_methods[] = {{"withdraw", l_waiter_withdraw},
                                              {"changed", l_waiter_changed},
                                              {"registered", l_waiter_registered},
                                              {NULL, NULL}};
    static const luaL_Reg token_meta[] = {{"__tostring", l_token_tostring}, {NULL, NULL}};
    static const luaL_Reg token_methods[] = {
        {"cancel", l_token_cancel}, {"is_cancelled", l_token_is_cancelled}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"error", l_error},
                                     {"check_timeout", l_check_timeout},
                                     {"check_options", l_check_options},
                                     {"safe_name", l_safe_name},
                                     {"valid_name", l_valid_name},
                                     {"cancel_token", l_cancel_token},
                                     {"open", l_open},
                                     {"remove", l_remove},
                                     {"handle_mt", l_handle_mt},
                                     {"waiter", l_waiter},
                                     {"attempt", l_attempt},
                                     {"wait", l_wait},
                                     {"upgrade", l_upgrade},
                                     {"fast", l_make_fast},
                                     {"info", l_info},
                                     {"release", l_release},
                                     {"is_held", l_is_held},
                                     {"is_upgraded", l_is_upgraded},
                                     {"is_handle", l_is_handle},
                                     {"now", l_now},
                                     {"yieldable", l_yieldable},
                                     {"sleep", l_sleep},
                                     {"slot_fd", wh_l_slot_fd},
                                     {"inspect", wh_l_inspect},
                                     {"list", wh_l_list},
                                     {NULL, NULL}};

    new_type(L, ERROR_MT, error_meta, NULL);
    new_type(L, OBJECT_MT, object_meta, NULL);
    luaL_getmetatable(L, OBJECT_MT);
    lua_pushlightuserdata(L, &object_marker);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    new_type(L, WAITER_MT, waiter_meta, waiter_methods);
    new_type(L, TOKEN_MT, token_meta, token_methods);
    wh_newlib(L, funcs);
    luaL_getmetatable(L, ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    luaL_getmetatable(L, TOKEN_MT);
    lua_setfield(L, -2, "token_mt");
    lua_pushinteger(L, WH_FORMAT_VERSION);
    lua_setfield(L, -2, "format_version");
    lua_pushinteger(L, WH_MAX_SLOTS);
    lua_setfield(L, -2, "max_slots");
    lua_pushinteger(L, WH_KIND_LOCK);
    lua_setfield(L, -2, "KIND_LOCK");
    lua_pushinteger(L, WH_KIND_SEMAPHORE);
    lua_setfield(L, -2, "KIND_SEMAPHORE");
    lua_pushinteger(L, WH_KIND_RWLOCK);
    lua_setfield(L, -2, "KIND_RWLOCK");
    lua_pushinteger(L, WH_MODE_LOCK);
    lua_setfield(L, -2, "MODE_LOCK");
    lua_pushinteger(L, WH_MODE_READ);
    lua_setfield(L, -2, "MODE_READ");
    lua_pushinteger(L, WH_MODE_WRITE);
    lua_setfield(L, -2, "MODE_WRITE");
    lua_pushinteger(L, WH_MODE_UPGRADEABLE);
    lua_setfield(L, -2, "MODE_UPGRADEABLE");
    lua_pushinteger(L, WH_MODE_UPGRADE);
    lua_setfield(L, -2, "MODE_UPGRADE");
    return 1;
}
