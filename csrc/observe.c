/*
 * A look at the state of an object (mapped, with the guard held, or a private
 * copy): what info() reports (who holds, who waits), and the invariants of
 * doc/FORMAT.md that the tests check after every step. It only reads, by the
 * rules of state.c (shared in state.h).
 */
#include <stdio.h>
#include <string.h>

#include "state.h"

static void add_holder(struct wh_info *out, uint64_t id)
{
    for (uint32_t i = 0; i < out->nholders; i++)
        if (out->holders[i] == id)
            return;
    if (out->nholders < sizeof out->holders / sizeof out->holders[0])
        out->holders[out->nholders++] = id;
}

void wh_st_info(const struct wh_view *v, const struct wh_ctx *c, struct wh_info *out)
{
    struct wh_obj_header *h = v->h;
    uint64_t owner = LD(&h->owner), upg = LD(&h->upgradeable);
    memset(out, 0, sizeof *out);
    out->token = LD(&h->token);
    out->ev_set = LD(&h->ev_set);
    if (v->kind != WH_KIND_SEMAPHORE && owner != 0) {
        out->writer = 1;
        add_holder(out, owner);
    }
    if (is_rw(v) && upg != 0) {
        out->upgradeable = 1;
        out->upgraded = owner == upg;
        add_holder(out, upg);
    }
    if (has_slots(v)) {
        for (uint32_t i = 0; i < v->nslots; i++) {
            uint64_t id = LD(&v->slots[i].ident);
            if (id != 0 && LD(&v->slots[i].count) != 0)
                add_holder(out, id);
        }
        out->readers = LD(&h->total);
    }
    for (uint32_t i = 0; i < v->nwait; i++) {
        uint64_t id;
        uint32_t m;
        int64_t s;
        if (!entry_live(&v->waits[i], c->now, &id, &m, &s))
            continue;
        out->waiting++;
        if (m == WH_MODE_WRITE || m == WH_MODE_UPGRADE)
            out->waiting_writers++;
    }
    switch (v->kind) {
    case WH_KIND_LOCK:
        out->held = out->writer;
        out->readers = 0;
        break;
    case WH_KIND_SEMAPHORE:
        out->held = out->readers;
        break;
    default:
        /* An upgradeable read is a read until it is upgraded; then it is the write. */
        if (out->upgradeable && !out->upgraded)
            out->readers++;
        out->held = out->readers + (uint32_t)out->writer;
    }
}

/* The invariants of doc/FORMAT.md, checked on a quiescent object. Returns 1 if they hold. */
int wh_st_check(const struct wh_view *v, char *why, size_t whylen)
{
    struct wh_obj_header *h = v->h;
    uint64_t owner = LD(&h->owner), upg = LD(&h->upgradeable), sum = 0;
    uint32_t used, fut, writers;
#define BAD(...) return (snprintf(why, whylen, __VA_ARGS__), 0)
    if (has_slots(v))
        for (uint32_t i = 0; i < v->nslots; i++) {
            uint64_t id = LD(&v->slots[i].ident);
            uint32_t cnt = LD(&v->slots[i].count);
            if (cnt != 0 && (id == 0 || WH_IDENT_SLOT(id) != i))
                BAD("slot %u has %u held under identity %llx", i, cnt, (unsigned long long)id);
            sum += cnt;
        }
    if (has_slots(v) && sum != LD(&h->total))
        BAD("total %u but the slots hold %llu", LD(&h->total), (unsigned long long)sum);
    if (v->kind == WH_KIND_SEMAPHORE && sum > v->max_count)
        BAD("%llu tickets held, max_count %u", (unsigned long long)sum, v->max_count);
    if (v->kind == WH_KIND_SEMAPHORE && (owner != 0 || upg != 0))
        BAD("semaphore with an owner word set");
    if (v->kind == WH_KIND_LOCK && upg != 0)
        BAD("lock with an upgradeable holder");
    if (is_rw(v) && owner != 0 && sum != 0)
        BAD("writer %llx beside %llu readers", (unsigned long long)owner, (unsigned long long)sum);
    if (is_rw(v) && owner != 0 && upg != 0 && owner != upg)
        BAD("writer %llx beside upgradeable reader %llx", (unsigned long long)owner,
            (unsigned long long)upg);
    count_waits(v, &used, &fut, &writers);
    if (used != LD(&h->nwaiting) || fut != atomic_load(&h->nfutex) || writers != LD(&h->nwriters))
        BAD("wait counts %u/%u/%u, entries say %u/%u/%u", LD(&h->nwaiting),
            atomic_load(&h->nfutex), LD(&h->nwriters), used, fut, writers);
#undef BAD
    return 1;
}
