/*
 * The userdata types, all owned by C: their metatables are made here and
 * protected by __metatable, and every function or metamethod in them checks
 * its userdata argument, so that no Lua code, not even through
 * debug.getmetatable, can make them touch anything but what they made.
 * Objects and handles get a metatable each when the object is made: its
 * __index is a plain table (the type's methods, built once in luaopen, and
 * the object's fields), so that a method call costs no more than a table
 * lookup, and the userdata carries the address of that metatable, which is
 * how we know it for ours.
 *
 *   waithandles.Lock / Semaphore / RWLock   an open object; its user value
 *       holds its sleep option
 *   waithandles.Handle, waithandles.Composite   in lhandle.c
 *   waithandles.Provider    shared constructor options (its user value)
 *   waithandles.CancelToken
 */
#include <string.h>

#include "lcore.h"

static const char *const obj_tname[] = {NULL, WH_T_LOCK, WH_T_SEMAPHORE, WH_T_RWLOCK, WH_T_EVENT};
static const char *const obj_kind[] = {NULL, "lock", "semaphore", "rwlock", "event"};

/* ---- objects ---- */

const char *wh_obj_typename(uint32_t kind)
{
    return kind >= 1 && kind <= 4 ? obj_tname[kind] : "waithandles object";
}

struct lobj *wh_toobj(lua_State *L, int idx, uint32_t kind)
{
    struct lobj *u = lua_touserdata(L, idx);
    int ok;
    if (u == NULL || wh_rawlen(L, idx) != sizeof *u || !lua_getmetatable(L, idx))
        return NULL;
    ok = u->cookie[0] == lua_topointer(L, -1) && u->o != NULL && (kind == 0 || u->kind == kind);
    lua_pop(L, 1);
    return ok ? u : NULL;
}

static struct lobj *check_obj(lua_State *L, const char *fname)
{
    struct lobj *u = wh_toobj(L, 1, 0);
    if (u == NULL)
        wh_argerror(L, 1, 1, fname, "waithandles object expected, got %s", wh_typename(L, 1));
    return u;
}

static int obj_newindex(lua_State *L)
{
    check_obj(L, "__newindex");
    return luaL_error(L, "waithandles objects are read-only");
}

static int obj_tostring(lua_State *L)
{
    struct lobj *u = check_obj(L, "__tostring");
    lua_pushfstring(L, "waithandles.%s('%s')", obj_kind[u->kind], u->o->name);
    return 1;
}

/* The methods of the object at idx forget its address (new_object_mt): the memory may be
 * another userdata's once the object is collected, while a method lives on (a LuaJIT trace
 * keeps what it called as a constant, a program may keep `o.acquire`). */
static void forget_methods(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return;
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_iscfunction(L, -1)) {
                lua_pushnil(L);
                lua_setupvalue(L, -2, 1); /* no upvalue (a field's function): does nothing */
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);
}

static int obj_gc(lua_State *L)
{
    struct lobj *u = wh_toobj(L, 1, 0);
    if (u != NULL) {
        struct wh_obj *o = u->o;
        forget_methods(L, 1);
        u->o = NULL;
        for (int m = 0; m <= WH_MODE_UPGRADEABLE; m++)
            if (u->mtref[m] != LUA_NOREF)
                luaL_unref(L, LUA_REGISTRYINDEX, u->mtref[m]);
        wh_obj_unref(o);
    }
    return 0;
}
/* ---- making objects ---- */

/* Pushes the metatable of the new object at obj: __index is a table of its type's methods and
 * its public fields (name, path, dir, kind, max_count). The C methods there are closures over
 * the object's address, a light userdata, which lets them recognise it with one comparison
 * (lacquire.c) without keeping it alive: obj_gc makes them forget it. */
static void new_object_mt(lua_State *L, int obj, uint32_t kind, const char *name, const char *dir,
                          uint32_t max_count)
{
    int mt, index;
    lua_createtable(L, 0, 8);
    mt = lua_gettop(L);
    lua_createtable(L, 0, 24);
    index = lua_gettop(L);
    lua_pushfstring(L, "%s#methods", obj_tname[kind]);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_CFunction f = lua_tocfunction(L, -1);
        if (f != NULL) {
            lua_pop(L, 1);
            lua_pushlightuserdata(L, lua_touserdata(L, obj));
            lua_pushcclosure(L, f, 1);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, index);
    }
    lua_pop(L, 1);
    lua_pushstring(L, name);
    lua_setfield(L, index, "name");
    lua_pushfstring(L, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name);
    lua_setfield(L, index, "path");
    lua_pushstring(L, dir);
    lua_setfield(L, index, "dir");
    lua_pushstring(L, obj_kind[kind]);
    lua_setfield(L, index, "kind");
    if (kind == WH_KIND_SEMAPHORE) {
        lua_pushinteger(L, (lua_Integer)max_count);
        lua_setfield(L, index, "max_count");
    } else if (kind == WH_KIND_EVENT) {
        lua_pushboolean(L, (max_count & ~WH_EVENT_INITIAL) == WH_EVENT_AUTO);
        lua_setfield(L, index, "auto_reset");
    }
    lua_setfield(L, mt, "__index");
    lua_pushcfunction(L, obj_gc);
    lua_setfield(L, mt, "__gc");
    lua_pushcfunction(L, obj_tostring);
    lua_setfield(L, mt, "__tostring");
    lua_pushcfunction(L, obj_newindex);
    lua_setfield(L, mt, "__newindex");
    wh_set_type_name(L, mt, obj_tname[kind]);
}

/* The file name of `name` (at stack index idx): escaped, or checked with exact_name. */
const char *wh_object_name(lua_State *L, int idx, int exact, char out[WH_NAME_MAX + 1])
{
    size_t len;
    const char *name = lua_tolstring(L, idx, &len);
    if (!exact) {
        wh_safe_name(name, len, out);
        return out;
    }
    if (!wh_name_valid(name, len))
        wh_raise_code(L, WH_EINVALID_NAME, name,
                      "'%s' is not a valid exact name: use 1 to 255 of [A-Za-z0-9._-], not "
                      "starting with '.', or drop exact_name to have it escaped",
                      name);
    return name;
}

/* Pushes a new object of `kind` named by the string at `name`, with the provider at `provider`
 * and per-object options at `opts` (0: none). Arguments are checked already. */
int wh_new_object(lua_State *L, uint32_t kind, int provider, int name, uint32_t max_count,
                  int opts, const char *fname)
{
    static const struct {
        uint32_t mode;
        const char *kind;
    } modes[5][3] = {{{0, NULL}},
                     {{WH_MODE_LOCK, "lock"}},
                     {{WH_MODE_LOCK, "semaphore"}},
                     {{WH_MODE_READ, "read"}, {WH_MODE_WRITE, "write"},
                      {WH_MODE_UPGRADEABLE, "upgradeable_read"}},
                     {{0, NULL}}};
    struct wh_settings s;
    struct wh_err e;
    struct wh_dir *d;
    struct lobj *u;
    char buf[WH_NAME_MAX + 1];
    const char *ename;
    int obj, uv;

    (void)fname;
    wh_settings(L, provider, opts, &s);
    ename = wh_object_name(L, name, s.exact, buf);
    u = wh_newudata(L, sizeof *u, 1);
    memset(u, 0, sizeof *u);
    for (int m = 0; m <= WH_MODE_UPGRADEABLE; m++)
        u->mtref[m] = LUA_NOREF;
    u->kind = kind;
    u->ac_ns = s.ac_ns;
    u->scope_worker = s.scope_worker;
    u->file_mode = s.mode;
    obj = lua_gettop(L);
    new_object_mt(L, obj, kind, ename, s.dir, max_count);
    u->cookie[0] = lua_topointer(L, -1);
    lua_setmetatable(L, obj);
    lua_createtable(L, 1, 0);
    uv = lua_gettop(L);
    if (s.sleep != 0) {
        lua_pushvalue(L, s.sleep);
        lua_rawseti(L, uv, UV_SLEEP);
    }
    for (int i = 0; i < 3 && modes[kind][i].kind != NULL; i++) {
        uint32_t m = modes[kind][i].mode;
        wh_new_handle_mt(L, &s, modes[kind][i].kind, ename, m == WH_MODE_UPGRADEABLE,
                         &u->token_box[m]);
        u->cookie[m] = lua_topointer(L, -1);
        u->mtref[m] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    wh_setuv(L, obj);
    d = wh_dir_open(s.dir, s.dir_mode, &e);
    if (d == NULL || (u->o = wh_obj_open(d, ename, kind, max_count, s.mode, &e)) == NULL) {
        wh_err_about(&e, obj_kind[kind], ename);
        return wh_raise(L, &e, ename);
    }
    lua_settop(L, obj);
    return 1;
}
/* ---- providers ---- */

static int provider_tostring(lua_State *L)
{
    luaL_checkudata(L, 1, WH_T_PROVIDER);
    wh_getuv(L, 1);
    lua_getfield(L, -1, "dir");
    lua_pushfstring(L, "waithandles.provider(%s)",
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "default directory");
    return 1;
}

/* core.provider(opts): the options are checked already; keeps a copy of them. */
static int l_new_provider(lua_State *L)
{
    int has = lua_istable(L, 1);
    wh_newudata(L, 1, 1);
    luaL_getmetatable(L, WH_T_PROVIDER);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    if (has) {
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
    }
    wh_setuv(L, -2);
    return 1;
}
/* ---- cancel tokens ---- */

static int l_cancel_token(lua_State *L)
{
    int *flag = wh_newudata(L, sizeof *flag, 0);
    *flag = 0;
    luaL_getmetatable(L, WH_T_TOKEN);
    lua_setmetatable(L, -2);
    return 1;
}

static int token_cancel(lua_State *L)
{
    *(int *)luaL_checkudata(L, 1, WH_T_TOKEN) = 1;
    return 0;
}

static int token_is_cancelled(lua_State *L)
{
    lua_pushboolean(L, *(int *)luaL_checkudata(L, 1, WH_T_TOKEN));
    return 1;
}

static int token_tostring(lua_State *L)
{
    int *flag = luaL_checkudata(L, 1, WH_T_TOKEN);
    lua_pushfstring(L, "waithandles.cancel_token(%s)", *flag ? "cancelled" : "not cancelled");
    return 1;
}

static int error_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "waithandles: %s: %s", luaL_optstring(L, -2, "?"), luaL_optstring(L, -1, "?"));
    return 1;
}

/* ---- metatables, built once ---- */

void wh_set_type_name(lua_State *L, int mt, const char *name)
{
    lua_pushstring(L, name);
    lua_setfield(L, mt, "__name");
    lua_pushstring(L, name);
    lua_setfield(L, mt, "__metatable"); /* getmetatable() gives the name, not the table */
}

/* A metatable `tname` in the registry with metamethods `meta`, __name, __metatable, and an
 * __index: the table of `methods` or, given `index`, that function over it. */
void wh_new_type(lua_State *L, const char *tname, const luaL_Reg *meta, const luaL_Reg *methods,
                     lua_CFunction index)
{
    luaL_newmetatable(L, tname);
    wh_setfuncs(L, meta, 0);
    if (methods != NULL) {
        wh_newlib(L, methods);
        if (index != NULL)
            lua_pushcclosure(L, index, 1);
        lua_setfield(L, -2, "__index");
    }
    wh_set_type_name(L, lua_gettop(L), tname);
    lua_pop(L, 1);
}

/* A table of methods in the registry at key "<tname>#methods": where new objects copy their
 * methods from and core.install adds the facade's. */
static void new_methods(lua_State *L, const char *tname, const luaL_Reg *methods)
{
    lua_pushfstring(L, "%s#methods", tname);
    wh_newlib(L, methods);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

void wh_open_types(lua_State *L)
{
    static const luaL_Reg provider_meta[] = {{"__tostring", provider_tostring}, {NULL, NULL}};
    static const luaL_Reg token_meta[] = {{"__tostring", token_tostring}, {NULL, NULL}};
    static const luaL_Reg token_methods[] = {
        {"cancel", token_cancel}, {"is_cancelled", token_is_cancelled}, {NULL, NULL}};
    static const luaL_Reg error_meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
    const luaL_Reg *methods[] = {NULL, wh_lock_methods, wh_semaphore_methods, wh_rwlock_methods,
                                 wh_event_methods};

    /* Error objects are plain tables: users read their metatable's __tostring. */
    luaL_newmetatable(L, WH_T_ERROR);
    wh_setfuncs(L, error_meta, 0);
    lua_pop(L, 1);
    for (uint32_t k = 1; k <= 4; k++)
        new_methods(L, obj_tname[k], methods[k]);
    new_methods(L, WH_T_PROVIDER, wh_provider_methods);
    lua_pushliteral(L, WH_T_PROVIDER "#methods");
    lua_rawget(L, LUA_REGISTRYINDEX);
    wh_setfuncs(L, wh_look_methods, 0);
    lua_pop(L, 1);
    new_methods(L, WH_T_UPGRADE, wh_upgrade_methods);
    wh_open_handles(L);
    wh_new_type(L, WH_T_PROVIDER, provider_meta, NULL, NULL);
    luaL_getmetatable(L, WH_T_PROVIDER);
    lua_pushliteral(L, WH_T_PROVIDER "#methods");
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    wh_new_type(L, WH_T_TOKEN, token_meta, token_methods, NULL);
}

const luaL_Reg wh_type_funcs[] = {{"cancel_token", l_cancel_token},
                                  {"new_provider", l_new_provider},
                                  {NULL, NULL}};
