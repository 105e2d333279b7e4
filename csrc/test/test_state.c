/*
 * The state machines one operation at a time: the transitions of each kind,
 * holds left by an older generation of the caller's own slot, reclamation of
 * the dead's holds and marks, and what info() reports.
 */
#include <stdio.h>

#include "state_fixture.h"

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
    CHECK(alive_calls > calls, "after a liveness probe (it answers dead)");
    CHECK(owner_of(&o) == me, "and owns the lock");
    CHECK(st_rel(&o, WH_MODE_LOCK, old) == 0, "the old generation cannot release it");
    CHECK_OK(&o, "own-slot lock");
    tobj_free(&o);

    /* A registry file replaced under its process: `old` still attempts with its identity of
     * the unlinked file, while `me`, live in the new file, got the same slot number and holds.
     * The probe says `me` is alive: its hold is not an earlier generation of old's slot. */
    reg_reset();
    tobj_init(&o, WH_KIND_LOCK, 1);
    old = spawn(5);
    me = spawn(5);
    CHECK(st_try(&o, me, WH_MODE_LOCK) == 1, "the new file's process holds");
    CHECK(st_try(&o, old, WH_MODE_LOCK) == 0, "the stale identity does not clear a live hold");
    CHECK(owner_of(&o) == me, "which stays");
    CHECK_OK(&o, "own-slot number, live");
    tobj_free(&o);
    reg_reset();
    tobj_init(&o, WH_KIND_SEMAPHORE, 2);
    old = spawn(5);
    me = spawn(5);
    CHECK(st_try(&o, me, WH_MODE_LOCK) == 1, "the new file's process takes a ticket");
    CHECK(st_try(&o, old, WH_MODE_LOCK) == 0, "the stale identity takes over no live entry");
    CHECK(total_of(&o) == 1, "the live ticket stays counted");
    CHECK_OK(&o, "own-slot entry, live");
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

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_lock_transitions);
    RUN(test_semaphore_transitions);
    RUN(test_rwlock_transitions);
    RUN(test_own_slot_stale);
    RUN(test_reclaim);
    RUN(test_info);
    return th_done();
}
