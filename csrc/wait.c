#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "wh.h"

int64_t wh_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t wh_now_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t wh_deadline_after(int64_t ns)
{
    int64_t now = wh_now();
    if (ns < 0 || ns > WH_FOREVER - now)
        return WH_FOREVER;
    return now + ns;
}

static struct timespec to_timespec(int64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

void wh_sleep_ns(int64_t ns)
{
    struct timespec ts = to_timespec(ns);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The words are in MAP_SHARED memory, so never FUTEX_PRIVATE_FLAG. */
int wh_futex_wait(const void *word, uint32_t val, int64_t ns)
{
    struct timespec ts = to_timespec(ns < 0 ? 0 : ns);
    long r = syscall(SYS_futex, word, FUTEX_WAIT, val, ns < 0 ? NULL : &ts, NULL, 0);
    return (r != 0 && errno == ETIMEDOUT) ? ETIMEDOUT : 0;
}

void wh_futex_wake_all(const void *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}
