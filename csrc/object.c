/*
 * Object files: create or open, validate, map. One mapping per (dev, ino)
 * per process, reference-counted and shared by every object and handle that
 * uses it, so no handle ever outlives the memory it writes to. Each mapping
 * keeps a shared OFD lock on the "in use" byte, which is what stops
 * wh_obj_remove from unlinking a file somebody uses.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dir.h"
#include "policy.h"

/* The open objects of the process, hashed by (dev, ino); guarded by wh_mu. The table doubles
 * when it holds twice as many objects as buckets, so opening is O(1) expected. */
static struct wh_obj **buckets;
static size_t nbuckets, nobjs;

static size_t bucket_of(dev_t dev, ino_t ino, size_t n)
{
    uint64_t h = ((uint64_t)ino * UINT64_C(0x9E3779B97F4A7C15)) ^ (uint64_t)dev;
    return (size_t)(h ^ (h >> 29)) & (n - 1);
}

/* Adds o (wh_mu held); 0, or -1 if memory runs out. */
static int table_add(struct wh_obj *o)
{
    if (nobjs >= 2 * nbuckets) {
        size_t n = nbuckets ? 2 * nbuckets : 64;
        struct wh_obj **b = calloc(n, sizeof *b);
        if (b == NULL && nbuckets == 0)
            return -1;
        if (b != NULL) { /* else: keep the smaller table, a little slower */
            for (size_t i = 0; i < nbuckets; i++)
                while (buckets[i] != NULL) {
                    struct wh_obj *x = buckets[i];
                    size_t k = bucket_of(x->dev, x->ino, n);
                    buckets[i] = x->next;
                    x->next = b[k];
                    b[k] = x;
                }
            free(buckets);
            buckets = b;
            nbuckets = n;
        }
    }
    {
        size_t k = bucket_of(o->dev, o->ino, nbuckets);
        o->next = buckets[k];
        buckets[k] = o;
        nobjs++;
    }
    return 0;
}

/* An open object for (dev, ino) with a new reference, or NULL. wh_mu held. */
static struct wh_obj *find_live(dev_t dev, ino_t ino)
{
    if (nbuckets == 0)
        return NULL;
    for (struct wh_obj *o = buckets[bucket_of(dev, ino, nbuckets)]; o != NULL; o = o->next) {
        int n = atomic_load(&o->refs);
        if (o->dev != dev || o->ino != ino)
            continue;
        while (n > 0)
            if (atomic_compare_exchange_weak(&o->refs, &n, n + 1))
                return o;
    }
    return NULL;
}

const char *wh_kind_name(uint32_t kind)
{
    switch (kind) {
    case WH_KIND_LOCK:
        return "lock";
    case WH_KIND_SEMAPHORE:
        return "semaphore";
    case WH_KIND_RWLOCK:
        return "rwlock";
    case WH_KIND_EVENT:
        return "event";
    }
    return "object";
}

#define WAIT_OFF ((uint32_t)sizeof(struct wh_obj_header))
#define SLOT_OFF (WAIT_OFF + WH_WAIT_ENTRIES * (uint32_t)sizeof(struct wh_wait_entry))

static uint32_t kind_nslots(uint32_t kind)
{
    return kind == WH_KIND_SEMAPHORE || kind == WH_KIND_RWLOCK ? WH_MAX_SLOTS : 0;
}

/* max_count: tickets of a semaphore, the reset mode of an event, 1 for the others. */
static int max_count_valid(uint32_t kind, uint32_t n)
{
    if (kind == WH_KIND_SEMAPHORE)
        return n >= 1 && n <= INT32_MAX;
    if (kind == WH_KIND_EVENT)
        return n == WH_EVENT_MANUAL || n == WH_EVENT_AUTO;
    return n == 1;
}

static uint64_t kind_size(uint32_t kind)
{
    return SLOT_OFF + (uint64_t)kind_nslots(kind) * sizeof(struct wh_slot_entry);
}

static size_t obj_size_of(const void *p)
{
    struct wh_obj_header h;
    memcpy(&h, p, sizeof h);
    if (memcmp(h.magic, WH_OBJ_MAGIC, 8) != 0 || h.version != WH_FORMAT_VERSION ||
        h.kind < WH_KIND_LOCK || h.kind > WH_KIND_EVENT)
        return 0;
    return (size_t)kind_size(h.kind);
}

static void fresh_header(struct wh_obj_header *h, uint32_t kind, uint32_t max_count)
{
    memset(h, 0, sizeof *h);
    memcpy(h->magic, WH_OBJ_MAGIC, 8);
    h->version = WH_FORMAT_VERSION;
    h->header_size = sizeof *h;
    h->kind = kind;
    h->max_count = kind == WH_KIND_SEMAPHORE ? max_count
                   : kind == WH_KIND_EVENT   ? (max_count & ~WH_EVENT_INITIAL)
                                             : 1;
    h->ev_set = kind == WH_KIND_EVENT && (max_count & WH_EVENT_INITIAL) ? 1 : 0;
    h->nslots = kind_nslots(kind);
    h->nwait = WH_WAIT_ENTRIES;
    h->wait_off = WAIT_OFF;
    h->slot_off = h->nslots ? SLOT_OFF : 0;
    h->file_size = kind_size(kind);
    /* Tokens of a file made again after one was removed exceed the old file's, unless that
     * handed out more than one token per microsecond of its life. */
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        h->token = ((uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000) & WH_TOKEN_MAX;
    }
}

static const char *describe(uint32_t kind, uint32_t max_count, char *buf, size_t len)
{
    if (kind == WH_KIND_SEMAPHORE)
        snprintf(buf, len, "a semaphore with max_count %u", max_count);
    else if (kind == WH_KIND_EVENT)
        snprintf(buf, len, "a%s event", max_count == WH_EVENT_AUTO ? "n auto-reset" : " manual-reset");
    else
        snprintf(buf, len, "a%s %s", kind == WH_KIND_LOCK ? "" : "n", wh_kind_name(kind));
    return buf;
}

static int mismatch(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max_count,
                    uint32_t want_kind, uint32_t want_max, struct wh_err *e)
{
    char has[64], want[64];
    return wh_fail(e, WH_EMISMATCH, 0,
                   "'%s' in %s is %s, not %s: another program uses this name for something "
                   "else; choose another name",
                   name, d->path, describe(kind, max_count, has, sizeof has),
                   describe(want_kind, want_max, want, sizeof want));
}

/* Validates a private copy of the header; fills the immutable part of *v. */
static int validate(struct wh_dir *d, const char *name, const struct wh_obj_header *h, off_t size,
                    uint32_t kind, uint32_t max_count, struct wh_view *v, struct wh_err *e)
{
    if (memcmp(h->magic, WH_OBJ_MAGIC, 8) != 0)
        return wh_fail(e, WH_ECORRUPT, 0,
                       "%s/%s is not a waithandles object file (bad magic); remove it if nothing "
                       "else owns it",
                       d->path, name);
    if (h->version != WH_FORMAT_VERSION)
        return wh_fail(e, WH_EMISMATCH, 0,
                       "%s/%s has file format version %u, but this library uses version %u: "
                       "another version of waithandles uses it; use the same version everywhere",
                       d->path, name, h->version, WH_FORMAT_VERSION);
    if (h->header_size != sizeof *h || h->kind < WH_KIND_LOCK || h->kind > WH_KIND_EVENT ||
        h->nwait != WH_WAIT_ENTRIES || h->wait_off != WAIT_OFF ||
        h->nslots != kind_nslots(h->kind) || h->slot_off != (h->nslots ? SLOT_OFF : 0) ||
        h->file_size != kind_size(h->kind) || (uint64_t)size < h->file_size ||
        !max_count_valid(h->kind, h->max_count))
        return wh_fail(e, WH_ECORRUPT, 0,
                       "%s/%s is not a valid waithandles object file (bad layout or size %lld); "
                       "remove it",
                       d->path, name, (long long)size);
    if (kind == WH_KIND_EVENT)
        max_count &= ~WH_EVENT_INITIAL;
    if (h->kind != kind || ((kind == WH_KIND_SEMAPHORE || kind == WH_KIND_EVENT) &&
                            h->max_count != max_count))
        return mismatch(d, name, h->kind, h->max_count, kind, max_count, e);
    v->kind = h->kind;
    v->max_count = h->max_count;
    v->nslots = h->nslots;
    v->nwait = h->nwait;
    return 0;
}

/* validate() for a reader that takes whatever kind the file says it is (inspect.c). */
int wh_obj_validate(struct wh_dir *d, const char *name, const struct wh_obj_header *h, off_t size,
                    struct wh_view *v, struct wh_err *e)
{
    return validate(d, name, h, size, h->kind, h->max_count, v, e);
}

/* o (a reference taken by find_live) for a caller that wants kind and max_count of name. */
static struct wh_obj *reuse(struct wh_obj *o, struct wh_dir *d, const char *name, uint32_t kind,
                            uint32_t max_count, struct wh_err *e)
{
    uint32_t want = kind == WH_KIND_EVENT ? max_count & ~WH_EVENT_INITIAL : max_count;
    if (o->v.kind != kind ||
        ((kind == WH_KIND_SEMAPHORE || kind == WH_KIND_EVENT) && o->v.max_count != want)) {
        mismatch(d, name, o->v.kind, o->v.max_count, kind, want, e);
        wh_obj_unref(o);
        return NULL;
    }
    return o;
}

struct wh_obj *wh_obj_open(struct wh_dir *d, const char *name, uint32_t kind, uint32_t max_count,
                           int mode, struct wh_err *e)
{
    char label[PATH_MAX + 300];
    struct wh_obj_header fresh, copy;
    struct wh_filekind k = {sizeof fresh, &fresh, 0, obj_size_of};
    struct wh_obj *o;
    struct stat st;
    int fd = -1, created;
    int64_t deadline = 0;

    /* Open in this process already, and still the file at the path: no descriptor, no lock. */
    if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
        pthread_mutex_lock(&wh_mu);
        o = find_live(st.st_dev, st.st_ino);
        pthread_mutex_unlock(&wh_mu);
        if (o != NULL) {
            if (!atomic_load(&o->replaced))
                return reuse(o, d, name, kind, max_count, e);
            wh_obj_unref(o);
        }
    }
    fresh_header(&fresh, kind, max_count);
    k.fresh_size = (size_t)fresh.file_size;
    snprintf(label, sizeof label, "%s '%s' in %s", wh_kind_name(kind), name, d->path);
    for (int tries = 0;; tries++) {
        fd = wh_dir_openat(d, name, mode, &created, e);
        if (fd < 0)
            return NULL;
        if (wh_file_ready(fd, &k, label, e) != 0)
            goto fail;
        /* Shared "in use" lock; a remover holds it exclusively for a moment. */
        if (wh_ofd_lock(fd, F_RDLCK, WH_LK_INUSE, WH_INUSE_WAIT_MS) != 0) {
            wh_fail(e, WH_EOS, errno == EACCES ? EAGAIN : errno,
                    "cannot open %s: it has been being removed for 2 s", label);
            goto fail;
        }
        if (fstat(fd, &st) != 0) {
            wh_fail(e, WH_EOS, errno, "cannot stat %s: %s", label, strerror(errno));
            goto fail;
        }
        if (st.st_nlink > 0)
            break;
        /* Removed between our open and our lock: open the name again, after a pause that
         * lets a remover that keeps removing it (it can only while nobody holds it open)
         * lose the race sooner or later. */
        close(fd);
        fd = -1;
        if (!wh_retry_pause(tries, &deadline)) {
            wh_fail(e, WH_EOS, EAGAIN, "cannot open %s: something kept removing it for %d s",
                    label, (int)(WH_OPEN_RETRY_NS / 1000000000));
            return NULL;
        }
    }

    pthread_mutex_lock(&wh_mu);
    o = find_live(st.st_dev, st.st_ino);
    pthread_mutex_unlock(&wh_mu);
    if (o != NULL) {
        close(fd);
        return reuse(o, d, name, kind, max_count, e);
    }

    o = calloc(1, sizeof *o);
    if (o == NULL) {
        wh_fail(e, WH_EOS, ENOMEM, "out of memory opening %s", label);
        goto fail;
    }
    if ((size_t)st.st_size < sizeof copy || pread(fd, &copy, sizeof copy, 0) != sizeof copy) {
        wh_fail(e, WH_ECORRUPT, 0,
                "%s/%s is not a valid waithandles object file (only %lld bytes); remove it",
                d->path, name, (long long)st.st_size);
        goto fail_free;
    }
    if (validate(d, name, &copy, st.st_size, kind, max_count, &o->v, e) != 0)
        goto fail_free;
    o->size = (size_t)copy.file_size;
    o->base = mmap(NULL, o->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (o->base == MAP_FAILED) {
        wh_fail(e, WH_EOS, errno, "cannot map %s: %s", label, strerror(errno));
        goto fail_free;
    }
    o->v.h = o->base;
    o->v.waits = (struct wh_wait_entry *)((char *)o->base + WAIT_OFF);
    o->v.slots = o->v.nslots ? (struct wh_slot_entry *)((char *)o->base + SLOT_OFF) : NULL;
    atomic_init(&o->refs, 1);
    o->dev = st.st_dev;
    o->ino = st.st_ino;
    o->fd = fd;
    o->dir = d;
    snprintf(o->name, sizeof o->name, "%s", name);

    pthread_mutex_lock(&wh_mu);
    {
        /* Another thread may have mapped the same file meanwhile: use one mapping. */
        struct wh_obj *other = find_live(o->dev, o->ino);
        if (other != NULL) {
            pthread_mutex_unlock(&wh_mu);
            munmap(o->base, o->size);
            close(fd);
            free(o);
            return other;
        }
        if (table_add(o) != 0) {
            pthread_mutex_unlock(&wh_mu);
            wh_fail(e, WH_EOS, ENOMEM, "out of memory opening %s", label);
            munmap(o->base, o->size);
            goto fail_free;
        }
    }
    pthread_mutex_unlock(&wh_mu);
    return o;

fail_free:
    free(o);
fail:
    if (fd >= 0)
        close(fd);
    return NULL;
}

int wh_obj_replaced_at(struct wh_obj *o, int64_t coarse)
{
    struct stat st;
    if (atomic_load_explicit(&o->replaced, memory_order_relaxed))
        return 1;
    if (coarse != 0) {
        if (coarse < atomic_load_explicit(&o->next_check, memory_order_relaxed))
            return 0;
        atomic_store_explicit(&o->next_check, coarse + WH_LINK_CHECK_NS, memory_order_relaxed);
    }
    if (fstatat(wh_dir_fd(o->dir), o->name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (st.st_dev == o->dev && st.st_ino == o->ino)
            return 0;
    } else if (errno != ENOENT) {
        return 0; /* in doubt (EINTR, ENOMEM, ...): as it was */
    }
    atomic_store(&o->replaced, 1);
    return 1;
}

int wh_obj_replaced(struct wh_obj *o, int exact)
{
    return wh_obj_replaced_at(o, exact ? 0 : wh_now_coarse());
}

/* Caller holds a reference already: no lock needed. */
void wh_obj_ref(struct wh_obj *o) { atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed); }

/* Dropping the last reference unlinks under wh_mu; find_live never revives a zero count, so
 * nobody can take a reference to an object on its way out. */
void wh_obj_unref(struct wh_obj *o)
{
    struct wh_obj **pp;
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&wh_mu);
    for (pp = &buckets[bucket_of(o->dev, o->ino, nbuckets)]; *pp != o; pp = &(*pp)->next)
        ;
    *pp = o->next;
    nobjs--;
    pthread_mutex_unlock(&wh_mu);
    munmap(o->base, o->size);
    close(o->fd);
    free(o);
}

int wh_obj_remove(struct wh_dir *d, const char *name, struct wh_err *e)
{
    struct stat st, now;
    int fd, r = 0;

    if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0
                               : wh_fail(e, WH_EOS, errno, "cannot stat %s/%s: %s", d->path, name,
                                         strerror(errno));
    if (!S_ISREG(st.st_mode))
        return wh_fail(e, WH_EUNSAFE, 0,
                       "%s/%s is not a regular file (a symbolic link or special file); it was "
                       "left untouched",
                       d->path, name);
    fd = openat(d->fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? 0
                               : wh_fail(e, errno == ELOOP ? WH_EUNSAFE : WH_EOS, errno,
                                         "cannot open %s/%s: %s", d->path, name, strerror(errno));
    /* Exclusive "in use" lock: fails while any process (this one included) has it open. */
    if (wh_ofd_lock(fd, F_WRLCK, WH_LK_INUSE, 0) != 0) {
        if (errno != EAGAIN && errno != EACCES)
            r = wh_fail(e, WH_EOS, errno, "cannot lock %s/%s: %s", d->path, name, strerror(errno));
    } else if (fstat(fd, &st) == 0 && fstatat(d->fd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
               now.st_dev == st.st_dev && now.st_ino == st.st_ino) {
        if (unlinkat(d->fd, name, 0) == 0)
            r = 1;
        else
            r = wh_fail(e, WH_EOS, errno, "cannot remove %s/%s: %s", d->path, name,
                        strerror(errno));
    }
    close(fd);
    return r;
}
