/*
 * libFuzzer target: registry shards with arbitrary contents. The process
 * forgets its slot, the input becomes .registry-00 (and, split by byte 1,
 * .registry-01), and the registry is used: a slot is claimed (shard parsing
 * and validation, the hint, generations), identities derived from the input
 * are judged alive or dead and their pids looked up, the process checks that
 * its shard is still linked, and a lock is taken and released (which judges
 * its holder). Optionally a second thread rewrites the mapped shard while it
 * is read. Nothing may crash, hang, leak or touch memory outside a mapping.
 *
 * Input: byte 0 = flags (1: scribbler thread, unless 4; 2: a second shard; 4: replace the shard file
 * after the claim, as a cleaner would), byte 1 = where the second shard starts, then bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dir.h"
#include "files.h"

static void put(const char *name, const uint8_t *data, size_t len)
{
    int fd = openat(wh_dir_fd(dir), name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t)len))
        abort();
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wh_err e;
    struct scribbler s;
    struct wh_obj *o;
    uint64_t me, held;
    size_t split;
    int flags, scribbling = 0;

    if (size < 2)
        return 0;
    flags = data[0];
    split = (size_t)data[1] * 32;
    data += 2;
    size -= 2;
    if (split > size)
        split = size;

    wh_registry_forget(dir);
    unlinkat(wh_dir_fd(dir), ".registry-01", 0);
    if (flags & 2) {
        put(".registry-00", data, split);
        put(".registry-01", data + split, size - split);
    } else {
        put(".registry-00", data, size);
    }

    me = wh_dir_me(dir, &e);
    if (me != 0 && (flags & 1) && !(flags & 4) && dir->shard[0].map != NULL) {
        s = (struct scribbler){.base = (unsigned char *)dir->shard[0].map,
                               .size = WH_REG_FILE_SIZE, .data = data, .len = size};
        scribbling = scribble_start(&s);
    }
    if (me != 0 && (flags & 4))
        unlinkat(wh_dir_fd(dir), ".registry-00", 0); /* a cleaner: the next look notices */
    /* Identities from the input: slots in both shards (and beyond), any generation. */
    for (size_t i = 0; i + 8 <= size && i < 8 * 16; i += 8) {
        uint64_t id;
        memcpy(&id, data + i, 8);
        id = (id & ~(UINT64_C(0xffff))) | (id % 130);
        (void)wh_dir_alive(dir, id);
        (void)wh_dir_pid(dir, id);
        (void)wh_dir_ours(dir, id, 1);
    }
    (void)wh_dir_alive(dir, me);
    (void)wh_dir_current_checked(dir);
    o = wh_obj_open(dir, "obj", WH_KIND_LOCK, 1, 0600, &e);
    if (o != NULL) {
        if (wh_attempt(o, WH_MODE_LOCK, 1000000, NULL, 0, &held, &e) == 1)
            wh_release(o, WH_MODE_LOCK, held);
        wh_obj_unref(o);
    }
    if (scribbling)
        scribble_stop(&s);
    return 0;
}
