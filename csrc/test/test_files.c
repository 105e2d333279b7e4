/*
 * Files and directories: removal, hostile object files, unsafe lock
 * directories and symbolic links, hostile registry shards.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc_fixture.h"

/* ---- removal ---- */

static void test_remove(void)
{
    struct wh_err e;
    struct wh_obj *o;
    struct stat st;
    uint64_t held = 0;
    char cmd = 'x', ack;
    int p[2], q[2], r;
    pid_t c;

    CHECK(wh_obj_remove(dm, "rm", &e) == 0, "removing what does not exist: 0");
    mkpipe(p);
    mkpipe(q);
    c = fork_child();
    if (c == 0) {
        struct wh_obj *co = wh_obj_open(dm, "rm", WH_KIND_LOCK, 1, 0600, &e);
        uint64_t h = 0;
        ack = co != NULL && attempt(co, WH_MODE_LOCK, &h) == 1 ? 'y' : 'n';
        put(p[1], &ack, 1);
        if (get(q[0], &cmd, 1, REPLY_MS) == 0 && co != NULL)
            wh_obj_unref(co); /* still holding the lock: the file says so */
        put(p[1], &ack, 1);
        park();
    }
    close(p[1]);
    close(q[0]);
    if (!CHECK(get(p[0], &ack, 1, REPLY_MS) == 0 && ack == 'y', "the child opened and locked")) {
        kill_reap(c);
        goto out;
    }
    r = wh_obj_remove(dm, "rm", &e);
    CHECK(r == 0, "not removed while another process has it open: %d", r);
    CHECK(fstatat(wh_dir_fd(dm), "rm", &st, AT_SYMLINK_NOFOLLOW) == 0, "the file is still there");
    CHECK(put(q[1], &cmd, 1) == 0 && get(p[0], &ack, 1, REPLY_MS) == 0, "the child closed it");
    r = wh_obj_remove(dm, "rm", &e);
    CHECK(r == 1, "removed once nobody has it open: %d (%s)", r, r < 0 ? e.msg : "");
    CHECK(fstatat(wh_dir_fd(dm), "rm", &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT, "gone");

    /* Re-opening creates a fresh object: the child (alive, and owner in the old file) holds
     * nothing in it. */
    o = open_obj(dm, "rm", WH_KIND_LOCK, 1);
    CHECK(atomic_load(&o->v.h->owner) == 0, "fresh state");
    CHECK(attempt(o, WH_MODE_LOCK, &held) == 1, "acquired while the old file's owner lives");
    CHECK(wh_release(o, WH_MODE_LOCK, held) == 1, "released");
    CHECK(wh_obj_remove(dm, "rm", &e) == 0, "not removed while this process has it open");
    wh_obj_unref(o);
    CHECK(wh_obj_remove(dm, "rm", &e) == 1, "removed after the last unref");
    kill_reap(c);
out:
    close(p[0]);
    close(q[1]);
}

/* ---- hostile files and directories ---- */

static void make_header(struct wh_obj_header *h, uint32_t kind, uint32_t max_count)
{
    uint32_t wait_off = sizeof *h,
             slot_off = wait_off + WH_WAIT_ENTRIES * sizeof(struct wh_wait_entry);
    memset(h, 0, sizeof *h);
    memcpy(h->magic, WH_OBJ_MAGIC, 8);
    h->version = WH_FORMAT_VERSION;
    h->header_size = sizeof *h;
    h->kind = kind;
    h->max_count = kind == WH_KIND_SEMAPHORE ? max_count : 1;
    h->nslots = kind == WH_KIND_LOCK ? 0 : WH_MAX_SLOTS;
    h->nwait = WH_WAIT_ENTRIES;
    h->wait_off = wait_off;
    h->slot_off = kind == WH_KIND_LOCK ? 0 : slot_off;
    h->file_size =
        kind == WH_KIND_LOCK ? slot_off : slot_off + WH_MAX_SLOTS * sizeof(struct wh_slot_entry);
}

static void write_file(struct wh_dir *d, const char *name, const void *data, size_t len)
{
    int fd = openat(wh_dir_fd(d), name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, data, len) == (ssize_t)len, "wrote %s", name);
    if (fd >= 0)
        close(fd);
}

/* The whole file, into a malloc'd buffer. */
static unsigned char *slurp(int dirfd, const char *name, size_t *len)
{
    struct stat st;
    unsigned char *buf;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    *len = 0;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf != NULL && pread(fd, buf, (size_t)st.st_size, 0) == st.st_size)
        *len = (size_t)st.st_size;
    close(fd);
    return buf;
}

/* Opening `name` as (kind, max) fails with `code` and leaves the file exactly as it was. */
static void expect_refused(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max,
                           int code, const char *what)
{
    struct wh_err e;
    struct wh_obj *o;
    size_t n1, n2;
    unsigned char *before = slurp(wh_dir_fd(d), name, &n1), *after;
    memset(&e, 0, sizeof e);
    o = wh_obj_open(d, name, kind, max, 0600, &e);
    CHECK(o == NULL, "%s: opened", what);
    if (o != NULL) {
        wh_obj_unref(o);
    } else {
        CHECK(e.code == code, "%s: code %s, expected %s (%s)", what, wh_code_name(e.code),
              wh_code_name(code), e.msg);
        CHECK(strstr(e.msg, name) != NULL, "%s: the message names the file: %s", what, e.msg);
    }
    after = slurp(wh_dir_fd(d), name, &n2);
    CHECK(n1 == n2 && (n1 == 0 || (before && after && memcmp(before, after, n1) == 0)),
          "%s: the file was left untouched (%zu -> %zu bytes)", what, n1, n2);
    free(before);
    free(after);
}

static void test_hostile_files(void)
{
    struct wh_obj_header h;
    struct wh_err e;
    struct wh_dir *d;
    struct wh_obj *o;
    struct stat st;
    unsigned char *buf;
    char path[160], target[160];
    size_t lock_size, rw_size, n;
    uint64_t held;

    path_of(path, sizeof path, "hostile");
    d = wh_dir_open(path, 0700, &e);
    if (!CHECK(d != NULL, "hostile dir: %s", e.msg))
        return;
    make_header(&h, WH_KIND_LOCK, 1);
    lock_size = (size_t)h.file_size;
    make_header(&h, WH_KIND_RWLOCK, 1);
    rw_size = (size_t)h.file_size;
    buf = calloc(1, rw_size);
    if (buf == NULL)
        exit(2);

    memset(buf, 0xA5, lock_size);
    write_file(d, "garbage", buf, lock_size);
    expect_refused(d, "garbage", WH_KIND_LOCK, 1, WH_ECORRUPT, "a file of garbage");
    write_file(d, "garbage-short", buf, 17);
    expect_refused(d, "garbage-short", WH_KIND_LOCK, 1, WH_ECORRUPT, "17 bytes of garbage");

    make_header(&h, WH_KIND_LOCK, 1);
    memset(buf, 0, rw_size);
    memcpy(buf, &h, sizeof h);
    write_file(d, "truncated", buf, 100);
    expect_refused(d, "truncated", WH_KIND_LOCK, 1, WH_ECORRUPT, "a file cut inside its header");

    memcpy(buf, &h, sizeof h);
    memcpy(buf, "WAITHDL9", 8);
    write_file(d, "magic", buf, lock_size);
    expect_refused(d, "magic", WH_KIND_LOCK, 1, WH_ECORRUPT, "wrong magic");

    h.version = WH_FORMAT_VERSION + 1;
    memcpy(buf, &h, sizeof h);
    write_file(d, "version", buf, lock_size);
    expect_refused(d, "version", WH_KIND_LOCK, 1, WH_EMISMATCH, "another format version");
    write_file(d, "version-short", buf, sizeof h);
    expect_refused(d, "version-short", WH_KIND_LOCK, 1, WH_EMISMATCH,
                   "another format version, header only");

    make_header(&h, WH_KIND_LOCK, 1);
    h.nwait = 1000;
    memcpy(buf, &h, sizeof h);
    write_file(d, "layout", buf, lock_size);
    expect_refused(d, "layout", WH_KIND_LOCK, 1, WH_ECORRUPT, "a bad layout");

    make_header(&h, WH_KIND_LOCK, 1);
    h.kind = 9;
    memcpy(buf, &h, sizeof h);
    write_file(d, "kind9", buf, rw_size);
    expect_refused(d, "kind9", WH_KIND_LOCK, 1, WH_ECORRUPT, "an unknown kind");

    make_header(&h, WH_KIND_SEMAPHORE, 3);
    h.max_count = 0;
    memcpy(buf, &h, sizeof h);
    write_file(d, "max0", buf, rw_size);
    expect_refused(d, "max0", WH_KIND_SEMAPHORE, 1, WH_ECORRUPT, "max_count 0");

    make_header(&h, WH_KIND_RWLOCK, 1);
    h.file_size = 1ULL << 40;
    memcpy(buf, &h, sizeof h);
    write_file(d, "huge", buf, rw_size);
    expect_refused(d, "huge", WH_KIND_RWLOCK, 1, WH_ECORRUPT, "a header claiming 1 TiB");

    make_header(&h, WH_KIND_RWLOCK, 1);
    memcpy(buf, &h, sizeof h);
    write_file(d, "rwfile", buf, rw_size);
    expect_refused(d, "rwfile", WH_KIND_LOCK, 1, WH_EMISMATCH, "an rwlock opened as a lock");
    make_header(&h, WH_KIND_SEMAPHORE, 3);
    memcpy(buf, &h, sizeof h);
    write_file(d, "sem3", buf, rw_size);
    expect_refused(d, "sem3", WH_KIND_SEMAPHORE, 4, WH_EMISMATCH, "another max_count");
    o = wh_obj_open(d, "sem3", WH_KIND_SEMAPHORE, 3, 0600, &e);
    CHECK(o != NULL, "the right max_count opens it: %s", o ? "" : e.msg);
    if (o != NULL) {
        expect_refused(d, "sem3", WH_KIND_SEMAPHORE, 4, WH_EMISMATCH,
                       "another max_count while it is open");
        wh_obj_unref(o);
    }

    /* An empty file (its creator died first) is initialised. */
    write_file(d, "empty", buf, 0);
    o = wh_obj_open(d, "empty", WH_KIND_RWLOCK, 1, 0600, &e);
    if (CHECK(o != NULL, "an empty file is initialised: %s", o ? "" : e.msg)) {
        CHECK(fstatat(wh_dir_fd(d), "empty", &st, 0) == 0 && (size_t)st.st_size == rw_size,
              "to its full size");
        CHECK(memcmp(o->v.h->magic, WH_OBJ_MAGIC, 8) == 0 && o->v.h->kind == WH_KIND_RWLOCK,
              "with a valid header");
        CHECK(attempt(o, WH_MODE_WRITE, &held) == 1 && wh_release(o, WH_MODE_WRITE, held) == 1,
              "and works");
        wh_obj_unref(o);
    }
    /* A valid header without the rest (its creator died after writing it) is completed. */
    make_header(&h, WH_KIND_LOCK, 1);
    memset(buf, 0, rw_size);
    memcpy(buf, &h, sizeof h);
    write_file(d, "header-only", buf, sizeof h + 5);
    o = wh_obj_open(d, "header-only", WH_KIND_LOCK, 1, 0600, &e);
    if (CHECK(o != NULL, "a file with a valid header is completed: %s", o ? "" : e.msg)) {
        CHECK(fstatat(wh_dir_fd(d), "header-only", &st, 0) == 0 && (size_t)st.st_size == lock_size,
              "to its full size");
        CHECK(attempt(o, WH_MODE_LOCK, &held) == 1 && wh_release(o, WH_MODE_LOCK, held) == 1,
              "and works");
        wh_obj_unref(o);
    }

    /* Symbolic links are never followed; their targets are left alone. */
    path_of(target, sizeof target, "precious");
    {
        int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0 && write(fd, "precious", 8) == 8, "target written");
        if (fd >= 0)
            close(fd);
    }
    CHECK(symlinkat(target, wh_dir_fd(d), "link") == 0, "symlink");
    o = wh_obj_open(d, "link", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a symlink at the path: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    {
        int tfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        unsigned char *t = slurp(tfd, "precious", &n);
        CHECK(n == 8 && t != NULL && memcmp(t, "precious", 8) == 0, "the target is untouched");
        free(t);
        close(tfd);
    }
    CHECK(wh_obj_remove(d, "link", &e) == -1 && e.code == WH_EUNSAFE, "remove refuses a symlink");
    CHECK(fstatat(wh_dir_fd(d), "link", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode),
          "and leaves it");
    path_of(target, sizeof target, "never-created");
    CHECK(symlinkat(target, wh_dir_fd(d), "dangling") == 0, "dangling symlink");
    o = wh_obj_open(d, "dangling", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a dangling symlink: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    CHECK(stat(target, &st) != 0 && errno == ENOENT, "its target was not created");

    /* Other things that are not regular files. */
    CHECK(mkdirat(wh_dir_fd(d), "adir", 0700) == 0, "mkdir");
    o = wh_obj_open(d, "adir", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a directory at the path: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    CHECK(mkfifoat(wh_dir_fd(d), "fifo", 0600) == 0, "mkfifo");
    o = wh_obj_open(d, "fifo", WH_KIND_LOCK, 1, 0600, &e);
    CHECK(o == NULL && e.code == WH_EUNSAFE, "a FIFO at the path: %s", o ? "opened" : e.msg);
    if (o != NULL)
        wh_obj_unref(o);
    free(buf);
}

static void test_unsafe_dirs(void)
{
    struct wh_err e;
    struct wh_dir *d;
    char path[160], sub[200], target[160];

    path_of(path, sizeof path, "ww");
    CHECK(mkdir(path, 0700) == 0 && chmod(path, 0777) == 0, "world-writable dir made");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE,
          "a world-writable directory without the sticky bit: %s", d ? "accepted" : e.msg);
    snprintf(sub, sizeof sub, "%s/inner", path);
    CHECK(mkdir(sub, 0700) == 0, "mkdir inner");
    d = wh_dir_open(sub, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE, "a path through one: %s", d ? "accepted" : e.msg);
    CHECK(chmod(path, 0770) == 0, "chmod 0770");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE, "group-writable without the sticky bit: %s",
          d ? "accepted" : e.msg);
    CHECK(chmod(path, 01777) == 0, "chmod 01777");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d != NULL, "a sticky world-writable directory is fine: %s", d ? "" : e.msg);

    path_of(path, sizeof path, "dirlink");
    path_of(sub, sizeof sub, "main");
    CHECK(symlink(sub, path) == 0, "symlink to a directory");
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && e.code == WH_EUNSAFE, "a lock directory that is a symlink: %s",
          d ? "accepted" : e.msg);

    /* A symbolic link before the last component is followed if we (or root) own it. */
    path_of(path, sizeof path, "real");
    snprintf(sub, sizeof sub, "%s/inner", path);
    CHECK(mkdir(path, 0700) == 0 && mkdir(sub, 0700) == 0, "mkdir real/inner");
    d = wh_dir_open(sub, 0700, &e);
    CHECK(d != NULL, "real/inner: %s", d ? "" : e.msg);
    path_of(path, sizeof path, "lnk");
    path_of(target, sizeof target, "real");
    CHECK(symlink(target, path) == 0, "symlink lnk -> real");
    snprintf(sub, sizeof sub, "%s/inner", path);
    {
        struct wh_dir *d2 = wh_dir_open(sub, 0700, &e);
        CHECK(d2 != NULL && d2 == d, "a path through our own symlink is the same directory: %s",
              d2 ? "" : e.msg);
    }
    if (geteuid() == 0) {
        CHECK(lchown(path, 12345, 12345) == 0, "lchown");
        d = wh_dir_open(sub, 0700, &e);
        CHECK(d == NULL && e.code == WH_EUNSAFE, "a path through another user's symlink: %s",
              d ? "accepted" : e.msg);
        path_of(path, sizeof path, "theirs");
        CHECK(mkdir(path, 0700) == 0 && chown(path, 12345, 12345) == 0, "another user's dir");
        d = wh_dir_open(path, 0700, &e);
        CHECK(d == NULL && e.code == WH_EUNSAFE, "a directory another user owns: %s",
              d ? "accepted" : e.msg);
    } else {
        th_note("not root: another user's symlinks and directories not tested");
    }

    path_of(path, sizeof path, "afile");
    {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    }
    d = wh_dir_open(path, 0700, &e);
    CHECK(d == NULL && (e.code == WH_EUNSAFE || e.code == WH_EOS),
          "a lock directory that is a file: %s", d ? "accepted" : e.msg);
}

/* A registry shard that is not one: no identity, so no acquisition, and a clear error. */
static void test_hostile_registry(void)
{
    static const struct {
        const char *dir;
        uint32_t version, nslots; /* 0: garbage instead of a header */
        int code;
    } cases[] = {{"reg-garbage", 0, 0, WH_ECORRUPT},
                 {"reg-version", WH_FORMAT_VERSION + 1, WH_SHARD_SLOTS, WH_EMISMATCH},
                 {"reg-layout", WH_FORMAT_VERSION, 7, WH_ECORRUPT}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct wh_reg_header rh;
        struct wh_err e;
        struct wh_dir *d;
        struct wh_obj *o;
        unsigned char buf[WH_REG_FILE_SIZE];
        uint64_t held = 0;
        char path[160];
        int r;

        path_of(path, sizeof path, cases[i].dir);
        d = wh_dir_open(path, 0700, &e);
        if (!CHECK(d != NULL, "%s: %s", cases[i].dir, d ? "" : e.msg))
            continue;
        memset(buf, 0x5A, sizeof buf);
        if (cases[i].version != 0) {
            memset(&rh, 0, sizeof rh);
            memcpy(rh.magic, WH_REG_MAGIC, 8);
            rh.version = cases[i].version;
            rh.header_size = sizeof rh;
            rh.shard = 0;
            rh.nslots = cases[i].nslots;
            rh.slot_size = sizeof(struct wh_reg_slot);
            memcpy(buf, &rh, sizeof rh);
        }
        write_file(d, WH_REG_PREFIX "00", buf, sizeof buf);
        o = wh_obj_open(d, "obj", WH_KIND_LOCK, 1, 0600, &e);
        if (!CHECK(o != NULL, "%s: the object opens: %s", cases[i].dir, o ? "" : e.msg))
            continue;
        memset(&e, 0, sizeof e);
        r = wh_attempt(o, WH_MODE_LOCK, AC_NS, NULL, wh_now(), &held, &e);
        CHECK(r == -1 && e.code == cases[i].code, "%s: attempt %d, code %s (%s)", cases[i].dir, r,
              wh_code_name(e.code), e.msg);
        CHECK(atomic_load(&o->v.h->owner) == 0 && atomic_load(&o->v.h->guard) == 0,
              "%s: nothing taken", cases[i].dir);
        CHECK(wh_dir_current(d) == 0, "%s: no identity", cases[i].dir);
        wh_obj_unref(o);
    }
}

int main(void)
{
    proc_setup("test-files");
    RUN(test_remove);
    RUN(test_hostile_files);
    RUN(test_unsafe_dirs);
    RUN(test_hostile_registry);
    return proc_done(th_done());
}
