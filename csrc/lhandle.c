/*
 * Handles: one hold each. Every object makes a metatable per mode for its
 * handles; its __index is a table of the handle's fields (kind, name) and
 * methods (closures over the metatable, so a handle is recognised by the
 * address of its metatable, which it carries), and it keeps what an upgrade
 * needs of the object (its abandonment_check and sleep), not the object.
 * Composite handles (waithandles.Composite, kind "composite") hold the
 * handles of an acquire_all.
 */
#include <string.h>

#include "lcore.h"

/* Keys of our metatables: their addresses. */
static char fields_key; /* handle metatables: the fields table */
static char ac_key;     /* handle metatables: the object's abandonment_check, ns */
static char sleep_key;  /* handle metatables: the object's sleep option */

/* The lightuserdata key at its address, then rawget from the table at t (absolute). */
static void rawget_key(lua_State *L, int t, void *key)
{
    lua_pushlightuserdata(L, key);
    lua_rawget(L, t);
}

static void rawset_key(lua_State *L, int t, void *key)
{
    lua_pushlightuserdata(L, key);
    lua_insert(L, -2);
    lua_rawset(L, t);
}

/* ---- handles ---- */

/* A userdata of our size that carries the address of its own metatable: Lua code can neither
 * write into a userdata nor, without the debug library, set its metatable. */
struct lhandle *wh_tohandle(lua_State *L, int idx)
{
    struct lhandle *h = lua_touserdata(L, idx);
    int ok;
    if (h == NULL || wh_rawlen(L, idx) != sizeof *h || !lua_getmetatable(L, idx))
        return NULL;
    ok = h->cookie == lua_topointer(L, -1);
    lua_pop(L, 1);
    return ok ? h : NULL;
}

struct lhandle *wh_new_handle(lua_State *L, const struct lobj *u, uint32_t mode)
{
    struct lhandle *h = wh_newudata(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    h->mode = mode;
    h->cookie = u->cookie[mode];
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->mtref[mode]);
    lua_setmetatable(L, -2);
    return h;
}

void wh_handle_hold(struct lhandle *h, struct wh_obj *o, uint64_t ident, uint64_t token,
                    uint64_t *box)
{
    h->token = token;
    if (box != NULL)
        *box = token;
    wh_obj_ref(o);
    h->o = o;
    h->ident = ident;
    h->flags |= H_HELD;
}

int wh_handle_held(const struct lhandle *h)
{
    return (h->flags & H_HELD) && h->o != NULL && wh_dir_current_checked(h->o->dir) == h->ident &&
           !wh_obj_replaced(h->o, 0);
}

/* Lost: not released, ours, but no longer guaranteed: its file was removed or replaced, or the
 * registry file of the identity it was taken under was, or the state no longer records it. */
static int handle_lost(struct lhandle *h)
{
    int ours;
    if (!(h->flags & H_HELD) || h->o == NULL)
        return 0;
    ours = wh_dir_ours(h->o->dir, h->ident, 1);
    if (ours == 0)
        return 0; /* a copy made by fork: the parent's hold */
    return ours == 1 || wh_obj_replaced(h->o, 1) || !wh_st_holds(&h->o->v, h->mode, h->ident);
}

int wh_handle_release(struct lhandle *h)
{
    struct wh_obj *o = h->o;
    int r;
    wh_ngx_disarm(h);
    if (!(h->flags & H_HELD) || o == NULL)
        return 0;
    h->flags &= ~H_HELD;
    h->o = NULL;
    r = wh_release(o, h->mode, h->ident);
    wh_obj_unref(o);
    return r;
}

/* Pushes what the metatable of the handle at hidx keeps under key. */
static void push_handle_meta(lua_State *L, int hidx, void *key)
{
    lua_getmetatable(L, hidx);
    rawget_key(L, lua_gettop(L), key);
    lua_remove(L, -2);
}

void wh_push_handle_field(lua_State *L, int hidx, const char *field)
{
    push_handle_meta(L, hidx, &fields_key);
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
}

int64_t wh_handle_ac(lua_State *L, int hidx)
{
    int64_t ac;
    push_handle_meta(L, hidx, &ac_key);
    ac = (int64_t)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return ac;
}

void wh_push_handle_sleep(lua_State *L, int hidx)
{
    push_handle_meta(L, hidx, &sleep_key);
}

static struct lhandle *check_handle(lua_State *L, const char *fname)
{
    struct lhandle *h = wh_tohandle(L, 1);
    if (h == NULL)
        wh_argerror(L, 1, 1, fname, WH_T_HANDLE " expected, got %s", wh_typename(L, 1));
    return h;
}

/* release and is_held of one object's handles: upvalue 1 is their metatable, so a userdata of
 * our size carrying its address is one of them (Lua code cannot write into a userdata). */
static struct lhandle *own_handle(lua_State *L, const char *fname)
{
    struct lhandle *h = lua_touserdata(L, 1);
    if (h != NULL && wh_rawlen(L, 1) == sizeof *h &&
        h->cookie == lua_topointer(L, lua_upvalueindex(1)))
        return h;
    return check_handle(L, fname); /* a handle of another object, or an error */
}

static int handle_m_release(lua_State *L)
{
    lua_pushboolean(L, wh_handle_release(own_handle(L, "release")));
    return 1;
}

static int handle_m_is_lost(lua_State *L)
{
    lua_pushboolean(L, handle_lost(own_handle(L, "is_lost")));
    return 1;
}

static int handle_m_is_held(lua_State *L)
{
    lua_pushboolean(L, wh_handle_held(own_handle(L, "is_held")));
    return 1;
}

/* __gc and __close: silent and idempotent; upvalue 1 is the metatable, as for release. */
static int handle_gc(lua_State *L)
{
    struct lhandle *h = lua_touserdata(L, 1);
    if (h == NULL || wh_rawlen(L, 1) != sizeof *h ||
        h->cookie != lua_topointer(L, lua_upvalueindex(1)))
        h = wh_tohandle(L, 1);
    if (h != NULL)
        wh_handle_release(h);
    return 0;
}

static int handle_tostring(lua_State *L)
{
    struct lhandle *h = check_handle(L, "__tostring");
    lua_settop(L, 1);
    lua_getmetatable(L, 1);
    rawget_key(L, 2, &fields_key);
    lua_getfield(L, 3, "kind");
    lua_getfield(L, 3, "name");
    lua_pushfstring(L, "waithandles.handle(%s '%s', %s%s)", lua_tostring(L, 4), lua_tostring(L, 5),
                    wh_handle_held(h) ? "held" : "released",
                    (h->flags & H_UPGRADED) ? ", upgraded" : "");
    return 1;
}

/* The __index of the fields table of a lock's or a write's handles: `token` from the box there
 * (the handles of one object take one hold at a time: these are not reentrant). */
static char box_key;
static int fields_index(lua_State *L)
{
    const uint64_t *box;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "token") != 0)
        return 0;
    rawget_key(L, 1, &box_key);
    box = lua_touserdata(L, -1);
    if (box != NULL && wh_rawlen(L, -1) == sizeof *box && *box != 0)
        lua_pushinteger(L, (lua_Integer)*box);
    else
        lua_pushnil(L);
    return 1;
}

/* __index of semaphore tickets and upgradeable reads: their fields and methods (upvalue 1, a
 * table), then live state: `token`, and `upgraded` of an upgradeable read. */
static int handle_index(lua_State *L)
{
    struct lhandle *h;
    const char *key;
    lua_settop(L, 2);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1) || lua_type(L, 2) != LUA_TSTRING)
        return 1;
    h = check_handle(L, "__index");
    key = lua_tostring(L, 2);
    if (strcmp(key, "token") == 0 && h->token != 0)
        lua_pushinteger(L, (lua_Integer)h->token);
    else if (strcmp(key, "upgraded") == 0 && h->mode == WH_MODE_UPGRADEABLE)
        lua_pushboolean(L, (h->flags & H_UPGRADED) != 0);
    return 1;
}

static void set_cfield(lua_State *L, int t, const char *k, lua_CFunction f, int upvalue)
{
    lua_pushvalue(L, upvalue);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, t, k);
}

/* Pushes a new handle metatable for an object named `name` with settings s: kind `hkind`. It
 * keeps what an upgrade needs of the object, not the object itself. */
void wh_new_handle_mt(lua_State *L, const struct wh_settings *s, const char *hkind,
                      const char *name, int upgradeable, uint64_t **box)
{
    int mt, fields;
    lua_createtable(L, 0, 10);
    mt = lua_gettop(L);
    lua_createtable(L, 0, 8);
    fields = lua_gettop(L);
    lua_pushstring(L, hkind);
    lua_setfield(L, fields, "kind");
    lua_pushstring(L, name);
    lua_setfield(L, fields, "name");
    set_cfield(L, fields, "release", handle_m_release, mt);
    set_cfield(L, fields, "is_held", handle_m_is_held, mt);
    set_cfield(L, fields, "is_lost", handle_m_is_lost, mt);
    if (upgradeable) {
        /* The upgrade methods: C ones and the facade's async ones. */
        lua_getfield(L, LUA_REGISTRYINDEX, WH_T_UPGRADE "#methods");
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, fields);
        }
        lua_pop(L, 1);
    }
    *box = NULL;
    if (strcmp(hkind, "lock") == 0 || strcmp(hkind, "write") == 0) {
        /* h.token through a function of the fields table, which a method call never reaches:
         * the token sits in a box the acquisitions write to (wh_handle_hold). */
        *box = wh_newudata(L, sizeof **box, 0);
        **box = 0;
        rawset_key(L, fields, &box_key);
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, fields_index);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, fields);
    }
    lua_pushvalue(L, fields);
    if (upgradeable || strcmp(hkind, "semaphore") == 0)
        lua_pushcclosure(L, handle_index, 1);
    lua_setfield(L, mt, "__index");
    lua_pushvalue(L, fields);
    rawset_key(L, mt, &fields_key);
    lua_pop(L, 1); /* fields */
    set_cfield(L, mt, "__gc", handle_gc, mt);
    set_cfield(L, mt, "__close", handle_gc, mt);
    lua_pushcfunction(L, handle_tostring);
    lua_setfield(L, mt, "__tostring");
    wh_set_type_name(L, mt, WH_T_HANDLE);
    lua_pushnumber(L, (lua_Number)s->ac_ns);
    rawset_key(L, mt, &ac_key);
    if (s->sleep != 0) {
        lua_pushvalue(L, s->sleep);
        rawset_key(L, mt, &sleep_key);
    }
}

/* ---- composite handles ---- */

static void *check_composite(lua_State *L, const char *fname)
{
    void *p = wh_testudata(L, 1, WH_T_COMPOSITE);
    if (p == NULL)
        wh_argerror(L, 1, 1, fname, WH_T_HANDLE " expected, got %s", wh_typename(L, 1));
    return p;
}

/* Calls f on each handle of the composite at 1, last first; returns how many gave true. */
static int each_part(lua_State *L, int (*f)(struct lhandle *))
{
    int n, any = 0;
    wh_getuv(L, 1);
    n = (int)wh_rawlen(L, -1);
    for (int i = n; i >= 1; i--) {
        struct lhandle *h;
        lua_rawgeti(L, -1, i);
        h = wh_tohandle(L, -1);
        if (h != NULL)
            any += f(h) != 0;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return any;
}

static int held_of(struct lhandle *h) { return wh_handle_held(h); }

static int composite_is_lost(lua_State *L)
{
    check_composite(L, "is_lost");
    lua_pushboolean(L, each_part(L, handle_lost) > 0);
    return 1;
}

static int composite_release(lua_State *L)
{
    check_composite(L, "release");
    lua_pushboolean(L, each_part(L, wh_handle_release) > 0);
    return 1;
}

static int composite_is_held(lua_State *L)
{
    int n;
    check_composite(L, "is_held");
    wh_getuv(L, 1);
    n = (int)wh_rawlen(L, -1);
    lua_pop(L, 1);
    lua_pushboolean(L, each_part(L, held_of) == n);
    return 1;
}

static int composite_gc(lua_State *L)
{
    if (wh_testudata(L, 1, WH_T_COMPOSITE) != NULL)
        each_part(L, wh_handle_release);
    return 0;
}

static int composite_index(lua_State *L)
{
    const char *key;
    check_composite(L, "__index");
    key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(key, "kind") == 0) {
        lua_pushliteral(L, "composite");
    } else if (strcmp(key, "name") == 0 || strcmp(key, "names") == 0) {
        wh_getuv(L, 1);
        lua_getfield(L, -1, key);
    } else {
        lua_settop(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
    }
    return 1;
}

static int composite_tostring(lua_State *L)
{
    int n, held;
    check_composite(L, "__tostring");
    lua_settop(L, 1);
    wh_getuv(L, 1);
    n = (int)wh_rawlen(L, 2);
    held = each_part(L, held_of) == n;
    lua_getfield(L, 2, "name");
    lua_pushfstring(L, "waithandles.handle(composite '%s', %s)", lua_tostring(L, -1),
                    held ? "held" : "released");
    return 1;
}

/* core.composite(handles, names) -> composite handle of the held handles (an array, in order
 * of acquisition) of the locks `names` (escaped, same order). */
static int l_composite(lua_State *L)
{
    int n, uv, names;
    luaL_Buffer b;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    n = (int)wh_rawlen(L, 1);
    luaL_argcheck(L, n > 0 && (int)wh_rawlen(L, 2) == n, 2, "one name per handle expected");
    wh_newudata(L, 1, 1);
    luaL_getmetatable(L, WH_T_COMPOSITE);
    lua_setmetatable(L, 3);
    lua_createtable(L, n, 2);
    uv = lua_gettop(L);
    lua_createtable(L, n, 0);
    names = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        luaL_argcheck(L, wh_tohandle(L, -1) != NULL, 1, "handles expected");
        lua_rawseti(L, uv, i);
        lua_rawgeti(L, 2, i);
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 2, "names expected");
        lua_rawseti(L, names, i);
    }
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '+');
        lua_rawgeti(L, names, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_setfield(L, uv, "name");
    lua_setfield(L, uv, "names");
    wh_setuv(L, 3);
    return 1;
}

/* core.is_handle(v) -> boolean: a handle or a composite handle */
static int l_is_handle(lua_State *L)
{
    lua_pushboolean(L, wh_tohandle(L, 1) != NULL || wh_testudata(L, 1, WH_T_COMPOSITE) != NULL);
    return 1;
}

static const luaL_Reg composite_meta[] = {
    {"__gc", composite_gc}, {"__close", composite_gc}, {"__tostring", composite_tostring},
    {NULL, NULL}};
static const luaL_Reg composite_methods[] = {
    {"release", composite_release}, {"is_held", composite_is_held},
    {"is_lost", composite_is_lost}, {NULL, NULL}};

void wh_open_handles(lua_State *L)
{
    wh_new_type(L, WH_T_COMPOSITE, composite_meta, composite_methods, composite_index);
    luaL_getmetatable(L, WH_T_COMPOSITE);
    wh_set_type_name(L, lua_gettop(L), WH_T_HANDLE);
    lua_pop(L, 1);
}

const luaL_Reg wh_handle_funcs[] = {{"composite", l_composite}, {"is_handle", l_is_handle}, {NULL, NULL}};
