/*
 * whtorture: the torture's own tools, independent of the library (test-only,
 * never installed). A witness memory of 64-bit words shared by the
 * supervisor and every worker (plain atomics, no guard, nothing of the
 * library's), a waitpid that also reports stopped children, and a reading of
 * an object's guard word and of a registry slot with pread (for the chaos:
 * "which process owns this guard now?").
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat.h"

#define T_WITNESS "whtorture.Witness"

struct witness {
    _Atomic int64_t *w;
    size_t n;
};

static _Atomic int64_t *word(lua_State *L, struct witness *m, int idx)
{
    lua_Integer i = luaL_checkinteger(L, idx);
    luaL_argcheck(L, i >= 0 && (size_t)i < m->n, idx, "index out of range");
    return &m->w[i];
}

static struct witness *check_witness(lua_State *L)
{
    return luaL_checkudata(L, 1, T_WITNESS);
}

/* map(path, nwords [, create]) -> witness: the file, made nwords words long (zeroed) if
 * `create`, mapped shared. */
static int l_map(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    int create = lua_toboolean(L, 3);
    size_t bytes = (size_t)n * sizeof(int64_t);
    struct witness *m;
    void *p;
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0600);
    if (fd < 0)
        return luaL_error(L, "whtorture.map: %s: %s", path, strerror(errno));
    if (create && ftruncate(fd, (off_t)bytes) != 0) {
        close(fd);
        return luaL_error(L, "whtorture.map: ftruncate: %s", strerror(errno));
    }
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return luaL_error(L, "whtorture.map: mmap: %s", strerror(errno));
    m = lua_newuserdata(L, sizeof *m);
    m->w = p;
    m->n = (size_t)n;
    luaL_getmetatable(L, T_WITNESS);
    lua_setmetatable(L, -2);
    return 1;
}

static int w_get(lua_State *L)
{
    struct witness *m = check_witness(L);
    lua_pushinteger(L, (lua_Integer)atomic_load(word(L, m, 2)));
    return 1;
}

static int w_set(lua_State *L)
{
    struct witness *m = check_witness(L);
    atomic_store(word(L, m, 2), (int64_t)luaL_checkinteger(L, 3));
    return 0;
}

/* add(i, d) -> the new value */
static int w_add(lua_State *L)
{
    struct witness *m = check_witness(L);
    int64_t d = (int64_t)luaL_optinteger(L, 3, 1);
    lua_pushinteger(L, (lua_Integer)(atomic_fetch_add(word(L, m, 2), d) + d));
    return 1;
}

/* max(i, v): the word becomes max(word, v) */
static int w_max(lua_State *L)
{
    struct witness *m = check_witness(L);
    _Atomic int64_t *p = word(L, m, 2);
    int64_t v = (int64_t)luaL_checkinteger(L, 3), cur = atomic_load(p);
    while (cur < v && !atomic_compare_exchange_weak(p, &cur, v))
        ;
    return 0;
}

/* scan(first, count, skip) -> { i1, v1, i2, v2, ... }: the non-zero words of [first,
 * first+count) but word `skip`. Sequentially consistent loads: a holder stores its own word
 * and then scans, so of two holders that overlap in time at least one sees the other. */
static int w_scan(lua_State *L)
{
    struct witness *m = check_witness(L);
    lua_Integer first = luaL_checkinteger(L, 2), count = luaL_checkinteger(L, 3);
    lua_Integer skip = luaL_optinteger(L, 4, -1);
    int k = 0;
    luaL_argcheck(L, first >= 0 && count >= 0 && (size_t)(first + count) <= m->n, 2, "range");
    lua_newtable(L);
    for (lua_Integer i = first; i < first + count; i++) {
        int64_t v;
        if (i == skip)
            continue;
        v = atomic_load(&m->w[i]);
        if (v == 0)
            continue;
        lua_pushinteger(L, i);
        lua_rawseti(L, -2, ++k);
        lua_pushinteger(L, (lua_Integer)v);
        lua_rawseti(L, -2, ++k);
    }
    return 1;
}

/* waitpid(pid) -> nil (still running), or {code=} / {signal=} / {stopped=signal}; never
 * blocks. */
static int l_waitpid(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int status;
    pid_t r;
    do
        r = waitpid(pid, &status, WNOHANG | WUNTRACED);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return luaL_error(L, "whtorture.waitpid(%d): %s", (int)pid, strerror(errno));
    if (r == 0)
        return 0;
    lua_createtable(L, 0, 1);
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_setfield(L, -2, "code");
    } else if (WIFSIGNALED(status)) {
        lua_pushinteger(L, WTERMSIG(status));
        lua_setfield(L, -2, "signal");
    } else if (WIFSTOPPED(status)) {
        lua_pushinteger(L, WSTOPSIG(status));
        lua_setfield(L, -2, "stopped");
    }
    return 1;
}

static int read_at(const char *path, off_t off, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    ssize_t got;
    if (fd < 0)
        return -1;
    got = pread(fd, buf, len, off);
    close(fd);
    return got == (ssize_t)len ? 0 : -1;
}

/* guard(path) -> slot, generation of the identity that owns the object file's guard (doc/FORMAT.md:
 * guard word at offset 64), or nil if it is free or the file is unreadable. */
static int l_guard(lua_State *L)
{
    uint64_t g;
    if (read_at(luaL_checkstring(L, 1), 64, &g, sizeof g) != 0)
        return 0;
    g &= ~(UINT64_C(1) << 63);
    if (g == 0)
        return 0;
    lua_pushinteger(L, (lua_Integer)(g & 0xffff) - 1);
    lua_pushinteger(L, (lua_Integer)((g >> 16) & ((UINT64_C(1) << 47) - 1)));
    return 2;
}

/* registry_pid(dir, slot, gen) -> the pid recorded in the registry slot if its generation is
 * gen, else nil (FORMAT.md: shard file .registry-NN, slot i at 64 + 64 i: gen, then pid). */
static int l_registry_pid(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    lua_Integer slot = luaL_checkinteger(L, 2);
    uint64_t gen = (uint64_t)luaL_checkinteger(L, 3);
    char path[4096];
    unsigned char buf[12];
    uint64_t g;
    uint32_t pid;
    if (slot < 0 || slot >= 1024)
        return 0;
    snprintf(path, sizeof path, "%s/.registry-%02d", dir, (int)(slot / 64));
    if (read_at(path, 64 + 64 * (slot % 64), buf, sizeof buf) != 0)
        return 0;
    memcpy(&g, buf, 8);
    memcpy(&pid, buf + 8, 4);
    if (g != gen)
        return 0;
    lua_pushinteger(L, pid);
    return 1;
}

/* proc_state(pid) -> the state letter of /proc/pid/stat, or nil */
static int l_proc_state(lua_State *L)
{
    char path[64], buf[512], *p;
    ssize_t n;
    int fd;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)luaL_checkinteger(L, 1));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] == '\0')
        return 0;
    lua_pushlstring(L, p + 2, 1);
    return 1;
}

__attribute__((visibility("default"))) int luaopen_whtorture(lua_State *L)
{
    static const luaL_Reg methods[] = {{"get", w_get}, {"set", w_set}, {"add", w_add},
                                       {"max", w_max}, {"scan", w_scan}, {NULL, NULL}};
    static const luaL_Reg f[] = {{"map", l_map},
                                 {"waitpid", l_waitpid},
                                 {"guard", l_guard},
                                 {"registry_pid", l_registry_pid},
                                 {"proc_state", l_proc_state},
                                 {NULL, NULL}};
    if (luaL_newmetatable(L, T_WITNESS)) {
        wh_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    wh_newlib(L, f);
    return 1;
}
