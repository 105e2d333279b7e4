/*
 * What lcore.c shares with the rest of the Lua glue of waithandles.core
 * (cli_support.c: the functions behind the command-line tool). Hidden, like
 * everything but luaopen_waithandles_core.
 */
#ifndef WH_LGLUE_H
#define WH_LGLUE_H

#include "compat.h"
#include "wh.h"

#pragma GCC visibility push(hidden)

/* lcore.c */
struct wh_obj *wh_lua_checkobj(lua_State *L, int idx); /* the object table at idx, or raises */
int wh_lua_raise(lua_State *L, const struct wh_err *e, const char *name);
/* Pushes the table of info(): held, waiting, holders (pids from d), rwlock fields for RWLOCK. */
void wh_lua_push_info(lua_State *L, struct wh_dir *d, uint32_t kind, const struct wh_info *in);

/* cli_support.c */
int wh_l_slot_fd(lua_State *L);
int wh_l_inspect(lua_State *L);
int wh_l_list(lua_State *L);

#pragma GCC visibility pop

#endif
