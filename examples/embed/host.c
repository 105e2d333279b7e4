/*
 * A small C host that links waithandles statically (make embed; README.md, "Embedding in a
 * C host").
 *
 *     host SCRIPT...
 *
 * Runs each Lua script in a lua_State of its own, one after the other, as an engine that
 * reloads its scripts does: it creates the state, gives it the standard libraries and
 * waithandles (embed.h), runs the script and closes the state. lua_close runs the
 * finalisers of every handle and object the script left: a hold it did not release ends
 * there, before the next script starts, and a lock file is unmapped once no handle or
 * object uses it. Exits 0 if every script succeeded, else 1 (after running the others).
 */
#include "embed.h"

int main(int argc, char **argv)
{
    int failed = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        lua_State *L = luaL_newstate();
        if (L == NULL) {
            fprintf(stderr, "%s: cannot create a Lua state\n", argv[0]);
            return 1;
        }
        luaL_openlibs(L);
        embed_open_waithandles(L);
        lua_newtable(L); /* arg, as the lua interpreter sets it: arg[0] = the script */
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, 0);
        lua_setglobal(L, "arg");
        if (luaL_loadfile(L, argv[i]) != 0) {
            fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
            failed = 1;
        } else if (embed_pcall(L, 0, argv[i]) != 0) {
            failed = 1;
        }
        lua_close(L); /* finalises what the script left: a held handle is released here */
    }
    return failed;
}
