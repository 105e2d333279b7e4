/*
 * waithandles.libpq: the few steps of libpq's non-blocking API that the
 * postgres backend (lua/waithandles/pg.lua) needs, and nothing else: start
 * and poll a connection, send a query, read what arrived, wait on the socket
 * with a timeout, cancel the statement in progress. The Lua layer owns every
 * loop and every policy (cqueues' split); these functions never wait unless
 * asked to (wait, and send's flush of a few bytes).
 *
 * A connection inherited through fork() belongs to the parent: closing it in
 * the child must not send the server the Terminate message that ends the
 * parent's session, so the child's copy is detached from the socket first.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "../compat.h"

#define T_CONN "waithandles.libpq.Conn"

/* Notices and warnings (pg_advisory_unlock of a key not held says one) are not ours to print. */
static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

struct conn {
    PGconn *pg;   /* NULL once closed */
    pid_t owner;  /* the process that connected */
};

static struct conn *check_conn(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, T_CONN);
    if (c->pg == NULL)
        luaL_argerror(L, 1, "connection closed");
    return c;
}

/* Pushes false and libpq's message (without its trailing newline); returns 2. */
static int fail(lua_State *L, PGconn *pg)
{
    const char *m = pg != NULL ? PQerrorMessage(pg) : "out of memory";
    size_t n = strlen(m);
    while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
        n--;
    lua_pushboolean(L, 0);
    lua_pushlstring(L, m, n);
    return 2;
}

/* Frees the connection. In a process other than the one that connected, the socket is first
 * pointed at /dev/null, so PQfinish's goodbye goes nowhere and the parent's session lives on. */
static void conn_close(struct conn *c)
{
    PGconn *pg = c->pg;
    if (pg == NULL)
        return;
    c->pg = NULL;
    if (getpid() != c->owner) {
        int fd = PQsocket(pg), null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd >= 0 && null >= 0)
            dup2(null, fd);
        if (null >= 0)
            close(null);
    }
    PQfinish(pg);
}

/* libpq.connect(conninfo) -> conn, or false, message. Starts connecting without waiting:
 * drive it with conn:connect_poll() and conn:wait(). */
static int l_connect(lua_State *L)
{
    const char *info = luaL_checkstring(L, 1);
    struct conn *c = wh_newudata(L, sizeof *c, 0);
    c->pg = NULL;
    c->owner = getpid();
    luaL_getmetatable(L, T_CONN);
    lua_setmetatable(L, -2);
    c->pg = PQconnectStart(info);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        int r = fail(L, c->pg);
        conn_close(c);
        return r;
    }
    PQsetNoticeProcessor(c->pg, quiet, NULL);
    if (PQsetnonblocking(c->pg, 1) != 0) {
        int r = fail(L, c->pg);
        conn_close(c);
        return r;
    }
    return 1;
}

/* conn:connect_poll() -> "ok" | "read" | "write" (wait for that, then poll again) |
 * false, message */
static int l_connect_poll(lua_State *L)
{
    struct conn *c = check_conn(L);
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_OK:
        lua_pushliteral(L, "ok");
        return 1;
    case PGRES_POLLING_READING:
        lua_pushliteral(L, "read");
        return 1;
    case PGRES_POLLING_WRITING:
        lua_pushliteral(L, "write");
        return 1;
    default:
        return fail(L, c->pg);
    }
}

/* poll() on fd for events, up to ms (-1: forever); 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {fd, events, 0};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r;
}

/* conn:wait(read, write, seconds) -> true once the socket is ready for what was asked (or
 * has an error or end of file to report), false after `seconds` (nil: forever). */
static int l_wait(lua_State *L)
{
    struct conn *c = check_conn(L);
    short ev = (short)((lua_toboolean(L, 2) ? POLLIN : 0) | (lua_toboolean(L, 3) ? POLLOUT : 0));
    int ms = -1, r;
    if (!lua_isnoneornil(L, 4)) {
        lua_Number s = luaL_checknumber(L, 4);
        ms = s <= 0 ? 0 : s >= 2147483.0 ? 2147483000 : (int)(s * 1000.0 + 0.999);
    }
    r = wait_fd(PQsocket(c->pg), ev, ms);
    lua_pushboolean(L, r != 0); /* an error of poll() itself: let the next libpq call say */
    return 1;
}

/* conn:send(sql) -> true | false, message. The simple query protocol: several statements
 * separated by ';' give several results. Waits only to flush the query's few bytes. */
static int l_send(lua_State *L)
{
    struct conn *c = check_conn(L);
    const char *sql = luaL_checkstring(L, 2);
    int r;
    if (!PQsendQuery(c->pg, sql))
        return fail(L, c->pg);
    while ((r = PQflush(c->pg)) == 1)
        wait_fd(PQsocket(c->pg), POLLOUT | POLLIN, 1000);
    if (r < 0)
        return fail(L, c->pg);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:consume() -> true | false, message: reads what the server sent, without waiting. */
static int l_consume(lua_State *L)
{
    struct conn *c = check_conn(L);
    if (!PQconsumeInput(c->pg))
        return fail(L, c->pg);
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:busy() -> true while a result is still to come (conn:result() would wait). */
static int l_busy(lua_State *L)
{
    lua_pushboolean(L, PQisBusy(check_conn(L)->pg));
    return 1;
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (v != NULL) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

/* conn:result() -> the next result of the query, or nil when there is none: { ok = bool,
 * sqlstate =, message =, [row][col] = string or false for NULL }. Call it only while not
 * busy(). */
static int l_result(lua_State *L)
{
    struct conn *c = check_conn(L);
    PGresult *r = PQgetResult(c->pg);
    ExecStatusType st;
    int rows, cols;
    if (r == NULL)
        return 0;
    st = PQresultStatus(r);
    rows = PQntuples(r);
    cols = PQnfields(r);
    lua_createtable(L, rows, 3);
    lua_pushboolean(L, st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY);
    lua_setfield(L, -2, "ok");
    set_str(L, "sqlstate", PQresultErrorField(r, PG_DIAG_SQLSTATE));
    set_str(L, "message", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
    for (int i = 0; i < rows; i++) {
        lua_createtable(L, cols, 0);
        for (int j = 0; j < cols; j++) {
            if (PQgetisnull(r, i, j))
                lua_pushboolean(L, 0);
            else
                lua_pushlstring(L, PQgetvalue(r, i, j), (size_t)PQgetlength(r, i, j));
            lua_rawseti(L, -2, j + 1);
        }
        lua_rawseti(L, -2, i + 1);
    }
    PQclear(r);
    return 1;
}

/* conn:cancel() -> true | false, message: asks the server to cancel the statement in
 * progress (a short blocking exchange on a connection of its own, as PQcancel does). */
static int l_cancel(lua_State *L)
{
    struct conn *c = check_conn(L);
    char buf[256];
    PGcancel *k = PQgetCancel(c->pg);
    int ok;
    if (k == NULL)
        return fail(L, c->pg);
    ok = PQcancel(k, buf, sizeof buf);
    PQfreeCancel(k);
    if (!ok) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, buf);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:alive() -> whether the session still stands, looked at now without waiting: an end of
 * file or an error on the socket (the server ended the session) says no. */
static int l_alive(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, T_CONN);
    int ok = c->pg != NULL && getpid() == c->owner && PQstatus(c->pg) == CONNECTION_OK;
    /* The server's last message and its end of file may take two reads to see. */
    for (int i = 0; ok && i < 4 && wait_fd(PQsocket(c->pg), POLLIN, 0) > 0; i++)
        ok = PQconsumeInput(c->pg) && PQstatus(c->pg) == CONNECTION_OK;
    lua_pushboolean(L, ok);
    return 1;
}

static int l_pid(lua_State *L)
{
    lua_pushinteger(L, PQbackendPID(check_conn(L)->pg));
    return 1;
}

static int l_error(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, T_CONN);
    if (c->pg == NULL) {
        lua_pushliteral(L, "connection closed");
        return 1;
    }
    lua_settop(L, 1);
    fail(L, c->pg);
    return 1;
}

/* conn:close(); also __gc. Idempotent. */
static int l_close(lua_State *L)
{
    conn_close(luaL_checkudata(L, 1, T_CONN));
    return 0;
}

/* libpq.sleep(seconds): for waits with nothing to wait on. */
static int l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    if (s > 0)
        poll(NULL, 0, s >= 2147483.0 ? 2147483000 : (int)(s * 1000.0 + 0.999));
    return 0;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

__attribute__((visibility("default"))) int luaopen_waithandles_libpq(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"connect_poll", l_connect_poll}, {"wait", l_wait},     {"send", l_send},
        {"consume", l_consume},           {"busy", l_busy},     {"result", l_result},
        {"cancel", l_cancel},             {"alive", l_alive},   {"pid", l_pid},
        {"error", l_error},               {"close", l_close},   {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"connect", l_connect}, {"getpid", l_getpid},
                                    {"sleep", l_sleep},     {NULL, NULL}};
    luaL_newmetatable(L, T_CONN);
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    wh_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, T_CONN);
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, T_CONN);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    wh_newlib(L, funcs);
    lua_pushinteger(L, PQlibVersion());
    lua_setfield(L, -2, "version");
    return 1;
}
