/*
 * What the libFuzzer targets on files (fuzz_object.c, fuzz_registry.c) share:
 * a lock directory made before the first input, and a thread that rewrites
 * words of a mapping with values from the input while the library reads it
 * (a co-user writing as we read). A target includes it once: it defines
 * LLVMFuzzerInitialize.
 */
#ifndef WH_FUZZ_FILES_H
#define WH_FUZZ_FILES_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wh.h"

static struct wh_dir *dir;
static char dirpath[64];

/* The lock directory goes when the fuzzer exits normally (a crash leaves it, with the input). */
static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dirpath);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dirpath);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct wh_err e;
    (void)argc;
    snprintf(dirpath, sizeof dirpath, "%s/wh-fuzz-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (mkdtemp(dirpath) == NULL || (dir = wh_dir_open(dirpath, 0700, &e)) == NULL) {
        fprintf(stderr, "%s: cannot make a lock directory: %s\n", (*argv)[0], strerror(errno));
        abort();
    }
    atexit(cleanup);
    return 0;
}

struct scribbler {
    pthread_t t;
    _Atomic int stop;
    unsigned char *base;
    size_t from, size; /* it writes aligned 8-byte words between base + from and base + size */
    const uint8_t *data;
    size_t len;
};

static void *scribble(void *arg)
{
    struct scribbler *s = arg;
    size_t i = 0;
    while (!atomic_load(&s->stop) && s->len >= 12) {
        uint32_t off;
        uint64_t v;
        memcpy(&off, s->data + i % (s->len - 11), 4);
        memcpy(&v, s->data + i % (s->len - 11) + 4, 8);
        off = (uint32_t)(s->from + off % (uint32_t)(s->size - s->from - 8)) & ~7u;
        atomic_store_explicit((_Atomic uint64_t *)(void *)(s->base + off), v, memory_order_relaxed);
        i += 12;
    }
    return NULL;
}

/* Starts the thread of s (its other fields set); 1 if it runs. */
static int scribble_start(struct scribbler *s)
{
    atomic_init(&s->stop, 0);
    return pthread_create(&s->t, NULL, scribble, s) == 0;
}

static void scribble_stop(struct scribbler *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->t, NULL);
}

#endif
