/*
 * Holds that end with their OpenResty request. In nginx with the lua module
 * the facade installs a hook (core.set_acquire_hook) that runs after every
 * acquisition of an object whose scope is "request" (the default); in the
 * phases that have a request it calls core.ngx_bind(h), which registers an
 * nginx request cleanup releasing h when the request is freed: normally, on
 * an error, ngx.exit, ngx.exec or a client abort alike, without help from
 * Lua. The request is the one ngx_lua keeps in the running coroutine's
 * exdata; the functions come from the nginx process itself (dlsym), so
 * nothing of this exists, nor costs anything, outside nginx.
 *
 * The cleanup record lives in the request's pool, which nginx frees when the
 * request ends; its data is a small binding of our own (malloc) that both
 * the record and the handle refer to: releasing or collecting the handle
 * first empties the binding, the cleanup running first releases the handle
 * and empties it too, and whichever lets go of it last frees it. A cleanup
 * that nginx never runs (one added after the request's cleanups ran: its
 * log phase) therefore costs the binding's few bytes, never a write into a
 * freed pool; the facade does not bind in the log phase. nginx runs all of
 * it in the worker's one thread.
 */
#include <dlfcn.h>
#include <stdlib.h>

#include "lcore.h"

struct ngx_cleanup { /* ngx_http_cleanup_t */
    void (*handler)(void *data);
    void *data;
    struct ngx_cleanup *next;
};

static void *(*get_exdata)(lua_State *L);
static struct ngx_cleanup *(*cleanup_add)(void *r, size_t size);
static int resolved;
int wh_any_hook; /* some lua_State of the process has one: only then look it up */
#define HOOK_KEY "waithandles.acquire_hook"

struct binding {
    struct lhandle *h; /* NULL once released, collected or ended */
    int refs;          /* the cleanup record and the handle: 2, 1, then freed */
};

static void unref(struct binding *b)
{
    if (--b->refs == 0)
        free(b);
}

static void on_request_end(void *data)
{
    struct binding *b = data;
    struct lhandle *h = b->h;
    if (h != NULL) {
        b->h = NULL;
        h->ngx_bind = NULL;
        unref(b);
        wh_handle_release(h);
    }
    unref(b);
}

void wh_ngx_disarm(struct lhandle *h)
{
    struct binding *b = h->ngx_bind;
    if (b != NULL) {
        b->h = NULL;
        h->ngx_bind = NULL;
        unref(b);
    }
}

/* core.ngx_bind(h) -> true if h is released when the running coroutine's request ends */
static int l_ngx_bind(lua_State *L)
{
    struct lhandle *h = wh_tohandle(L, 1);
    void *r;
    struct ngx_cleanup *c;
    struct binding *b;
    if (h == NULL)
        return wh_argerror(L, 1, 1, "ngx_bind", WH_T_HANDLE " expected, got %s",
                           wh_typename(L, 1));
    if (!resolved) {
        *(void **)&get_exdata = dlsym(RTLD_DEFAULT, "lua_getexdata");
        *(void **)&cleanup_add = dlsym(RTLD_DEFAULT, "ngx_http_cleanup_add");
        resolved = 1;
    }
    r = get_exdata != NULL && cleanup_add != NULL ? get_exdata(L) : NULL;
    if (r == NULL || !wh_handle_held(h) || h->ngx_bind != NULL ||
        (b = malloc(sizeof *b)) == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if ((c = cleanup_add(r, 0)) == NULL) {
        free(b);
        lua_pushboolean(L, 0);
        return 1;
    }
    b->h = h;
    b->refs = 2;
    c->handler = on_request_end;
    c->data = b;
    h->ngx_bind = b;
    lua_pushboolean(L, 1);
    return 1;
}

/* core.set_acquire_hook(fn): fn(h) runs after each acquisition of a request-scoped object
 * (nil: none). */
static int l_set_acquire_hook(lua_State *L)
{
    if (!lua_isnil(L, 1))
        luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, HOOK_KEY);
    wh_any_hook = 1;
    return 0;
}

void wh_acquired(lua_State *L, int scope_worker)
{
    if (!wh_any_hook || scope_worker)
        return;
    lua_getfield(L, LUA_REGISTRYINDEX, HOOK_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 0, 0) != 0)
        lua_pop(L, 1); /* then the hold lasts until released or collected, as elsewhere */
}

const luaL_Reg wh_ngx_funcs[] = {{"ngx_bind", l_ngx_bind},
                                 {"set_acquire_hook", l_set_acquire_hook},
                                 {NULL, NULL}};
