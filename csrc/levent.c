/*
 * waithandles.Event: named manual-reset and auto-reset events (event.c).
 * ev:set(), ev:reset(), ev:is_set(), ev:wait([timeout] [, opts]) -> true or
 * false, ev:wait_async (the facade wraps its start, as for acquisitions),
 * ev:info(). A wait has no mark: it leaves nothing behind when its process
 * dies; it sleeps on the object's futex word in slices of abandonment_check
 * (50 ms at most), to check its cancel option and whether the file is still
 * the one at its path.
 */
#include "lcore.h"
#include "policy.h"

static const struct wh_sig sig_event = {"event", S_NONE, 0, 0, "sE"};
static const struct wh_sig sig_p_event = {"event", S_PROVIDER, 0, 0, "sE"};
static const struct wh_sig sig_set = {"set", S_EVENT, 0, 0, ""};
static const struct wh_sig sig_reset = {"reset", S_EVENT, 0, 0, ""};
static const struct wh_sig sig_is_set = {"is_set", S_EVENT, 0, 0, ""};
static const struct wh_sig sig_info = {"info", S_EVENT, 0, 0, ""};
static const struct wh_sig sig_wait = {"wait", S_EVENT, 0, 1, "wo"};
static const struct wh_sig sig_wait_async = {"wait_async", S_EVENT, 0, 1, "wo"};

/* A constructor: module function (provider in upvalue 1) or provider method. */
static int construct(lua_State *L, const struct wh_sig *sig)
{
    struct wh_args a;
    int name = sig->self == S_PROVIDER ? 2 : 1, provider = 1;
    uint32_t mode = WH_EVENT_MANUAL;
    wh_checkargs(L, sig, 1, 1, &a);
    if (a.opts != 0) {
        lua_getfield(L, a.opts, "auto_reset");
        if (lua_toboolean(L, -1))
            mode = WH_EVENT_AUTO;
        lua_getfield(L, a.opts, "initial");
        if (lua_toboolean(L, -1))
            mode |= WH_EVENT_INITIAL;
        lua_pop(L, 2);
    }
    if (sig->self != S_PROVIDER) {
        lua_pushvalue(L, lua_upvalueindex(1));
        provider = lua_gettop(L);
    }
    return wh_new_object(L, WH_KIND_EVENT, provider, name, mode, a.opts, sig->fname);
}

int wh_l_event(lua_State *L) { return construct(L, &sig_event); }
int wh_l_p_event(lua_State *L) { return construct(L, &sig_p_event); }

/* The event: the object now at its path (set, reset and is_set act on the file that waiters
 * look at, even after a cleaner removed or replaced it). */
static struct lobj *self_event(lua_State *L, const struct wh_sig *sig)
{
    struct wh_args a;
    struct lobj *u;
    wh_checkargs(L, sig, 1, 1, &a);
    u = a.self;
    if (wh_obj_replaced(u->o, 1))
        wh_reopen(L, u);
    return u;
}

/* Sets or resets u's event; again on the file now at the path if the file went meanwhile, so
 * that waiters who moved to the new file see it too. */
static int change(lua_State *L, const struct wh_sig *sig, void (*op)(struct wh_obj *))
{
    struct lobj *u = self_event(L, sig);
    for (int tries = 0; tries < 3; tries++) {
        op(u->o);
        if (!wh_obj_replaced(u->o, 1))
            break;
        wh_reopen(L, u);
    }
    return 0;
}

static int m_set(lua_State *L) { return change(L, &sig_set, wh_event_set); }

static int m_reset(lua_State *L) { return change(L, &sig_reset, wh_event_reset); }

static int m_is_set(lua_State *L)
{
    lua_pushboolean(L, wh_event_is_set(self_event(L, &sig_is_set)->o));
    return 1;
}

static int m_info(lua_State *L)
{
    struct lobj *u = self_event(L, &sig_info);
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, wh_event_is_set(u->o));
    lua_setfield(L, -2, "set");
    lua_pushboolean(L, u->o->v.max_count == WH_EVENT_AUTO);
    lua_setfield(L, -2, "auto_reset");
    for (int i = 0; i < 3; i++) {
        static const char *const fields[] = {"name", "path", "kind"};
        lua_getfield(L, 1, fields[i]);
        lua_setfield(L, -2, fields[i]);
    }
    return 1;
}

/* One look of the wait of w (the event object at W_SUBJECT of its user value uv), following
 * the object to a new file if something removed or replaced it. */
static int look(lua_State *L, struct lwaiter *w, int uv)
{
    if (wh_event_try(w->o, w->ev_gen0))
        return 1;
    if (wh_obj_replaced(w->o, 0)) {
        wh_waiter_follow(L, w, uv);
        w->ev_gen0 = wh_event_gen(w->o);
        return wh_event_try(w->o, w->ev_gen0);
    }
    return 0;
}

int wh_event_block(lua_State *L, struct lwaiter *w)
{
    int uv, cancel;
    lua_settop(L, 1);
    wh_getuv(L, 1);
    uv = lua_gettop(L);
    lua_rawgeti(L, uv, W_CANCEL);
    cancel = lua_isnil(L, -1) ? 0 : lua_gettop(L);
    for (;;) {
        int64_t now = wh_now(), slice = w->ac_ns < WH_BLOCK_SLICE_NS ? w->ac_ns : WH_BLOCK_SLICE_NS;
        int64_t until = w->deadline - now < slice ? w->deadline : now + slice;
        if (look(L, w, uv) || wh_event_wait(w->o, w->ev_gen0, until)) {
            lua_pushboolean(L, 1);
            return 1;
        }
        if (wh_now() >= w->deadline) {
            lua_pushboolean(L, 0);
            return 1;
        }
        wh_check_cancel(L, cancel, w, w->o);
    }
}

/* w:poll() -> true, result | false, nil, delay: the delay grows with the time waited, from the
 * least poll interval to the most (policy.h). */
int wh_event_poll(lua_State *L, struct lwaiter *w)
{
    int64_t now, d;
    lua_settop(L, 1);
    wh_getuv(L, 1);
    lua_rawgeti(L, 2, W_CANCEL);
    wh_check_cancel(L, lua_isnil(L, 3) ? 0 : 3, w, w->o);
    if (look(L, w, 2)) {
        lua_pushboolean(L, 1);
        lua_pushboolean(L, 1);
        return 2;
    }
    now = wh_now();
    if (now >= w->deadline) {
        lua_pushboolean(L, 1);
        lua_pushboolean(L, 0);
        return 2;
    }
    d = (now - w->w.since) / WH_POLL_QUIET_DIV;
    d = d < WH_POLL_MIN_NS ? WH_POLL_MIN_NS : d > WH_POLL_MAX_NS ? WH_POLL_MAX_NS : d;
    lua_pushboolean(L, 0);
    lua_pushnil(L);
    lua_pushnumber(L, (lua_Number)(d < w->deadline - now ? d : w->deadline - now) / 1e9);
    return 3;
}

/* The start of wait and wait_async: the result, or (0 returned) a waiter pushed. */
static int start(lua_State *L, const struct wh_sig *sig, int level, struct lwaiter **wp)
{
    struct wh_args a;
    struct lobj *u;
    struct lwaiter *w;
    uint64_t gen0;

    wh_checkargs(L, sig, 1, level, &a);
    u = a.self;
    wh_check_cancel(L, a.cancel, NULL, u->o);
    if (wh_obj_replaced(u->o, 0))
        wh_reopen(L, u);
    gen0 = wh_event_gen(u->o);
    if (wh_event_try(u->o, gen0)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (a.timeout == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    w = wh_new_waiter(L, sig, 1, 0, u->o, u->ac_ns, &a, wh_now());
    w->mode = WH_MODE_EVENT; /* a wait without a mark (see lcore.h) */
    w->ev_gen0 = gen0;
    *wp = w;
    return 0;
}

static int m_wait(lua_State *L)
{
    struct lwaiter *w;
    int r;
    if (start(L, &sig_wait, 1, &w))
        return 1;
    lua_replace(L, 1); /* the waiter at 1, for wh_event_block */
    r = wh_event_block(L, w);
    wh_close_waiter(w);
    return r;
}

/* The start of wait_async, which the facade wraps: result, or nil, waiter, sleep (or nil). */
static int wait_async_start(lua_State *L)
{
    struct lwaiter *w;
    return start(L, &sig_wait_async, 2, &w) ? 1 : wh_async_wait(L);
}

const luaL_Reg wh_event_methods[] = {{"set", m_set},   {"reset", m_reset}, {"is_set", m_is_set},
                                     {"wait", m_wait}, {"info", m_info},   {NULL, NULL}};
const luaL_Reg wh_event_starts[] = {{"event.wait_async", wait_async_start}, {NULL, NULL}};
