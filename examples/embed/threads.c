/*
 * Several lua_States in threads of one process share waithandles objects (doc/API.md,
 * "Threads"): each thread runs SCRIPT below in a lua_State of its own, opening the same
 * names. Holds belong to the process, so the threads exclude each other as processes do.
 * A witness in C, shared by the threads, checks it: the script tells it when it enters and
 * leaves each hold; it counts who is inside, records the most at once, counts violations,
 * and keeps a plain (non-atomic) counter that the lock's holders increment slowly.
 *
 *     threads [THREADS [ROUNDS]]      prints one line; exits 0 if the witness saw no violation
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "embed.h"

static const char SCRIPT[] =
    "local id, rounds = ...\n"
    "local waithandles = require 'waithandles'\n"
    "local lock = waithandles.lock('threads-lock')\n"
    "local sem = waithandles.semaphore('threads-sem', 2)\n"
    "local rw = waithandles.rwlock('threads-rw')\n"
    "-- Every other acquisition is an _async one in a coroutine, resumed after the delay\n"
    "-- it yields: a host's own scheduler, in miniature.\n"
    "local function take(obj, method, async)\n"
    "  if not async then return obj[method](obj, 30) end\n"
    "  local co = coroutine.create(function() return obj[method .. '_async'](obj, 30) end)\n"
    "  while true do\n"
    "    local ok, v = coroutine.resume(co)\n"
    "    assert(ok, v)\n"
    "    if coroutine.status(co) == 'dead' then return v end\n"
    "    witness.sleep(v)\n"
    "  end\n"
    "end\n"
    "for i = 1, rounds do\n"
    "  local async = (i + id) % 2 == 0\n"
    "  local h = take(lock, 'acquire', async)\n"
    "  witness.enter('lock') witness.bump() witness.leave('lock')\n"
    "  h:release()\n"
    "  h = take(sem, 'acquire', async)\n"
    "  witness.enter('sem') witness.pause() witness.leave('sem')\n"
    "  h:release()\n"
    "  local kind = (i + id) % 4 == 0 and 'write' or 'read'\n"
    "  h = take(rw, 'acquire_' .. kind, async)\n"
    "  witness.enter(kind) witness.pause() witness.leave(kind)\n"
    "  h:release()\n"
    "end\n";

enum { LOCK, SEM, READ, WRITE, KINDS };
static const char *const kinds[] = {"lock", "sem", "read", "write", NULL};
static atomic_int inside[KINDS], most[KINDS], violations;
static long counter; /* changed only under the lock, on purpose without atomics */
static pthread_barrier_t start;

static void pause_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static int w_enter(lua_State *L)
{
    int k = luaL_checkoption(L, 1, NULL, kinds);
    int n = atomic_fetch_add(&inside[k], 1) + 1, m = atomic_load(&most[k]);
    while (n > m && !atomic_compare_exchange_weak(&most[k], &m, n))
        ;
    /* seq_cst: of a reader and a writer inside at once, at least one sees the other */
    if ((k == LOCK && n > 1) || (k == SEM && n > 2) || (k == WRITE && n > 1) ||
        (k == WRITE && atomic_load(&inside[READ]) > 0) ||
        (k == READ && atomic_load(&inside[WRITE]) > 0))
        atomic_fetch_add(&violations, 1);
    return 0;
}

static int w_leave(lua_State *L)
{
    atomic_fetch_sub(&inside[luaL_checkoption(L, 1, NULL, kinds)], 1);
    return 0;
}

static int w_pause(lua_State *L)
{
    (void)L;
    pause_us(100);
    return 0;
}

/* A slow read-modify-write: two holders at once would lose increments. */
static int w_bump(lua_State *L)
{
    long n = counter;
    (void)L;
    sched_yield();
    counter = n + 1;
    return 0;
}

static int w_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
    return 0;
}

struct job {
    pthread_t thread;
    int id, rounds, failed;
};

static void *run(void *arg)
{
    static const luaL_Reg witness[] = {{"enter", w_enter}, {"leave", w_leave},
                                       {"pause", w_pause}, {"bump", w_bump},
                                       {"sleep", w_sleep}, {NULL, NULL}};
    struct job *j = arg;
    char who[32];
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    embed_open_waithandles(L);
    lua_newtable(L);
    for (const luaL_Reg *r = witness; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_setglobal(L, "witness");
    snprintf(who, sizeof who, "thread %d", j->id);
    pthread_barrier_wait(&start);
    if (luaL_loadbuffer(L, SCRIPT, sizeof SCRIPT - 1, "=threads") != 0) {
        fprintf(stderr, "%s: %s\n", who, lua_tostring(L, -1));
        j->failed = 1;
    } else {
        lua_pushinteger(L, j->id);
        lua_pushinteger(L, j->rounds);
        j->failed = embed_pcall(L, 2, who) != 0;
    }
    lua_close(L);
    return NULL;
}

int main(int argc, char **argv)
{
    int nthreads = argc > 1 ? atoi(argv[1]) : 4, rounds = argc > 2 ? atoi(argv[2]) : 100;
    int failed = 0;
    struct job jobs[64];
    if (nthreads < 1 || nthreads > 64 || rounds < 1) {
        fprintf(stderr, "usage: %s [THREADS (1-64) [ROUNDS]]\n", argv[0]);
        return 2;
    }
    pthread_barrier_init(&start, NULL, (unsigned)nthreads);
    for (int i = 0; i < nthreads; i++) {
        jobs[i] = (struct job){.id = i + 1, .rounds = rounds};
        if (pthread_create(&jobs[i].thread, NULL, run, &jobs[i]) != 0) {
            fprintf(stderr, "%s: pthread_create failed\n", argv[0]);
            return 1;
        }
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(jobs[i].thread, NULL);
        failed |= jobs[i].failed;
    }
    printf("threads %d rounds %d counter %ld/%ld most lock %d sem %d read %d write %d "
           "violations %d\n",
           nthreads, rounds, counter, (long)nthreads * rounds, atomic_load(&most[LOCK]),
           atomic_load(&most[SEM]), atomic_load(&most[READ]), atomic_load(&most[WRITE]),
           atomic_load(&violations));
    return failed || atomic_load(&violations) != 0 || counter != (long)nthreads * rounds;
}
