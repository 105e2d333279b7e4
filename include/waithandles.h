/*
 * waithandles for C hosts that link the library statically (libwaithandles.a, from
 * `make static`). The library is the C core of the Lua module: register it as
 * "waithandles.core", then load the Lua facade (lua/waithandles/init.lua) as "waithandles".
 *
 *     luaL_requiref(L, "waithandles.core", luaopen_waithandles_core, 0);  (5.2+)
 *     lua_pop(L, 1);
 *
 * On Lua 5.1 and LuaJIT put luaopen_waithandles_core into package.preload instead.
 * The archive is built for one Lua version (LUA_VERSION when it was made) and must be
 * linked with that Lua, plus -pthread -ldl. See examples/embed/host.c.
 */
#ifndef WAITHANDLES_H
#define WAITHANDLES_H

#ifdef __cplusplus
extern "C" {
#endif

struct lua_State; /* lua.h's lua_State: this header fits every Lua version */

int luaopen_waithandles_core(struct lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
