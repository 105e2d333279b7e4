/*
 * The one place that knows Lua versions apart (5.1, LuaJIT, 5.2, 5.3, 5.4).
 * Shims are static and prefixed, so they never clash with the functions
 * LuaJIT itself exports under the 5.2 names. The 5.1 ABI is shared by PUC
 * Lua 5.1 and LuaJIT: one build must load in both, so nothing here may
 * reference a symbol that only one of them exports.
 */
#ifndef WH_COMPAT_H
#define WH_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM == 501
#define wh_rawlen(L, i) lua_objlen((L), (i))

static inline int wh_absindex(lua_State *L, int i)
{
    return (i > 0 || i <= LUA_REGISTRYINDEX) ? i : lua_gettop(L) + i + 1;
}

static inline void wh_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    for (; l->name != NULL; l++) {
        for (int i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}

static inline void *wh_testudata(lua_State *L, int i, const char *tname)
{
    void *p = lua_touserdata(L, i);
    if (p == NULL || !lua_getmetatable(L, i))
        return NULL;
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2))
        p = NULL;
    lua_pop(L, 2);
    return p;
}
#else
#define wh_rawlen(L, i) lua_rawlen((L), (i))
#define wh_absindex(L, i) lua_absindex((L), (i))
#define wh_setfuncs(L, l, n) luaL_setfuncs((L), (l), (n))
#define wh_testudata(L, i, t) luaL_testudata((L), (i), (t))
#endif

#define wh_newlib(L, l) (lua_newtable(L), wh_setfuncs((L), (l), 0))

/*
 * User values: one table per userdata that has one. 5.1 and LuaJIT keep it as
 * the userdata's environment, 5.2 and 5.3 as its user value (5.2 accepts only
 * a table), 5.4 as user value 1.
 */
#if LUA_VERSION_NUM >= 504
#define wh_newudata(L, sz, nuv) lua_newuserdatauv((L), (sz), (nuv))
#define wh_getuv(L, i) ((void)lua_getiuservalue((L), (i), 1))
#define wh_setuv(L, i) ((void)lua_setiuservalue((L), (i), 1))
#elif LUA_VERSION_NUM >= 502
#define wh_newudata(L, sz, nuv) ((void)(nuv), lua_newuserdata((L), (sz)))
#define wh_getuv(L, i) ((void)lua_getuservalue((L), (i)))
#define wh_setuv(L, i) lua_setuservalue((L), (i))
#else
#define wh_newudata(L, sz, nuv) ((void)(nuv), lua_newuserdata((L), (sz)))
#define wh_getuv(L, i) lua_getfenv((L), (i))
#define wh_setuv(L, i) ((void)lua_setfenv((L), (i)))
#endif

#endif
