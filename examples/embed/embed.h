/*
 * What a C host does to give a lua_State waithandles, when it links libwaithandles.a:
 * register the C core as "waithandles.core" and the Lua facade as "waithandles". The
 * facade's source is compiled in (facade.h, which make generates from
 * lua/waithandles/init.lua); WAITHANDLES_FACADE=path loads it from a file instead.
 */
#ifndef EMBED_H
#define EMBED_H

#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "facade.h"
#include "waithandles.h"

/* package.preload.waithandles: runs the facade, which requires "waithandles.core". */
static int embed_load_facade(lua_State *L)
{
    const char *path = getenv("WAITHANDLES_FACADE");
    int r = path != NULL && *path != '\0'
                ? luaL_loadfile(L, path)
                : luaL_loadbuffer(L, wh_facade, sizeof wh_facade, "=waithandles/init.lua");
    if (r != 0)
        return lua_error(L);
    lua_call(L, 0, 1);
    return 1;
}

/* After luaL_openlibs: `require "waithandles"` works in L. */
static void embed_open_waithandles(lua_State *L)
{
#if LUA_VERSION_NUM >= 502
    luaL_requiref(L, "waithandles.core", luaopen_waithandles_core, 0);
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
#else /* 5.1 and LuaJIT: no luaL_requiref; the loader goes into package.preload */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_waithandles_core);
    lua_setfield(L, -2, "waithandles.core");
#endif
    lua_pushcfunction(L, embed_load_facade);
    lua_setfield(L, -2, "waithandles");
    lua_pop(L, 2);
}

/* Runs the chunk on top of the stack with a traceback on error; 0 if it succeeded, else
 * prints the error. */
static int embed_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) { /* an error object: waithandles' have __tostring */
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushstring(L, msg);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

static int embed_pcall(lua_State *L, int nargs, const char *who)
{
    int base = lua_gettop(L) - nargs, r;
    lua_pushcfunction(L, embed_traceback);
    lua_insert(L, base);
    r = lua_pcall(L, nargs, 0, base);
    lua_remove(L, base);
    if (r != 0) {
        fprintf(stderr, "%s: %s\n", who, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return r;
}

#endif
