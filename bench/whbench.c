/*
 * whbench: the benchmark's baselines and instruments (never installed).
 *
 * Baselines, each called from Lua the way waithandles is (a method call to
 * take, one to give back): a flock() pair, an OFD F_OFD_SETLK pair, a raw
 * compare-and-swap pair and a futex mutex, the last two on a word of a
 * shared mapped file so that two processes can ping-pong on it.
 *
 * Instruments: an array of 8-byte slots in a shared mapped file (timestamps
 * and flags between processes), CPU time, open descriptors, and the wall
 * time of a whole child process.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"

#define LOCKER_MT "whbench.locker"
#define SHARED_MT "whbench.shared"

static int fail(lua_State *L, const char *what)
{
    return luaL_error(L, "whbench.%s: %s", what, strerror(errno));
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Maps `size` bytes of the file at path (created, and extended, if needed). */
static void *map_file(lua_State *L, const char *path, size_t size)
{
    void *p;
    struct stat st;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        fail(L, "open");
    if (fstat(fd, &st) != 0 || ((size_t)st.st_size < size && ftruncate(fd, (off_t)size) != 0)) {
        close(fd);
        fail(L, "ftruncate");
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        fail(L, "mmap");
    return p;
}

/* ---- lockers ---- */

enum kind { K_FLOCK, K_OFD, K_CAS, K_FUTEX };

struct locker {
    enum kind kind;
    int fd;                  /* flock, OFD */
    _Atomic uint32_t *word;  /* CAS, futex: 0 free, 1 held, 2 held with waiters */
};

static long futex(_Atomic uint32_t *w, int op, uint32_t val)
{
    return syscall(SYS_futex, (void *)w, op, val, NULL, NULL, 0);
}

static int ofd(int fd, int cmd, short type)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_len = 1};
    return fcntl(fd, cmd, &fl);
}

/* Drepper's mutex ("Futexes are tricky", mutex 2). */
static void futex_lock(_Atomic uint32_t *w)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong(w, &c, 1))
        return;
    if (c != 2)
        c = atomic_exchange(w, 2);
    while (c != 0) {
        futex(w, FUTEX_WAIT, 2);
        c = atomic_exchange(w, 2);
    }
}

static void futex_unlock(_Atomic uint32_t *w)
{
    if (atomic_exchange(w, 0) != 1)
        futex(w, FUTEX_WAKE, 1);
}

/* One attempt (block = 0) or a wait; returns whether it is now held. */
static int take(struct locker *k, int block)
{
    uint32_t free_word = 0;
    int r;
    switch (k->kind) {
    case K_FLOCK:
        do
            r = flock(k->fd, LOCK_EX | (block ? 0 : LOCK_NB));
        while (r != 0 && errno == EINTR);
        return r == 0;
    case K_OFD:
        do
            r = ofd(k->fd, block ? F_OFD_SETLKW : F_OFD_SETLK, F_WRLCK);
        while (r != 0 && errno == EINTR);
        return r == 0;
    case K_CAS:
        while (!atomic_compare_exchange_strong(k->word, &free_word, 1)) {
            if (!block)
                return 0;
            free_word = 0;
            sched_yield();
        }
        return 1;
    case K_FUTEX:
        if (block) {
            futex_lock(k->word);
            return 1;
        }
        return atomic_compare_exchange_strong(k->word, &free_word, 1);
    }
    return 0;
}

static void give(struct locker *k)
{
    switch (k->kind) {
    case K_FLOCK:
        flock(k->fd, LOCK_UN);
        break;
    case K_OFD:
        ofd(k->fd, F_OFD_SETLK, F_UNLCK);
        break;
    case K_CAS:
        atomic_store(k->word, 0);
        break;
    case K_FUTEX:
        futex_unlock(k->word);
        break;
    }
}

static struct locker *check_locker(lua_State *L)
{
    return luaL_checkudata(L, 1, LOCKER_MT);
}

static int l_lock(lua_State *L)
{
    lua_pushboolean(L, take(check_locker(L), 1));
    return 1;
}

static int l_trylock(lua_State *L)
{
    lua_pushboolean(L, take(check_locker(L), 0));
    return 1;
}

static int l_unlock(lua_State *L)
{
    give(check_locker(L));
    return 0;
}

static int locker_gc(lua_State *L)
{
    struct locker *k = check_locker(L);
    if (k->fd >= 0)
        close(k->fd);
    if (k->word != NULL)
        munmap((void *)k->word, sizeof *k->word);
    k->fd = -1;
    k->word = NULL;
    return 0;
}

/* whbench.locker(kind, path): kind is "flock", "ofd", "cas" or "futex". */
static int l_locker(lua_State *L)
{
    static const char *const kinds[] = {"flock", "ofd", "cas", "futex", NULL};
    enum kind kind = (enum kind)luaL_checkoption(L, 1, NULL, kinds);
    const char *path = luaL_checkstring(L, 2);
    struct locker *k = lua_newuserdata(L, sizeof *k);
    k->kind = kind;
    k->fd = -1;
    k->word = NULL;
    luaL_getmetatable(L, LOCKER_MT);
    lua_setmetatable(L, -2);
    if (kind == K_FLOCK || kind == K_OFD) {
        k->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (k->fd < 0)
            return fail(L, "open");
    } else {
        k->word = map_file(L, path, sizeof *k->word);
    }
    return 1;
}

/* ---- shared slots: 8-byte numbers in a mapped file, indexed from 1 ---- */

struct shared {
    union slot {
        double d;
        _Atomic int64_t i;
    } *s;
    lua_Integer n;
};

static union slot *slot(lua_State *L)
{
    struct shared *sh = luaL_checkudata(L, 1, SHARED_MT);
    lua_Integer i = luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 1 && i <= sh->n, 2, "slot out of range");
    return &sh->s[i - 1];
}

static int l_get(lua_State *L)
{
    lua_pushnumber(L, slot(L)->d);
    return 1;
}

static int l_set(lua_State *L)
{
    union slot *s = slot(L);
    s->d = luaL_checknumber(L, 3);
    return 0;
}

/* add(i, delta) -> the new value (atomic; integers) */
static int l_add(lua_State *L)
{
    union slot *s = slot(L);
    int64_t d = (int64_t)luaL_optinteger(L, 3, 1);
    lua_pushinteger(L, (lua_Integer)(atomic_fetch_add(&s->i, d) + d));
    return 1;
}

static int l_iget(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)atomic_load(&slot(L)->i));
    return 1;
}

static int shared_gc(lua_State *L)
{
    struct shared *sh = luaL_checkudata(L, 1, SHARED_MT);
    if (sh->s != NULL)
        munmap(sh->s, (size_t)sh->n * sizeof *sh->s);
    sh->s = NULL;
    sh->n = 0;
    return 0;
}

/* whbench.shared(path, n): n slots, zero when the file is new. */
static int l_shared(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    struct shared *sh;
    luaL_argcheck(L, n >= 1 && n <= (1 << 24), 2, "1 to 2^24 slots");
    sh = lua_newuserdata(L, sizeof *sh);
    sh->s = NULL;
    sh->n = 0;
    luaL_getmetatable(L, SHARED_MT);
    lua_setmetatable(L, -2);
    sh->s = map_file(L, path, (size_t)n * sizeof *sh->s);
    sh->n = n;
    return 1;
}

/* ---- process instruments ---- */

/* CPU time (user + system) this process has used, seconds. */
static int l_cpu(lua_State *L)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    lua_pushnumber(L, (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                          (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    return 1;
}

/* Open descriptors of this process (entries of /proc/self/fd). */
static int l_nfds(lua_State *L)
{
    int n = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return fail(L, "opendir");
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    lua_pushinteger(L, n - 1); /* not the directory's own descriptor */
    return 1;
}

/* run(command, args...) -> wall seconds, exit status (128 + N on signal N): the whole life
 * of a child process, its output discarded. */
static int l_run(lua_State *L)
{
    int n = lua_gettop(L), status;
    const char **argv;
    double t0;
    pid_t pid;
    luaL_argcheck(L, n >= 1, 1, "a command expected");
    argv = lua_newuserdata(L, sizeof(char *) * (size_t)(n + 1));
    argv[n] = NULL;
    while (n-- > 0)
        argv[n] = luaL_checkstring(L, n + 1);
    t0 = monotonic();
    pid = fork();
    if (pid < 0)
        return fail(L, "fork");
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return fail(L, "waitpid");
    lua_pushnumber(L, monotonic() - t0);
    lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 2;
}

/* A metatable that is its own __index. */
static void new_type(lua_State *L, const char *name, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    wh_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_whbench(lua_State *L)
{
    static const luaL_Reg locker[] = {{"lock", l_lock},
                                      {"trylock", l_trylock},
                                      {"unlock", l_unlock},
                                      {"__gc", locker_gc},
                                      {NULL, NULL}};
    static const luaL_Reg shared[] = {{"get", l_get}, {"set", l_set}, {"add", l_add},
                                      {"iget", l_iget}, {"__gc", shared_gc}, {NULL, NULL}};
    static const luaL_Reg f[] = {{"locker", l_locker}, {"shared", l_shared}, {"cpu", l_cpu},
                                 {"nfds", l_nfds},     {"run", l_run},       {NULL, NULL}};
    new_type(L, LOCKER_MT, locker);
    new_type(L, SHARED_MT, shared);
    wh_newlib(L, f);
    return 1;
}
