/* Private to the directory, registry and object units. */
#ifndef WH_DIR_H
#define WH_DIR_H

#include <pthread.h>

#include "wh.h"

#pragma GCC visibility push(hidden) /* as in wh.h */

/* One mutex for all process-local bookkeeping: directories, registry, open objects. It is a
 * leaf: nothing else is locked while it is held, and the guard is never awaited under it. */
extern pthread_mutex_t wh_mu;
extern struct wh_dir *wh_dirs;

struct wh_shard {
    int fd;
    struct wh_reg_header *map;
    dev_t dev; /* the file mapped: it is the registry only while it is linked at its path */
    ino_t ino;
};

struct wh_dir {
    struct wh_dir *next;
    dev_t dev;
    ino_t ino;
    int fd;
    char *path;
    int file_mode; /* mode of registry files this process creates (from the directory's) */
    pid_t pid;     /* process that claimed `me`; a child that skipped fork handlers differs */
    struct wh_shard shard[WH_SHARDS];
    _Atomic uint64_t me;
    _Atomic int64_t next_check; /* coarse clock: when to check again that me's shard is linked */
    uint64_t past[8];           /* this process's earlier identities here (shards replaced) */
    unsigned npast;
};

struct wh_filekind {
    size_t header_len;
    const void *fresh; /* header for a new file */
    size_t fresh_size;
    size_t (*size_of)(const void *hdr); /* size a file with this header needs; 0 if invalid */
};

int wh_file_ready(int fd, const struct wh_filekind *k, const char *label, struct wh_err *e);

static inline struct wh_reg_slot *wh_shard_slots(struct wh_reg_header *h)
{
    return (struct wh_reg_slot *)(void *)(h + 1);
}

#pragma GCC visibility pop

#endif
