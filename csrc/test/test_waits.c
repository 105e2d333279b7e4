/*
 * Wait entries (marks): writer preference, an upgrade that passes waiting
 * writers, bounded barging, leases, and a full wait table.
 */
#include <stdio.h>

#include "state_fixture.h"

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

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(test_writer_preference);
    RUN(test_upgrade_bypasses_writers);
    RUN(test_barging_lock);
    RUN(test_barging_semaphore);
    RUN(test_wait_table);
    return th_done();
}
