/*
 * waithandles.core: luaopen, the constructors (module functions and
 * provider methods), and the few hooks the Lua facade needs: where a wait
 * can yield, the starts of the async forms it wraps, and install, which puts
 * its Lua functions (the async forms, acquire_all) into our method tables.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lcore.h"

/* ---- constructors ---- */

static const struct wh_sig sig_lock = {"lock", S_NONE, 0, 0, "sc"};
static const struct wh_sig sig_semaphore = {"semaphore", S_NONE, 0, 0, "snc"};
static const struct wh_sig sig_rwlock = {"rwlock", S_NONE, 0, 0, "sc"};
static const struct wh_sig sig_remove = {"remove", S_NONE, 0, 0, "sc"};
static const struct wh_sig sig_p_lock = {"lock", S_PROVIDER, 0, 0, "sc"};
static const struct wh_sig sig_p_semaphore = {"semaphore", S_PROVIDER, 0, 0, "snc"};
static const struct wh_sig sig_p_rwlock = {"rwlock", S_PROVIDER, 0, 0, "sc"};
static const struct wh_sig sig_p_remove = {"remove", S_PROVIDER, 0, 0, "sc"};
static const struct wh_sig sig_provider = {"provider", S_NONE, 0, 0, "c"};
static const struct wh_sig sig_safe_name = {"safe_name", S_NONE, 0, 0, "S"};

/* A constructor of `kind`: module function (provider in upvalue 1) or provider method. */
static int construct(lua_State *L, const struct wh_sig *sig, uint32_t kind)
{
    struct wh_args a;
    int name = sig->self == S_PROVIDER ? 2 : 1, provider;
    uint32_t max_count = 1;
    wh_checkargs(L, sig, 1, 1, &a);
    if (kind == WH_KIND_SEMAPHORE)
        max_count = (uint32_t)lua_tointeger(L, name + 1);
    if (sig->self == S_PROVIDER) {
        provider = 1;
    } else {
        lua_pushvalue(L, lua_upvalueindex(1));
        provider = lua_gettop(L);
    }
    return wh_new_object(L, kind, provider, name, max_count, a.opts, sig->fname);
}

static int m_lock(lua_State *L) { return construct(L, &sig_lock, WH_KIND_LOCK); }
static int m_semaphore(lua_State *L) { return construct(L, &sig_semaphore, WH_KIND_SEMAPHORE); }
static int m_rwlock(lua_State *L) { return construct(L, &sig_rwlock, WH_KIND_RWLOCK); }
static int p_lock(lua_State *L) { return construct(L, &sig_p_lock, WH_KIND_LOCK); }
static int p_semaphore(lua_State *L) { return construct(L, &sig_p_semaphore, WH_KIND_SEMAPHORE); }
static int p_rwlock(lua_State *L) { return construct(L, &sig_p_rwlock, WH_KIND_RWLOCK); }

static int remove_object(lua_State *L, const struct wh_sig *sig)
{
    struct wh_args a;
    struct wh_settings s;
    struct wh_err e;
    struct wh_dir *d;
    char buf[WH_NAME_MAX + 1];
    size_t len;
    int name = sig->self == S_PROVIDER ? 2 : 1, provider = 1, r;
    const char *ename;
    wh_checkargs(L, sig, 1, 1, &a);
    if (sig->self != S_PROVIDER) {
        lua_pushvalue(L, lua_upvalueindex(1));
        provider = lua_gettop(L);
    }
    wh_settings(L, provider, a.opts, &s);
    ename = lua_tolstring(L, name, &len);
    if (!s.exact) {
        wh_safe_name(ename, len, buf);
        ename = buf;
    } else if (!wh_name_valid(ename, len)) {
        return wh_raise_code(L, WH_EINVALID_NAME, ename, "'%s' is not a valid exact name",
                             ename);
    }
    d = wh_dir_open(s.dir, -1, &e);
    if (d == NULL) {
        if (e.code == WH_EOS && e.errnum == ENOENT)
            return lua_pushboolean(L, 0), 1;
        return wh_raise(L, &e, ename);
    }
    r = wh_obj_remove(d, ename, &e);
    if (r < 0)
        return wh_raise(L, &e, ename);
    lua_pushboolean(L, r);
    return 1;
}

static int m_remove(lua_State *L) { return remove_object(L, &sig_remove); }
static int p_remove(lua_State *L) { return remove_object(L, &sig_p_remove); }

static int m_provider(lua_State *L)
{
    struct wh_args a;
    wh_checkargs(L, &sig_provider, 1, 1, &a);
    lua_settop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "waithandles.new_provider");
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static int m_safe_name(lua_State *L)
{
    struct wh_args a;
    size_t len;
    const char *s;
    char out[WH_NAME_MAX + 1];
    wh_checkargs(L, &sig_safe_name, 1, 1, &a);
    s = lua_tolstring(L, 1, &len);
    lua_pushlstring(L, out, wh_safe_name(s, len, out));
    return 1;
}

/* ---- acquire_all: the facade's loop starts here ---- */

static const struct wh_sig sig_all[4] = {
    {"try_acquire_all", S_PROVIDER, 0, 1, "ato"},
    {"acquire_all", S_PROVIDER, 0, 0, "awo"},
    {"try_acquire_all_async", S_PROVIDER, 0, 1, "ato"},
    {"acquire_all_async", S_PROVIDER, 0, 0, "awo"},
};

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* all_start(p, names, timeout, opts) -> locks, timeout, names: the lock objects, in byte order
 * of their escaped names (so overlapping sets never deadlock), and those names. */
static int all_start(lua_State *L, const struct wh_sig *sig)
{
    struct wh_args a;
    int n, locks, byname, sorted;
    const char **order;
    wh_checkargs(L, sig, 1, 2, &a);
    lua_settop(L, 4);
    n = (int)wh_rawlen(L, 2);
    lua_createtable(L, n, 0);
    locks = lua_gettop(L);
    lua_createtable(L, 0, n);
    byname = lua_gettop(L);
    order = lua_newuserdata(L, sizeof *order * (size_t)n);
    for (int i = 1; i <= n; i++) {
        int given;
        lua_rawgeti(L, 2, i);
        given = lua_gettop(L);
        if (lua_type(L, given) != LUA_TSTRING)
            wh_argerror(L, 2, 1, sig->fname, "names[%d] must be a string, got %s", i,
                        wh_typename(L, given));
        wh_new_object(L, WH_KIND_LOCK, 1, given, 1, 0, sig->fname);
        lua_getfield(L, -1, "name");
        order[i - 1] = lua_tostring(L, -1); /* anchored as a key of byname */
        lua_pushvalue(L, -1);
        lua_rawget(L, byname);
        if (!lua_isnil(L, -1)) {
            lua_rawgeti(L, 2, (int)lua_tointeger(L, -1));
            wh_argerror(L, 2, 1, sig->fname, "names '%s' and '%s' are the same lock",
                        lua_tostring(L, -1), lua_tostring(L, given));
        }
        lua_pop(L, 1);
        lua_pushinteger(L, i);
        lua_rawset(L, byname);  /* byname[escaped name] = i */
        lua_rawseti(L, locks, i);
        lua_pop(L, 1);          /* the given name */
    }
    qsort(order, (size_t)n, sizeof *order, cmp_names);
    lua_createtable(L, n, 0);
    sorted = lua_gettop(L);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, order[i]);
        lua_rawseti(L, -2, i + 1);
        lua_pushstring(L, order[i]);
        lua_rawget(L, byname);
        lua_rawgeti(L, locks, (int)lua_tointeger(L, -1));
        lua_rawseti(L, sorted, i + 1);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, sorted);
    lua_pushnumber(L, a.timeout);
    lua_pushvalue(L, -3);
    return 3;
}

static int all_try(lua_State *L) { return all_start(L, &sig_all[0]); }
static int all_acq(lua_State *L) { return all_start(L, &sig_all[1]); }
static int all_try_async(lua_State *L) { return all_start(L, &sig_all[2]); }
static int all_acq_async(lua_State *L) { return all_start(L, &sig_all[3]); }

const luaL_Reg wh_provider_methods[] = {{"lock", p_lock},
                                        {"semaphore", p_semaphore},
                                        {"rwlock", p_rwlock},
                                        {"remove", p_remove},
                                        {"event", wh_l_p_event},
                                        {NULL, NULL}};

/* ---- the facade's hooks ---- */

/* core.install(key, fn): puts the facade's Lua function fn into a method table, once. Keys:
 * "<lock|semaphore|rwlock|upgrade|provider>.<method>". */
static int l_install(lua_State *L)
{
    static const char *const kinds[] = {"lock", "semaphore", "rwlock", "upgrade", "provider",
                                        "event", NULL};
    static const char *const tables[] = {WH_T_LOCK "#methods",     WH_T_SEMAPHORE "#methods",
                                         WH_T_RWLOCK "#methods",   WH_T_UPGRADE "#methods",
                                         WH_T_PROVIDER "#methods", WH_T_EVENT "#methods"};
    const char *key = luaL_checkstring(L, 1), *dot = strchr(key, '.');
    int k;
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_argcheck(L, dot != NULL, 1, "<kind>.<method> expected");
    lua_pushlstring(L, key, (size_t)(dot - key));
    k = luaL_checkoption(L, -1, NULL, kinds);
    lua_getfield(L, LUA_REGISTRYINDEX, tables[k]);
    lua_getfield(L, -1, dot + 1);
    luaL_argcheck(L, lua_isnil(L, -1), 1, "already installed");
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, dot + 1);
    return 0;
}

/*
 * Can the running coroutine yield here? 5.3+ say so themselves; 5.2 is judged from Lua
 * (-1). The 5.1 ABI is shared by LuaJIT, which has lua_isyieldable, and PUC 5.1, which does
 * not: there a yield fails where lua_yield would see L->nCcalls > L->baseCcalls (any C
 * boundary: pcall, a metamethod, a for-iterator, a C function's callback), so read those two
 * fields of 5.1.5's lua_State, after checking that the layout is the one we expect.
 */
#if LUA_VERSION_NUM == 501
struct puc51_state {
    void *next;
    unsigned char tt, marked, status;
    char *top, *base;
    void *l_G;
    char *ci;
    const void *savedpc;
    char *stack_last, *stack, *end_ci, *base_ci;
    int stacksize, size_ci;
    unsigned short nCcalls, baseCcalls;
};

/*
 * LuaJIT's lua_isyieldable, and luaJIT_setmode to tell LuaJIT from a PUC 5.1 that might have
 * a lua_isyieldable of its own: weak references, NULL where the process has no such symbol.
 * The dynamic linker binds them when core.so is loaded (from the interpreter, LÖVE, nginx),
 * the static linker when a host links libwaithandles.a with LuaJIT's archive (whose symbols
 * a dlsym would not see unless the host exported them). Nothing is looked up or cached at
 * run time, so the lua_States of a host's threads share no state here.
 */
extern int wh_jit_isyieldable(lua_State *L) __asm__("lua_isyieldable")
    __attribute__((weak, visibility("default")));
extern int wh_jit_setmode(lua_State *L, int idx, int mode) __asm__("luaJIT_setmode")
    __attribute__((weak, visibility("default")));

static int puc51_yieldable(lua_State *L)
{
    const struct puc51_state *s = (const void *)L;
    if (s->tt != LUA_TTHREAD || s->stack > s->base || s->base > s->top || s->top > s->stack_last ||
        (s->top - s->base) != (ptrdiff_t)lua_gettop(L) * 16 || s->base_ci > s->ci ||
        s->ci >= s->end_ci)
        return -1; /* not the layout we know: let Lua judge */
    if (lua_pushthread(L)) {
        lua_pop(L, 1);
        return 0; /* the main thread */
    }
    lua_pop(L, 1);
    return s->nCcalls <= s->baseCcalls;
}
#endif

int wh_lua_yieldable(lua_State *L)
{
#if LUA_VERSION_NUM >= 503
    return lua_isyieldable(L);
#elif LUA_VERSION_NUM == 502
    (void)L;
    return -1;
#else
    if (wh_jit_setmode != NULL && wh_jit_isyieldable != NULL)
        return wh_jit_isyieldable(L) != 0;
    return puc51_yieldable(L);
#endif
}

/* core.yieldable() -> boolean, or nil where only Lua can tell */
static int l_yieldable(lua_State *L)
{
    int y = wh_lua_yieldable(L);
    if (y < 0)
        lua_pushnil(L);
    else
        lua_pushboolean(L, y);
    return 1;
}

/* core.error(code, message [, name [, errno]]) -> error object */
static int l_error(lua_State *L)
{
    const char *code = luaL_checkstring(L, 1), *msg = luaL_checkstring(L, 2);
    const char *name = luaL_optstring(L, 3, NULL);
    wh_push_error(L, code, msg, name, (int)luaL_optinteger(L, 4, 0));
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)wh_now() / 1e9);
    return 1;
}

__attribute__((visibility("default"))) int luaopen_waithandles_core(lua_State *L)
{
    static const luaL_Reg ctors[] = {{"lock", m_lock},       {"semaphore", m_semaphore},
                                     {"rwlock", m_rwlock},   {"remove", m_remove},
                                     {"event", wh_l_event},  {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"provider", m_provider}, {"safe_name", m_safe_name},
                                     {"install", l_install},   {"yieldable", l_yieldable},
                                     {"error", l_error},       {"now", l_now},
                                     {"slot_fd", wh_l_slot_fd}, {NULL, NULL}};
    static const luaL_Reg all[] = {{"provider.try_acquire_all", all_try},
                                   {"provider.acquire_all", all_acq},
                                   {"provider.try_acquire_all_async", all_try_async},
                                   {"provider.acquire_all_async", all_acq_async},
                                   {NULL, NULL}};

    wh_open_types(L);
    wh_open_waiters(L);
    wh_newlib(L, funcs);
    wh_setfuncs(L, wh_type_funcs, 0);
    wh_setfuncs(L, wh_handle_funcs, 0);
    wh_setfuncs(L, wh_ngx_funcs, 0);
    /* The default provider; new_provider is kept for m_provider. */
    lua_getfield(L, -1, "new_provider");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "waithandles.new_provider");
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_insert(L, -3); /* provider, module, provider */
    wh_setfuncs(L, ctors, 1);
    lua_pushvalue(L, -2);
    wh_setfuncs(L, wh_look_funcs, 1);
    lua_remove(L, -2);
    lua_pushnil(L);
    lua_setfield(L, -2, "new_provider");
    lua_newtable(L);
    wh_setfuncs(L, wh_async_starts, 0);
    wh_setfuncs(L, wh_event_starts, 0);
    wh_setfuncs(L, all, 0);
    lua_setfield(L, -2, "starts");
    lua_pushinteger(L, WH_FORMAT_VERSION);
    lua_setfield(L, -2, "format_version");
    lua_pushinteger(L, WH_MAX_SLOTS);
    lua_setfield(L, -2, "max_slots");
    return 1;
}
