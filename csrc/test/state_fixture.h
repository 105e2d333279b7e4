/*
 * The fixture of the state machine tests (csrc/state.c, csrc/observe.c): no
 * Lua, no processes. Objects live in calloc'd memory of exactly the file
 * size, laid out as in csrc/object.c, so AddressSanitizer sees any access
 * outside an object. Liveness comes from a fake registry: a table of slots,
 * each with its current generation and a live flag.
 *
 * The tests are built with -DWH_CRASH_TEST: every store of state.c is a
 * CRASH_POINT that longjmps to wh_crash_jmp once wh_crash_budget runs down,
 * which is how a process dying in the middle of an operation (while it holds
 * the guard) is simulated.
 */
#ifndef WH_TEST_STATE_FIXTURE_H
#define WH_TEST_STATE_FIXTURE_H

#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>

#include "harness.h"
#include "wh.h"

#define LD(p)       atomic_load(p)
#define STORE(p, v) atomic_store((p), (v))
#define MS          (1000LL * 1000)

extern long wh_crash_budget;
extern jmp_buf wh_crash_jmp;

struct tobj {
    unsigned char *mem;
    size_t size;
    struct wh_view v;
};

void tobj_init(struct tobj *o, uint32_t kind, uint32_t max_count);
void tobj_free(struct tobj *o);

/* The fake registry. */
extern unsigned long bad_actx; /* calls of the liveness callback with another actx */
extern unsigned long alive_calls;
void reg_reset(void);
uint64_t spawn(uint32_t slot); /* a new process in `slot`: the slot's next generation */
void die(uint64_t id);

extern int64_t now_ns; /* the clock of every operation: tests move it */
struct wh_ctx ctx_of(uint64_t me);

/* The wh_st_* calls, as process `me` makes them now (st_try: not waiting, no entry). */
int st_try(struct tobj *o, uint64_t me, uint32_t mode);
int st_try_w(struct tobj *o, uint64_t me, uint32_t mode, int mine, int64_t since);
int st_rel(struct tobj *o, uint32_t mode, uint64_t id);
int st_reg(struct tobj *o, uint64_t me, uint32_t mode, int64_t since, int64_t lease,
           uint32_t *tag);
int st_refresh(struct tobj *o, uint64_t me, int idx, uint32_t tag, int64_t lease);
int st_reclaim(struct tobj *o, uint64_t me);

uint64_t owner_of(struct tobj *o);
uint64_t upg_of(struct tobj *o);
uint32_t total_of(struct tobj *o);
uint32_t nwaiting_of(struct tobj *o);
uint32_t count_of(struct tobj *o, uint64_t id); /* tickets or plain reads held by id */
int entry_of(struct tobj *o, uint64_t id);      /* id's wait entry, or -1 */

/* The invariants (wh_st_check): 1 if they hold, else 0 and why. */
int st_ok(struct tobj *o, char *why, size_t n);
/* 1 if `id` holds nothing and has no wait entry in o; otherwise says what it has. */
int holds_nothing(struct tobj *o, uint64_t id, char *why, size_t n);

#define CHECK_OK(o, ...)                                                                           \
    do {                                                                                           \
        char why_[300];                                                                            \
        int ok_ = st_ok((o), why_, sizeof why_);                                                   \
        CHECK(ok_, "invariants broken (%s) after %s", why_, __VA_ARGS__);                          \
    } while (0)

#define CHECK_NOTHING(o, id, ...)                                                                  \
    do {                                                                                           \
        char why_[200];                                                                            \
        int ok_ = holds_nothing((o), (id), why_, sizeof why_);                                     \
        CHECK(ok_, "%llx still %s after %s", (unsigned long long)(id), why_, __VA_ARGS__);         \
    } while (0)

#endif
