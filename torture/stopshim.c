/*
 * A test-only LD_PRELOAD hook that widens the torture's window into guard
 * sections without touching the library: fcntl(F_OFD_GETLK) is what a
 * liveness probe of another process's registry slot calls, and most probes
 * run inside a guard section (reclamation). With probability
 * WH_SHIM_STOP_PPM per million such calls the process stops itself
 * (SIGSTOP) just before the probe; the supervisor, which sees its child
 * stop, reads the object files' guard words to tell whether it stopped
 * inside a guard, and then kills it or lets it go on.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long ppm = -1;
static uint64_t rng;

static uint64_t next_random(void)
{
    if (rng == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^ 0x9E3779B97F4A7C15u;
    }
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int fcntl(int fd, int cmd, ...)
{
    static int (*real)(int, int, ...);
    va_list ap;
    void *arg;
    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (real == NULL)
        real = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl");
    if (cmd == F_OFD_GETLK) {
        if (ppm < 0) {
            const char *s = getenv("WH_SHIM_STOP_PPM");
            ppm = s ? atol(s) : 0;
        }
        if (ppm > 0 && (long)(next_random() % 1000000) < ppm)
            kill(getpid(), SIGSTOP);
    }
    return real(fd, cmd, arg);
}
