/*
 * The state machine tests' fixture (state_fixture.h): objects in calloc'd
 * memory, the fake registry, and wrappers of the wh_st_* calls.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state_fixture.h"

/* Every store of state.c is a crash point in these builds (-DWH_CRASH_TEST). */
long wh_crash_budget;
jmp_buf wh_crash_jmp;

/* ---- objects laid out as in csrc/object.c ---- */

#define T_WAIT_OFF ((uint32_t)sizeof(struct wh_obj_header))
#define T_SLOT_OFF (T_WAIT_OFF + WH_WAIT_ENTRIES * (uint32_t)sizeof(struct wh_wait_entry))

void tobj_init(struct tobj *o, uint32_t kind, uint32_t max_count)
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

void tobj_free(struct tobj *o)
{
    free(o->mem);
    o->mem = NULL;
}

/* ---- the fake registry ---- */

static uint64_t reg_gen[WH_MAX_SLOTS];
static unsigned char reg_live[WH_MAX_SLOTS];
static int reg_token;          /* the actx every call must pass back */
unsigned long bad_actx; /* calls of the liveness callback with another actx */
unsigned long alive_calls;

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

void reg_reset(void)
{
    memset(reg_gen, 0, sizeof reg_gen);
    memset(reg_live, 0, sizeof reg_live);
}

/* A new process in `slot`: the slot's next generation. */
uint64_t spawn(uint32_t slot)
{
    reg_gen[slot]++;
    reg_live[slot] = 1;
    return WH_IDENT(slot, reg_gen[slot]);
}

void die(uint64_t id)
{
    uint32_t slot = WH_IDENT_SLOT(id);
    if (slot < WH_MAX_SLOTS && reg_gen[slot] == WH_IDENT_GEN(id))
        reg_live[slot] = 0;
}

int64_t now_ns = 1000LL * 1000 * 1000 * 1000; /* 1000 s */

struct wh_ctx ctx_of(uint64_t me)
{
    struct wh_ctx c = {fake_alive, &reg_token, me, now_ns};
    return c;
}

/* ---- thin wrappers ---- */

int st_try(struct tobj *o, uint64_t me, uint32_t mode)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_try(&o->v, &c, mode, -1, now_ns);
}

int st_try_w(struct tobj *o, uint64_t me, uint32_t mode, int mine, int64_t since)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_try(&o->v, &c, mode, mine, since);
}

int st_rel(struct tobj *o, uint32_t mode, uint64_t id)
{
    return wh_st_release(&o->v, mode, id);
}

int st_reg(struct tobj *o, uint64_t me, uint32_t mode, int64_t since, int64_t lease,
                  uint32_t *tag)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_register(&o->v, &c, mode, since, lease, tag);
}

int st_refresh(struct tobj *o, uint64_t me, int idx, uint32_t tag, int64_t lease)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_refresh(&o->v, &c, idx, tag, lease);
}

int st_reclaim(struct tobj *o, uint64_t me)
{
    struct wh_ctx c = ctx_of(me);
    return wh_st_reclaim(&o->v, &c);
}

uint64_t owner_of(struct tobj *o)
{
    return LD(&o->v.h->owner);
}
uint64_t upg_of(struct tobj *o)
{
    return LD(&o->v.h->upgradeable);
}
uint32_t total_of(struct tobj *o)
{
    return LD(&o->v.h->total);
}
uint32_t nwaiting_of(struct tobj *o)
{
    return LD(&o->v.h->nwaiting);
}

/* Tickets (semaphore) or plain reads (rwlock) held by `id`. */
uint32_t count_of(struct tobj *o, uint64_t id)
{
    uint32_t s = WH_IDENT_SLOT(id);
    if (o->v.slots == NULL || s >= o->v.nslots || LD(&o->v.slots[s].ident) != id)
        return 0;
    return LD(&o->v.slots[s].count);
}

int st_ok(struct tobj *o, char *why, size_t n)
{
    why[0] = '\0';
    return wh_st_check(&o->v, why, n);
}

/* 1 if `id` holds nothing and has no wait entry in o; otherwise says what it has. */
int holds_nothing(struct tobj *o, uint64_t id, char *why, size_t n)
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

int entry_of(struct tobj *o, uint64_t id)
{
    for (uint32_t i = 0; i < o->v.nwait; i++)
        if (LD(&o->v.waits[i].ident) == id)
            return (int)i;
    return -1;
}
