/*
 * Lock directories: a safe walk to the directory, the checks that make it
 * trustworthy, and the file-level protocol shared by registry shards and
 * object files (open without following links, create exclusively,
 * initialise under an OFD lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "dir.h"
#include "policy.h"

pthread_mutex_t wh_mu = PTHREAD_MUTEX_INITIALIZER;
struct wh_dir *wh_dirs;

#define MAX_LINKS 40

/* File systems without reliable shared mappings, futexes or OFD locks. */
static int untrusted_fs(long type)
{
    static const long bad[] = {
        0x6969,             /* NFS */
        0x517B,             /* SMB */
        (long)0xFF534D42,   /* CIFS */
        (long)0xFE534D42,   /* SMB2 */
        0x65735546,         /* FUSE */
        0x01021997,         /* 9P */
        0x00c36400,         /* Ceph */
        0x5346414F,         /* AFS */
        0x73757245,         /* Coda */
        0x013111A8,         /* IBRIX */
        0x47504653,         /* GPFS */
        0x0BD00BD0,         /* Lustre */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (type == bad[i])
            return 1;
    return 0;
}

static int writable_by_others(const struct stat *st, mode_t which)
{
    return (st->st_mode & which) && !(st->st_mode & S_ISVTX);
}

/* Checks the directory that will hold the files. */
static int check_final(int fd, const char *path, struct wh_err *e)
{
    struct stat st;
    struct statfs sf;
    if (fstat(fd, &st) != 0)
        return wh_fail(e, WH_EOS, errno, "cannot stat lock directory %s: %s", path, strerror(errno));
    if (st.st_uid != 0 && st.st_uid != geteuid())
        return wh_fail(e, WH_EUNSAFE, 0,
                       "lock directory %s is owned by uid %u, neither root nor this process's "
                       "user: its owner could remove or replace lock files; use a directory "
                       "owned by root or by you",
                       path, (unsigned)st.st_uid);
    if (writable_by_others(&st, S_IWGRP | S_IWOTH))
        return wh_fail(e, WH_EUNSAFE, 0,
                       "lock directory %s is writable by others without the sticky bit, so they "
                       "could remove or replace lock files; chmod +t it or remove that write access",
                       path);
    if (fstatfs(fd, &sf) == 0 && untrusted_fs((long)sf.f_type))
        return wh_fail(e, WH_EUNSAFE, 0,
                       "lock directory %s is on a network or FUSE file system (type 0x%lx) without "
                       "reliable shared memory and locks; use a local directory such as /dev/shm",
                       path, (unsigned long)sf.f_type);
    return 0;
}

/*
 * Walks `path` one component at a time with O_NOFOLLOW. A symbolic link is
 * followed only before the last component and only if root or this user owns
 * it; any directory on the way that others could rename entries in (other-
 * writable without the sticky bit) is refused, as is a last component that is
 * a symbolic link. A missing last component is created with dir_mode (< 0:
 * never). Returns a directory descriptor or -1.
 */
static int walk(const char *path, int dir_mode, struct wh_err *e)
{
    size_t cap = strlen(path) + PATH_MAX + 2;
    char *work = malloc(cap), *p;
    int cur, links = 0;

    if (work == NULL)
        return wh_fail(e, WH_EOS, ENOMEM, "out of memory opening lock directory %s", path);
    strcpy(work, path);
    cur = open(path[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cur < 0) {
        free(work);
        return wh_fail(e, WH_EOS, errno, "cannot open %s: %s", path[0] == '/' ? "/" : ".",
                       strerror(errno));
    }
    p = work;
    for (;;) {
        char *comp;
        int last, nfd, created = 0;
        struct stat st;

        while (*p == '/')
            p++;
        if (*p == '\0')
            break;
        comp = p;
        while (*p && *p != '/')
            p++;
        if (*p)
            *p++ = '\0';
        last = 1;
        for (const char *q = p; *q; q++)
            if (*q != '/')
                last = 0;
        if (strcmp(comp, ".") == 0)
            continue;
    again:
        nfd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT && last && dir_mode >= 0 && !created) {
            if (mkdirat(cur, comp, 0700) == 0)
                created = 1;
            else if (errno != EEXIST)
                goto os_error;
            goto again;
        }
        if (nfd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
            char target[PATH_MAX];
            ssize_t n;
            size_t tlen, rlen;
            if (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) != 0)
                goto os_error;
            if (!S_ISLNK(st.st_mode)) {
                errno = ENOTDIR;
                goto os_error;
            }
            if (last) {
                wh_fail(e, WH_EUNSAFE, 0,
                        "lock directory %s is a symbolic link; refusing to follow it (give the "
                        "real path)",
                        path);
                goto fail;
            }
            if ((st.st_uid != 0 && st.st_uid != geteuid()) || ++links > MAX_LINKS) {
                wh_fail(e, WH_EUNSAFE, 0,
                        "the path to lock directory %s goes through symbolic link '%s' owned by "
                        "uid %u (or too many links); give a path without it",
                        path, comp, (unsigned)st.st_uid);
                goto fail;
            }
            n = readlinkat(cur, comp, target, sizeof target - 1);
            if (n < 0)
                goto os_error;
            target[n] = '\0';
            /* Continue with target + what was left of the path. */
            tlen = (size_t)n;
            rlen = strlen(p);
            if (tlen + rlen + 2 > cap) {
                errno = ENAMETOOLONG;
                goto os_error;
            }
            memmove(work + tlen + 1, p, rlen + 1);
            memcpy(work, target, tlen);
            work[tlen] = '/';
            p = work;
            if (target[0] == '/') {
                int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (root < 0)
                    goto os_error;
                close(cur);
                cur = root;
            }
            continue;
        }
        if (nfd < 0)
            goto os_error;
        if (fstat(nfd, &st) != 0) {
            close(nfd);
            goto os_error;
        }
        if (created && st.st_uid == geteuid() && fchmod(nfd, (mode_t)dir_mode) != 0) {
            close(nfd);
            goto os_error;
        }
        if (!last && writable_by_others(&st, S_IWOTH)) {
            close(nfd);
            wh_fail(e, WH_EUNSAFE, 0,
                    "the path to lock directory %s goes through '%s', which anyone can write to "
                    "without the sticky bit",
                    path, comp);
            goto fail;
        }
        close(cur);
        cur = nfd;
    }
    free(work);
    if (check_final(cur, path, e) != 0) {
        close(cur);
        return -1;
    }
    return cur;
os_error:
    wh_fail(e, WH_EOS, errno, "cannot open lock directory %s: %s", path, strerror(errno));
fail:
    free(work);
    close(cur);
    return -1;
}

/* A directory this process has opened by this very path, if the path leads to it still (the
 * last component no symbolic link, as the walk wants) and its owner and mode still pass
 * check_final: one lstat instead of the walk. Every file is opened relative to the directory's
 * descriptor, so a path that leads to the same directory is as good as the walk that first
 * found it; any other path takes the walk. */
static struct wh_dir *known_dir(const char *path)
{
    struct stat st;
    struct wh_dir *d;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) ||
        (st.st_uid != 0 && st.st_uid != geteuid()) || writable_by_others(&st, S_IWGRP | S_IWOTH))
        return NULL;
    pthread_mutex_lock(&wh_mu);
    for (d = wh_dirs; d != NULL; d = d->next)
        if (d->dev == st.st_dev && d->ino == st.st_ino && strcmp(d->path, path) == 0)
            break;
    pthread_mutex_unlock(&wh_mu);
    return d;
}

struct wh_dir *wh_dir_open(const char *path, int dir_mode, struct wh_err *e)
{
    struct stat st;
    struct wh_dir *d;
    int fd;

    if (path[0] == '\0') {
        wh_fail(e, WH_EOS, ENOENT, "the lock directory path is empty");
        return NULL;
    }
    if ((d = known_dir(path)) != NULL)
        return d;
    fd = walk(path, dir_mode, e);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0) {
        wh_fail(e, WH_EOS, errno, "cannot stat lock directory %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    wh_fork_init();
    pthread_mutex_lock(&wh_mu);
    for (d = wh_dirs; d != NULL; d = d->next)
        if (d->dev == st.st_dev && d->ino == st.st_ino)
            break;
    if (d == NULL) {
        char *copy = strdup(path);
        d = copy ? calloc(1, sizeof *d) : NULL;
        if (d == NULL) {
            free(copy);
        } else {
            d->path = copy;
            d->dev = st.st_dev;
            d->ino = st.st_ino;
            d->fd = fd;
            fd = -1;
            /* Registry files: read and write for every class that can enter the directory,
             * since using any object there takes a slot; never an object's mode. */
            d->file_mode = 0600 | ((st.st_mode & S_IXGRP) ? 060 : 0) |
                           ((st.st_mode & S_IXOTH) ? 06 : 0);
            for (unsigned i = 0; i < WH_SHARDS; i++)
                d->shard[i].fd = -1;
            d->next = wh_dirs;
            wh_dirs = d;
        }
    }
    pthread_mutex_unlock(&wh_mu);
    if (fd >= 0)
        close(fd);
    if (d == NULL)
        wh_fail(e, WH_EOS, ENOMEM, "out of memory opening lock directory %s", path);
    return d;
}

int wh_dir_fd(const struct wh_dir *d) { return d->fd; }
const char *wh_dir_path(const struct wh_dir *d) { return d->path; }

int wh_ofd_lock(int fd, int type, off_t off, int wait_ms)
{
    struct flock fl;
    int64_t deadline = wh_deadline_after((int64_t)wait_ms * 1000000);
    for (;;) {
        memset(&fl, 0, sizeof fl);
        fl.l_type = (short)type;
        fl.l_whence = SEEK_SET;
        fl.l_start = off;
        fl.l_len = 1;
        if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
            return 0;
        if ((errno != EAGAIN && errno != EACCES && errno != EINTR) || wh_now() >= deadline)
            return -1;
        wh_sleep_ns(1000000);
    }
}

int wh_ofd_unlock(int fd, off_t off)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    return fcntl(fd, F_OFD_SETLK, &fl);
}

int wh_retry_pause(int tries, int64_t *deadline)
{
    int64_t now = wh_now();
    if (*deadline == 0)
        *deadline = now + WH_OPEN_RETRY_NS;
    if (now >= *deadline)
        return 0;
    /* 0, then up to 1 ms, spread by the clock's low bits: two racers rarely meet again. */
    if (tries > 0)
        wh_sleep_ns((now % 1000) * (tries < 10 ? tries : 10) * 100);
    return 1;
}

int wh_dir_openat(struct wh_dir *d, const char *name, int mode, int *created, struct wh_err *e)
{
    struct stat st;
    int64_t deadline = 0;
    *created = 0;
    for (int tries = 0; wh_retry_pause(tries, &deadline); tries++) {
        int fd;
        /* Refuse links and special files before opening: opening a device can have effects. */
        if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode))
            goto not_regular;
        fd = openat(d->fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0 && errno == ENOENT) {
            /* Never O_CREAT on an existing file: protected_regular refuses it in sticky dirs. */
            fd = openat(d->fd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd < 0 && errno == EEXIST)
                continue;
            if (fd >= 0) {
                *created = 1;
                if (fchmod(fd, (mode_t)mode) != 0) {
                    wh_fail(e, WH_EOS, errno, "cannot set the mode of %s/%s: %s", d->path, name,
                            strerror(errno));
                    close(fd);
                    return -1;
                }
            }
        }
        if (fd < 0 && errno == ELOOP)
            goto not_regular;
        if (fd < 0)
            return wh_fail(e, WH_EOS, errno, "cannot open %s/%s: %s", d->path, name,
                           strerror(errno));
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            goto not_regular;
        }
        return fd;
    }
    return wh_fail(e, WH_EOS, EAGAIN,
                   "cannot open %s/%s: it kept appearing and disappearing for %d s", d->path, name,
                   (int)(WH_OPEN_RETRY_NS / 1000000000));
not_regular:
    return wh_fail(e, WH_EUNSAFE, 0,
                   "%s/%s is not a regular file (a symbolic link or special file was put there); "
                   "it was left untouched: remove it by hand",
                   d->path, name);
}

/*
 * Makes sure fd has its full size: a new (empty) file gets `fresh` written
 * and the rest allocated; a short file whose header is valid (its creator
 * died, or is still at work) is completed. Both under the initialisation
 * lock, so two processes never initialise one file. A file that is neither
 * is left as it is, for the caller's validation to report.
 */
int wh_file_ready(int fd, const struct wh_filekind *k, const char *label, struct wh_err *e)
{
    unsigned char hdr[256];
    struct stat st;
    size_t need;
    int rc = 0, err;

    if (fstat(fd, &st) != 0)
        return wh_fail(e, WH_EOS, errno, "cannot stat %s: %s", label, strerror(errno));
    if ((size_t)st.st_size >= k->header_len && pread(fd, hdr, k->header_len, 0) == (ssize_t)k->header_len) {
        need = k->size_of(hdr);
        if (need == 0 || (size_t)st.st_size >= need)
            return 0;
    }
    if (wh_ofd_lock(fd, F_WRLCK, WH_LK_INIT, WH_INIT_WAIT_MS) != 0)
        return wh_fail(e, WH_EOS, errno == EACCES ? EAGAIN : errno,
                       "cannot initialise %s: another process has held its initialisation lock "
                       "for 5 s",
                       label);
    if (fstat(fd, &st) != 0) {
        rc = wh_fail(e, WH_EOS, errno, "cannot stat %s: %s", label, strerror(errno));
    } else if (st.st_size == 0) {
        /* Header first, in one write; then the space (tmpfs would SIGBUS on a sparse page). */
        if (pwrite(fd, k->fresh, k->header_len, 0) != (ssize_t)k->header_len)
            rc = wh_fail(e, WH_EOS, errno, "cannot initialise %s: %s", label, strerror(errno));
        else if ((err = posix_fallocate(fd, 0, (off_t)k->fresh_size)) != 0)
            rc = wh_fail(e, WH_EOS, err, "cannot allocate %zu bytes for %s: %s", k->fresh_size,
                         label, strerror(err));
    } else if ((size_t)st.st_size >= k->header_len &&
               pread(fd, hdr, k->header_len, 0) == (ssize_t)k->header_len &&
               (need = k->size_of(hdr)) != 0 && (size_t)st.st_size < need) {
        if ((err = posix_fallocate(fd, 0, (off_t)need)) != 0)
            rc = wh_fail(e, WH_EOS, err, "cannot allocate %zu bytes for %s: %s", need, label,
                         strerror(err));
    }
    wh_ofd_unlock(fd, WH_LK_INIT);
    return rc;
}
