/*
 * The process registry of a lock directory: WH_SHARDS shard files of
 * WH_SHARD_SLOTS slots. A process claims a slot by taking an OFD write lock
 * on the slot's byte, then bumping the slot's generation; it keeps the lock
 * for life and the kernel drops it when the process dies. An identity
 * (slot, generation) is alive while the slot still has that generation and
 * its byte is locked. A false "alive" only delays recovery; a false "dead"
 * must never happen, hence the order of the checks below.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dir.h"
#include "policy.h"

static size_t reg_size_of(const void *p)
{
    struct wh_reg_header h;
    memcpy(&h, p, sizeof h);
    if (memcmp(h.magic, WH_REG_MAGIC, 8) != 0 || h.version != WH_FORMAT_VERSION)
        return 0;
    return WH_REG_FILE_SIZE;
}

static int shard_valid(const struct wh_reg_header *h, unsigned s)
{
    return memcmp(h->magic, WH_REG_MAGIC, 8) == 0 && h->version == WH_FORMAT_VERSION &&
           h->header_size == sizeof *h && h->shard == s && h->nslots == WH_SHARD_SLOTS &&
           h->slot_size == sizeof(struct wh_reg_slot);
}

/* Maps shard s (creating it if `create`). 0 ok, 1 absent, -1 error. wh_mu held. */
static int shard_open(struct wh_dir *d, unsigned s, int create, struct wh_err *e)
{
    char name[32], label[PATH_MAX + 40];
    struct wh_reg_header fresh, copy;
    struct wh_filekind k = {sizeof fresh, &fresh, WH_REG_FILE_SIZE, reg_size_of};
    struct stat st;
    void *map;
    int fd, created;

    if (d->shard[s].map != NULL)
        return 0;
    snprintf(name, sizeof name, WH_REG_PREFIX "%02u", s);
    snprintf(label, sizeof label, "registry %s/%s", d->path, name);
    if (create) {
        fd = wh_dir_openat(d, name, d->file_mode, &created, e);
        if (fd < 0)
            return -1;
    } else {
        fd = openat(d->fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
            return errno == ENOENT ? 1 : wh_fail(e, WH_EOS, errno, "cannot open %s", label);
    }
    memset(&fresh, 0, sizeof fresh);
    memcpy(fresh.magic, WH_REG_MAGIC, 8);
    fresh.version = WH_FORMAT_VERSION;
    fresh.header_size = sizeof fresh;
    fresh.shard = s;
    fresh.nslots = WH_SHARD_SLOTS;
    fresh.slot_size = sizeof(struct wh_reg_slot);
    if (wh_file_ready(fd, &k, label, e) != 0)
        goto fail;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        wh_fail(e, WH_EUNSAFE, 0, "%s is not a regular file", label);
        goto fail;
    }
    if ((size_t)st.st_size < sizeof copy || pread(fd, &copy, sizeof copy, 0) != sizeof copy ||
        (size_t)st.st_size < WH_REG_FILE_SIZE || !shard_valid(&copy, s)) {
        if ((size_t)st.st_size >= sizeof copy && memcmp(copy.magic, WH_REG_MAGIC, 8) == 0 &&
            copy.version != WH_FORMAT_VERSION)
            wh_fail(e, WH_EMISMATCH, 0, "%s has format version %u; this library uses %u", label,
                    copy.version, WH_FORMAT_VERSION);
        else
            wh_fail(e, WH_ECORRUPT, 0, "%s is not a valid registry file; remove it", label);
        goto fail;
    }
    map = mmap(NULL, WH_REG_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        wh_fail(e, WH_EOS, errno, "cannot map %s: %s", label, strerror(errno));
        goto fail;
    }
    d->shard[s].fd = fd;
    d->shard[s].map = map;
    d->shard[s].dev = st.st_dev;
    d->shard[s].ino = st.st_ino;
    return 0;
fail:
    close(fd);
    return -1;
}

static void unmap_shard(struct wh_dir *d, unsigned s)
{
    if (d->shard[s].map != NULL)
        munmap(d->shard[s].map, WH_REG_FILE_SIZE);
    if (d->shard[s].fd >= 0)
        close(d->shard[s].fd);
    d->shard[s].map = NULL;
    d->shard[s].fd = -1;
}

static void forget_locked(struct wh_dir *d)
{
    /* Closing our copy of the descriptor leaves the parent's slot lock in place. */
    for (unsigned s = 0; s < WH_SHARDS; s++)
        unmap_shard(d, s);
    atomic_store(&d->me, 0);
    d->pid = 0;
    d->npast = 0;
}

/*
 * Whether the shard s we map is still the file linked at its path (wh_mu held). If something
 * else unlinked or replaced it, our mapping is dropped (the next look maps the file now there)
 * and, if our slot was in it, so is our identity: nobody can see it any more, so its holds are
 * lost, and the next wh_dir_me claims a slot in the registry now at the path.
 */
static int shard_current(struct wh_dir *d, unsigned s)
{
    char name[32];
    struct stat st;
    uint64_t me = atomic_load(&d->me);
    if (d->shard[s].map == NULL)
        return 1;
    snprintf(name, sizeof name, WH_REG_PREFIX "%02u", s);
    if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == d->shard[s].dev &&
        st.st_ino == d->shard[s].ino)
        return 1;
    if (errno == EINTR || errno == ENOMEM)
        return 1; /* in doubt, as if it were */
    if (me != 0 && WH_IDENT_SLOT(me) / WH_SHARD_SLOTS == s) {
        d->past[d->npast++ % 8] = me;
        atomic_store(&d->me, 0);
    }
    unmap_shard(d, s);
    return 0;
}

void wh_registry_forget(struct wh_dir *d)
{
    pthread_mutex_lock(&wh_mu);
    forget_locked(d);
    pthread_mutex_unlock(&wh_mu);
}

/* A random first generation for a slot of a new registry file: identities of two incarnations
 * of the registry (one unlinked by a cleaner, one created after it) do not meet (2^-47). */
static uint64_t first_gen(void)
{
    uint64_t g = 0;
    if (getrandom(&g, sizeof g, GRND_NONBLOCK) != sizeof g)
        g = (uint64_t)wh_now() * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)getpid();
    g &= WH_GEN_MAX;
    return g != 0 ? g : 1;
}

static uint64_t claim_locked(struct wh_dir *d, struct wh_err *e)
{
    pid_t pid = getpid();
    uint64_t me = atomic_load(&d->me);
    struct wh_err first = {0, 0, ""};
    if (me != 0 && d->pid == pid)
        return me;
    if (me != 0 || d->pid != pid)
        forget_locked(d); /* a child created without our fork handlers (clone, vfork) */
    for (unsigned s = 0; s < WH_SHARDS; s++) {
        struct wh_reg_header *h;
        uint32_t hint;
        if (shard_open(d, s, 1, e) != 0) {
            /* One we may not open (another user's, with a narrower mode): try the next, and
             * remember why. Anything else wrong with a registry file is said at once. */
            if (e->code != WH_EOS || (e->errnum != EACCES && e->errnum != EPERM))
                return 0;
            if (first.code == 0)
                first = *e;
            continue;
        }
        h = d->shard[s].map;
        hint = atomic_load(&h->hint) % WH_SHARD_SLOTS;
        for (unsigned k = 0; k < WH_SHARD_SLOTS; k++) {
            unsigned i = (hint + k) % WH_SHARD_SLOTS;
            struct wh_reg_slot *slot = &wh_shard_slots(h)[i];
            uint64_t gen;
            if (wh_ofd_lock(d->shard[s].fd, F_WRLCK, WH_LK_SLOT0 + i, 0) != 0) {
                if (errno == EAGAIN || errno == EACCES)
                    continue;
                wh_fail(e, WH_EOS, errno, "cannot lock a slot of %s/" WH_REG_PREFIX "%02u: %s",
                        d->path, s, strerror(errno));
                return 0;
            }
            /* The lock first, then the new generation: whoever sees the new generation also
             * finds the slot locked. (Generations wrap after 2^47 claims of one slot.) */
            gen = atomic_load(&slot->gen);
            gen = gen == 0 ? first_gen() : gen + 1;
            if (gen > WH_GEN_MAX)
                gen = 1;
            atomic_store(&slot->pid, (uint32_t)pid);
            atomic_store(&slot->gen, gen);
            atomic_store(&h->hint, (i + 1) % WH_SHARD_SLOTS);
            d->pid = pid;
            me = WH_IDENT(s * WH_SHARD_SLOTS + i, gen);
            atomic_store(&d->me, me);
            atomic_store(&d->next_check, wh_now_coarse() + WH_LINK_CHECK_NS);
            return me;
        }
    }
    if (first.code != 0) {
        wh_fail(e, first.code, first.errnum,
                "no usable process slot in lock directory %s: %s (registry files other users "
                "created with a narrower mode can be removed while no process uses them)",
                d->path, first.msg);
        return 0;
    }
    wh_fail(e, WH_EOS, EAGAIN,
            "no free process slot in the registry of lock directory %s: all %u are held by live "
            "processes; end some of them or use another lock directory",
            d->path, WH_MAX_SLOTS);
    return 0;
}

uint64_t wh_dir_me_at(struct wh_dir *d, int64_t coarse, struct wh_err *e)
{
    uint64_t me = atomic_load_explicit(&d->me, memory_order_acquire);
    if (me != 0 && coarse < atomic_load_explicit(&d->next_check, memory_order_relaxed))
        return me;
    pthread_mutex_lock(&wh_mu);
    me = atomic_load(&d->me);
    if (me != 0) {
        atomic_store(&d->next_check, wh_now_coarse() + WH_LINK_CHECK_NS);
        shard_current(d, WH_IDENT_SLOT(me) / WH_SHARD_SLOTS);
    }
    me = claim_locked(d, e);
    pthread_mutex_unlock(&wh_mu);
    return me;
}

uint64_t wh_dir_me(struct wh_dir *d, struct wh_err *e)
{
    return wh_dir_me_at(d, wh_now_coarse(), e);
}

uint64_t wh_dir_current_checked(struct wh_dir *d)
{
    uint64_t me = atomic_load_explicit(&d->me, memory_order_acquire);
    if (me != 0 && wh_now_coarse() >= atomic_load_explicit(&d->next_check, memory_order_relaxed)) {
        pthread_mutex_lock(&wh_mu);
        atomic_store(&d->next_check, wh_now_coarse() + WH_LINK_CHECK_NS);
        if (atomic_load(&d->me) != 0)
            shard_current(d, WH_IDENT_SLOT(atomic_load(&d->me)) / WH_SHARD_SLOTS);
        me = atomic_load(&d->me);
        pthread_mutex_unlock(&wh_mu);
    }
    return me;
}

int wh_dir_ours(struct wh_dir *d, uint64_t id, int exact)
{
    int r = 0;
    uint64_t me;
    if (id == 0)
        return 0;
    pthread_mutex_lock(&wh_mu);
    me = atomic_load(&d->me);
    if (me != 0 && d->pid == getpid() && exact)
        shard_current(d, WH_IDENT_SLOT(me) / WH_SHARD_SLOTS);
    me = atomic_load(&d->me);
    if (me == id && d->pid == getpid())
        r = 2;
    for (unsigned i = 0; r == 0 && i < d->npast && i < 8; i++)
        if (d->past[i] == id)
            r = 1;
    pthread_mutex_unlock(&wh_mu);
    return r;
}

uint64_t wh_dir_current(struct wh_dir *d) { return atomic_load_explicit(&d->me, memory_order_acquire); }

/* The descriptor whose open file description holds our slot's lock: a process that inherits a
 * duplicate of it keeps our identity alive (the command-line tool hands it to its command). */
int wh_dir_slot_fd(struct wh_dir *d)
{
    int fd = -1;
    uint64_t me;
    pthread_mutex_lock(&wh_mu);
    me = atomic_load(&d->me);
    if (me != 0 && d->pid == getpid())
        fd = d->shard[WH_IDENT_SLOT(me) / WH_SHARD_SLOTS].fd;
    pthread_mutex_unlock(&wh_mu);
    return fd;
}

/* The verdict on id against the shard we map now (wh_mu held): 1 alive, 0 dead, -1 our own
 * slot with another identity (dead, if our shard is current). */
static int judge(struct wh_dir *d, uint64_t id)
{
    uint32_t slot = WH_IDENT_SLOT(id), s = slot / WH_SHARD_SLOTS, i = slot % WH_SHARD_SLOTS;
    uint64_t gen = WH_IDENT_GEN(id), me = atomic_load(&d->me);
    struct wh_reg_slot *rs;
    struct wh_err ignored;
    struct flock fl;
    int o;

    /* The kernel never reports our own locks to us: compare generations instead. */
    if (me != 0 && WH_IDENT_SLOT(me) == slot)
        return id == me ? 1 : -1;
    o = shard_open(d, s, 0, &ignored);
    if (o != 0)
        return o == 1 ? 0 : 1; /* no shard file: nobody holds a slot of it; in doubt: alive */
    rs = &wh_shard_slots(d->shard[s].map)[i];
    if (atomic_load(&rs->gen) != gen)
        return 0;
    /* F_RDLCK: only a write lock, which a read-only opener cannot take, proves life. */
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = WH_LK_SLOT0 + i;
    fl.l_len = 1;
    if (fcntl(d->shard[s].fd, F_OFD_GETLK, &fl) != 0)
        return 1;
    if (fl.l_type == F_UNLCK)
        return 0;
    /* Locked: by our identity, unless a new owner took the slot and is about to bump it. */
    return atomic_load(&rs->gen) == gen;
}

/*
 * Is identity id alive? A "dead" verdict stands only if it was reached in the registry file
 * now linked at the path: judged in a file a cleaner unlinked, an identity of the registry
 * created after it would look dead (or, with our own slot number, like an earlier generation
 * of ours). So a "dead" is checked against the path, and judged again in the file there.
 */
int wh_dir_alive(void *ctx, uint64_t id)
{
    struct wh_dir *d = ctx;
    uint32_t slot = WH_IDENT_SLOT(id);
    int r = 1; /* when in doubt, alive */

    if (id == 0 || WH_IDENT_GEN(id) == 0 || slot >= WH_MAX_SLOTS || (id & WH_GUARD_SLEEPERS))
        return 0;
    pthread_mutex_lock(&wh_mu);
    for (int round = 0; round < 3; round++) {
        uint64_t me = atomic_load(&d->me);
        int v = judge(d, id);
        unsigned s = v < 0 ? WH_IDENT_SLOT(me) / WH_SHARD_SLOTS : slot / WH_SHARD_SLOTS;
        if (v > 0 || shard_current(d, s)) {
            r = v > 0;
            break;
        }
        /* That file was replaced; shard_current dropped it (and our identity, if it held it). */
    }
    pthread_mutex_unlock(&wh_mu);
    return r;
}

uint32_t wh_dir_pid(struct wh_dir *d, uint64_t id)
{
    uint32_t slot = WH_IDENT_SLOT(id), pid = 0;
    struct wh_err ignored;
    if (id == 0 || slot >= WH_MAX_SLOTS)
        return 0;
    if (id == atomic_load(&d->me))
        return (uint32_t)getpid();
    pthread_mutex_lock(&wh_mu);
    if (shard_open(d, slot / WH_SHARD_SLOTS, 0, &ignored) == 0) {
        struct wh_reg_slot *rs = &wh_shard_slots(d->shard[slot / WH_SHARD_SLOTS].map)[slot % WH_SHARD_SLOTS];
        if (atomic_load(&rs->gen) == WH_IDENT_GEN(id))
            pid = atomic_load(&rs->pid);
    }
    pthread_mutex_unlock(&wh_mu);
    return pid;
}

/* fork: the child must not keep the parent's registry descriptors open, or the parent's slot
 * locks would outlive the parent. The handlers live as long as the process: the module is
 * linked with -z nodelete. */
static void before_fork(void) { pthread_mutex_lock(&wh_mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&wh_mu); }
static void after_fork_child(void)
{
    for (struct wh_dir *d = wh_dirs; d != NULL; d = d->next)
        forget_locked(d);
    wh_pending_forget();
    pthread_mutex_unlock(&wh_mu);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void register_fork_handlers(void)
{
    Dl_info self;
    /* Pin the module in memory even if it was built without -z nodelete (e.g. by luarocks):
     * dlclose must never unmap code that a fork handler points to. */
    if (dladdr((void *)register_fork_handlers, &self) && self.dli_fname != NULL)
        dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void wh_fork_init(void) { pthread_once(&fork_once, register_fork_handlers); }
