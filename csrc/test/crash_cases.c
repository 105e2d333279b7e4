/*
 * The operations that test_crash.c stops at every step (crash.h): for each,
 * a set-up, the operation that x makes, the checks when it completes, and
 * what the live others still hold after x died and y reclaimed.
 */
#include "crash.h"

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
void op_reclaim(struct fx *f)
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
void su_rw_dead(struct fx *f)
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

const struct crash_case crash_cases[] = {
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
const size_t ncrash_cases = sizeof crash_cases / sizeof crash_cases[0];
