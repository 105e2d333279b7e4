/*
 * The benchmark floor of DESIGN.md: a C call that returns a new userdata
 * with __gc, plus a method call on it. Nothing can be cheaper from Lua and
 * still hand out a handle that releases itself.
 */
#include "compat.h"

static int floor_gc(lua_State *L)
{
    int *p = lua_touserdata(L, 1);
    *p = 0;
    return 0;
}

static int floor_method(lua_State *L)
{
    int *p = lua_touserdata(L, 1);
    lua_pushboolean(L, p != NULL && *p != 0);
    *p = 0;
    return 1;
}

static int floor_new(lua_State *L)
{
    int *p = lua_newuserdata(L, sizeof *p);
    *p = 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);
    return 1;
}

__attribute__((visibility("default"))) int luaopen_whfloor(lua_State *L)
{
    lua_newtable(L); /* metatable */
    lua_pushcfunction(L, floor_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    lua_pushcfunction(L, floor_method);
    lua_setfield(L, -2, "release");
    lua_setfield(L, -2, "__index");
    lua_newtable(L); /* module */
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, floor_new, 1);
    lua_setfield(L, -2, "new");
    return 1;
}
