/*
 * waithandles.proc: what the command-line tool (bin/waithandle) needs and
 * Lua lacks: run a command as a child process that inherits chosen
 * descriptors, pass INT, TERM, HUP and QUIT on to it while it runs, and
 * report how it ended; a monotonic clock and a sleep for its demo and
 * benchmark. Independent of waithandles.core.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"

#define MAX_KEEP 16

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define NFWD ((int)(sizeof forwarded / sizeof forwarded[0]))

static volatile sig_atomic_t running; /* pid of the command while proc.run waits for it */

/* Passes a signal on to the command. A terminal's signals (SI_KERNEL) went to its whole
 * foreground process group, the command included: they are not sent a second time. */
static void forward(int sig, siginfo_t *si, void *uctx)
{
    int saved = errno;
    (void)uctx;
    if (running > 0 && si->si_code != SI_KERNEL)
        kill((pid_t)running, sig);
    errno = saved;
}

/* The signal dispositions proc.run changes for the time the command runs. */
struct dispositions {
    struct sigaction old[NFWD], oldchld;
    int caught[NFWD];
    sigset_t oldmask;
};

/* Blocks the forwarded signals and SIGCHLD, then installs the forwarder (except where a signal
 * was ignored on entry: it stays ignored, for us and for the command) and SIGCHLD's default
 * (an ignored SIGCHLD would let the kernel reap the command before we learn its status). */
static void take_signals(struct dispositions *s)
{
    struct sigaction fwd, dfl;
    sigset_t block;

    sigemptyset(&block);
    for (int i = 0; i < NFWD; i++)
        sigaddset(&block, forwarded[i]);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &s->oldmask);
    memset(&fwd, 0, sizeof fwd);
    fwd.sa_sigaction = forward;
    fwd.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&fwd.sa_mask);
    for (int i = 0; i < NFWD; i++) {
        sigaction(forwarded[i], NULL, &s->old[i]);
        s->caught[i] = s->old[i].sa_handler != SIG_IGN;
        if (s->caught[i])
            sigaction(forwarded[i], &fwd, NULL);
    }
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &dfl, &s->oldchld);
}

/* Restores the dispositions first, then the mask: a signal still pending then meets its old
 * disposition, never the forwarder. */
static void give_back_signals(const struct dispositions *s)
{
    for (int i = 0; i < NFWD; i++)
        if (s->caught[i])
            sigaction(forwarded[i], &s->old[i], NULL);
    sigaction(SIGCHLD, &s->oldchld, NULL);
    sigprocmask(SIG_SETMASK, &s->oldmask, NULL);
}

/* The command at idx: a non-empty array of strings without NUL bytes, as a NULL-terminated
 * vector in a userdata left on the stack (the strings stay referenced by the table). */
static char **check_command(lua_State *L, int idx)
{
    int n;
    char **vec;
    luaL_checktype(L, idx, LUA_TTABLE);
    n = (int)wh_rawlen(L, idx);
    luaL_argcheck(L, n > 0, idx, "the command must have at least one word");
    vec = lua_newuserdata(L, sizeof *vec * ((size_t)n + 1));
    vec[n] = NULL;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        lua_rawgeti(L, idx, i + 1);
        vec[i] = lua_type(L, -1) == LUA_TSTRING ? (char *)lua_tolstring(L, -1, &len) : NULL;
        if (vec[i] == NULL || strlen(vec[i]) != len)
            luaL_argerror(L, idx,
                          lua_pushfstring(L, "word %d is not a string without NUL bytes", i + 1));
        lua_pop(L, 1);
    }
    return vec;
}

/* The descriptors at idx (nil or an array of open descriptors); returns how many. */
static int check_keep(lua_State *L, int idx, int keep[MAX_KEEP])
{
    int n;
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    n = (int)wh_rawlen(L, idx);
    luaL_argcheck(L, n <= MAX_KEEP, idx, "too many descriptors");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        keep[i] = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : -1;
        lua_pop(L, 1);
        luaL_argcheck(L, keep[i] >= 0 && fcntl(keep[i], F_GETFD) >= 0, idx,
                      "an open file descriptor expected");
    }
    return n;
}

static int failure(lua_State *L, const char *what, const char *cmd, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "cannot %s '%s': %s", what, cmd, strerror(err));
    lua_pushinteger(L, err);
    return 3;
}

/*
 * proc.run(command [, keep]) -> "exit", status | "signal", number | nil, message, errno
 *
 * Runs command[1] (searched in PATH) with the rest as its arguments and waits for it. The
 * command inherits duplicates of the descriptors in `keep` (without close-on-exec, sharing
 * their open file descriptions): they are made before fork, because fork handlers may close
 * the originals in the child. Until it ends, INT, TERM, HUP and QUIT sent to us are sent on to
 * it. A command that cannot be started gives nil, a message and the errno of execvp.
 */
static int l_run(lua_State *L)
{
    int keep[MAX_KEEP], nkeep = check_keep(L, 2, keep), report[2], err = 0, status = 0, n;
    char **cmd = check_command(L, 1);
    const char *what;
    struct dispositions sigs;
    pid_t pid;

    for (int i = 0; i < nkeep; i++) {
        keep[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, 3);
        if (keep[i] < 0) {
            err = errno;
            while (i-- > 0)
                close(keep[i]);
            return failure(L, "keep a descriptor for", cmd[0], err);
        }
    }
    /* A close-on-exec pipe tells us whether execvp succeeded (end of file) or why not. */
    if (pipe2(report, O_CLOEXEC) != 0) {
        err = errno;
        for (int i = 0; i < nkeep; i++)
            close(keep[i]);
        return failure(L, "run", cmd[0], err);
    }
    take_signals(&sigs);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        /* Dispositions before the mask, as in give_back_signals: no signal meets the forwarder. */
        give_back_signals(&sigs);
        for (int i = 0; i < nkeep; i++)
            fcntl(keep[i], F_SETFD, 0);
        execvp(cmd[0], cmd);
        err = errno;
        while (write(report[1], &err, sizeof err) < 0 && errno == EINTR)
            ;
        _exit(127);
    }
    if (pid < 0)
        err = errno;
    running = pid > 0 ? pid : 0;
    close(report[1]);
    for (int i = 0; i < nkeep; i++)
        close(keep[i]);
    sigprocmask(SIG_SETMASK, &sigs.oldmask, NULL); /* what came meanwhile is forwarded now */
    if (pid < 0) {
        close(report[0]);
        give_back_signals(&sigs);
        return failure(L, "start", cmd[0], err);
    }
    /* execvp failed if the pipe brings its errno; end of file means it succeeded. */
    while ((n = (int)read(report[0], &err, sizeof err)) < 0 && errno == EINTR)
        ;
    close(report[0]);
    what = n == (int)sizeof err ? "run" : NULL;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno == EINTR)
            continue;
        if (what == NULL) {
            err = errno;
            what = "wait for";
        }
        break;
    }
    running = 0;
    give_back_signals(&sigs);
    if (what != NULL)
        return failure(L, what, cmd[0], err);
    if (WIFSIGNALED(status)) {
        lua_pushliteral(L, "signal");
        lua_pushinteger(L, WTERMSIG(status));
    } else {
        lua_pushliteral(L, "exit");
        lua_pushinteger(L, WEXITSTATUS(status));
    }
    return 2;
}

/* proc.default_sigint(): SIGINT's default action back. The standalone interpreters catch it to
 * raise an error at the next Lua instruction, which a wait in C would put off until it ends. */
static int l_default_sigint(lua_State *L)
{
    (void)L;
    signal(SIGINT, SIG_DFL);
    return 0;
}

/* proc.now() -> seconds on the monotonic clock */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* proc.sleep(seconds) */
static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct timespec ts;
    if (!(s > 0))
        return 0;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

__attribute__((visibility("default"))) int luaopen_waithandles_proc(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"run", l_run},
                                     {"default_sigint", l_default_sigint},
                                     {"now", l_now},
                                     {"sleep", l_sleep},
                                     {NULL, NULL}};
    wh_newlib(L, funcs);
    lua_pushinteger(L, ENOENT);
    lua_setfield(L, -2, "ENOENT");
    return 1;
}
