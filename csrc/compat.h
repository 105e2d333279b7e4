/*
 * The one place that knows Lua versions apart (5.1, LuaJIT, 5.2, 5.3, 5.4).
 * Shims are static and prefixed, so they never clash with the functions
 * LuaJIT itself exports under the 5.2 names.
 */
#ifndef WH_COMPAT_H
#define WH_COMPAT_H

#include <lauxlib.h>
#include <lua.h>
#if defined(__has_include)
#if __has_include(<luajit.h>)
#include <luajit.h> /* only on LuaJIT's include path */
#endif
#endif

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

/* lua_isyieldable: Lua 5.3+ and LuaJIT 2.1; 5.1 and 5.2 are judged from Lua (init.lua). */
#if LUA_VERSION_NUM >= 503 || defined(LUAJIT_VERSION_NUM)
#define WH_HAVE_ISYIELDABLE 1
#else
#define WH_HAVE_ISYIELDABLE 0
#endif

#endif
