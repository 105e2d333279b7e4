/*
 * libFuzzer target: an object file with arbitrary contents, opened (validation
 * and the initialisation/repair of short files), then used: attempts in every
 * mode with and without a waiter's mark, reclamation (info), an upgrade,
 * withdrawal, release, and a look without use (inspect). Shared memory is
 * untrusted (doc/FORMAT.md, "Security model"): nothing a co-user writes may
 * make a process read or write outside its mapping, loop forever or crash.
 *
 * Input: byte 0 = flags, byte 1 = max_count of a semaphore, then the rest.
 *   flags & 3        kind asked for: 1 lock, 2 semaphore, 3 rwlock (0: rwlock)
 *   flags & 4        "shaped": a valid immutable header is written and the rest of the input
 *                    overlays the mutable part (offset 64 on), so the state machines run on
 *                    arbitrary state; otherwise the rest is the whole file, as it is
 *   flags & 8        a second thread rewrites words of the mapping (from the input) while
 *                    the operations run: a co-user writing as we read
 *   flags & 16       keep the guard word as the input says (else it is cleared: a busy guard
 *                    only costs time, up to 10 ms per operation)
 *   flags & 32       also a blocking wait of 1 ms
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

#include "files.h"
#include "wh.h"

#define HDR 256u
#define WAIT_OFF HDR
#define SLOT_OFF (WAIT_OFF + WH_WAIT_ENTRIES * 32u)
#define SIZE_OF(kind) (SLOT_OFF + ((kind) == WH_KIND_LOCK ? 0u : WH_MAX_SLOTS * 16u))

static void fresh_header(unsigned char *p, uint32_t kind, uint32_t max)
{
    struct wh_obj_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, WH_OBJ_MAGIC, 8);
    h.version = WH_FORMAT_VERSION;
    h.header_size = HDR;
    h.kind = kind;
    h.max_count = kind == WH_KIND_SEMAPHORE ? max : 1;
    h.nslots = kind == WH_KIND_LOCK ? 0 : WH_MAX_SLOTS;
    h.nwait = WH_WAIT_ENTRIES;
    h.wait_off = WAIT_OFF;
    h.slot_off = kind == WH_KIND_LOCK ? 0 : SLOT_OFF;
    h.file_size = SIZE_OF(kind);
    memcpy(p, &h, 64); /* the immutable part only */
}

/* The co-user: rewrites words of the mapping from the input until told to stop. */
static void use(struct wh_obj *o, uint32_t kind, int block)
{
    struct wh_err e;
    struct wh_info info;
    struct wh_waiter w;
    uint64_t held = 0, up = 0;
    int64_t ac = 1000000; /* 1 ms: reclamations are due at every attempt */
    uint32_t modes[3] = {WH_MODE_LOCK, 0, 0};
    int nmodes = 1;

    if (kind == WH_KIND_RWLOCK) {
        modes[0] = WH_MODE_READ;
        modes[1] = WH_MODE_WRITE;
        modes[2] = WH_MODE_UPGRADEABLE;
        nmodes = 3;
    }
    for (int i = 0; i < nmodes; i++) {
        if (wh_attempt(o, modes[i], ac, NULL, 0, &held, &e) == 1)
            wh_release(o, modes[i], held);
        wh_waiter_init(&w, modes[i], 0, wh_now());
        if (wh_attempt(o, modes[i], ac, &w, 0, &held, &e) == 1) {
            wh_release(o, modes[i], held);
        } else {
            (void)wh_changed(o, &w, ac);
            (void)wh_poll_delay(&w, wh_now());
            if (wh_attempt(o, modes[i], ac, &w, 0, &held, &e) == 1)
                wh_release(o, modes[i], held);
            wh_withdraw(o, &w);
        }
    }
    if (block) {
        wh_waiter_init(&w, modes[0], 1, wh_now());
        if (wh_wait(o, modes[0], ac, &w, wh_now() + 1000000, &held, &e) == 1)
            wh_release(o, modes[0], held);
        wh_withdraw(o, &w);
    }
    if (kind == WH_KIND_RWLOCK && wh_attempt(o, WH_MODE_UPGRADEABLE, ac, NULL, 0, &up, &e) == 1) {
        wh_waiter_init(&w, WH_MODE_UPGRADE, 0, wh_now());
        (void)wh_attempt(o, WH_MODE_UPGRADE, ac, &w, 0, &held, &e);
        wh_withdraw(o, &w);
        wh_release(o, WH_MODE_UPGRADEABLE, up);
    }
    (void)wh_info(o, &info, &e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char file[SIZE_OF(WH_KIND_RWLOCK)];
    struct wh_err e;
    struct wh_info info;
    uint32_t kind, max, ikind, imax;
    size_t len;
    struct wh_obj *o;
    int fd, flags;

    if (size < 2)
        return 0;
    flags = data[0];
    kind = (uint32_t)(flags & 3) ? (uint32_t)(flags & 3) : WH_KIND_RWLOCK;
    max = 1 + data[1] % 4;
    data += 2;
    size -= 2;
    if (flags & 4) {
        len = SIZE_OF(kind);
        memset(file, 0, len);
        fresh_header(file, kind, max);
        memcpy(file + 64, data, size < len - 64 ? size : len - 64);
        if (!(flags & 16))
            memset(file + 64, 0, 8);
    } else {
        len = size < sizeof file ? size : sizeof file;
        memcpy(file, data, len);
    }
    fd = openat(wh_dir_fd(dir), "obj", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (len > 0 && write(fd, file, len) != (ssize_t)len))
        abort();
    close(fd);

    (void)wh_inspect(dir, "obj", &ikind, &imax, &info, &e);
    o = wh_obj_open(dir, "obj", kind, max, 0600, &e);
    if (o != NULL) {
        /* The scribbler leaves the immutable header (the first 64 bytes) alone. */
        struct scribbler s = {.base = o->base, .from = 64, .size = o->size, .data = data,
                              .len = size};
        int scribbling = (flags & 8) && scribble_start(&s);
        use(o, kind, flags & 32);
        if (scribbling)
            scribble_stop(&s);
        wh_obj_unref(o);
    }
    unlinkat(wh_dir_fd(dir), "obj", 0);
    return 0;
}
