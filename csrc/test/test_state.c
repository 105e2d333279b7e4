/*
 * Unit tests of the state machines (csrc/state.c), and of the guard word's
 * sleep/wake protocol (csrc/guard.c) in one thread: no Lua, no processes.
 * Objects live in calloc'd memory of exactly the file size, laid out as in
 * csrc/object.c, so AddressSanitizer sees any access outside an object.
 * Liveness comes from a fake registry: a table of slots, each with its
 * current generation and a live flag.
 *
 * Built with -DWH_CRASH_TEST: every store of state.c is a CRASH_POINT that
 * longjmps out once wh_crash_budget runs down, which is how a process dying
 * in the middle of an operation (while it holds the guard) is simulated.
 */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "wh.h"

long wh_crash_budget;
jmp_buf wh_crash_jmp;

#define LD(p)       atomic_load(p)
#define STORE(p, v) atomic_store((p), (v))

/* ---- objects laid out as in csrc/object.c ---- */

#define T_WAIT_OFF ((uint32_t)sizeof(struct wh_obj_header))
#define T_SLOT_OFF (T_WAIT_OFF + WH_WAIT_ENTRIES * (uint32_t)sizeof(struct wh_wait_entry))

struct tobj {
    unsigned char *mem;
    size_t size;
    struct wh_view v;
};

static void tobj_init(struct tobj *o, uint32_t kind, uint32_t max_count)
{
    uint32_t nslots = kind == WH_KIND_LOCK ? 0 : WH_MAX_SLOTS;
    struct wh_obj_header *h;

    o->size = T_SLOT_OFF + (size_t)nslots * sizeof(struct wh_slot_entry);
    o->mem = calloc(1, o->size);
    if (o->mem == NULL) {
        perror("calloc");
        exit(2);
    }
    h = (struct wh_obj_header *)(void *)o->mem;
    memcpy(h->magic, WH_OBJ_MAGIC, 8);
    h->version = WH_FORMAT_VERSION;
    h->header_size = sizeof *h;
    h->kind = kind;
    h->max_count = kind == WH_KIND_SEMAPHORE ? max_count : 1;
    h->nslots = nslots;
    h->nwait = WH_WAIT_ENTRIES;
    h->wait_off = T_WAIT_OFF;
    h->slot_off = nslots ? T_SLOT_OFF : 0;
    h->file_size = o->size;
    o->v.h = h;
    o->v.waits = (struct wh_wait_entry *)(void *)(o->mem + T_WAIT_OFF);
    o->v.slots = nslots ? (struct wh_slot_entry *)(void *)(o->mem + T_SLOT_OFF) : NULL;
    o->v.kind = kind;
    o->v.max_count = h->max_count;
    o->v.nslots = nslots;
    o->v.nwait = WH_WAIT_ENTRIES;
}

static void tobj_free(struct tobj *o)
{
    free(o->mem);
    o->mem = NULL;
}

/* ---- the fake registry ---- */

static uint64_t reg_gen[WH_MAX_SLOTS];
static unsigned char reg_live[WH_MAX_SLOTS];
static int reg_token;          /* the actx every call must pass back */
static unsigned long bad_actx; /* calls of the liveness callback with another actx */
static unsigned long alive_calls;

static int fake_alive(void *actx, uint64_t id)
{
    uint32_t slot = WH_IDENT_SLOT(id);
    uint64_t gen = WH_IDENT_GEN(id);
    alive_calls++;
    if (actx != &reg_token)
        bad_actx++;
    if (id == 0 || (id & WH_GUARD_SLEEPERS) || gen == 0 || slot >= WH_MAX_SLOTS)
        return 0;
    return reg_live[slot] && reg_gen[slot] == gen;
}

static void reg_reset(void)
{
    memset(reg_gen, 0, sizeof reg_gen);
    memset(reg_live, 0, sizeof reg_live);
}

/* A new process in `slot`: the slot's next generation. */
static uint64_t spawn(uint32_t slot)
{
    reg_gen[slot]++;
    reg_live[slot] = 1;
    return WH_IDENT(slot, reg_gen[slot]);
}

static void die(uint64_t id)
{
    uint32_t slot = WH_IDENT_SLOT(id);
    if (slot < WH_MAX_SLOTS && reg_gen[slot] == WH_IDENT_GEN(id))
        reg_live[slot] = 0;
}

static int64_t now_ns = 1000LL * 1000 * 1000 * 1000; /* 1000 s */
#define MS (1000LL * 1000)

static struct wh_ctx ctx_of(uint64_t me)
{
    struct wh_ctx c = {fake_alive, &reg_token, me, now_ns};
    return c;
}

/* ---- thin wrappers ---- */

static int st_try(struct tobj *o, uint64_t me, uint32_t mode)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_try(&o->v, &c, mode, -1, now_ns);
}

static int st_try_w(struct tobj *o, uint64_t me, uint32_t mode, int mine, int64_t since)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_try(&o->v, &c, mode, mine, since);
}

static int st_rel(struct tobj *o, uint32_t mode, uint64_t id)
{
    return wh_st_release(&o->v, mode, id);
}

static int st_reg(struct tobj *o, uint64_t me, uint32_t mode, int64_t since, int64_t lease,
                  uint32_t *tag)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_register(&o->v, &c, mode, since, lease, tag);
}

static int st_refresh(struct tobj *o, uint64_t me, int idx, uint32_t tag, int64_t lease)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_refresh(&o->v, &c, idx, tag, lease);
}

static int st_reclaim(struct tobj *o, uint64_t me)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_reclaim(&o->v, &c);
}

static uint64_t owner_of(struct tobj *o)
{
    return LD(&o->v.h->owner);
}
static uint64_t upg_of(struct tobj *o)
{
    return LD(&o->v.h->upgradeable);
}
static uint32_t total_of(struct tobj *o)
{
    return LD(&o->v.h->total);
}
static uint32_t nwaiting_of(struct tobj *o)
{
    return LD(&o->v.h->nwaiting);
}

/* Tickets (semaphore) or plain reads (rwlock) held by `id`. */
static uint32_t count_of(struct tobj *o, uint64_t id)
{
    uint32_t s = WH_IDENT_SLOT(id);
    if (o->v.slots == NULL || s >= o->v.nslots || LD(&o->v.slots[s].ident) != id)
        return 0;
    return LD(&o->v.slots[s].count);
}

static int st_ok(struct tobj *o, char *why, size_t n)
{
    why[0] = '\0';
    return wh_st_check(&o->v, why, n);
}

#define CHECK_OK(o, ...)                                                                           \
    do {                                                                                           \
        char why_[300];                                                                            \
        int ok_ = st_ok((o), why_, sizeof why_);                                                   \
        CHECK(ok_, "invariants broken (%s) after %s", why_, __VA_ARGS__);                          \
    } while (0)

/* 1 if `id` holds nothing and has no wait entry in o; otherwise says what it has. */
static int holds_nothing(struct tobj *o, uint64_t id, char *why, size_t n)
{
    why[0] = '\0';
    if (id == 0)
        return 1;
    if (owner_of(o) == id)
        return snprintf(why, n, "is the owner"), 0;
    if (upg_of(o) == id)
        return snprintf(why, n, "is the upgradeable holder"), 0;
    if (o->v.slots != NULL)
        for (uint32_t i = 0; i < o->v.nslots; i++)
            if (LD(&o->v.slots[i].ident) == id && LD(&o->v.slots[i].count) != 0)
                return snprintf(why, n, "holds %u in slot entry %u", LD(&o->v.slots[i].count), i),
                       0;
    for (uint32_t i = 0; i < o->v.nwait; i++)
        if (LD(&o->v.waits[i].ident) == id)
            return snprintf(why, n, "has wait entry %u", i), 0;
    return 1;
}

#define CHECK_NOTHING(o, id, ...)                                                                  \
    do {                                                                                           \
        char why_[200];                                                                            \
        int ok_ = holds_nothing((o), (id), why_, sizeof why_);                                     \
        CHECK(ok_, "%llx still %s after %s", (unsigned long long)(id), why_, __VA_ARGS__);         \
    } while (0)

static int entry_of(struct tobj *o, uint64_t id)
{
    for (uint32_t i = 0; i < o->v.nwait; i++)
        if (LD(&o->v.waits[i].ident) == id)
            return (int)i;
    return -1;
}

/* ---- transitions of each kind ---- */

static void test_lock_transitions(void)
{
    struct tobj o;
    uint64_t a, b;
    reg_reset();
    tobj_init(&o, WH_KIND_LOCK, 1);
    a = spawn(1);
    b = spawn(2);

    CHECK(st_try(&o, a, WH_MODE_LOCK) == 1, "a free lock is acquired");
    CHECK(owner_of(&o) == a, "owner %llx", (unsigned long long)owner_of(&o));
    CHECK(st_try(&o, b, WH_MODE_LOCK) == 0, "a held lock is busy for another process");
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 0, "a lock is not reentrant");
    CHECK(st_rel(&o, WH_MODE_LOCK, b) == 0, "a non-owner cannot release");
    CHECK(owner_of(&o) == a, "the owner is unchanged by a foreign release");
    CHECK_OK(&o, "lock held");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 1, "the owner releases");
    CHECK(owner_of(&o) == 0, "released");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 0, "a second release is a no-op");
    CHECK(st_try(&o, b, WH_MODE_LOCK) == 1, "another process acquires after the release");
    CHECK(owner_of(&o) == b, "b owns");
    /* Modes of other kinds never acquire a lock. */
    CHECK(st_rel(&o, WH_MODE_LOCK, b) == 1, "b releases");
    CHECK(st_try(&o, a, WH_MODE_READ) == 0, "READ on a lock");
    CHECK(st_try(&o, a, WH_MODE_WRITE) == 0, "WRITE on a lock");
    CHECK(st_try(&o, a, WH_MODE_UPGRADEABLE) == 0, "UPGRADEABLE on a lock");
    CHECK(st_try(&o, a, WH_MODE_UPGRADE) == 0, "UPGRADE on a lock");
    CHECK(st_try(&o, a, 77) == 0, "a garbage mode");
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "nothing taken by invalid modes");
    CHECK_OK(&o, "lock transitions");
    tobj_free(&o);
}

static void test_semaphore_transitions(void)
{
    struct tobj o;
    uint64_t a, b, c, d;
    reg_reset();
    tobj_init(&o, WH_KIND_SEMAPHORE, 3);
    a = spawn(1);
    b = spawn(2);
    c = spawn(3);
    d = spawn(700);

    CHECK(st_try(&o, a, WH_MODE_LOCK) == 1, "ticket 1");
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 1, "ticket 2, same process");
    CHECK(st_try(&o, b, WH_MODE_LOCK) == 1, "ticket 3");
    CHECK(count_of(&o, a) == 2 && count_of(&o, b) == 1, "per-slot counts %u %u", count_of(&o, a),
          count_of(&o, b));
    CHECK(total_of(&o) == 3, "total %u", total_of(&o));
    CHECK(st_try(&o, c, WH_MODE_LOCK) == 0, "busy at max_count");
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 0, "busy at max_count for a holder too");
    CHECK(total_of(&o) == 3 && count_of(&o, c) == 0, "a busy attempt changes nothing");
    CHECK_OK(&o, "semaphore full");
    CHECK(st_rel(&o, WH_MODE_LOCK, c) == 0, "a process without tickets releases nothing");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 1, "a gives one back");
    CHECK(count_of(&o, a) == 1 && total_of(&o) == 2, "count %u total %u", count_of(&o, a),
          total_of(&o));
    CHECK(st_try(&o, d, WH_MODE_LOCK) == 1, "a freed ticket is taken (slot 700)");
    CHECK(total_of(&o) == 3 && count_of(&o, d) == 1, "total %u", total_of(&o));
    CHECK(st_rel(&o, WH_MODE_LOCK, b) == 1, "b releases");
    CHECK(st_rel(&o, WH_MODE_LOCK, b) == 0, "b has nothing left");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 1 && st_rel(&o, WH_MODE_LOCK, d) == 1, "the rest");
    CHECK(total_of(&o) == 0, "all tickets back: total %u", total_of(&o));
    CHECK(st_try(&o, a, WH_MODE_READ) == 0 && st_try(&o, a, WH_MODE_WRITE) == 0 &&
              st_try(&o, a, WH_MODE_UPGRADEABLE) == 0 && st_try(&o, a, WH_MODE_UPGRADE) == 0,
          "rwlock modes never take a ticket");
    CHECK(total_of(&o) == 0 && owner_of(&o) == 0 && upg_of(&o) == 0, "nothing taken");
    CHECK_OK(&o, "semaphore transitions");
    tobj_free(&o);

    /* max_count 1 behaves as a lock; a big max_count counts on. */
    tobj_init(&o, WH_KIND_SEMAPHORE, 1);
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 1 && st_try(&o, b, WH_MODE_LOCK) == 0, "max_count 1");
    tobj_free(&o);
    tobj_init(&o, WH_KIND_SEMAPHORE, INT32_MAX);
    for (int i = 0; i < 1000; i++)
        if (!CHECK(st_try(&o, i % 2 ? a : b, WH_MODE_LOCK) == 1, "ticket %d", i))
            break;
    CHECK(total_of(&o) == 1000 && count_of(&o, a) == 500, "total %u", total_of(&o));
    CHECK_OK(&o, "1000 tickets");
    tobj_free(&o);
}

static void test_rwlock_transitions(void)
{
    struct tobj o;
    uint64_t r1, r2, u, u2, w;
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    r1 = spawn(1);
    r2 = spawn(2);
    u = spawn(3);
    u2 = spawn(4);
    w = spawn(5);

    /* Readers share with each other and with one upgradeable reader. */
    CHECK(st_try(&o, r1, WH_MODE_READ) == 1, "read 1");
    CHECK(st_try(&o, r1, WH_MODE_READ) == 1, "read 2, same process");
    CHECK(st_try(&o, r2, WH_MODE_READ) == 1, "read 3");
    CHECK(count_of(&o, r1) == 2 && count_of(&o, r2) == 1 && total_of(&o) == 3, "reads %u %u %u",
          count_of(&o, r1), count_of(&o, r2), total_of(&o));
    CHECK(st_try(&o, u, WH_MODE_UPGRADEABLE) == 1, "upgradeable beside readers");
    CHECK(upg_of(&o) == u, "upgradeable holder");
    CHECK(st_try(&o, u2, WH_MODE_UPGRADEABLE) == 0, "a second upgradeable is refused");
    CHECK(st_try(&o, u, WH_MODE_UPGRADEABLE) == 0, "upgradeable is not reentrant");
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 0, "no writer beside readers");
    CHECK(st_try(&o, r2, WH_MODE_READ) == 1, "readers still enter beside an upgradeable");
    CHECK(st_rel(&o, WH_MODE_READ, r2) == 1, "r2 drops one read");
    CHECK_OK(&o, "readers + upgradeable");

    /* The upgrade waits for the readers, not for itself. */
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == 0, "upgrade waits for readers");
    CHECK(owner_of(&o) == 0, "no owner while readers remain");
    CHECK(st_try(&o, r1, WH_MODE_UPGRADE) == -1, "a reader that is not the upgradeable holder");
    CHECK(st_try(&o, w, WH_MODE_UPGRADE) == -1, "a stranger cannot upgrade");
    CHECK(st_rel(&o, WH_MODE_READ, r1) == 1 && st_rel(&o, WH_MODE_READ, r1) == 1, "r1 leaves");
    CHECK(st_rel(&o, WH_MODE_READ, r1) == 0, "r1 has no read left");
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == 0, "r2 still reads");
    CHECK(st_rel(&o, WH_MODE_READ, r2) == 1, "r2 leaves");
    CHECK(total_of(&o) == 0, "no readers: total %u", total_of(&o));
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 0, "a writer still waits for the upgradeable");
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == 1, "upgrade with no readers");
    CHECK(owner_of(&o) == u && upg_of(&o) == u, "upgraded: owner and upgradeable both u");
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == 1, "upgrading an upgraded holder is a no-op success");
    CHECK(st_try(&o, r1, WH_MODE_READ) == 0, "no reader beside the writer");
    CHECK(st_try(&o, u2, WH_MODE_UPGRADEABLE) == 0, "no upgradeable beside the writer");
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 0, "no second writer");
    CHECK(total_of(&o) == 0, "no read taken");
    CHECK_OK(&o, "upgraded");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, r1) == 0, "a stranger cannot release the upgradeable");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, u) == 1, "release of the upgraded holder");
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "both words cleared: %llx %llx",
          (unsigned long long)owner_of(&o), (unsigned long long)upg_of(&o));
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, u) == 0, "released twice");

    /* A writer is exclusive. */
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 1, "write on a free rwlock");
    CHECK(owner_of(&o) == w, "writer");
    CHECK(st_try(&o, r1, WH_MODE_READ) == 0, "read beside writer");
    CHECK(st_try(&o, u, WH_MODE_UPGRADEABLE) == 0, "upgradeable beside writer");
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 0, "writer not reentrant");
    CHECK(st_try(&o, w, WH_MODE_UPGRADE) == -1, "a writer without the upgradeable cannot upgrade");
    CHECK(st_rel(&o, WH_MODE_WRITE, r1) == 0, "a stranger cannot release the write lock");
    CHECK(st_rel(&o, WH_MODE_WRITE, w) == 1, "writer releases");
    CHECK(owner_of(&o) == 0, "free");
    CHECK(st_rel(&o, WH_MODE_WRITE, w) == 0, "released twice");

    /* An upgradeable holder that never upgrades. */
    CHECK(st_try(&o, u, WH_MODE_UPGRADEABLE) == 1, "upgradeable on a free rwlock");
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 0, "writer excluded by the upgradeable");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, u) == 1, "released");
    CHECK(upg_of(&o) == 0 && owner_of(&o) == 0, "free");
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == -1, "upgrade after release");
    CHECK(st_try(&o, r1, WH_MODE_LOCK) == 0, "LOCK is not an rwlock mode");
    CHECK(st_try(&o, r1, 99) == 0, "a garbage mode");
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0 && total_of(&o) == 0, "nothing taken");
    CHECK_OK(&o, "rwlock transitions");
    tobj_free(&o);
}

/* ---- wait entries: writer preference, bounded barging, leases, the table ---- */

static void test_writer_preference(void)
{
    struct tobj o;
    uint64_t r, w, u, n;
    uint32_t wtag, utag;
    int widx, uidx;
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    r = spawn(1);
    w = spawn(2);
    u = spawn(3);
    n = spawn(4);

    CHECK(st_try(&o, r, WH_MODE_READ) == 1, "a reader");
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 0, "writer busy");
    widx = st_reg(&o, w, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &wtag);
    CHECK(widx >= 0, "writer registered");
    /* Even a writer that has just started waiting keeps new readers out. */
    CHECK(st_try(&o, n, WH_MODE_READ) == 0, "a new reader waits behind a waiting writer");
    CHECK(st_try(&o, r, WH_MODE_READ) == 0, "so does a process that already reads");
    CHECK(st_try(&o, n, WH_MODE_UPGRADEABLE) == 0, "and a new upgradeable reader");
    CHECK(total_of(&o) == 1 && upg_of(&o) == 0, "nothing taken");
    CHECK(st_try_w(&o, w, WH_MODE_READ, widx, now_ns) == 1,
          "the waiting writer's own entry does not block it");
    CHECK(st_rel(&o, WH_MODE_READ, w) == 1, "w drops that read");
    CHECK(st_rel(&o, WH_MODE_READ, r) == 1, "the reader leaves");
    CHECK(st_try_w(&o, w, WH_MODE_WRITE, widx, now_ns) == 1, "the writer gets in");
    CHECK(wh_st_withdraw(&o.v, widx, wtag, w) == 1, "and withdraws its entry");
    CHECK(st_rel(&o, WH_MODE_WRITE, w) == 1, "writer done");
    CHECK(st_try(&o, n, WH_MODE_READ) == 1, "readers are back");
    CHECK(st_rel(&o, WH_MODE_READ, n) == 1, "n leaves");

    /* A waiting upgrade also keeps new readers out. */
    CHECK(st_try(&o, u, WH_MODE_UPGRADEABLE) == 1, "upgradeable");
    CHECK(st_try(&o, r, WH_MODE_READ) == 1, "a reader beside it");
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == 0, "upgrade waits for the reader");
    uidx = st_reg(&o, u, WH_MODE_UPGRADE | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &utag);
    CHECK(uidx >= 0, "upgrade registered");
    CHECK(LD(&o.v.h->nwriters) == 1, "an upgrade counts as a waiting writer");
    CHECK(st_try(&o, n, WH_MODE_READ) == 0, "a new reader waits behind a waiting upgrade");
    CHECK(st_rel(&o, WH_MODE_READ, r) == 1, "the reader leaves");
    CHECK(st_try_w(&o, u, WH_MODE_UPGRADE, uidx, now_ns) == 1, "upgraded");
    CHECK(wh_st_withdraw(&o.v, uidx, utag, u) == 1, "withdrawn");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, u) == 1, "released");

    /* An expired writer entry no longer counts; a dead one counts until reclaimed. */
    widx = st_reg(&o, w, WH_MODE_WRITE, now_ns, now_ns + 5 * MS, &wtag);
    CHECK(st_try(&o, n, WH_MODE_READ) == 0, "blocked while the lease runs");
    now_ns += 6 * MS;
    CHECK(st_try(&o, n, WH_MODE_READ) == 1, "an expired writer entry does not block");
    CHECK(st_rel(&o, WH_MODE_READ, n) == 1, "n leaves");
    CHECK(st_reclaim(&o, n) == 1, "reclaim frees the expired entry");
    CHECK(LD(&o.v.waits[widx].ident) == 0 && nwaiting_of(&o) == 0 && LD(&o.v.h->nwriters) == 0,
          "expired entry cleared");
    CHECK(st_refresh(&o, w, widx, wtag, now_ns + 1000 * MS) == 0,
          "its owner finds it gone on its next refresh");
    widx = st_reg(&o, w, WH_MODE_WRITE, now_ns, now_ns + 1000 * MS, &wtag);
    die(w);
    CHECK(st_try(&o, n, WH_MODE_READ) == 0, "a dead writer's entry counts until reclaimed");
    CHECK(st_reclaim(&o, n) == 1, "reclaim");
    CHECK(st_try(&o, n, WH_MODE_READ) == 1, "then readers pass");
    CHECK_OK(&o, "writer preference");
    tobj_free(&o);
}

static void test_upgrade_bypasses_writers(void)
{
    struct tobj o;
    uint64_t u, w, w2, r;
    uint32_t tag, tag2, utag;
    int widx, widx2, uidx;
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    u = spawn(1);
    w = spawn(2);
    w2 = spawn(3);
    r = spawn(4);

    CHECK(st_try(&o, u, WH_MODE_UPGRADEABLE) == 1, "upgradeable");
    CHECK(st_try(&o, r, WH_MODE_READ) == 1, "reader");
    widx =
        st_reg(&o, w, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns - 500 * MS, now_ns + 10000 * MS, &tag);
    widx2 = st_reg(&o, w2, WH_MODE_WRITE, now_ns - 400 * MS, now_ns + 10000 * MS, &tag2);
    CHECK(widx >= 0 && widx2 >= 0, "two old waiting writers");
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == 0, "the upgrade still waits for the reader");
    uidx = st_reg(&o, u, WH_MODE_UPGRADE, now_ns, now_ns + 10000 * MS, &utag);
    CHECK(st_rel(&o, WH_MODE_READ, r) == 1, "the reader leaves");
    CHECK(st_try_w(&o, w, WH_MODE_WRITE, widx, now_ns - 500 * MS) == 0,
          "the oldest writer still waits for the upgradeable holder");
    CHECK(st_try_w(&o, u, WH_MODE_UPGRADE, uidx, now_ns) == 1,
          "the upgrade passes the older waiting writers");
    CHECK(owner_of(&o) == u, "upgraded");
    CHECK(st_try(&o, u, WH_MODE_UPGRADE) == 1, "without an entry too");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, u) == 1, "released");
    CHECK(wh_st_withdraw(&o.v, uidx, utag, u) == 1, "u withdraws");
    CHECK(st_try_w(&o, w2, WH_MODE_WRITE, widx2, now_ns - 400 * MS) == 0,
          "the younger writer yields to the older");
    CHECK(st_try_w(&o, w, WH_MODE_WRITE, widx, now_ns - 500 * MS) == 1, "the oldest writer");
    CHECK_OK(&o, "upgrade bypass");
    tobj_free(&o);
}

static void test_barging_lock(void)
{
    struct tobj o;
    uint64_t a, b, c, d;
    uint32_t tb, td;
    int ib, id;
    int64_t t0;
    reg_reset();
    tobj_init(&o, WH_KIND_LOCK, 1);
    a = spawn(1);
    b = spawn(2);
    c = spawn(3);
    d = spawn(4);

    CHECK(st_try(&o, a, WH_MODE_LOCK) == 1, "a holds");
    t0 = now_ns;
    ib = st_reg(&o, b, WH_MODE_LOCK | WH_WAIT_FUTEX, t0, t0 + 10000 * MS, &tb);
    CHECK(ib >= 0, "b waits");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 1, "a releases");
    now_ns = t0 + WH_BARGE_NS / 2;
    CHECK(st_try(&o, c, WH_MODE_LOCK) == 1, "a newcomer may take a lock whose waiter is young");
    CHECK(st_rel(&o, WH_MODE_LOCK, c) == 1, "c releases");
    now_ns = t0 + WH_BARGE_NS + 1;
    CHECK(st_try(&o, c, WH_MODE_LOCK) == 0, "not once the waiter is older than WH_BARGE_NS");
    CHECK(st_try_w(&o, c, WH_MODE_LOCK, -1, t0 - 1) == 1,
          "a caller that has waited longer than the entry is not blocked by it");
    CHECK(st_rel(&o, WH_MODE_LOCK, c) == 1, "c releases");
    id = st_reg(&o, d, WH_MODE_LOCK, t0 + 1, t0 + 10000 * MS, &td);
    CHECK(st_try_w(&o, d, WH_MODE_LOCK, id, t0 + 1) == 0, "the second-oldest waiter waits");
    CHECK(st_try_w(&o, b, WH_MODE_LOCK, ib, t0) == 1, "the oldest waiter gets it");
    CHECK(wh_st_withdraw(&o.v, ib, tb, b) == 1, "b withdraws");
    CHECK(st_rel(&o, WH_MODE_LOCK, b) == 1, "b releases");
    CHECK(st_try_w(&o, d, WH_MODE_LOCK, id, t0 + 1) == 1, "then the next");
    CHECK(st_rel(&o, WH_MODE_LOCK, d) == 1 && wh_st_withdraw(&o.v, id, td, d) == 1, "d done");

    /* Equal ages: the lower index comes first. */
    ib = st_reg(&o, b, WH_MODE_LOCK, t0, t0 + 10000 * MS, &tb);
    id = st_reg(&o, d, WH_MODE_LOCK, t0, t0 + 10000 * MS, &td);
    CHECK(ib >= 0 && id >= 0 && ib != id, "two entries");
    {
        uint64_t lo = ib < id ? b : d, hi = ib < id ? d : b;
        int ilo = ib < id ? ib : id, ihi = ib < id ? id : ib;
        CHECK(st_try_w(&o, hi, WH_MODE_LOCK, ihi, t0) == 0, "tie: higher index waits");
        CHECK(st_try_w(&o, lo, WH_MODE_LOCK, ilo, t0) == 1, "tie: lower index first");
    }
    CHECK_OK(&o, "barging on a lock");
    tobj_free(&o);

    /* The same for writers and for upgradeable readers; READ entries never block. */
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    a = spawn(1);
    b = spawn(2);
    t0 = now_ns;
    ib = st_reg(&o, b, WH_MODE_WRITE, t0, t0 + 10000 * MS, &tb);
    now_ns = t0 + WH_BARGE_NS / 2;
    CHECK(st_try(&o, a, WH_MODE_WRITE) == 1, "a writer barges past a young waiting writer");
    CHECK(st_rel(&o, WH_MODE_WRITE, a) == 1, "released");
    now_ns = t0 + 2 * WH_BARGE_NS;
    CHECK(st_try(&o, a, WH_MODE_WRITE) == 0, "but not past an old one");
    CHECK(wh_st_withdraw(&o.v, ib, tb, b) == 1, "withdrawn");
    t0 = now_ns;
    ib = st_reg(&o, b, WH_MODE_UPGRADEABLE, t0, t0 + 10000 * MS, &tb);
    now_ns = t0 + WH_BARGE_NS / 2;
    CHECK(st_try(&o, a, WH_MODE_UPGRADEABLE) == 1, "upgradeable barges past a young one");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, a) == 1, "released");
    now_ns = t0 + 2 * WH_BARGE_NS;
    CHECK(st_try(&o, a, WH_MODE_UPGRADEABLE) == 0, "but not past an old one");
    CHECK(st_try(&o, a, WH_MODE_READ) == 1, "an upgradeable waiter does not block readers");
    CHECK(st_try(&o, a, WH_MODE_WRITE) == 0, "(a reads)");
    CHECK(st_rel(&o, WH_MODE_READ, a) == 1, "a stops reading");
    CHECK(wh_st_withdraw(&o.v, ib, tb, b) == 1, "withdrawn");
    ib = st_reg(&o, b, WH_MODE_READ, t0 - 1000 * MS, t0 + 10000 * MS, &tb);
    CHECK(st_try(&o, a, WH_MODE_READ) == 1, "an old READ entry does not block readers");
    CHECK(st_rel(&o, WH_MODE_READ, a) == 1, "released");
    CHECK(st_try(&o, a, WH_MODE_WRITE) == 1, "nor writers");
    CHECK(st_rel(&o, WH_MODE_WRITE, a) == 1, "released");
    CHECK(st_try(&o, a, WH_MODE_UPGRADEABLE) == 1, "nor upgradeable readers");
    CHECK_OK(&o, "barging on an rwlock");
    tobj_free(&o);
}

static void test_barging_semaphore(void)
{
    struct tobj o;
    uint64_t h, w1, w2, n;
    uint32_t t1, t2;
    int i1, i2;
    int64_t t0;
    reg_reset();
    tobj_init(&o, WH_KIND_SEMAPHORE, 3);
    h = spawn(1);
    w1 = spawn(2);
    w2 = spawn(3);
    n = spawn(4);

    t0 = now_ns;
    CHECK(st_try(&o, h, WH_MODE_LOCK) == 1, "one ticket held: 2 free");
    i1 = st_reg(&o, w1, WH_MODE_LOCK, t0, t0 + 10000 * MS, &t1);
    now_ns = t0 + 2 * WH_BARGE_NS;
    CHECK(st_try(&o, n, WH_MODE_LOCK) == 1, "one old waiter and 2 free tickets: a newcomer passes");
    CHECK(total_of(&o) == 2, "total %u", total_of(&o));
    CHECK(st_try(&o, n, WH_MODE_LOCK) == 0, "one old waiter and 1 free ticket: the waiter's");
    CHECK(st_try_w(&o, w1, WH_MODE_LOCK, i1, t0) == 1, "the old waiter takes it");
    CHECK(wh_st_withdraw(&o.v, i1, t1, w1) == 1, "withdrawn");
    CHECK(st_rel(&o, WH_MODE_LOCK, w1) == 1 && st_rel(&o, WH_MODE_LOCK, n) == 1, "two back");
    CHECK(total_of(&o) == 1, "total %u", total_of(&o));

    i1 = st_reg(&o, w1, WH_MODE_LOCK, t0, t0 + 10000 * MS, &t1);
    i2 = st_reg(&o, w2, WH_MODE_LOCK, t0 + 1, t0 + 10000 * MS, &t2);
    CHECK(st_try(&o, n, WH_MODE_LOCK) == 0, "two old waiters, two free tickets: newcomer waits");
    CHECK(st_try_w(&o, w2, WH_MODE_LOCK, i2, t0 + 1) == 1,
          "the second waiter: one older waiter, two free tickets");
    CHECK(st_try_w(&o, w1, WH_MODE_LOCK, i1, t0) == 1, "the first waiter");
    CHECK(wh_st_withdraw(&o.v, i1, t1, w1) == 1 && wh_st_withdraw(&o.v, i2, t2, w2) == 1,
          "both out");
    CHECK(st_rel(&o, WH_MODE_LOCK, w1) == 1 && st_rel(&o, WH_MODE_LOCK, w2) == 1, "released");

    /* Young waiters never block. */
    i1 = st_reg(&o, w1, WH_MODE_LOCK, now_ns - 1, now_ns + 10000 * MS, &t1);
    i2 = st_reg(&o, w2, WH_MODE_LOCK, now_ns - 1, now_ns + 10000 * MS, &t2);
    CHECK(st_try(&o, n, WH_MODE_LOCK) == 1 && st_try(&o, n, WH_MODE_LOCK) == 1,
          "young waiters do not hold tickets back");
    CHECK(total_of(&o) == 3, "full: %u", total_of(&o));
    CHECK(st_try_w(&o, w1, WH_MODE_LOCK, i1, now_ns - 1) == 0, "full is full");
    CHECK_OK(&o, "semaphore barging");
    tobj_free(&o);
}

static void test_wait_table(void)
{
    struct tobj o;
    uint64_t p[4];
    uint32_t tags[WH_WAIT_ENTRIES], tag, t2;
    int idx[WH_WAIT_ENTRIES], i, j;
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    for (i = 0; i < 4; i++)
        p[i] = spawn((uint32_t)(10 + i));

    i = st_reg(&o, p[0], WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns - 3, now_ns + 100 * MS, &tag);
    CHECK(i >= 0 && (uint32_t)i < WH_WAIT_ENTRIES, "registered at %d", i);
    CHECK(LD(&o.v.waits[i].ident) == p[0] && LD(&o.v.waits[i].since) == now_ns - 3 &&
              LD(&o.v.waits[i].lease) == now_ns + 100 * MS &&
              LD(&o.v.waits[i].mode) == (WH_MODE_WRITE | WH_WAIT_FUTEX) &&
              LD(&o.v.waits[i].tag) == tag,
          "entry fields");
    CHECK(nwaiting_of(&o) == 1 && LD(&o.v.h->nfutex) == 1 && LD(&o.v.h->nwriters) == 1,
          "counts %u/%u/%u", nwaiting_of(&o), LD(&o.v.h->nfutex), LD(&o.v.h->nwriters));
    j = st_reg(&o, p[1], WH_MODE_READ, now_ns, now_ns + 100 * MS, &t2);
    CHECK(j >= 0 && j != i && t2 != tag, "a second entry with another tag");
    CHECK(nwaiting_of(&o) == 2 && LD(&o.v.h->nfutex) == 1 && LD(&o.v.h->nwriters) == 1, "counts");
    CHECK(st_refresh(&o, p[0], i, tag, now_ns + 500 * MS) == 1, "refresh by the owner");
    CHECK(LD(&o.v.waits[i].lease) == now_ns + 500 * MS, "lease extended");
    CHECK(st_refresh(&o, p[1], i, tag, now_ns) == 0, "refresh by another process");
    CHECK(st_refresh(&o, p[0], i, tag + 1, now_ns) == 0, "refresh with another tag");
    CHECK(st_refresh(&o, p[0], -1, tag, now_ns) == 0 &&
              st_refresh(&o, p[0], (int)WH_WAIT_ENTRIES, tag, now_ns) == 0,
          "refresh out of range");
    CHECK(LD(&o.v.waits[i].lease) == now_ns + 500 * MS, "lease untouched by failed refreshes");
    CHECK(wh_st_withdraw(&o.v, i, tag, p[1]) == 0, "withdraw by another process");
    CHECK(wh_st_withdraw(&o.v, i, tag + 1, p[0]) == 0, "withdraw with another tag");
    CHECK(wh_st_withdraw(&o.v, -5, tag, p[0]) == 0 &&
              wh_st_withdraw(&o.v, (int)WH_WAIT_ENTRIES, tag, p[0]) == 0 &&
              wh_st_withdraw(&o.v, INT32_MAX, tag, p[0]) == 0,
          "withdraw out of range");
    CHECK(wh_st_withdraw(&o.v, i, tag, p[0]) == 1, "withdraw by the owner");
    CHECK(wh_st_withdraw(&o.v, i, tag, p[0]) == 0, "withdrawn twice");
    CHECK(nwaiting_of(&o) == 1 && LD(&o.v.h->nfutex) == 0 && LD(&o.v.h->nwriters) == 0, "counts");
    CHECK(wh_st_withdraw(&o.v, j, t2, p[1]) == 1, "the other one");
    CHECK_OK(&o, "register/withdraw");

    /* A full table. */
    for (i = 0; i < (int)WH_WAIT_ENTRIES; i++) {
        idx[i] = st_reg(&o, p[i % 4], (i % 3 ? WH_MODE_READ : WH_MODE_UPGRADE) | WH_WAIT_FUTEX,
                        now_ns, now_ns + 100 * MS, &tags[i]);
        if (!CHECK(idx[i] >= 0, "entry %d", i))
            break;
    }
    CHECK(nwaiting_of(&o) == WH_WAIT_ENTRIES, "%u in use", nwaiting_of(&o));
    CHECK(st_reg(&o, p[0], WH_MODE_WRITE, now_ns, now_ns + 100 * MS, &tag) == -1, "table full");
    CHECK_OK(&o, "full table");
    CHECK(wh_st_withdraw(&o.v, idx[77], tags[77], p[77 % 4]) == 1, "one withdrawn");
    CHECK(st_reg(&o, p[0], WH_MODE_WRITE, now_ns, now_ns + 100 * MS, &tag) == idx[77],
          "its entry is reused");
    /* Expired entries are free for the taking. */
    CHECK(wh_st_withdraw(&o.v, idx[77], tag, p[0]) == 1, "withdrawn");
    CHECK(st_reg(&o, p[0], WH_MODE_WRITE, now_ns, now_ns + 100 * MS, &tag) == idx[77], "again");
    CHECK(st_reg(&o, p[1], WH_MODE_WRITE, now_ns, now_ns + 200 * MS, &t2) == -1, "full again");
    now_ns += 150 * MS;
    i = st_reg(&o, p[1], WH_MODE_WRITE, now_ns, now_ns + 200 * MS, &t2);
    CHECK(i >= 0, "an expired entry is taken over");
    CHECK(LD(&o.v.waits[i].ident) == p[1] && LD(&o.v.waits[i].tag) == t2, "it is p1's now");
    CHECK(st_refresh(&o, p[i % 4], i, tags[i], now_ns + 100 * MS) == 0 || i == idx[77],
          "the previous owner of that entry has lost it");
    CHECK_OK(&o, "expired takeover");

    /* The derived counts are recomputed by reclaim, whatever they said. */
    STORE(&o.v.h->nwaiting, 5);
    STORE(&o.v.h->nfutex, 0xffffffffu);
    STORE(&o.v.h->nwriters, 12345);
    st_reclaim(&o, p[2]);
    CHECK_OK(&o, "reclaim after tampered counts");
    CHECK(nwaiting_of(&o) == 1, "only p1's fresh entry remains: %u", nwaiting_of(&o));
    CHECK(LD(&o.v.h->last_reclaim) == now_ns, "last_reclaim stamped");
    tobj_free(&o);
}

/* ---- holds left by an older generation of the caller's own slot ---- */

static void test_own_slot_stale(void)
{
    struct tobj o;
    uint64_t old, me, other;
    unsigned long calls;

    /* Lock. */
    reg_reset();
    tobj_init(&o, WH_KIND_LOCK, 1);
    old = spawn(5);
    other = spawn(6);
    CHECK(st_try(&o, old, WH_MODE_LOCK) == 1, "old generation holds");
    me = spawn(5); /* the slot's new owner */
    CHECK(st_try(&o, other, WH_MODE_LOCK) == 0, "another slot must wait for a reclaim");
    calls = alive_calls;
    CHECK(st_try(&o, me, WH_MODE_LOCK) == 1, "the slot's new owner clears the stale hold");
    CHECK(alive_calls == calls, "without a liveness probe");
    CHECK(owner_of(&o) == me, "and owns the lock");
    CHECK(st_rel(&o, WH_MODE_LOCK, old) == 0, "the old generation cannot release it");
    CHECK_OK(&o, "own-slot lock");
    tobj_free(&o);

    /* rwlock: a stale writer, and a stale upgraded holder. */
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    old = spawn(5);
    CHECK(st_try(&o, old, WH_MODE_WRITE) == 1, "old writer");
    me = spawn(5);
    CHECK(st_try(&o, me, WH_MODE_WRITE) == 1, "new owner of the slot writes");
    CHECK(owner_of(&o) == me, "owner");
    CHECK(st_rel(&o, WH_MODE_WRITE, me) == 1, "released");
    old = me;
    CHECK(st_try(&o, old, WH_MODE_UPGRADEABLE) == 1 && st_try(&o, old, WH_MODE_UPGRADE) == 1,
          "old upgraded holder");
    me = spawn(5);
    CHECK(st_try(&o, me, WH_MODE_UPGRADE) == -1, "the new owner does not inherit the upgradeable");
    CHECK(st_try(&o, me, WH_MODE_READ) == 1, "the new owner reads: stale words cleared");
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "both words cleared: %llx %llx",
          (unsigned long long)owner_of(&o), (unsigned long long)upg_of(&o));
    CHECK(count_of(&o, me) == 1 && total_of(&o) == 1, "one read");
    CHECK_OK(&o, "own-slot upgraded");
    /* Stale reads of the own slot are dropped when the new owner takes a read. */
    old = me;
    CHECK(st_try(&o, old, WH_MODE_READ) == 1, "old has 2 reads");
    other = spawn(6);
    CHECK(st_try(&o, other, WH_MODE_READ) == 1, "another slot reads");
    me = spawn(5);
    CHECK(st_rel(&o, WH_MODE_READ, me) == 0, "the new owner has no read to release");
    CHECK(total_of(&o) == 3, "nothing changed by that");
    CHECK(st_try(&o, me, WH_MODE_READ) == 1, "the new owner reads");
    CHECK(count_of(&o, me) == 1 && LD(&o.v.slots[5].ident) == me, "its entry was reset");
    CHECK(total_of(&o) == 2 && count_of(&o, other) == 1, "total %u", total_of(&o));
    CHECK(st_rel(&o, WH_MODE_READ, old) == 0, "the old generation has nothing left");
    CHECK_OK(&o, "own-slot reads");
    /* A stale upgradeable (not upgraded) is cleared for the new owner's upgradeable attempt. */
    CHECK(st_rel(&o, WH_MODE_READ, me) == 1 && st_rel(&o, WH_MODE_READ, other) == 1, "all out");
    old = me;
    CHECK(st_try(&o, old, WH_MODE_UPGRADEABLE) == 1, "old upgradeable");
    me = spawn(5);
    CHECK(st_try(&o, me, WH_MODE_UPGRADEABLE) == 1, "the new owner takes the upgradeable");
    CHECK(upg_of(&o) == me, "upgradeable is me");
    CHECK_OK(&o, "own-slot upgradeable");
    tobj_free(&o);

    /* Semaphore: stale tickets of the own slot are dropped before the entry is reused. */
    reg_reset();
    tobj_init(&o, WH_KIND_SEMAPHORE, 3);
    old = spawn(5);
    other = spawn(6);
    CHECK(st_try(&o, old, WH_MODE_LOCK) == 1 && st_try(&o, old, WH_MODE_LOCK) == 1, "old: 2");
    me = spawn(5);
    CHECK(st_try(&o, me, WH_MODE_LOCK) == 1, "the new owner takes a ticket");
    CHECK(count_of(&o, me) == 1 && total_of(&o) == 1, "count %u total %u", count_of(&o, me),
          total_of(&o));
    CHECK(st_try(&o, other, WH_MODE_LOCK) == 1 && st_try(&o, other, WH_MODE_LOCK) == 1,
          "the stale tickets are free again");
    CHECK(total_of(&o) == 3, "total %u", total_of(&o));
    CHECK_OK(&o, "own-slot semaphore");
    /* Full of stale tickets of the own slot: the new owner's reclaim gives them back. */
    CHECK(st_rel(&o, WH_MODE_LOCK, other) == 1 && st_rel(&o, WH_MODE_LOCK, other) == 1, "out");
    old = me;
    CHECK(st_try(&o, old, WH_MODE_LOCK) == 1 && st_try(&o, old, WH_MODE_LOCK) == 1, "old: 3");
    me = spawn(5);
    if (st_try(&o, me, WH_MODE_LOCK) != 1) {
        CHECK(st_reclaim(&o, me) == 1, "reclaim by the new owner frees the stale tickets");
        CHECK(st_try(&o, me, WH_MODE_LOCK) == 1, "then the new owner takes a ticket");
    }
    CHECK(count_of(&o, me) == 1 && total_of(&o) == 1, "count %u total %u", count_of(&o, me),
          total_of(&o));
    CHECK_OK(&o, "own-slot full semaphore");
    tobj_free(&o);

    /* rwlock: stale reads of the own slot do not keep its new owner from writing for long. */
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    old = spawn(5);
    CHECK(st_try(&o, old, WH_MODE_READ) == 1, "old reads");
    me = spawn(5);
    if (st_try(&o, me, WH_MODE_WRITE) != 1) {
        CHECK(st_reclaim(&o, me) == 1, "reclaim by the new owner drops the stale read");
        CHECK(st_try(&o, me, WH_MODE_WRITE) == 1, "then the new owner writes");
    }
    CHECK(owner_of(&o) == me && total_of(&o) == 0 && LD(&o.v.slots[5].count) == 0,
          "the new owner writes, no read left");
    CHECK_OK(&o, "own-slot stale read vs write");
    tobj_free(&o);
}

/* ---- reclamation ---- */

static void test_reclaim(void)
{
    struct tobj o;
    uint64_t a, b, c, d, w;
    uint32_t tag;
    int i1, i2, i3;

    /* Lock: a live owner stays, a dead one goes. */
    reg_reset();
    tobj_init(&o, WH_KIND_LOCK, 1);
    a = spawn(1);
    b = spawn(2);
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 1, "a holds");
    CHECK(st_reclaim(&o, b) == 0, "nothing to reclaim from a live owner");
    CHECK(owner_of(&o) == a, "a still holds");
    die(a);
    CHECK(st_reclaim(&o, b) == 1, "a dead owner is reclaimed");
    CHECK(owner_of(&o) == 0, "free");
    CHECK(st_try(&o, b, WH_MODE_LOCK) == 1, "b takes it");
    CHECK(st_reclaim(&o, b) == 0 && owner_of(&o) == b, "the reclaimer keeps its own hold");
    CHECK(bad_actx == 0, "the liveness callback got its context");
    CHECK_OK(&o, "lock reclaim");
    tobj_free(&o);

    /* Semaphore: dead slots cleared, live ones kept, total recomputed. */
    reg_reset();
    tobj_init(&o, WH_KIND_SEMAPHORE, 5);
    a = spawn(1);
    b = spawn(2);
    c = spawn(3);
    d = spawn(4);
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 1 && st_try(&o, a, WH_MODE_LOCK) == 1, "a: 2");
    CHECK(st_try(&o, b, WH_MODE_LOCK) == 1 && st_try(&o, b, WH_MODE_LOCK) == 1, "b: 2");
    CHECK(st_try(&o, c, WH_MODE_LOCK) == 1 && st_rel(&o, WH_MODE_LOCK, c) == 1, "c: 0, entry kept");
    i1 = st_reg(&o, b, WH_MODE_LOCK | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &tag);
    i2 = st_reg(&o, a, WH_MODE_LOCK, now_ns, now_ns + 1000 * MS, &tag);
    die(b);
    die(c);
    CHECK(st_reclaim(&o, d) == 1, "reclaimed");
    CHECK(count_of(&o, a) == 2 && total_of(&o) == 2, "a keeps 2: %u, total %u", count_of(&o, a),
          total_of(&o));
    CHECK(LD(&o.v.slots[2].ident) == 0 && LD(&o.v.slots[2].count) == 0, "b's entry cleared");
    CHECK(LD(&o.v.slots[3].ident) == 0, "c's empty entry cleared too");
    CHECK(LD(&o.v.waits[i1].ident) == 0 && LD(&o.v.waits[i2].ident) == a, "b's wait entry freed");
    CHECK(nwaiting_of(&o) == 1 && LD(&o.v.h->nfutex) == 0, "recounted");
    CHECK(LD(&o.v.h->last_reclaim) == now_ns, "stamped");
    CHECK(st_reclaim(&o, d) == 0, "a second reclaim finds nothing");
    CHECK_OK(&o, "semaphore reclaim");
    tobj_free(&o);

    /* rwlock: a dead upgraded holder, dead and live readers, expired entries. */
    reg_reset();
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    a = spawn(1);
    b = spawn(2);
    c = spawn(3);
    w = spawn(4);
    CHECK(st_try(&o, a, WH_MODE_UPGRADEABLE) == 1 && st_try(&o, a, WH_MODE_UPGRADE) == 1,
          "a upgraded");
    i1 = st_reg(&o, b, WH_MODE_READ, now_ns, now_ns + 1000 * MS, &tag);
    i2 = st_reg(&o, w, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns, now_ns + 1 * MS, &tag);
    i3 = st_reg(&o, w, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &tag);
    die(a);
    now_ns += 2 * MS;
    CHECK(st_reclaim(&o, c) == 1, "reclaimed");
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "a dead upgraded holder loses both words");
    CHECK(LD(&o.v.waits[i1].ident) == b && LD(&o.v.waits[i2].ident) == 0 &&
              LD(&o.v.waits[i3].ident) == w,
          "the expired entry is freed, the live ones kept");
    CHECK(nwaiting_of(&o) == 2 && LD(&o.v.h->nwriters) == 1 && LD(&o.v.h->nfutex) == 1,
          "recounted %u/%u/%u", nwaiting_of(&o), LD(&o.v.h->nwriters), LD(&o.v.h->nfutex));
    CHECK(wh_st_withdraw(&o.v, i3, tag, w) == 1, "w withdraws");
    CHECK(st_try(&o, b, WH_MODE_READ) == 1 && st_try(&o, c, WH_MODE_READ) == 1, "two readers");
    CHECK(st_try(&o, c, WH_MODE_UPGRADEABLE) == 1, "c upgradeable too");
    die(b);
    die(c);
    CHECK(st_reclaim(&o, w) == 1, "reclaimed");
    CHECK(total_of(&o) == 0 && upg_of(&o) == 0, "dead readers and upgradeable gone");
    CHECK(entry_of(&o, b) < 0, "b's wait entry gone");
    CHECK(st_try(&o, w, WH_MODE_WRITE) == 1, "a writer gets in");
    CHECK_OK(&o, "rwlock reclaim");
    tobj_free(&o);
}

/* ---- hostile shared memory ---- */

/* Every attempt on a hostile object fails, or succeeds without breaking invariants that held. */
static void hostile_attempts(struct tobj *o, uint64_t y, const char *what)
{
    static const uint32_t modes[] = {WH_MODE_LOCK, WH_MODE_READ, WH_MODE_WRITE, WH_MODE_UPGRADEABLE,
                                     WH_MODE_UPGRADE};
    char why[300];
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        int was_ok = st_ok(o, why, sizeof why);
        int r = st_try(o, y, modes[i]);
        CHECK(r >= -1 && r <= 1, "%s: try returned %d", what, r);
        if (r == 1 && was_ok)
            CHECK(st_ok(o, why, sizeof why),
                  "%s: an attempt in mode %u succeeded into a broken state: %s", what, modes[i],
                  why);
    }
    st_rel(o, WH_MODE_LOCK, y);
    st_rel(o, WH_MODE_READ, y);
    st_rel(o, WH_MODE_WRITE, y);
    st_rel(o, WH_MODE_UPGRADEABLE, y);
}

static void test_hostile(void)
{
    struct tobj o;
    uint64_t a, b, y;
    uint32_t tag;
    char why[300];

    reg_reset();
    a = spawn(1);
    b = spawn(2);
    y = spawn(3);

    /* A slot entry naming another slot is not a hold: reclaim drops it. */
    tobj_init(&o, WH_KIND_SEMAPHORE, 4);
    STORE(&o.v.slots[7].ident, a); /* a lives in slot 1 */
    STORE(&o.v.slots[7].count, 3);
    STORE(&o.v.h->total, 3);
    CHECK(!st_ok(&o, why, sizeof why), "the check notices a misplaced entry");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 0, "a cannot release through another slot's entry");
    CHECK(st_reclaim(&o, y) == 1, "reclaimed");
    CHECK(LD(&o.v.slots[7].count) == 0 && LD(&o.v.slots[7].ident) == 0 && total_of(&o) == 0,
          "dropped");
    CHECK_OK(&o, "misplaced entry");
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 1 && st_rel(&o, WH_MODE_LOCK, y) == 1, "usable");
    tobj_free(&o);

    /* Huge counts of live processes: totals saturate, attempts fail, nothing wraps. */
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    STORE(&o.v.slots[1].ident, a);
    STORE(&o.v.slots[1].count, 0x80000000u);
    STORE(&o.v.slots[2].ident, b);
    STORE(&o.v.slots[2].count, 0x80000000u); /* the sum is 2^32: must not wrap to 0 */
    STORE(&o.v.h->total, 0);
    st_reclaim(&o, y);
    CHECK(total_of(&o) != 0, "readers' total does not wrap to 0");
    CHECK(st_try(&o, y, WH_MODE_WRITE) == 0, "no writer beside 2^32 reads");
    CHECK(st_try(&o, y, WH_MODE_UPGRADEABLE) == 1 && st_try(&o, y, WH_MODE_UPGRADE) == 0,
          "no upgrade beside them");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, y) == 1, "released");
    CHECK(st_try(&o, a, WH_MODE_READ) == 0 || count_of(&o, a) == 0x80000001u,
          "a read either fails or counts on without wrapping");
    hostile_attempts(&o, y, "huge reads");
    CHECK(owner_of(&o) == 0, "no writer ever got in");
    tobj_free(&o);

    tobj_init(&o, WH_KIND_SEMAPHORE, 3);
    STORE(&o.v.slots[1].ident, a);
    STORE(&o.v.slots[1].count, 0xffffffffu);
    STORE(&o.v.h->total, 1);
    st_reclaim(&o, y);
    CHECK(total_of(&o) >= 3, "total recomputed: %u", total_of(&o));
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 0, "no ticket beyond max_count");
    CHECK(st_try(&o, a, WH_MODE_LOCK) == 0, "not even for the holder");
    CHECK(count_of(&o, a) == 0xffffffffu, "the count did not wrap");
    CHECK(st_rel(&o, WH_MODE_LOCK, a) == 1 && count_of(&o, a) == 0xfffffffeu,
          "release counts down");
    hostile_attempts(&o, y, "huge tickets");
    tobj_free(&o);

    /* A garbage total on a free semaphore is repaired by reclaim. */
    tobj_init(&o, WH_KIND_SEMAPHORE, 3);
    STORE(&o.v.h->total, 0xffffffffu);
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 0, "a garbage total reads as full");
    CHECK(st_reclaim(&o, y) == 1 && total_of(&o) == 0, "reclaim recomputes it");
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 1, "usable again");
    /* Owner words on a semaphore mean nothing; reclaim clears them. */
    STORE(&o.v.h->owner, a);
    STORE(&o.v.h->upgradeable, b);
    CHECK(st_try(&o, b, WH_MODE_LOCK) == 1, "tickets ignore the owner words");
    st_reclaim(&o, y);
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "cleared");
    CHECK(total_of(&o) == 2, "tickets kept: %u", total_of(&o));
    CHECK_OK(&o, "semaphore owner words");
    tobj_free(&o);

    /* Idents with bit 63 set, out-of-range slots, generation 0, garbage modes. */
    tobj_init(&o, WH_KIND_RWLOCK, 1);
    STORE(&o.v.h->owner, a | WH_GUARD_SLEEPERS);
    STORE(&o.v.h->upgradeable, WH_IDENT(0xfffe, 5));
    STORE(&o.v.slots[1].ident, a | WH_GUARD_SLEEPERS);
    STORE(&o.v.slots[1].count, 4);
    STORE(&o.v.slots[9].ident, WH_IDENT(9, 0));
    STORE(&o.v.slots[9].count, 1);
    STORE(&o.v.slots[11].ident, 0);
    STORE(&o.v.slots[11].count, 6);
    STORE(&o.v.h->total, 11);
    STORE(&o.v.waits[0].ident, b | WH_GUARD_SLEEPERS);
    STORE(&o.v.waits[0].lease, INT64_MAX);
    STORE(&o.v.waits[0].mode, WH_MODE_WRITE);
    STORE(&o.v.waits[1].ident, b);
    STORE(&o.v.waits[1].lease, INT64_MAX);
    STORE(&o.v.waits[1].since, INT64_MIN);
    STORE(&o.v.waits[1].mode, 0xdeadbe07u);
    STORE(&o.v.waits[2].ident, b);
    STORE(&o.v.waits[2].lease, INT64_MAX);
    STORE(&o.v.waits[2].since, INT64_MAX);
    STORE(&o.v.waits[2].mode, 0xffffff00u | WH_MODE_UPGRADEABLE);
    STORE(&o.v.h->nwaiting, 0x7fffffff);
    hostile_attempts(&o, y, "hostile idents before reclaim");
    st_reclaim(&o, y);
    CHECK(owner_of(&o) == 0 && upg_of(&o) == 0, "words with impossible idents cleared");
    CHECK(total_of(&o) == 0 && LD(&o.v.slots[1].count) == 0 && LD(&o.v.slots[9].count) == 0 &&
              LD(&o.v.slots[11].count) == 0,
          "impossible slot entries cleared (total %u)", total_of(&o));
    CHECK(LD(&o.v.waits[0].ident) == 0, "wait entry with bit 63 freed");
    CHECK(LD(&o.v.waits[1].ident) == b && LD(&o.v.waits[2].ident) == b,
          "live entries with odd modes stay");
    CHECK_OK(&o, "hostile idents");
    CHECK(st_try(&o, y, WH_MODE_READ) == 1, "a garbage mode entry does not block readers");
    CHECK(st_rel(&o, WH_MODE_READ, y) == 1, "released");
    CHECK(st_try(&o, y, WH_MODE_WRITE) == 1, "nor writers");
    CHECK(st_rel(&o, WH_MODE_WRITE, y) == 1, "released");
    /* Entries with the extreme `since` values order correctly, without overflow (UBSan). */
    STORE(&o.v.waits[1].mode, WH_MODE_WRITE);
    CHECK(st_try(&o, y, WH_MODE_WRITE) == 0, "a writer entry since INT64_MIN comes first");
    CHECK(st_try_w(&o, y, WH_MODE_WRITE, -1, INT64_MIN) == 1,
          "but not before a caller waiting since INT64_MIN with a lower index");
    CHECK(st_rel(&o, WH_MODE_WRITE, y) == 1, "released");
    STORE(&o.v.waits[1].mode, 0xdeadbe07u);
    CHECK(st_try(&o, y, WH_MODE_UPGRADEABLE) == 1, "an upgradeable entry since INT64_MAX is young");
    CHECK(st_rel(&o, WH_MODE_UPGRADEABLE, y) == 1, "released");
    STORE(&o.v.waits[2].since, INT64_MIN);
    CHECK(st_try(&o, y, WH_MODE_UPGRADEABLE) == 0, "one since INT64_MIN is old");
    CHECK_OK(&o, "extreme times");
    hostile_attempts(&o, y, "hostile times");
    tobj_free(&o);

    /* A lock with an upgradeable word: reclaim clears it. */
    tobj_init(&o, WH_KIND_LOCK, 1);
    STORE(&o.v.h->upgradeable, b);
    st_reclaim(&o, y);
    CHECK(upg_of(&o) == 0, "cleared");
    CHECK_OK(&o, "lock upgradeable word");
    /* A guard-word-like owner (bit 63) of the caller's own slot is stale, not ours. */
    STORE(&o.v.h->owner, y | WH_GUARD_SLEEPERS);
    CHECK(st_try(&o, y, WH_MODE_LOCK) == 1, "own slot with bit 63 is cleared");
    CHECK(owner_of(&o) == y, "owner is y");
    STORE(&o.v.h->next_tag, 0xffffffffu);
    CHECK(st_reg(&o, a, WH_MODE_LOCK, now_ns, now_ns + MS, &tag) >= 0, "tag wraps harmlessly");
    CHECK_OK(&o, "lock tag wrap");
    tobj_free(&o);
}

/* ---- info ---- */

static void test_info(void)
{
    struct tobj o;
    struct wh_info in;
    struct wh_ctx c;
    uint64_t a, b, w;
    uint32_t tag;
    reg_reset();
    a = spawn(1);
    b = spawn(2);
    w = spawn(3);
    c = ctx_of(a);

    tobj_init(&o, WH_KIND_LOCK, 1);
    wh_st_info(&o.v, &c, &in);
    CHECK(in.held == 0 && in.nholders == 0, "free lock");
    st_try(&o, b, WH_MODE_LOCK);
    wh_st_info(&o.v, &c, &in);
    CHECK(in.held == 1 && in.nholders == 1 && in.holders[0] == b, "held lock");
    tobj_free(&o);

    tobj_init(&o, WH_KIND_SEMAPHORE, 5);
    st_try(&o, a, WH_MODE_LOCK);
    st_try(&o, a, WH_MODE_LOCK);
    st_try(&o, b, WH_MODE_LOCK);
    wh_st_info(&o.v, &c, &in);
    CHECK(in.held == 3 && in.nholders == 2, "semaphore held %u holders %u", in.held, in.nholders);
    tobj_free(&o);

    tobj_init(&o, WH_KIND_RWLOCK, 1);
    st_try(&o, a, WH_MODE_READ);
    st_try(&o, b, WH_MODE_UPGRADEABLE);
    st_reg(&o, w, WH_MODE_WRITE, now_ns, now_ns + MS, &tag);
    st_reg(&o, w, WH_MODE_READ, now_ns, now_ns - 1, &tag); /* expired */
    wh_st_info(&o.v, &c, &in);
    CHECK(in.readers == 2 && in.held == 2 && !in.writer && in.upgradeable && !in.upgraded,
          "readers %u held %u", in.readers, in.held);
    CHECK(in.waiting_writers == 1 && in.waiting == 1, "waiting %u/%u", in.waiting_writers,
          in.waiting);
    st_rel(&o, WH_MODE_READ, a);
    st_try(&o, b, WH_MODE_UPGRADE);
    wh_st_info(&o.v, &c, &in);
    CHECK(in.readers == 0 && in.held == 1 && in.writer && in.upgraded, "upgraded: held %u",
          in.held);
    tobj_free(&o);
}

/* ---- a crash at every step inside the guard ---- */

struct fx {
    struct tobj o;
    uint64_t x, x1, y, w, z, d, e; /* x: the process that crashes; x1: x's slot, older generation */
    int xidx, widx;
    uint32_t xtag, wtag;
    int64_t xsince;
    int res;
};

struct crash_case {
    const char *name;
    uint32_t kind, max_count;
    void (*setup)(struct fx *);
    void (*op)(struct fx *);   /* run by x with the crash budget */
    void (*done)(struct fx *); /* checks after the operation completed */
    void (*live)(struct fx *); /* after x died and y reclaimed: live others' holds, then dropped */
    int min_points;
};

static long crash_left;

static int crash_run(struct fx *f, void (*op)(struct fx *), long budget)
{
    wh_crash_budget = budget;
    if (setjmp(wh_crash_jmp) != 0)
        return 1;
    op(f);
    crash_left = wh_crash_budget;
    wh_crash_budget = 0;
    return 0;
}

/* y can use the object normally: every mode, then everything released. */
static void y_cycle(struct fx *f, const char *name, long k)
{
    struct tobj *o = &f->o;
    uint64_t y = f->y;
    switch (o->v.kind) {
    case WH_KIND_LOCK:
        CHECK(st_try(o, y, WH_MODE_LOCK) == 1, "%s/%ld: y acquires", name, k);
        CHECK(st_rel(o, WH_MODE_LOCK, y) == 1, "%s/%ld: y releases", name, k);
        break;
    case WH_KIND_SEMAPHORE:
        for (uint32_t i = 0; i < o->v.max_count; i++)
            CHECK(st_try(o, y, WH_MODE_LOCK) == 1, "%s/%ld: y takes ticket %u", name, k, i);
        CHECK(st_try(o, y, WH_MODE_LOCK) == 0, "%s/%ld: and no more", name, k);
        for (uint32_t i = 0; i < o->v.max_count; i++)
            CHECK(st_rel(o, WH_MODE_LOCK, y) == 1, "%s/%ld: y gives back %u", name, k, i);
        break;
    default:
        CHECK(st_try(o, y, WH_MODE_WRITE) == 1, "%s/%ld: y writes", name, k);
        CHECK(st_rel(o, WH_MODE_WRITE, y) == 1, "%s/%ld: y stops writing", name, k);
        CHECK(st_try(o, y, WH_MODE_READ) == 1, "%s/%ld: y reads", name, k);
        CHECK(st_try(o, y, WH_MODE_UPGRADEABLE) == 1, "%s/%ld: y upgradeable", name, k);
        CHECK(st_rel(o, WH_MODE_READ, y) == 1, "%s/%ld: y stops reading", name, k);
        CHECK(st_try(o, y, WH_MODE_UPGRADE) == 1, "%s/%ld: y upgrades", name, k);
        CHECK(st_rel(o, WH_MODE_UPGRADEABLE, y) == 1, "%s/%ld: y releases", name, k);
    }
    CHECK(owner_of(o) == 0 && upg_of(o) == 0 && (o->v.slots == NULL || total_of(o) == 0),
          "%s/%ld: free after y's cycle", name, k);
}

static void fx_init(struct fx *f, const struct crash_case *cc)
{
    memset(f, 0, sizeof *f);
    reg_reset();
    now_ns = 1000LL * 1000 * MS;
    tobj_init(&f->o, cc->kind, cc->max_count);
    f->x1 = spawn(3);
    f->x = spawn(3); /* x1 is x's slot's previous, dead, generation */
    f->y = spawn(4);
    f->w = spawn(6);
    f->z = spawn(7);
    f->d = spawn(9);
    f->e = spawn(11);
    f->xidx = f->widx = -1;
}

static long crash_points_total;

static void crash_case_run(const struct crash_case *cc)
{
    long k;
    int completed = 0;
    for (k = 1; k < 1000 && !completed; k++) {
        struct fx f;
        char why[300], label[200];
        int crashed;

        fx_init(&f, cc);
        if (cc->setup)
            cc->setup(&f);
        die(f.d);
        die(f.e);
        crashed = crash_run(&f, cc->op, k);
        if (!crashed) {
            completed = 1;
            crash_points_total += k - 1;
            CHECK(crash_left > 0, "%s: completed with budget %ld left", cc->name, crash_left);
            CHECK(k - 1 >= cc->min_points, "%s: only %ld crash points, expected at least %d",
                  cc->name, k - 1, cc->min_points);
            CHECK(st_ok(&f.o, why, sizeof why), "%s: completed into a broken state: %s", cc->name,
                  why);
            if (cc->done)
                cc->done(&f);
        } else {
            CHECK(wh_crash_budget == 0, "%s: budget %ld after the crash", cc->name,
                  wh_crash_budget);
        }
        /* x dies (crashed inside the guard, or later); y takes over and repairs. */
        die(f.x);
        st_reclaim(&f.o, f.y);
        snprintf(label, sizeof label, "%s, %s at step %ld", cc->name,
                 crashed ? "crash" : "death after completion", k);
        CHECK(st_ok(&f.o, why, sizeof why), "%s: invariants after reclaim: %s", label, why);
        CHECK_NOTHING(&f.o, f.x, label);
        CHECK_NOTHING(&f.o, f.x1, label);
        CHECK_NOTHING(&f.o, f.d, label);
        CHECK_NOTHING(&f.o, f.e, label);
        if (cc->live)
            cc->live(&f);
        y_cycle(&f, cc->name, k);
        CHECK(st_ok(&f.o, why, sizeof why), "%s/%ld: invariants after y's cycle: %s", cc->name, k,
              why);
        tobj_free(&f.o);
    }
    CHECK(completed, "%s never completed", cc->name);
    wh_crash_budget = 0;
}

/* Operations. */
static void op_try_lock(struct fx *f)
{
    f->res = st_try(&f->o, f->x, WH_MODE_LOCK);
}
static void op_try_read(struct fx *f)
{
    f->res = st_try(&f->o, f->x, WH_MODE_READ);
}
static void op_try_write(struct fx *f)
{
    f->res = st_try(&f->o, f->x, WH_MODE_WRITE);
}
static void op_try_upgradeable(struct fx *f)
{
    f->res = st_try(&f->o, f->x, WH_MODE_UPGRADEABLE);
}
static void op_rel_lock(struct fx *f)
{
    f->res = st_rel(&f->o, WH_MODE_LOCK, f->x);
}
static void op_rel_read(struct fx *f)
{
    f->res = st_rel(&f->o, WH_MODE_READ, f->x);
}
static void op_rel_write(struct fx *f)
{
    f->res = st_rel(&f->o, WH_MODE_WRITE, f->x);
}
static void op_rel_upgradeable(struct fx *f)
{
    f->res = st_rel(&f->o, WH_MODE_UPGRADEABLE, f->x);
}
static void op_reclaim(struct fx *f)
{
    f->res = st_reclaim(&f->o, f->x);
}
static void op_withdraw(struct fx *f)
{
    f->res = wh_st_withdraw(&f->o.v, f->xidx, f->xtag, f->x);
}
static void op_refresh(struct fx *f)
{
    f->res = st_refresh(&f->o, f->x, f->xidx, f->xtag, now_ns + 5000 * MS);
}
static void op_register_lock(struct fx *f)
{
    f->xidx =
        st_reg(&f->o, f->x, WH_MODE_LOCK | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &f->xtag);
}
static void op_register_write(struct fx *f)
{
    f->xidx =
        st_reg(&f->o, f->x, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &f->xtag);
}
/* As wh_attempt does it: try with the own entry, withdraw it on success. */
static void op_try_lock_entry(struct fx *f)
{
    f->res = st_try_w(&f->o, f->x, WH_MODE_LOCK, f->xidx, f->xsince);
    if (f->res == 1)
        wh_st_withdraw(&f->o.v, f->xidx, f->xtag, f->x);
}
static void op_upgrade_entry(struct fx *f)
{
    f->res = st_try_w(&f->o, f->x, WH_MODE_UPGRADE, f->xidx, f->xsince);
    if (f->res == 1)
        wh_st_withdraw(&f->o.v, f->xidx, f->xtag, f->x);
}

/* Set-ups (x1, d and e die after the set-up). */
static void su_x_lock(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_LOCK);
}
static void su_x1_lock(struct fx *f)
{
    st_try(&f->o, f->x1, WH_MODE_LOCK);
}
static void su_x_entry_lock(struct fx *f)
{
    st_try(&f->o, f->z, WH_MODE_LOCK);
    f->xsince = now_ns - 50 * MS;
    f->xidx =
        st_reg(&f->o, f->x, WH_MODE_LOCK | WH_WAIT_FUTEX, f->xsince, now_ns + 1000 * MS, &f->xtag);
    f->widx = st_reg(&f->o, f->w, WH_MODE_LOCK, now_ns - 20 * MS, now_ns + 1000 * MS, &f->wtag);
    st_rel(&f->o, WH_MODE_LOCK, f->z);
}
static void su_x_registered(struct fx *f)
{
    f->widx = st_reg(&f->o, f->w, WH_MODE_READ, now_ns, now_ns + 1000 * MS, &f->wtag);
    f->xidx =
        st_reg(&f->o, f->x, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &f->xtag);
}
static void su_expired_entry(struct fx *f)
{
    f->widx =
        st_reg(&f->o, f->w, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns - 10 * MS, now_ns - 1, &f->wtag);
}
static void su_lock_dead_holder(struct fx *f)
{
    uint32_t tag;
    st_try(&f->o, f->d, WH_MODE_LOCK);
    st_reg(&f->o, f->d, WH_MODE_LOCK | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &tag);
    st_reg(&f->o, f->e, WH_MODE_LOCK, now_ns, now_ns + 1000 * MS, &tag);
    su_expired_entry(f);
}
static void su_sem_z1(struct fx *f)
{
    st_try(&f->o, f->z, WH_MODE_LOCK);
}
static void su_sem_x1(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_LOCK);
}
static void su_sem_x2_z1(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_LOCK);
    st_try(&f->o, f->x, WH_MODE_LOCK);
    st_try(&f->o, f->z, WH_MODE_LOCK);
}
static void su_sem_stale(struct fx *f)
{
    st_try(&f->o, f->x1, WH_MODE_LOCK);
    st_try(&f->o, f->x1, WH_MODE_LOCK);
}
static void su_sem_dead(struct fx *f)
{
    uint32_t tag;
    st_try(&f->o, f->d, WH_MODE_LOCK);
    st_try(&f->o, f->d, WH_MODE_LOCK);
    st_try(&f->o, f->z, WH_MODE_LOCK);
    st_reg(&f->o, f->e, WH_MODE_LOCK | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &tag);
    st_reg(&f->o, f->d, WH_MODE_LOCK, now_ns, now_ns + 1000 * MS, &tag);
}
static void su_rw_z_reads(struct fx *f)
{
    st_try(&f->o, f->z, WH_MODE_READ);
}
static void su_rw_x2_z1(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_READ);
    st_try(&f->o, f->x, WH_MODE_READ);
    st_try(&f->o, f->z, WH_MODE_READ);
}
static void su_rw_x_writes(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_WRITE);
}
static void su_rw_x_upgradeable(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_UPGRADEABLE);
    st_try(&f->o, f->z, WH_MODE_READ);
}
static void su_rw_x_upgraded(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_UPGRADEABLE);
    st_try(&f->o, f->x, WH_MODE_UPGRADE);
}
static void su_rw_upgrade_waiting(struct fx *f)
{
    st_try(&f->o, f->x, WH_MODE_UPGRADEABLE);
    st_try(&f->o, f->z, WH_MODE_READ);
    f->widx = st_reg(&f->o, f->w, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns - 500 * MS,
                     now_ns + 1000 * MS, &f->wtag);
    f->xsince = now_ns - 100 * MS;
    f->xidx = st_reg(&f->o, f->x, WH_MODE_UPGRADE | WH_WAIT_FUTEX, f->xsince, now_ns + 1000 * MS,
                     &f->xtag);
    st_rel(&f->o, WH_MODE_READ, f->z);
}
static void su_rw_stale_upgraded(struct fx *f)
{
    st_try(&f->o, f->x1, WH_MODE_UPGRADEABLE);
    st_try(&f->o, f->x1, WH_MODE_UPGRADE);
}
static void su_rw_stale_reads(struct fx *f)
{
    st_try(&f->o, f->x1, WH_MODE_READ);
    st_try(&f->o, f->x1, WH_MODE_READ);
    st_try(&f->o, f->z, WH_MODE_READ);
}
static void su_rw_dead(struct fx *f)
{
    uint32_t tag;
    st_try(&f->o, f->d, WH_MODE_UPGRADEABLE);
    st_try(&f->o, f->d, WH_MODE_READ);
    st_try(&f->o, f->d, WH_MODE_READ);
    st_try(&f->o, f->e, WH_MODE_READ);
    st_try(&f->o, f->z, WH_MODE_READ);
    st_reg(&f->o, f->d, WH_MODE_UPGRADE | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &tag);
    st_reg(&f->o, f->w, WH_MODE_READ, now_ns, now_ns - 1, &tag); /* expired */
    f->widx = st_reg(&f->o, f->w, WH_MODE_UPGRADEABLE, now_ns, now_ns + 1000 * MS, &f->wtag);
}
static void su_rw_dead_upgraded(struct fx *f)
{
    uint32_t tag;
    st_try(&f->o, f->d, WH_MODE_UPGRADEABLE);
    st_try(&f->o, f->d, WH_MODE_UPGRADE);
    st_reg(&f->o, f->e, WH_MODE_WRITE | WH_WAIT_FUTEX, now_ns, now_ns + 1000 * MS, &tag);
    f->widx = st_reg(&f->o, f->w, WH_MODE_WRITE, now_ns, now_ns + 1000 * MS, &f->wtag);
}

/* Checks after completion. */
#define DONE(cond, ...) CHECK(cond, __VA_ARGS__)
static void dn_x_owns(struct fx *f)
{
    DONE(f->res == 1 && owner_of(&f->o) == f->x, "x owns");
}
static void dn_x_owns_no_entry(struct fx *f)
{
    dn_x_owns(f);
    DONE(entry_of(&f->o, f->x) < 0, "x's entry withdrawn");
}
static void dn_released(struct fx *f)
{
    DONE(f->res == 1 && owner_of(&f->o) == 0 && upg_of(&f->o) == 0, "released: %d", f->res);
}
static void dn_reclaimed(struct fx *f)
{
    DONE(f->res == 1, "reclaim reported a change");
    DONE(entry_of(&f->o, f->d) < 0 && entry_of(&f->o, f->e) < 0 && entry_of(&f->o, f->w) < 0,
         "dead and expired entries freed");
}
static void dn_registered(struct fx *f)
{
    DONE(f->xidx >= 0 && LD(&f->o.v.waits[f->xidx].ident) == f->x, "registered");
    DONE(nwaiting_of(&f->o) >= 1 && LD(&f->o.v.h->nfutex) >= 1, "counted");
}
static void dn_registered_over_expired(struct fx *f)
{
    dn_registered(f);
    DONE(f->xidx == f->widx, "took the expired entry %d (got %d)", f->widx, f->xidx);
    DONE(nwaiting_of(&f->o) == 1 && LD(&f->o.v.h->nwriters) == 0, "counts");
}
static void dn_withdrawn(struct fx *f)
{
    DONE(f->res == 1 && entry_of(&f->o, f->x) < 0, "withdrawn");
    DONE(nwaiting_of(&f->o) == 1 && LD(&f->o.v.h->nwriters) == 0, "recounted");
}
static void dn_refreshed(struct fx *f)
{
    DONE(f->res == 1 && LD(&f->o.v.waits[f->xidx].lease) == now_ns + 5000 * MS, "refreshed");
}
static void dn_x_tickets1(struct fx *f)
{
    DONE(f->res == 1 && count_of(&f->o, f->x) == 1, "x has 1: %u", count_of(&f->o, f->x));
}
static void dn_sem_plus_z(struct fx *f)
{
    dn_x_tickets1(f);
    DONE(total_of(&f->o) == 2, "total %u", total_of(&f->o));
}
static void dn_x_tickets2(struct fx *f)
{
    DONE(f->res == 1 && count_of(&f->o, f->x) == 2 && total_of(&f->o) == 2, "x has 2");
}
static void dn_x_one_of_three(struct fx *f)
{
    DONE(f->res == 1 && count_of(&f->o, f->x) == 1 && total_of(&f->o) == 2, "x has 1 of 2");
}
static void dn_stale_sem(struct fx *f)
{
    dn_x_tickets1(f);
    DONE(total_of(&f->o) == 1 && LD(&f->o.v.slots[3].ident) == f->x, "stale tickets dropped");
}
static void dn_sem_reclaimed(struct fx *f)
{
    DONE(f->res == 1 && total_of(&f->o) == 1 && count_of(&f->o, f->z) == 1, "only z's ticket left");
}
static void dn_rw_reads2(struct fx *f)
{
    DONE(f->res == 1 && count_of(&f->o, f->x) == 1 && total_of(&f->o) == 2, "x reads beside z");
}
static void dn_rw_x_upg(struct fx *f)
{
    DONE(f->res == 1 && upg_of(&f->o) == f->x, "x upgradeable");
}
static void dn_rw_upgraded(struct fx *f)
{
    DONE(f->res == 1 && owner_of(&f->o) == f->x && upg_of(&f->o) == f->x, "x upgraded");
    DONE(entry_of(&f->o, f->x) < 0 && LD(&f->o.v.h->nwriters) == 1, "x's entry withdrawn");
}
static void dn_rw_stale_upgraded(struct fx *f)
{
    DONE(f->res == 1 && owner_of(&f->o) == 0 && upg_of(&f->o) == 0 && count_of(&f->o, f->x) == 1,
         "stale words cleared, x reads");
}
static void dn_rw_reclaimed(struct fx *f)
{
    DONE(f->res == 1 && upg_of(&f->o) == 0 && total_of(&f->o) == 1 && count_of(&f->o, f->z) == 1,
         "only z's read left: total %u", total_of(&f->o));
    DONE(entry_of(&f->o, f->d) < 0 && entry_of(&f->o, f->w) == f->widx,
         "d's entry freed, w's kept");
    DONE(nwaiting_of(&f->o) == 1 && LD(&f->o.v.h->nwriters) == 0, "recounted");
}
static void dn_rw_reclaimed_upgraded(struct fx *f)
{
    DONE(f->res == 1 && owner_of(&f->o) == 0 && upg_of(&f->o) == 0, "words cleared");
    DONE(nwaiting_of(&f->o) == 1 && LD(&f->o.v.h->nwriters) == 1, "w's entry kept");
}

/* Live others: their holds survived x's death and the reclaim; then they let go. */
static void lv_w_entry(struct fx *f)
{
    CHECK(f->widx >= 0 && LD(&f->o.v.waits[f->widx].ident) == f->w, "w's live entry kept");
    CHECK(wh_st_withdraw(&f->o.v, f->widx, f->wtag, f->w) == 1, "w withdraws");
}
static void lv_z_ticket(struct fx *f)
{
    CHECK(count_of(&f->o, f->z) == 1, "z's ticket kept: %u", count_of(&f->o, f->z));
    CHECK(st_rel(&f->o, WH_MODE_LOCK, f->z) == 1, "z gives it back");
}
static void lv_z_read(struct fx *f)
{
    CHECK(count_of(&f->o, f->z) == 1, "z's read kept: %u", count_of(&f->o, f->z));
    CHECK(st_rel(&f->o, WH_MODE_READ, f->z) == 1, "z stops reading");
}
static void lv_z_read_w_entry(struct fx *f)
{
    lv_z_read(f);
    lv_w_entry(f);
}

static const struct crash_case crash_cases[] = {
    {"lock acquire", WH_KIND_LOCK, 1, NULL, op_try_lock, dn_x_owns, NULL, 1},
    {"lock acquire with own entry", WH_KIND_LOCK, 1, su_x_entry_lock, op_try_lock_entry,
     dn_x_owns_no_entry, lv_w_entry, 3},
    {"lock release", WH_KIND_LOCK, 1, su_x_lock, op_rel_lock, dn_released, NULL, 1},
    {"lock own-slot stale cleanup", WH_KIND_LOCK, 1, su_x1_lock, op_try_lock, dn_x_owns, NULL, 2},
    {"lock reclaim", WH_KIND_LOCK, 1, su_lock_dead_holder, op_reclaim, dn_reclaimed, NULL, 4},
    {"lock register", WH_KIND_LOCK, 1, NULL, op_register_lock, dn_registered, NULL, 6},
    {"lock register over an expired entry", WH_KIND_LOCK, 1, su_expired_entry, op_register_lock,
     dn_registered_over_expired, NULL, 6},
    {"lock refresh", WH_KIND_LOCK, 1, su_x_registered, op_refresh, dn_refreshed, lv_w_entry, 1},
    {"semaphore acquire", WH_KIND_SEMAPHORE, 3, su_sem_z1, op_try_lock, dn_sem_plus_z, lv_z_ticket,
     3},
    {"semaphore acquire a second ticket", WH_KIND_SEMAPHORE, 3, su_sem_x1, op_try_lock,
     dn_x_tickets2, NULL, 2},
    {"semaphore release", WH_KIND_SEMAPHORE, 3, su_sem_x2_z1, op_rel_lock, dn_x_one_of_three,
     lv_z_ticket, 2},
    {"semaphore own-slot stale cleanup", WH_KIND_SEMAPHORE, 3, su_sem_stale, op_try_lock,
     dn_stale_sem, NULL, 5},
    {"semaphore reclaim", WH_KIND_SEMAPHORE, 3, su_sem_dead, op_reclaim, dn_sem_reclaimed,
     lv_z_ticket, 5},
    {"semaphore withdraw", WH_KIND_SEMAPHORE, 3, su_x_registered, op_withdraw, dn_withdrawn,
     lv_w_entry, 3},
    {"rwlock read", WH_KIND_RWLOCK, 1, su_rw_z_reads, op_try_read, dn_rw_reads2, lv_z_read, 3},
    {"rwlock read release", WH_KIND_RWLOCK, 1, su_rw_x2_z1, op_rel_read, dn_x_one_of_three,
     lv_z_read, 2},
    {"rwlock write", WH_KIND_RWLOCK, 1, NULL, op_try_write, dn_x_owns, NULL, 1},
    {"rwlock write release", WH_KIND_RWLOCK, 1, su_rw_x_writes, op_rel_write, dn_released, NULL, 1},
    {"rwlock upgradeable", WH_KIND_RWLOCK, 1, su_rw_z_reads, op_try_upgradeable, dn_rw_x_upg,
     lv_z_read, 1},
    {"rwlock upgrade past a waiting writer", WH_KIND_RWLOCK, 1, su_rw_upgrade_waiting,
     op_upgrade_entry, dn_rw_upgraded, lv_w_entry, 3},
    {"rwlock upgradeable release", WH_KIND_RWLOCK, 1, su_rw_x_upgradeable, op_rel_upgradeable,
     dn_released, lv_z_read, 1},
    {"rwlock upgraded release", WH_KIND_RWLOCK, 1, su_rw_x_upgraded, op_rel_upgradeable,
     dn_released, NULL, 2},
    {"rwlock own-slot stale upgraded holder", WH_KIND_RWLOCK, 1, su_rw_stale_upgraded, op_try_read,
     dn_rw_stale_upgraded, NULL, 4},
    {"rwlock own-slot stale reads", WH_KIND_RWLOCK, 1, su_rw_stale_reads, op_try_read, dn_rw_reads2,
     lv_z_read, 5},
    {"rwlock reclaim", WH_KIND_RWLOCK, 1, su_rw_dead, op_reclaim, dn_rw_reclaimed,
     lv_z_read_w_entry, 8},
    {"rwlock reclaim of an upgraded holder", WH_KIND_RWLOCK, 1, su_rw_dead_upgraded, op_reclaim,
     dn_rw_reclaimed_upgraded, lv_w_entry, 4},
    {"rwlock register a writer", WH_KIND_RWLOCK, 1, NULL, op_register_write, dn_registered, NULL,
     6},
    {"rwlock withdraw a writer", WH_KIND_RWLOCK, 1, su_x_registered, op_withdraw, dn_withdrawn,
     lv_w_entry, 3},
};

static void test_crash_every_step(void)
{
    for (size_t i = 0; i < sizeof crash_cases / sizeof crash_cases[0]; i++)
        crash_case_run(&crash_cases[i]);
    th_note("%zu operations, crashed at each of their %ld steps",
            sizeof crash_cases / sizeof crash_cases[0], crash_points_total);
    CHECK(wh_crash_budget == 0, "budget reset");
    CHECK(bad_actx == 0, "the liveness callback always got its context back");
}

/* A reclaimer that dies in the middle of its reclaim, then a second one that dies too, at
 * every pair of steps: the third reclaim still repairs everything, and keeps what the living
 * hold. */
static void tobj_clone(struct tobj *dst, const struct tobj *src)
{
    tobj_init(dst, src->v.kind, src->v.max_count);
    memcpy(dst->mem, src->mem, src->size);
}

static void test_crash_chain_of_reclaimers(void)
{
    static const struct crash_case cc = {"chain", WH_KIND_RWLOCK, 1, NULL, NULL, NULL, NULL, 0};
    long k1, k2, pairs = 0;
    for (k1 = 1; k1 < 100; k1++) {
        struct fx f;
        fx_init(&f, &cc);
        su_rw_dead(&f);
        die(f.d);
        die(f.e);
        st_try(&f.o, f.x, WH_MODE_READ);
        if (!crash_run(&f, op_reclaim, k1)) {
            tobj_free(&f.o);
            break;
        }
        die(f.x);
        for (k2 = 1; k2 < 100; k2++) {
            struct fx g = f;
            char why[300];
            int crashed;
            tobj_clone(&g.o, &f.o);
            g.x = spawn(20);
            crashed = crash_run(&g, op_reclaim, k2);
            die(g.x);
            st_reclaim(&g.o, g.y);
            pairs++;
            CHECK(st_ok(&g.o, why, sizeof why), "chain %ld/%ld: %s", k1, k2, why);
            CHECK_NOTHING(&g.o, f.x, "a chain of crashing reclaimers");
            CHECK_NOTHING(&g.o, f.d, "a chain of crashing reclaimers");
            CHECK_NOTHING(&g.o, f.e, "a chain of crashing reclaimers");
            CHECK(count_of(&g.o, f.z) == 1, "chain %ld/%ld: z's read kept", k1, k2);
            CHECK(entry_of(&g.o, f.w) == f.widx, "chain %ld/%ld: w's entry kept", k1, k2);
            tobj_free(&g.o);
            if (!crashed)
                break;
        }
        tobj_free(&f.o);
    }
    CHECK(pairs > 20, "only %ld pairs", pairs);
    wh_crash_budget = 0;
}

/* ---- randomized: many processes, random operations, crashes and slot reuse ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

#define NACT      6
#define NOBJ      3
#define ACT_SLOT0 40

struct actor {
    uint64_t id;
    int alive;
    int lock;         /* believes it holds the lock */
    uint32_t tickets; /* semaphore */
    uint32_t reads;
    int write, upg, upgraded;
    int widx[NOBJ];
    uint32_t wtag[NOBJ], wmode[NOBJ];
    int64_t wsince[NOBJ];
};

static struct actor acts[NACT];
static struct tobj robj[NOBJ];

static void actor_reset(struct actor *a)
{
    uint64_t id = a->id;
    memset(a, 0, sizeof *a);
    a->id = id;
    for (int i = 0; i < NOBJ; i++)
        a->widx[i] = -1;
}

static void actor_spawn(int i)
{
    acts[i].id = spawn(ACT_SLOT0 + (uint32_t)i);
    actor_reset(&acts[i]);
    acts[i].alive = 1;
}

static void actor_die(int i)
{
    die(acts[i].id);
    actor_reset(&acts[i]);
    acts[i].alive = 0;
}

struct rop {
    int act, obj, what;
    uint32_t mode;
    int res;
};

enum { R_TRY, R_RELEASE, R_RELEASE_NOT_HELD, R_REGISTER, R_REFRESH, R_WITHDRAW, R_RECLAIM };

static uint32_t random_mode(int obj, struct actor *a)
{
    static const uint32_t rw[] = {WH_MODE_READ, WH_MODE_WRITE, WH_MODE_UPGRADEABLE,
                                  WH_MODE_UPGRADE};
    if (obj != 2)
        return WH_MODE_LOCK;
    if (a->upg && !a->upgraded && rnd(2))
        return WH_MODE_UPGRADE;
    return rw[rnd(4)];
}

static int holds_mode(struct actor *a, int obj, uint32_t mode)
{
    switch (obj) {
    case 0:
        return a->lock;
    case 1:
        return a->tickets > 0;
    }
    switch (mode) {
    case WH_MODE_READ:
        return a->reads > 0;
    case WH_MODE_WRITE:
        return a->write;
    case WH_MODE_UPGRADEABLE:
        return a->upg;
    }
    return 0;
}

static void note_acquired(struct actor *a, int obj, uint32_t mode)
{
    if (obj == 0)
        a->lock = 1;
    else if (obj == 1)
        a->tickets++;
    else if (mode == WH_MODE_READ)
        a->reads++;
    else if (mode == WH_MODE_WRITE)
        a->write = 1;
    else if (mode == WH_MODE_UPGRADEABLE)
        a->upg = 1;
    else if (mode == WH_MODE_UPGRADE)
        a->upgraded = 1;
}

static void note_released(struct actor *a, int obj, uint32_t mode)
{
    if (obj == 0)
        a->lock = 0;
    else if (obj == 1)
        a->tickets--;
    else if (mode == WH_MODE_READ)
        a->reads--;
    else if (mode == WH_MODE_WRITE)
        a->write = 0;
    else if (mode == WH_MODE_UPGRADEABLE)
        a->upg = a->upgraded = 0;
}

static int64_t rlease(void)
{
    return now_ns + (int64_t)rnd(300) * MS;
}

/* One operation of one actor, as it would run under the guard. Beliefs are updated inside, so
 * a crash anywhere leaves them to be discarded with the actor. */
static void rop_exec(struct rop *r)
{
    struct actor *a = &acts[r->act];
    struct tobj *o = &robj[r->obj];
    struct wh_ctx c = ctx_of(a->id);
    int *idx = &a->widx[r->obj];
    switch (r->what) {
    case R_TRY: {
        int mine = -1;
        int64_t since = now_ns;
        if (*idx >= 0) {
            if (wh_st_refresh(&o->v, &c, *idx, a->wtag[r->obj], rlease())) {
                mine = *idx;
                since = a->wsince[r->obj];
                r->mode = a->wmode[r->obj] & WH_WAIT_MODE_MASK;
            } else {
                *idx = -1;
            }
        }
        r->res = wh_st_try(&o->v, &c, r->mode, mine, since);
        if (r->res == 1) {
            note_acquired(a, r->obj, r->mode);
            if (mine >= 0) {
                wh_st_withdraw(&o->v, mine, a->wtag[r->obj], a->id);
                *idx = -1;
            }
        } else if (r->res == 0 && *idx < 0 && rnd(2)) {
            a->wmode[r->obj] = r->mode | (rnd(2) ? WH_WAIT_FUTEX : 0);
            a->wsince[r->obj] = now_ns;
            *idx = wh_st_register(&o->v, &c, a->wmode[r->obj], now_ns, rlease(), &a->wtag[r->obj]);
        }
        break;
    }
    case R_RELEASE:
        r->res = wh_st_release(&o->v, r->mode, a->id);
        if (r->res == 1)
            note_released(a, r->obj, r->mode);
        break;
    case R_RELEASE_NOT_HELD:
        r->res = wh_st_release(&o->v, r->mode, a->id);
        break;
    case R_REGISTER:
        if (*idx < 0) {
            a->wmode[r->obj] = r->mode | WH_WAIT_FUTEX;
            a->wsince[r->obj] = now_ns;
            *idx = wh_st_register(&o->v, &c, a->wmode[r->obj], now_ns, rlease(), &a->wtag[r->obj]);
        }
        r->res = *idx >= 0;
        break;
    case R_REFRESH:
        r->res = *idx >= 0 && wh_st_refresh(&o->v, &c, *idx, a->wtag[r->obj], rlease());
        if (!r->res)
            *idx = -1;
        break;
    case R_WITHDRAW:
        r->res = *idx >= 0 && wh_st_withdraw(&o->v, *idx, a->wtag[r->obj], a->id);
        *idx = -1;
        break;
    case R_RECLAIM:
        r->res = wh_st_reclaim(&o->v, &c);
        break;
    }
}

static int rop_crash(struct rop *r, long budget)
{
    wh_crash_budget = budget;
    if (setjmp(wh_crash_jmp) != 0)
        return 1;
    rop_exec(r);
    wh_crash_budget = 0;
    return 0;
}

/* The state against the live actors' beliefs. `exact`: just reclaimed, so nothing of the dead
 * may remain. */
static int model_check(int obj, int exact, long step)
{
    struct tobj *o = &robj[obj];
    char why[300];
    int bad = 0;
    uint64_t writer = 0, upgh = 0;
    uint32_t nlock = 0, sum = 0, nwriter = 0, nupg = 0;

    if (!CHECK(st_ok(o, why, sizeof why), "step %ld, object %d: %s", step, obj, why))
        bad = 1;
    for (int i = 0; i < NACT; i++) {
        struct actor *a = &acts[i];
        if (!a->alive)
            continue;
        if (obj == 0 && a->lock) {
            nlock++;
            bad |= !CHECK(owner_of(o) == a->id, "step %ld: lock believer %d is not the owner", step,
                          i);
        }
        if (obj == 1) {
            sum += a->tickets;
            bad |= !CHECK(count_of(o, a->id) == a->tickets, "step %ld: actor %d tickets %u vs %u",
                          step, i, count_of(o, a->id), a->tickets);
        }
        if (obj == 2) {
            sum += a->reads;
            bad |= !CHECK(count_of(o, a->id) == a->reads, "step %ld: actor %d reads %u vs %u", step,
                          i, count_of(o, a->id), a->reads);
            if (a->write || a->upgraded) {
                nwriter++;
                writer = a->id;
            }
            if (a->upg) {
                nupg++;
                upgh = a->id;
            }
            bad |= !CHECK(!a->upgraded || a->upg, "step %ld: upgraded without upgradeable", step);
        }
    }
    if (obj == 0)
        bad |= !CHECK(nlock <= 1, "step %ld: %u processes believe they hold the lock", step, nlock);
    if (obj == 1)
        bad |= !CHECK(sum <= o->v.max_count && total_of(o) <= o->v.max_count,
                      "step %ld: semaphore: %u believed, total %u, max %u", step, sum, total_of(o),
                      o->v.max_count);
    if (obj == 2) {
        bad |= !CHECK(nwriter <= 1 && nupg <= 1, "step %ld: %u writers, %u upgradeable", step,
                      nwriter, nupg);
        bad |= !CHECK(nwriter == 0 || sum == 0, "step %ld: a writer beside %u reads", step, sum);
        bad |= !CHECK(nwriter == 0 || nupg == 0 || writer == upgh,
                      "step %ld: a writer beside another upgradeable", step);
        if (nwriter)
            bad |= !CHECK(owner_of(o) == writer, "step %ld: owner word", step);
        if (nupg)
            bad |= !CHECK(upg_of(o) == upgh, "step %ld: upgradeable word", step);
    }
    if (exact) {
        if (obj == 0)
            bad |= !CHECK(nlock == 1 || owner_of(o) == 0, "step %ld: a dead owner survived", step);
        if (obj == 1)
            bad |= !CHECK(total_of(o) == sum, "step %ld: total %u, live tickets %u", step,
                          total_of(o), sum);
        if (obj == 2) {
            bad |= !CHECK(total_of(o) == sum, "step %ld: total %u, live reads %u", step,
                          total_of(o), sum);
            bad |= !CHECK(owner_of(o) == writer && upg_of(o) == upgh,
                          "step %ld: words %llx/%llx, live %llx/%llx", step,
                          (unsigned long long)owner_of(o), (unsigned long long)upg_of(o),
                          (unsigned long long)writer, (unsigned long long)upgh);
        }
        for (uint32_t i = 0; i < o->v.nwait; i++) {
            uint64_t id = LD(&o->v.waits[i].ident);
            int live = 0;
            if (id == 0)
                continue;
            for (int j = 0; j < NACT; j++)
                live |= acts[j].alive && acts[j].id == id;
            bad |= !CHECK(live && LD(&o->v.waits[i].lease) >= now_ns,
                          "step %ld: wait entry %u of %llx survived a reclaim", step, i,
                          (unsigned long long)id);
        }
    }
    return !bad;
}

static int pick_live(void)
{
    int n = 0, cand[NACT];
    for (int i = 0; i < NACT; i++)
        if (acts[i].alive)
            cand[n++] = i;
    if (n == 0) {
        int i = (int)rnd(NACT);
        actor_spawn(i);
        return i;
    }
    return cand[rnd((uint32_t)n)];
}

/* A live actor reclaims `obj` and the result is checked exactly; a free object must then be
 * acquirable by someone with nothing in the way. */
static int reclaim_and_check(int obj, long step, unsigned long *reclaims)
{
    int y = pick_live();
    struct tobj *o = &robj[obj];
    st_reclaim(o, acts[y].id);
    (*reclaims)++;
    if (!model_check(obj, 1, step))
        return 0;
    if (nwaiting_of(o) == 0 && owner_of(o) == 0 && upg_of(o) == 0 &&
        (o->v.slots == NULL || total_of(o) == 0)) {
        uint32_t mode = obj == 2 ? WH_MODE_WRITE : WH_MODE_LOCK;
        int r = st_try(o, acts[y].id, mode);
        if (!CHECK(r == 1, "step %ld: a free object refused actor %d", step, y))
            return 0;
        note_acquired(&acts[y], obj, mode);
    }
    return 1;
}

static void test_randomized(void)
{
    unsigned long crashes = 0, reclaims = 0, acquired = 0, deaths = 0, busy = 0;
    long step;
    reg_reset();
    now_ns = 5000LL * 1000 * MS;
    tobj_init(&robj[0], WH_KIND_LOCK, 1);
    tobj_init(&robj[1], WH_KIND_SEMAPHORE, 3);
    tobj_init(&robj[2], WH_KIND_RWLOCK, 1);
    memset(acts, 0, sizeof acts);
    for (int i = 0; i < NACT; i++)
        actor_spawn(i);

    for (step = 0; step < 6000; step++) {
        struct rop r;
        struct actor *a;
        uint32_t dice = rnd(100);
        int ok = 1;

        now_ns += (int64_t)rnd(6) * MS;
        r.act = pick_live();
        a = &acts[r.act];
        r.obj = (int)rnd(NOBJ);
        r.mode = random_mode(r.obj, a);
        r.res = -2;
        if (dice < 3) {
            /* dies outside the guard: its holds stay until a reclaim */
            actor_die(r.act);
            deaths++;
        } else if (dice < 6) {
            /* a dead actor's slot is reused by a new process */
            int i = (int)rnd(NACT);
            if (!acts[i].alive)
                actor_spawn(i);
        } else {
            int crash = rnd(100) < 12;
            if (dice < 45) {
                r.what = R_TRY;
            } else if (dice < 70) {
                /* release something held, else something not held */
                uint32_t modes[4] = {WH_MODE_READ, WH_MODE_WRITE, WH_MODE_UPGRADEABLE, 0};
                r.what = R_RELEASE_NOT_HELD;
                if (r.obj != 2) {
                    r.mode = WH_MODE_LOCK;
                    if (holds_mode(a, r.obj, r.mode))
                        r.what = R_RELEASE;
                } else {
                    r.mode = modes[rnd(3)];
                    if (holds_mode(a, 2, r.mode))
                        r.what = R_RELEASE;
                    else if (r.mode == WH_MODE_WRITE && a->upgraded)
                        r.mode = WH_MODE_UPGRADEABLE, r.what = R_RELEASE;
                }
            } else if (dice < 78) {
                r.what = R_REGISTER;
            } else if (dice < 85) {
                r.what = R_REFRESH;
            } else if (dice < 91) {
                r.what = R_WITHDRAW;
            } else {
                r.what = R_RECLAIM;
            }
            if (crash && rop_crash(&r, 1 + (long)rnd(8))) {
                /* died inside the guard: the next guard owner takes over and repairs */
                char why[200];
                uint64_t dead = a->id;
                int obj = r.obj;
                crashes++;
                actor_die(r.act);
                ok = reclaim_and_check(obj, step, &reclaims);
                if (ok) {
                    ok = holds_nothing(&robj[obj], dead, why, sizeof why);
                    CHECK(ok, "step %ld: a crashed process still %s", step, why);
                }
            } else {
                if (!crash)
                    rop_exec(&r);
                if (r.what == R_TRY) {
                    if (r.mode == WH_MODE_UPGRADE)
                        ok = CHECK((r.res == -1) == !a->upg,
                                   "step %ld: upgrade returned %d, upg %d", step, r.res, a->upg);
                    else
                        ok = CHECK(r.res == 0 || r.res == 1, "step %ld: try returned %d", step,
                                   r.res);
                    if (r.res == 1)
                        acquired++;
                    else
                        busy++;
                } else if (r.what == R_RELEASE) {
                    ok = CHECK(r.res == 1, "step %ld: releasing a held mode %u returned %d", step,
                               r.mode, r.res);
                } else if (r.what == R_RELEASE_NOT_HELD) {
                    ok = CHECK(r.res == 0, "step %ld: releasing mode %u not held returned %d", step,
                               r.mode, r.res);
                }
                if (ok && r.what == R_RECLAIM)
                    ok = model_check(r.obj, 1, step);
            }
        }
        for (int i = 0; ok && i < NOBJ; i++)
            ok = model_check(i, 0, step);
        if (!ok)
            break;
        if (rnd(50) == 0)
            ok = reclaim_and_check((int)rnd(NOBJ), step, &reclaims);
        if (!ok)
            break;
    }
    th_note("randomized: %ld steps, %lu crashes, %lu deaths, %lu reclaims, %lu acquired, %lu busy",
            step, crashes, deaths, reclaims, acquired, busy);
    CHECK(crashes > 100 && acquired > 500 && busy > 100, "the run exercised little");
    wh_crash_budget = 0;
    for (int i = 0; i < NOBJ; i++)
        tobj_free(&robj[i]);
}

/* ---- the guard: a waiter never sleeps on a guard that was dropped after it set SLEEPERS ---- */

extern void (*wh_guard_before_sleep)(_Atomic uint64_t *g, const void *word, uint32_t val);

#define G_OWNER  WH_IDENT(0, 1)
#define G_WAITER WH_IDENT(1, 1)
#define G_TAKER  WH_IDENT(2, 1)

static struct {
    int calls, takeover;
    int lost_sleep;     /* a FUTEX_WAIT would sleep with no drop left to wake it */
    int sleeps_flagged; /* every sleep compares a value with SLEEPERS set */
    int dead;           /* the owner is dead (the takeover case) */
} gh;

static int g_alive(void *ctx, uint64_t ident)
{
    (void)ctx;
    return !(gh.dead && ident == G_OWNER);
}

/* FUTEX_WAIT(word, val) sleeps iff word == val; only a drop of a word with SLEEPERS wakes. */
static void check_sleep_is_woken(_Atomic uint64_t *g, const void *word, uint32_t val)
{
    int sleeps = __atomic_load_n((const uint32_t *)word, __ATOMIC_SEQ_CST) == val;
    if (sleeps && !(atomic_load(g) & WH_GUARD_SLEEPERS))
        gh.lost_sleep = 1;
}

/*
 * Called with the SLEEPERS flag just set, before FUTEX_WAIT(word, val). First call, as other
 * processes would act in that window: the owner drops the guard (its wake-up finds nobody
 * asleep yet) and takes it again, without SLEEPERS; or, for a takeover, another process takes
 * the guard over from the dead owner, keeping SLEEPERS. Either way, if the waiter still
 * sleeps, a later drop must wake it. Second call: the guard is dropped for good.
 */
static void guard_hook(_Atomic uint64_t *g, const void *word, uint32_t val)
{
    gh.calls++;
    gh.sleeps_flagged &= (val & (uint32_t)(WH_GUARD_SLEEPERS >> 32)) != 0;
    if (gh.calls == 1 && !gh.takeover) {
        uint64_t z = 0;
        wh_guard_unlock(g);
        atomic_compare_exchange_strong(g, &z, G_OWNER);
        check_sleep_is_woken(g, word, val);
    } else if (gh.calls == 1) {
        uint64_t cur = atomic_load(g);
        CHECK(cur == (G_OWNER | WH_GUARD_SLEEPERS), "the waiter flagged the owner: %llx",
              (unsigned long long)cur);
        atomic_store(g, G_TAKER | (cur & WH_GUARD_SLEEPERS)); /* the takeover's CAS */
        check_sleep_is_woken(g, word, val);
        gh.dead = 0;
        wh_guard_unlock(g); /* the taker's drop */
    } else if (atomic_load(g) != 0) {
        wh_guard_unlock(g);
    }
}

static void guard_case(int takeover)
{
    _Atomic uint64_t g = G_OWNER;
    int r;

    memset(&gh, 0, sizeof gh);
    gh.sleeps_flagged = 1;
    gh.takeover = takeover;
    gh.dead = takeover;
    wh_guard_before_sleep = guard_hook;
    /* The dead owner is probed only after 200 us: the hook runs first. */
    r = wh_guard_lock(&g, G_WAITER, wh_now() + 2 * (int64_t)1000000000, g_alive, NULL);
    wh_guard_before_sleep = NULL;
    CHECK(r == WH_GUARD_OK, "the waiter got the guard: %d", r);
    CHECK(atomic_load(&g) == G_WAITER, "the guard names the waiter: %llx",
          (unsigned long long)atomic_load(&g));
    CHECK(gh.calls >= 1, "the waiter went to sleep at least once");
    CHECK(gh.sleeps_flagged, "every sleep compares a value with SLEEPERS set");
    CHECK(!gh.lost_sleep, "%s, the waiter's FUTEX_WAIT would sleep with no drop left to wake it",
          takeover ? "after a takeover" : "after the owner dropped and retook the guard");
    wh_guard_unlock(&g);
    CHECK(atomic_load(&g) == 0, "dropped");
}

static void test_guard_sleepers(void)
{
    guard_case(0);
    guard_case(1);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_guard_sleepers);
    RUN(test_lock_transitions);
    RUN(test_semaphore_transitions);
    RUN(test_rwlock_transitions);
    RUN(test_writer_preference);
    RUN(test_upgrade_bypasses_writers);
    RUN(test_barging_lock);
    RUN(test_barging_semaphore);
    RUN(test_wait_table);
    RUN(test_own_slot_stale);
    RUN(test_reclaim);
    RUN(test_hostile);
    RUN(test_info);
    RUN(test_crash_every_step);
    RUN(test_crash_chain_of_reclaimers);
    RUN(test_randomized);
    return th_done();
}
