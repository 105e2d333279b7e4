/*
 * A look at an object whose kind we do not know, without using it: the file
 * is opened read-only (never created, never mapped, no "in use" lock) and no
 * registry slot is claimed. The state is read into private memory and
 * repaired there by the same reclamation a waiter would run, so holds of
 * dead processes do not show; the shared file is never written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wh.h"

/* The whole file in private memory, with a view of it; 1, 0 absent, -1 error. */
static int snapshot(struct wh_dir *d, const char *name, struct wh_view *v, void **buf,
                    struct wh_err *e)
{
    const char *dir = wh_dir_path(d);
    struct wh_obj_header copy;
    struct stat st;
    int fd;

    *buf = NULL;
    /* Refuse links and special files before opening: opening a device can have effects. */
    if (fstatat(wh_dir_fd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0
                               : wh_fail(e, WH_EOS, errno, "cannot stat %s/%s: %s", dir, name,
                                         strerror(errno));
    if (!S_ISREG(st.st_mode))
        return wh_fail(e, WH_EUNSAFE, 0, "%s/%s is not a regular file", dir, name);
    fd = openat(wh_dir_fd(d), name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return wh_fail(e, errno == ELOOP ? WH_EUNSAFE : WH_EOS, errno, "cannot open %s/%s: %s",
                       dir, name, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        wh_fail(e, WH_EOS, errno, "cannot stat %s/%s: %s", dir, name, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        wh_fail(e, WH_EUNSAFE, 0, "%s/%s is not a regular file", dir, name);
        goto fail;
    }
    if ((size_t)st.st_size < sizeof copy || pread(fd, &copy, sizeof copy, 0) != sizeof copy) {
        wh_fail(e, WH_ECORRUPT, 0, "%s/%s is not a waithandles object file (%lld bytes)", dir,
                name, (long long)st.st_size);
        goto fail;
    }
    if (wh_obj_validate(d, name, &copy, st.st_size, v, e) != 0)
        goto fail;
    *buf = malloc((size_t)copy.file_size);
    if (*buf == NULL) {
        wh_fail(e, WH_EOS, ENOMEM, "out of memory reading %s/%s", dir, name);
        goto fail;
    }
    errno = 0; /* a short read sets none */
    if (pread(fd, *buf, (size_t)copy.file_size, 0) != (ssize_t)copy.file_size) {
        wh_fail(e, WH_EOS, errno ? errno : EIO, "cannot read %s/%s", dir, name);
        goto fail;
    }
    close(fd);
    /* The immutable part was validated in `copy`; the view's bounds come from it alone. */
    v->h = *buf;
    v->waits = (struct wh_wait_entry *)((char *)*buf + copy.wait_off);
    v->slots = v->nslots ? (struct wh_slot_entry *)((char *)*buf + copy.slot_off) : NULL;
    return 1;
fail:
    free(*buf);
    *buf = NULL;
    close(fd);
    return -1;
}

int wh_inspect(struct wh_dir *d, const char *name, uint32_t *kind, uint32_t *max_count,
               struct wh_info *out, struct wh_err *e)
{
    struct wh_view v;
    struct wh_ctx c;
    void *buf;
    int r = snapshot(d, name, &v, &buf, e);
    if (r != 1)
        return r;
    c.alive = wh_dir_alive;
    c.actx = d;
    c.me = wh_dir_current(d);
    c.now = wh_now();
    wh_st_reclaim(&v, &c);
    wh_st_info(&v, &c, out);
    *kind = v.kind;
    *max_count = v.max_count;
    free(buf);
    return 1;
}
