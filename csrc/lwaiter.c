/*
 * Waits in progress (waithandles.Waiter). A call that cannot acquire at once
 * (lacquire.c) gets a waiter: a userdata holding its mark in the object's
 * wait table, withdrawn on every way out and by its __gc if all else fails.
 * It either blocks in C (acquire, try_acquire with a timeout, upgrade) or is
 * polled by the facade between calls to its sleep function (the *_async
 * forms); either way it honours the cancel option, follows its object to the
 * file now at its path, and ends with what the call returns. An event's wait
 * is a waiter without a mark (levent.c).
 */
#include <math.h>
#include <string.h>

#include "lcore.h"
#include "policy.h"

static const char *what_of(const struct wh_obj *o)
{
    return wh_kind_name(o->v.kind);
}

/* ---- cancellation ---- */

static void withdraw(struct lwaiter *w)
{
    if (w != NULL && w->o != NULL)
        wh_withdraw(w->o, &w->w);
}

/* Raises "cancelled" (after withdrawing w) if the cancel option at idx says so; an error of a
 * cancel function propagates unchanged, also after withdrawing. */
void wh_check_cancel(lua_State *L, int idx, struct lwaiter *w, const struct wh_obj *o)
{
    int yes;
    if (idx == 0)
        return;
    if (lua_isfunction(L, idx)) {
        lua_pushvalue(L, idx);
        if (lua_pcall(L, 0, 1, 0) != 0) {
            withdraw(w);
            lua_error(L);
        }
        yes = lua_toboolean(L, -1);
        lua_pop(L, 1);
    } else {
        int *flag = wh_testudata(L, idx, WH_T_TOKEN);
        yes = flag != NULL && *flag;
    }
    if (yes) {
        withdraw(w);
        wh_raise_code(L, WH_ECANCELLED, o->name, "waiting for %s '%s' was cancelled", what_of(o),
                      o->name);
    }
}

/* ---- results ---- */

int wh_not_acquired(lua_State *L, int is_try, int upgrade, double t, const struct wh_obj *o)
{
    if (!is_try)
        return wh_raise_code(L, WH_ETIMEOUT, o->name, "timed out after %g s waiting for %s%s '%s' in %s",
                             t, upgrade ? "the upgrade of " : "", what_of(o), o->name,
                             wh_dir_path(o->dir));
    if (upgrade)
        lua_pushboolean(L, 0);
    else
        lua_pushnil(L);
    return 1;
}

struct lhandle *wh_check_upgrade(lua_State *L, int idx, struct lwaiter *w)
{
    struct lhandle *h = wh_tohandle(L, idx);
    if (h == NULL || !wh_handle_held(h)) {
        const char *name;
        withdraw(w);
        wh_push_handle_field(L, idx, "name");
        name = lua_isstring(L, -1) ? lua_tostring(L, -1) : "?";
        return wh_raise_code(L, WH_ERELEASED, name,
                             "the handle of rwlock '%s' was released; it cannot be upgraded",
                             name),
               NULL;
    }
    if (h->flags & H_UPGRADED)
        return wh_raise_code(L, WH_EINVALID_STATE, h->o->name,
                             "rwlock '%s' was already upgraded; a handle upgrades once",
                             h->o->name),
               NULL;
    return h;
}

/* ---- waiters ---- */

void wh_waiter_follow(lua_State *L, struct lwaiter *w, int uv)
{
    struct lobj *u;
    lua_rawgeti(L, uv, W_SUBJECT);
    u = lua_touserdata(L, -1);
    lua_pop(L, 1);
    wh_reopen(L, u);
    wh_obj_ref(u->o);
    wh_obj_unref(w->o);
    w->o = u->o;
}

static struct lwaiter *to_waiter(lua_State *L, int idx)
{
    struct lwaiter *w = luaL_checkudata(L, idx, WH_T_WAITER);
    if (w->o == NULL)
        luaL_argerror(L, idx, "waiter already closed");
    return w;
}

void wh_close_waiter(struct lwaiter *w)
{
    struct wh_obj *o = w->o;
    if (o != NULL) {
        wh_withdraw(o, &w->w);
        w->o = NULL;
        wh_obj_unref(o);
    }
}

static int waiter_gc(lua_State *L)
{
    wh_close_waiter(luaL_checkudata(L, 1, WH_T_WAITER));
    return 0;
}

struct lwaiter *wh_new_waiter(lua_State *L, const struct wh_sig *sig, int subject, int handle,
                                  struct wh_obj *o, int64_t ac_ns, const struct wh_args *a,
                                  int64_t since)
{
    struct lwaiter *w = wh_newudata(L, sizeof *w, 1);
    memset(w, 0, sizeof *w);
    wh_waiter_init(&w->w, sig->mode, 0, since);
    w->ac_ns = ac_ns;
    w->t = a->timeout;
    w->deadline = a->timeout == HUGE_VAL ? WH_FOREVER
                                         : since + (int64_t)(a->timeout * 1e9);
    w->w.interval = WH_POLL_MIN_NS;
    w->mode = sig->mode;
    w->is_try = sig->is_try;
    luaL_getmetatable(L, WH_T_WAITER);
    lua_setmetatable(L, -2);
    lua_createtable(L, 4, 0);
    lua_pushvalue(L, subject);
    lua_rawseti(L, -2, W_SUBJECT);
    if (handle != 0) {
        lua_pushvalue(L, handle);
        lua_rawseti(L, -2, W_HANDLE);
    }
    if (a->cancel != 0) {
        lua_pushvalue(L, a->cancel);
        lua_rawseti(L, -2, W_CANCEL);
    }
    if (a->sleep != 0) {
        lua_pushvalue(L, a->sleep);
        lua_rawseti(L, -2, W_SLEEP);
    } else if (sig->self != S_UPGRADEABLE) {
        wh_getuv(L, subject); /* the object's sleep option */
        lua_rawgeti(L, -1, UV_SLEEP);
        lua_remove(L, -2);
        lua_rawseti(L, -2, W_SLEEP);
    } else {
        wh_push_handle_sleep(L, subject);
        lua_rawseti(L, -2, W_SLEEP);
    }
    wh_setuv(L, -2);
    wh_obj_ref(o);
    w->o = o;
    return w;
}

/*
 * One attempt of waiter w (at widx); its user value is pushed at uv. Returns 1 with the
 * result pushed, 0 if busy; raises on errors (after withdrawing).
 */
static int waiter_attempt(lua_State *L, struct lwaiter *w, int uv, int64_t guard_deadline,
                          int block)
{
    struct wh_err e;
    uint64_t held = 0, token = 0;
    int r;
    struct lhandle *h = NULL;
    if (w->mode == WH_MODE_UPGRADE) {
        lua_rawgeti(L, uv, W_SUBJECT);
        h = wh_check_upgrade(L, lua_gettop(L), w);
        lua_pop(L, 1);
    }
    if (block)
        r = wh_wait_t(w->o, w->mode, w->ac_ns, &w->w, guard_deadline, &held, &token, &e);
    else
        r = wh_attempt_t(w->o, w->mode, w->ac_ns, &w->w, 0, &held, &token, &e);
    if (r < 0 && e.code == WH_EREPLACED && h == NULL) {
        /* Wait on the file now at the path, with a new mark there. */
        withdraw(w);
        wh_waiter_follow(L, w, uv);
        w->w.idx = -1;
        return 0;
    }
    if (r < 0) {
        withdraw(w);
        wh_raise(L, &e, w->o->name);
    }
    if (r == 0)
        return 0;
    if (h != NULL) {
        h->flags |= H_UPGRADED;
        h->token = token;
        lua_pushboolean(L, 1);
    } else {
        struct lobj *u;
        lua_rawgeti(L, uv, W_SUBJECT);
        u = lua_touserdata(L, -1);
        lua_rawgeti(L, uv, W_HANDLE);
        wh_handle_hold(lua_touserdata(L, -1), w->o, held, token, u->token_box[w->mode]);
        lua_remove(L, -2);
        wh_acquired(L, w->scope_worker);
    }
    return 1;
}

int wh_block(lua_State *L, struct lwaiter *w, int uv)
{
    int cancel;
    lua_rawgeti(L, uv, W_CANCEL);
    cancel = lua_isnil(L, -1) ? 0 : lua_gettop(L);
    w->w.mode |= WH_WAIT_FUTEX;
    for (;;) {
        int64_t until = w->deadline, now;
        /* Cancellation is checked at least once per abandonment_check. */
        if (cancel != 0 && until - wh_now() > w->ac_ns)
            until = wh_now() + w->ac_ns;
        if (waiter_attempt(L, w, uv, until, 1))
            return 1;
        now = wh_now();
        if (now >= w->deadline) {
            withdraw(w);
            return wh_not_acquired(L, w->is_try, w->mode == WH_MODE_UPGRADE, w->t, w->o);
        }
        wh_check_cancel(L, cancel, w, w->o);
    }
}

int wh_async_wait(lua_State *L)
{
    lua_pushnil(L);
    lua_insert(L, -2);
    wh_getuv(L, -1);
    lua_rawgeti(L, -1, W_SLEEP);
    lua_remove(L, -2);
    return 3;
}

static int waiter_block(lua_State *L)
{
    struct lwaiter *w = to_waiter(L, 1);
    if (w->mode == WH_MODE_EVENT)
        return wh_event_block(L, w);
    lua_settop(L, 1);
    wh_getuv(L, 1);
    return wh_block(L, w, 2);
}

/* w:poll() -> true, result (acquired, or not in time) | false, nil, delay in seconds */
static int waiter_poll(lua_State *L)
{
    struct lwaiter *w = to_waiter(L, 1);
    if (w->mode == WH_MODE_EVENT)
        return wh_event_poll(L, w);
    int64_t now, left;
    lua_settop(L, 1);
    wh_getuv(L, 1);
    lua_rawgeti(L, 2, W_CANCEL);
    wh_check_cancel(L, lua_isnil(L, 3) ? 0 : 3, w, w->o);
    lua_settop(L, 2);
    /* Skip the full attempt while nothing changed (a read of seq). */
    if (w->w.idx < 0 || wh_changed(w->o, &w->w, w->ac_ns) || w->mode == WH_MODE_UPGRADE) {
        if (waiter_attempt(L, w, 2, 0, 0)) {
            lua_pushboolean(L, 1);
            lua_insert(L, -2);
            return 2;
        }
    }
    now = wh_now();
    left = w->deadline - now;
    if (left <= 0) {
        withdraw(w);
        lua_pushboolean(L, 1);
        wh_not_acquired(L, w->is_try, w->mode == WH_MODE_UPGRADE, w->t, w->o);
        return 2;
    }
    /* The next delay (policy.h), growing at most about twofold per poll, so the lease the
     * latest attempt gave the mark covers it. */
    {
        int64_t d = wh_poll_delay(&w->w, now), most = 2 * w->w.interval + WH_LEASE_SLACK_NS / 2;
        w->w.interval = d < most ? d : most;
    }
    lua_pushboolean(L, 0);
    lua_pushnil(L);
    lua_pushnumber(L, (lua_Number)(w->w.interval < left ? w->w.interval : left) / 1e9);
    return 3;
}

static int waiter_withdraw(lua_State *L)
{
    withdraw(to_waiter(L, 1));
    return 0;
}

void wh_open_waiters(lua_State *L)
{
    static const luaL_Reg waiter_meta[] = {{"__gc", waiter_gc}, {NULL, NULL}};
    static const luaL_Reg waiter_methods[] = {{"poll", waiter_poll},
                                              {"block", waiter_block},
                                              {"withdraw", waiter_withdraw},
                                              {NULL, NULL}};
    luaL_newmetatable(L, WH_T_WAITER);
    wh_setfuncs(L, waiter_meta, 0);
    wh_newlib(L, waiter_methods);
    lua_setfield(L, -2, "__index");
    wh_set_type_name(L, lua_gettop(L), WH_T_WAITER);
    lua_pop(L, 1);
}
