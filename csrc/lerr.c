/*
 * Error objects and argument checks: the one place that decides what a
 * public function accepts. Every public function is described by a
 * struct wh_sig (its name, what its first argument must be, its arguments);
 * wh_checkargs checks a call against it and raises a standard argument error
 * positioned at the caller, whichever C or Lua function received the call.
 * Also the settings of a new object (constructor options over a provider's).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lcore.h"
#include "policy.h"

/* ---- error objects ---- */

void wh_push_error(lua_State *L, const char *code, const char *msg, const char *name, int errnum)
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
    luaL_getmetatable(L, WH_T_ERROR);
    lua_setmetatable(L, -2);
}

int wh_raise(lua_State *L, const struct wh_err *e, const char *name)
{
    wh_push_error(L, wh_code_name(e->code), e->msg, name, e->code == WH_EOS ? e->errnum : 0);
    return lua_error(L);
}

int wh_raise_code(lua_State *L, int code, const char *name, const char *fmt, ...)
{
    struct wh_err e;
    va_list ap;
    e.code = code;
    e.errnum = 0;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    return wh_raise(L, &e, name);
}

/* ---- argument errors ---- */

int wh_argerror(lua_State *L, int level, int argn, const char *fname, const char *fmt, ...)
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

/* The name of a value's type for messages: its metatable's __name, like luaL_typeerror. */
const char *wh_typename(lua_State *L, int idx)
{
    const char *t = luaL_typename(L, idx);
    if (lua_getmetatable(L, idx)) {
        lua_getfield(L, -1, "__name");
        if (lua_type(L, -1) == LUA_TSTRING)
            t = lua_tostring(L, -1); /* anchored by the metatable, which the value keeps */
        lua_pop(L, 2);
    }
    return t;
}

static double check_timeout(lua_State *L, int idx, int level, int argn, const char *fname,
                            int forever)
{
    double t;
    if (lua_isnoneornil(L, idx))
        return forever ? HUGE_VAL : 0;
    if (lua_type(L, idx) != LUA_TNUMBER)
        wh_argerror(L, level, argn, fname, "timeout must be a number of seconds, got %s",
                    wh_typename(L, idx));
    t = lua_tonumber(L, idx);
    if (t != t)
        wh_argerror(L, level, argn, fname, "timeout is NaN");
    if (t < 0)
        wh_argerror(L, level, argn, fname, "timeout must not be negative");
    if (t > WH_MAX_SECONDS && t != HUGE_VAL)
        wh_argerror(L, level, argn, fname,
                    "timeout must be at most 2147483.647 s (2^31-1 ms) or math.huge");
    return t;
}

static int is_integer(lua_State *L, int idx, lua_Number lo, lua_Number hi)
{
    lua_Number n;
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    n = lua_tonumber(L, idx);
    return n >= lo && n <= hi && floor(n) == n;
}

/* Checks the value on top of the stack as option `key`; 0 if `key` is no option of this kind. */
static int check_option(lua_State *L, const char *key, int ctor, int level, int argn,
                        const char *fname)
{
    int v = lua_gettop(L);
    if (strcmp(key, "sleep") == 0) {
        if (!lua_isfunction(L, v))
            wh_argerror(L, level, argn, fname, "option 'sleep' must be a function, got %s",
                        wh_typename(L, v));
    } else if (!ctor && strcmp(key, "cancel") == 0) {
        if (!lua_isfunction(L, v) && wh_testudata(L, v, WH_T_TOKEN) == NULL)
            wh_argerror(L, level, argn, fname,
                        "option 'cancel' must be a cancel token or a function, got %s",
                        wh_typename(L, v));
    } else if (ctor == 2 && (strcmp(key, "auto_reset") == 0 || strcmp(key, "initial") == 0)) {
        if (!lua_isboolean(L, v))
            wh_argerror(L, level, argn, fname, "option '%s' must be a boolean, got %s", key,
                        wh_typename(L, v));
    } else if (ctor && strcmp(key, "exact_name") == 0) {
        if (!lua_isboolean(L, v))
            wh_argerror(L, level, argn, fname, "option 'exact_name' must be a boolean, got %s",
                        wh_typename(L, v));
    } else if (ctor && strcmp(key, "dir") == 0) {
        size_t len;
        const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tolstring(L, v, &len) : NULL;
        if (s == NULL || len == 0 || strlen(s) != len)
            wh_argerror(L, level, argn, fname,
                        "option 'dir' must be a non-empty path without NUL bytes, got %s",
                        wh_typename(L, v));
    } else if (ctor && strcmp(key, "mode") == 0) {
        if (!is_integer(L, v, 0, 4095))
            wh_argerror(L, level, argn, fname,
                        "option 'mode' must be an integer from 0 to 4095 (e.g. 438 = 0666)");
    } else if (ctor && strcmp(key, "scope") == 0) {
        const char *v2 = lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : "";
        if (strcmp(v2, "request") != 0 && strcmp(v2, "worker") != 0)
            wh_argerror(L, level, argn, fname,
                        "option 'scope' must be \"request\" or \"worker\"");
    } else if (ctor && strcmp(key, "abandonment_check") == 0) {
        lua_Number n = lua_type(L, v) == LUA_TNUMBER ? lua_tonumber(L, v) : -1;
        if (!(n > 0 && n <= WH_MAX_SECONDS))
            wh_argerror(L, level, argn, fname,
                        "option 'abandonment_check' must be a number of seconds > 0 and at "
                        "most 2147483.647");
    } else {
        return 0;
    }
    return 1;
}

/* Checks the options table at idx (nil is fine); returns whether there is one. */
static int check_options(lua_State *L, int idx, int ctor, int level, int argn, const char *fname)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    if (!lua_istable(L, idx))
        wh_argerror(L, level, argn, fname, "options table expected, got %s", wh_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* Never lua_tostring a key: it would break lua_next. */
        if (lua_type(L, -2) != LUA_TSTRING)
            wh_argerror(L, level, argn, fname, "unknown option (a %s key)",
                        luaL_typename(L, -2));
        if (!check_option(L, lua_tostring(L, -2), ctor, level, argn, fname))
            wh_argerror(L, level, argn, fname, "unknown option '%s'%s", lua_tostring(L, -2),
                        ctor ? "" : " (per-call options are 'cancel' and 'sleep')");
        lua_pop(L, 1);
    }
    return 1;
}

void wh_check_ctor_opts(lua_State *L, int idx, int level, int argn, const char *fname)
{
    check_options(L, idx, 1, level, argn, fname);
}

/* Pushes t[key] and returns its stack index, or pops it and returns 0 if it is nil. */
static int push_field(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    return lua_gettop(L);
}

static void *check_self(lua_State *L, int idx, int self, int level, const char *fname)
{
    static const char *const expected[] = {NULL,          WH_T_LOCK,
                                           WH_T_SEMAPHORE, WH_T_RWLOCK,
                                           "upgradeable read handle", WH_T_PROVIDER,
                                           WH_T_EVENT};
    void *p = NULL;
    struct lhandle *h;
    switch (self) {
    case S_LOCK:
        p = wh_toobj(L, idx, WH_KIND_LOCK);
        break;
    case S_SEMAPHORE:
        p = wh_toobj(L, idx, WH_KIND_SEMAPHORE);
        break;
    case S_RWLOCK:
        p = wh_toobj(L, idx, WH_KIND_RWLOCK);
        break;
    case S_UPGRADEABLE:
        h = wh_tohandle(L, idx);
        p = h != NULL && h->mode == WH_MODE_UPGRADEABLE ? h : NULL;
        break;
    case S_PROVIDER:
        p = wh_testudata(L, idx, WH_T_PROVIDER);
        break;
    case S_EVENT:
        p = wh_toobj(L, idx, WH_KIND_EVENT);
        break;
    }
    if (p == NULL)
        wh_argerror(L, level, 1, fname, "%s expected, got %s", expected[self], wh_typename(L, idx));
    return p;
}

void wh_checkargs(lua_State *L, const struct wh_sig *sig, int first, int level, struct wh_args *a)
{
    int nargs = (int)strlen(sig->args), base = first + (sig->self != S_NONE);
    int given = lua_gettop(L) - base + 1, call_opts = 0;

    a->self = NULL;
    a->timeout = 0;
    a->opts = a->cancel = a->sleep = 0;
    if (sig->self != S_NONE)
        a->self = check_self(L, first, sig->self, level, sig->fname);
    if (given > nargs)
        wh_argerror(L, level, nargs + 1, sig->fname, "no more than %d arguments expected", nargs);
    for (int i = 0; i < nargs; i++) {
        int idx = base + i, argn = i + 1;
        switch (sig->args[i]) {
        case A_TRY_TIMEOUT:
        case A_WAIT_TIMEOUT:
            a->timeout = check_timeout(L, idx, level, argn, sig->fname,
                                       sig->args[i] == A_WAIT_TIMEOUT);
            break;
        case A_CALL_OPTS:
        case A_CTOR_OPTS:
        case A_EVENT_OPTS:
            if (check_options(L, idx,
                              sig->args[i] == A_CTOR_OPTS ? 1 : sig->args[i] == A_EVENT_OPTS ? 2 : 0,
                              level, argn, sig->fname))
                a->opts = idx;
            call_opts = sig->args[i] == A_CALL_OPTS;
            break;
        case A_NAME:
            if (lua_type(L, idx) != LUA_TSTRING)
                wh_argerror(L, level, argn, sig->fname, "name must be a string, got %s",
                            wh_typename(L, idx));
            break;
        case A_STRING:
            if (lua_type(L, idx) != LUA_TSTRING)
                wh_argerror(L, level, argn, sig->fname, "string expected, got %s",
                            wh_typename(L, idx));
            break;
        case A_COUNT:
            if (!is_integer(L, idx, 1, 2147483647.0))
                wh_argerror(L, level, argn, sig->fname,
                            "max_count must be an integer from 1 to 2^31-1");
            break;
        case A_NAMES:
            if (!lua_istable(L, idx) || wh_rawlen(L, idx) == 0)
                wh_argerror(L, level, argn, sig->fname, "non-empty array of names expected");
            break;
        }
    }
    if (a->opts != 0 && call_opts) {
        lua_settop(L, base + nargs - 1); /* the pushes below sit above every argument */
        a->cancel = push_field(L, a->opts, "cancel");
        a->sleep = push_field(L, a->opts, "sleep");
    }
}

/* ---- settings of a new object ---- */

/* Permission bits for a missing lock directory we create, from the file mode: x wherever r,
 * and sticky when others may write (like /tmp). */
static int dir_mode_for(int mode)
{
    int d = mode & 0777;
    for (int r = 0400; r != 0; r >>= 3)
        if ((d & r) && !(d & (r >> 2)))
            d |= r >> 2;
    if (mode & 022)
        d |= 01000;
    return d;
}

void wh_settings(lua_State *L, int provider, int opts, struct wh_settings *s)
{
    int popts, v;
    const char *dir;
    size_t len;
    double ac;

    wh_getuv(L, provider);
    popts = lua_gettop(L);
#define GET(key) ((opts != 0 && (v = push_field(L, opts, key)) != 0) ? v : push_field(L, popts, key))
    v = GET("mode");
    s->mode = v ? (int)lua_tointeger(L, v) : WH_DEFAULT_MODE;
    v = GET("exact_name");
    s->exact = v ? lua_toboolean(L, v) : 0;
    v = GET("abandonment_check");
    ac = v ? lua_tonumber(L, v) : WH_DEFAULT_AC_NS / 1e9;
    s->ac_ns = ac * 1e9 < WH_MIN_AC_NS ? WH_MIN_AC_NS : (int64_t)(ac * 1e9);
    s->sleep = GET("sleep");
    v = GET("scope");
    s->scope_worker = v != 0 && strcmp(lua_tostring(L, v), "worker") == 0;
    v = GET("dir");
#undef GET
    if (v != 0) {
        dir = lua_tolstring(L, v, &len);
        s->dir_mode = dir_mode_for(s->mode);
    } else {
        const char *env = getenv("WAITHANDLES_DIR");
        struct stat st;
        s->dir_mode = 01777; /* like /tmp: objects are machine-wide */
        if (env != NULL && env[0] != '\0') {
            dir = env;
        } else {
            dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm/waithandles"
                                                                     : "/tmp/waithandles";
        }
        len = strlen(dir);
    }
    /* Without trailing slashes ("/" stays "/"), anchored on the stack. */
    while (len > 1 && dir[len - 1] == '/')
        len--;
    lua_pushlstring(L, dir, len);
    s->dir = lua_tostring(L, -1);
}
