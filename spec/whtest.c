/*
 * whtest: a test-only helper module for the specs (Debian's lua-posix has no
 * Lua 5.4 build). Processes, signals, pipes, time. Never installed.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(lua_State *L, const char *what)
{
    return luaL_error(L, "whtest.%s: %s", what, strerror(errno));
}

static int l_fork(lua_State *L)
{
    pid_t pid;
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return fail(L, "fork");
    lua_pushinteger(L, pid);
    return 1;
}

static int l_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

static int l_kill(lua_State *L)
{
    lua_pushboolean(L, kill((pid_t)luaL_checkinteger(L, 1), (int)luaL_optinteger(L, 2, SIGKILL)) == 0);
    return 1;
}

/* waitpid(pid, timeout) -> {code=, signal=} or nil on timeout */
static int l_waitpid(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    double deadline = now() + luaL_optnumber(L, 2, 30);
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r < 0 && errno != EINTR)
            return fail(L, "waitpid");
        if (r == pid)
            break;
        if (now() >= deadline)
            return 0;
        usleep(2000);
    }
    lua_createtable(L, 0, 2);
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_setfield(L, -2, "code");
    } else if (WIFSIGNALED(status)) {
        lua_pushinteger(L, WTERMSIG(status));
        lua_setfield(L, -2, "signal");
    }
    return 1;
}

/* spawn(argv) -> pid, fd of the child's stdout+stderr (a pipe); stdin is /dev/null */
static int l_spawn(lua_State *L)
{
    int n, fds[2];
    char **argv;
    pid_t pid;
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (int)wh_rawlen(L, 1);
    argv = lua_newuserdata(L, sizeof(char *) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        argv[i] = (char *)luaL_checkstring(L, -1);
        lua_pop(L, 1); /* still referenced by the table */
    }
    argv[n] = NULL;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return fail(L, "pipe");
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return fail(L, "fork");
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    lua_pushinteger(L, pid);
    lua_pushinteger(L, fds[0]);
    return 2;
}

/* read(fd, timeout) -> data, or nil on timeout, or "" at end of file */
static int l_read(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    double deadline = now() + luaL_optnumber(L, 2, 30);
    char buf[4096];
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        double left = deadline - now();
        int r = poll(&p, 1, left > 0 ? (int)(left * 1000) + 1 : 0);
        ssize_t got;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return fail(L, "poll");
        if (r == 0)
            return 0;
        got = read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return fail(L, "read");
        lua_pushlstring(L, buf, (size_t)got);
        return 1;
    }
}

static int l_write(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    lua_pushboolean(L, write((int)luaL_checkinteger(L, 1), s, len) == (ssize_t)len);
    return 1;
}

static int l_close(lua_State *L)
{
    close((int)luaL_checkinteger(L, 1));
    return 0;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, now());
    return 1;
}

static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

static int l_mkdtemp(lua_State *L)
{
    char tmpl[] = "/tmp/wh-spec-XXXXXX";
    if (mkdtemp(tmpl) == NULL)
        return fail(L, "mkdtemp");
    lua_pushstring(L, tmpl);
    return 1;
}

static int l_chmod(lua_State *L)
{
    lua_pushboolean(L, chmod(luaL_checkstring(L, 1), (mode_t)luaL_checkinteger(L, 2)) == 0);
    return 1;
}

static int l_chown(lua_State *L)
{
    lua_pushboolean(L, lchown(luaL_checkstring(L, 1), (uid_t)luaL_checkinteger(L, 2),
                              (gid_t)luaL_checkinteger(L, 3)) == 0);
    return 1;
}

static int l_symlink(lua_State *L)
{
    lua_pushboolean(L, symlink(luaL_checkstring(L, 1), luaL_checkstring(L, 2)) == 0);
    return 1;
}

static int l_mkfifo(lua_State *L)
{
    lua_pushboolean(L, mkfifo(luaL_checkstring(L, 1), 0600) == 0);
    return 1;
}

static int l_truncate(lua_State *L)
{
    lua_pushboolean(L, truncate(luaL_checkstring(L, 1), (off_t)luaL_checkinteger(L, 2)) == 0);
    return 1;
}

/* stat(path) -> {mode=, uid=, size=, nlink=, type=} or nil (never follows links) */
static int l_stat(lua_State *L)
{
    struct stat st;
    if (lstat(luaL_checkstring(L, 1), &st) != 0)
        return 0;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, st.st_mode & 07777);
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_nlink);
    lua_setfield(L, -2, "nlink");
    lua_pushstring(L, S_ISREG(st.st_mode)   ? "file"
                      : S_ISDIR(st.st_mode) ? "directory"
                      : S_ISLNK(st.st_mode) ? "link"
                                            : "other");
    lua_setfield(L, -2, "type");
    return 1;
}

static int l_geteuid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)geteuid());
    return 1;
}

static int l_seteuid(lua_State *L)
{
    lua_pushboolean(L, seteuid((uid_t)luaL_checkinteger(L, 1)) == 0);
    return 1;
}

/* Open descriptors of this process, for leak checks. */
static int l_nfds(lua_State *L)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    lua_pushinteger(L, n);
    return 1;
}

/* word64(path, offset [, value]) -> the 64-bit word at offset of the file (a hex string),
 * atomically replaced by value (a hex string) if given: how a spec plays a process that
 * stopped inside a guard section (it writes its identity into an object's guard word). */
static int l_word64(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    off_t off = (off_t)luaL_checkinteger(L, 2);
    const char *val = luaL_optstring(L, 3, NULL);
    long page = sysconf(_SC_PAGESIZE);
    off_t base = off - off % page;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    unsigned char *m;
    _Atomic unsigned long long *w;
    char buf[32];
    if (fd < 0)
        return fail(L, "word64");
    m = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, base);
    close(fd);
    if (m == MAP_FAILED)
        return fail(L, "word64");
    w = (_Atomic unsigned long long *)(void *)(m + (off - base));
    snprintf(buf, sizeof buf, "%llx", val ? atomic_exchange(w, strtoull(val, NULL, 16)) : atomic_load(w));
    munmap(m, (size_t)page);
    lua_pushstring(L, buf);
    return 1;
}

__attribute__((visibility("default"))) int luaopen_whtest(lua_State *L)
{
    static const luaL_Reg f[] = {
        {"fork", l_fork},         {"exit", l_exit},         {"getpid", l_getpid},
        {"kill", l_kill},         {"waitpid", l_waitpid},   {"spawn", l_spawn},
        {"read", l_read},         {"write", l_write},       {"close", l_close},
        {"now", l_now},           {"sleep", l_sleep},       {"mkdtemp", l_mkdtemp},
        {"chmod", l_chmod},       {"chown", l_chown},       {"symlink", l_symlink},
        {"mkfifo", l_mkfifo},     {"truncate", l_truncate}, {"stat", l_stat},
        {"geteuid", l_geteuid},   {"seteuid", l_seteuid},   {"nfds", l_nfds},
        {"word64", l_word64},     {NULL, NULL}};
    wh_newlib(L, f);
    lua_pushinteger(L, SIGKILL);
    lua_setfield(L, -2, "SIGKILL");
    lua_pushinteger(L, SIGTERM);
    lua_setfield(L, -2, "SIGTERM");
    lua_pushinteger(L, SIGSTOP);
    lua_setfield(L, -2, "SIGSTOP");
    lua_pushinteger(L, SIGCONT);
    lua_setfield(L, -2, "SIGCONT");
    return 1;
}
