/*
 * The shared-memory protocol of waithandles (doc/FORMAT.md, csrc/state.c,
 * csrc/ops.c), for spin. Included by lock.pml, semaphore.pml and rwlock.pml,
 * which set the kind and the bounds; model/README.md explains the
 * abstractions and the properties.
 *
 * One proctype instance P(p) is a "lineage": an OS process that claims a
 * registry slot, does ROUNDS operations on one object and exits. It may
 * crash before every store to shared memory, before every wake-up, while it
 * waits and while it holds; a crashed process stops for good (the kernel
 * drops its slot lock) and a new process starts in the lineage, which may
 * claim the same slot with the next generation.
 *
 * A guard section (guard taken, state machine, guard dropped, wake-up) is
 * one atomic step, with its crash points as branches inside it. guard.pml
 * checks the guard and the liveness probe step by step and justifies this
 * (README.md, "Atomic guard sections").
 */

#define K_LOCK 1
#define K_SEM 2
#define K_RW 3

#ifndef KIND
#define KIND K_LOCK
#endif
#ifndef MAXC
#define MAXC 1 /* max_count */
#endif
#ifndef NPROC
#define NPROC 3 /* lineages */
#endif
#ifndef NS
#define NS 2 /* registry slots (the model supports 2) */
#endif
#ifndef NW
#define NW 2 /* wait entries (1 to 3) */
#endif
#ifndef GMAX
#define GMAX 2 /* generations 1..GMAX; the claim after GMAX wraps to 1 (C: 2^47 - 1) */
#endif
#ifndef CRASHES
#define CRASHES 1 /* crashes in a run, over all lineages */
#endif
#ifndef ROUNDS
#define ROUNDS 1 /* operations per process */
#endif
#ifndef GIVEUPS
#define GIVEUPS 1 /* blocking waits that reach their deadline and withdraw */
#endif

/*
 * Extensions (model/README.md), each off unless defined:
 *   PENDING  release() and withdraw wait for a busy guard at most WH_GUARD_GRACE_NS: the guard's
 *            owner may be paused (SIGSTOP, preempted) for longer, so their guard wait may end
 *            BUSY at any time, as a try's may; a release that cannot wait is recorded by the
 *            process (pending.c) and given back by its next guard section on the object or by
 *            its helper thread, or by its death.
 *   STOP     one process may stop for good at any step (inside a guard section between two
 *            stores, waiting for the guard, asleep, holding): it stays alive, keeps its slot, its
 *            holds and perhaps the guard, and never refreshes its mark again. Every wait is
 *            bounded (blocking waits have a deadline), so no other process may wait for ever:
 *            that is the "bounded" property (spin's invalid end states).
 *   REPL     the registry shard file may be unlinked by a cleaner, REPL times, at any step;
 *            processes that still map it go on using it until they notice; new claims make a
 *            new file, whose slots' first generations are values no process used (random in C).
 *            With it: LINK_RATE  an attempt checks its file against the path only sometimes (C: at
 *                                most every 4 ms on the uncontended path);
 *                     REPL_FIX   the proposed fix of tidy_own_slot/own_entry (own_stale below);
 *                     PAUSE      a guard owner may pause between two stores while others run.
 * Seeded bugs, for checking the checker (README.md): OLD_RELEASE (release and withdraw wait for
 * the guard without a deadline), DROP_RELEASE (PENDING: a release that cannot wait is given up,
 * not recorded), NO_PATH_CHECK (a "dead" judged in an unlinked registry file
 * stands), TOKEN_BUG=1 (an upgrade takes no token), TOKEN_BUG=2 (the token read after the guard
 * is dropped).
 */
#ifndef STOPS
#ifdef STOP
#define STOPS 1
#else
#define STOPS 0
#endif
#endif
#ifndef REPL
#define REPL 0
#endif
#ifndef TOKEN_BUG
#define TOKEN_BUG 0 /* seeded bugs of the fencing token (1, 2: see bump_token's callers) */
#endif
#if defined(STOP) && !defined(PENDING)
#define PENDING
#endif
#if defined(PENDING) && !defined(OLD_RELEASE)
#define REL_BUSY 1 /* release, withdraw: deadline 0, a busy guard waited for at most 10 ms */
#else
#define REL_BUSY 0 /* the code before: they waited for the guard without a deadline */
#endif
#ifdef STOP
#define WAIT_BUSY 1 /* every blocking wait has a deadline, which also bounds its guard wait */
#define WAITS 2     /* and it ends (withdraws) after the attempt that follows the WAITS-th sleep */
#else
#define WAIT_BUSY 0
#endif

/*
 * Properties (assertions), one group per switch; with none given, all are checked.
 *   P_MUTEX    mutual exclusion among live processes (at most max_count tickets; no reader or
 *              upgradeable reader beside a writer; one upgradeable reader)
 *   P_HELD     a live process's hold is never cleared by anyone else (reclamation, repair,
 *              tidying of a slot's earlier generation), and its release finds it
 *   P_RECLAIM  a probe never answers "dead" for a live process, and "alive" for a dead one
 *              only while a new owner claims its slot; after a reclamation no hold or mark of
 *              a process dead when it began is left (but for that case), nor any expired mark;
 *              the guard is never taken over from a live owner
 *   P_REPAIR   whenever a live process drops the guard, the derived fields (total, nwaiting,
 *              nfutex, nwriters) agree with the entries and the state is well-formed
 *   P_FINAL    when every process has stopped, nothing is held (if none crashed), and after
 *              info() (takeover, reclamation) nothing is held or marked at all
 *   P_TOKEN    every fencing token handed out (lock, ticket, write, upgrade) exceeds every token
 *              handed out before on the object, by any process, crashes and takeovers included
 *   P_HELPER   (PENDING) the helper thread's turn waits for the guard: it never returns at once
 * LIVE (a different state space, no assertions): no lost wake-up (README.md).
 */
#if !defined(P_MUTEX) && !defined(P_HELD) && !defined(P_RECLAIM) && !defined(P_REPAIR) && !defined(P_FINAL) && !defined(P_TOKEN) && \
    !defined(LIVE) && !defined(P_HELPER) && !defined(NOASSERT)
#define P_MUTEX
#define P_HELD
#define P_RECLAIM
#define P_REPAIR
#define P_FINAL
#define P_TOKEN
#endif
#ifdef P_MUTEX
#define A_MUTEX(e) assert(e)
#else
#define A_MUTEX(e) skip
#endif
#ifdef P_HELD
#define A_HELD(e) assert(e)
#else
#define A_HELD(e) skip
#endif
#ifdef P_RECLAIM
#define A_RECLAIM(e) assert(e)
#else
#define A_RECLAIM(e) skip
#endif
#ifdef P_REPAIR
#define A_REPAIR(e) assert(e)
#else
#define A_REPAIR(e) skip
#endif
#ifdef P_FINAL
#define A_FINAL(e) assert(e)
#else
#define A_FINAL(e) skip
#endif
#ifdef P_TOKEN
#define A_TOKEN(e) assert(e)
#else
#define A_TOKEN(e) skip
#endif
#ifdef P_HELPER
#define A_HELPER(e) assert(e)
#else
#define A_HELPER(e) skip
#endif

#define HAS_SLOTS (KIND != K_LOCK)

/* enum wh_mode; the FUTEX flag of a wait entry is 8 here (0x100 in C) */
#define M_LOCK 1
#define M_READ 2
#define M_WRITE 3
#define M_UPGR 4 /* upgradeable read */
#define M_UPGRADE 5
#define FUTEX 8
#define MODEOF(m) ((m) & 7)
#define H_UPGRADED 6 /* ghost hold: an upgradeable read that was upgraded */

/* how a process waits (lua/waithandles/init.lua) */
#define S_TRY 1   /* try_acquire: one attempt, no waiter */
#define S_BLOCK 2 /* acquire: attempt, then wh_wait with a FUTEX waiter */
#define S_ASYNC 3 /* an async poll that registers a mark and is then abandoned or withdrawn */

#define NONE 255

/* identity = gen << 2 | (slot + 1), as WH_IDENT (gen << 16 | slot + 1) */
#define ID(sl, g) ((g) * 4 + (sl) + 1)
#define IDS(x) (((x) & 3) - 1)
#define IDG(x) ((x) >> 2)
#define BIT(x) (1 << (x))
#define CHECKER_ID ID(NS, 0) /* the final info() caller: a slot outside the table */
/* Registry incarnations (REPL): the shard file at the path, and those a cleaner unlinked.
 * Incarnation i's generations are i*GMAX+1 .. (i+1)*GMAX: the first claim of a slot in a new
 * file takes a value no process used (C: random), and the wrap stays within the file. */
#define NI (REPL + 1)
#define RI(inc, sl) ((inc) * NS + (sl))
#define IDI(x) ((IDG(x) - 1) / GMAX)
#define LIDX(x) (IDS(x) == NS -> NI * NS : RI(IDI(x), IDS(x)))

/* ---- shared memory ---- */

/* registry: slot sl of incarnation i is RI(i, sl) */
byte lk[NI * NS];  /* kernel OFD write lock on the slot's byte: 0 free, else lineage + 1 */
byte gen[NI * NS]; /* slot generation (0: never claimed in this file) */
#if REPL > 0
byte rinc;              /* the incarnation linked at the path */
byte minc[NPROC + 1];   /* the incarnation process p maps (NONE: none; NPROC: the checker) */
byte dme[NPROC + 1];    /* d->me: p's current identity, 0 once it found its file unlinked */
byte past[NPROC + 1];   /* d->past: the identity it had in an unlinked file */
#define CINC rinc
#define MINE(x) ((x) != 0 && ((x) == me || (x) == past[p])) /* an entry of p, perhaps of its past */
#else
#define CINC 0
#define MINE(x) ((x) != 0 && (x) == me)
#endif
#ifdef PAUSE
#ifndef PAUSES
#define PAUSES 1
#endif
byte pauses = PAUSES;
bit paused[NPROC + 1];
#endif

/* object header */
byte guard;                      /* identity of the guard's owner */
byte nwaiting, nfutex, nwriters; /* derived from the wait table */
byte owner, upg, total;
/* token: the latest fencing token handed out, or burned (stored by an acquirer that died before
 * it took the hold). Only its difference to the ghost maxtok counts (below), so tok is kept
 * relative: it is the number of tokens taken since the last one handed out. */
byte tok;
/* seq: chg[p] == 1 iff seq differs from the value process p last read (w->seq) */
bit chg[NPROC];
/* slot table */
byte sid[NS], scnt[NS];
/* wait table; "lease < now" is the bit wexp, "since <= now - WH_BARGE_NS" is wsince < oldc */
byte wid[NW], wmode[NW], wsince[NW];
bit wexp[NW];

/* kernel: FUTEX_WAIT on seq */
bit asleep[NPROC];

/* Abstract time (FAIR): since values are issued in order and renumbered to their ranks among
 * those in use (canon), so that only their order counts; those below oldc have waited longer
 * than WH_BARGE_NS; clk is "now", above every since in use. psince[p]: lineage p's wait. */
byte clk = 1, oldc = 1;
byte psince[NPROC];

/* environment */
byte crashes = CRASHES;
byte giveups = GIVEUPS;
byte stops = STOPS;
bit frozen; /* LIVE: no more crashes, ageing, or expiry of marks whose waiter refreshes them */

/* pending releases (pending.c): the mode (0: none) and identity of lineage p's release that
 * could not wait for the guard */
byte pend[NPROC], pend_id[NPROC];

/* ---- ghost state (for the properties only) ---- */
byte live_id[NI * NS + 1]; /* identity of the live process owning slot RI(i, s), else 0 */
bit claiming[NI * NS];     /* slot locked by a new owner that has not stored its generation yet */
byte pid_id[NPROC];      /* identity of lineage p's live process */
byte hid[NPROC];         /* the identity its hold was taken under */
bit is_stopped[NPROC];   /* STOP: stopped for good */
byte held[NPROC];        /* what lineage p believes it holds (0, M_*, H_UPGRADED) */
bit waiting[NPROC];      /* read seq after a failed attempt, not yet back from FUTEX_WAIT */
bit tmo_ok[NPROC];       /* LIVE: a timeout of this sleep is justified (crash / expiry / dead marks) */
bit wactive[NW];         /* the mark's waiter still attempts (and refreshes it) */
byte ndone;
byte maxtok; /* the latest token handed out, relative to tok: 0 after every hand-out */
bit crashed_any, abandoned_any, unreleased_any, replaced_any;

/* x is the identity of a live process (one that still holds x's slot lock) */
#define ALIVE(x) (live_id[LIDX(x)] == (x))
#if REPL > 0
/* x's holds are protected: its process is alive and x is in the file linked at the path. A hold
 * taken under an identity whose file was unlinked since is lost (h:is_lost()). */
#define PROT(x) (ALIVE(x) && IDI(x) == rinc)
#define LOST(q) (IDI(hid[q]) != rinc)
#else
#define PROT(x) ALIVE(x)
#define LOST(q) 0
#endif
/* x's holds are for a reclamation to remove: dead, or of an unlinked file */
#define DEAD(x) ((x) != 0 && !PROT(x))

#if NW == 1
#define WAITS_HAVE(x) (wid[0] == (x))
#define WAITS_DEAD (DEAD(wid[0]))
#define WAITS_EXPIRED (wid[0] != 0 && wexp[0])
#elif NW == 2
#define WAITS_HAVE(x) (wid[0] == (x) || wid[1] == (x))
#define WAITS_DEAD (DEAD(wid[0]) || DEAD(wid[1]))
#define WAITS_EXPIRED ((wid[0] != 0 && wexp[0]) || (wid[1] != 0 && wexp[1]))
#else
#define WAITS_HAVE(x) (wid[0] == (x) || wid[1] == (x) || wid[2] == (x))
#define WAITS_DEAD (DEAD(wid[0]) || DEAD(wid[1]) || DEAD(wid[2]))
#define WAITS_EXPIRED ((wid[0] != 0 && wexp[0]) || (wid[1] != 0 && wexp[1]) || (wid[2] != 0 && wexp[2]))
#endif
/* identity x appears anywhere in the object */
#define PRESENT(x) (guard == (x) || owner == (x) || upg == (x) || sid[0] == (x) || sid[1] == (x) || WAITS_HAVE(x))
/* the object holds something that only a reclamation (after a timeout) removes */
#define STALE (DEAD(guard) || DEAD(owner) || DEAD(upg) || DEAD(sid[0]) || DEAD(sid[1]) || \
               (scnt[0] > 0 && sid[0] == 0) || (scnt[1] > 0 && sid[1] == 0) || WAITS_DEAD || WAITS_EXPIRED)

#ifdef LIVE
/* a sleeper may time out only when the protocol relies on it: see README.md */
#define TMO_OK(q) (tmo_ok[q] || widx == NONE)
#else
#define TMO_OK(q) 1
#endif

/* STOP: the process may stop here for good. */
#ifdef STOP
#define STOP_OPT :: stops > 0 -> stops--; goto stopped
#else
#define STOP_OPT
#endif
/* PAUSE (with REPL): a guard owner may pause between two stores and go on later; others run
 * meanwhile (the atomic sequence blocks on paused[p] until the environment resumes it). */
#ifdef PAUSE
#define PAUSE_OPT :: pauses > 0 -> pauses--; paused[p] = 1; !paused[p]
#else
#define PAUSE_OPT
#endif

/* A crash point: the process may die here (before the next store). */
#define CP                                                                                         \
    if                                                                                             \
    :: crashes > 0 -> crashes--; goto crash                                                        \
    STOP_OPT                                                                                       \
    PAUSE_OPT                                                                                      \
    :: true                                                                                        \
    fi

#ifdef FAIR
#define OLD(sv) ((sv) < oldc)
#else
#define OLD(sv) 0
#endif

/* Locals of a process (also declared by the checker, which uses the same inlines). */
#define LOCALS                                                                                     \
    byte me, s = NONE;                                                                             \
    byte mode, hmode, style, rounds;                                                               \
    byte widx = NONE, wm;                                                                          \
    bit hasw, trym, tried, changed, rel, res;                                                      \
    byte r, wake, gres, mine, sincex, aret, qret, op, ph, nph, j;                                  \
    bit rfull, pneed, eok, tget;                                                                         \
    byte i, id, cnt, tot, sum, stale, ow, up, n, avail, m, sleepers;                               \
    byte rm, rid, v, rnd; bit pst;                                                                 \
    MASKS

#if REPL > 0
#define MASKS int cmask, amask, emask, dmask /* identities up to 4 * 2 * GMAX + 2 */
#else
#define MASKS unsigned cmask : 16, amask : 16, emask : 16, dmask : 16
#endif

#define G_OK 0
#define G_TAKEN 1
#define G_BUSY 2
#define G_ERR 3

#define OP_ATTEMPT 1
#define OP_RELEASE 2
#define OP_WITHDRAW 3
#define OP_HELP 4 /* the helper thread's wh_complete_pending */

#define PH_RECLAIM 1
#define PH_OP 2
#define PH_TRY 3
#define PH_DUE 4
#define PH_AHEAD 5
#define PH_DONE 6
#define PH_LEAVE 7
#define PH_PEND 8 /* enter(): this process's pending releases first */
#ifdef PENDING
#define PH_FIRST PH_PEND
#else
#define PH_FIRST PH_OP
#endif

/* ---- the liveness probe: wh_dir_alive (csrc/registry.c), read in one instant ---- */
/* (guard.pml checks that its three separate reads answer the same; README.md) */
#if REPL == 0
#define VERDICT(x) (IDS(x) == IDS(me) -> ((x) == me) : (gen[IDS(x)] == IDG(x) && lk[IDS(x)] != 0))
#define STALE_ALIVE(x) 0
inline probe_effects(x)
{
    skip
}
#else
/*
 * judge() in the file p maps (the one at the path if none), then, unless the answer is "alive",
 * shard_current(): a "dead" stands only if that file is the one linked at the path; otherwise
 * the mapping is dropped (and p's identity with it, if it was in that file) and x is judged
 * again in the file at the path. The own-slot rule compares with d->me (dme[p]).
 */
#define JM(mi, x) (gen[RI(mi, IDS(x))] == IDG(x) && lk[RI(mi, IDS(x))] != 0)
#define MAPPED (minc[p] == NONE -> rinc : minc[p])
#define OWNSLOT(x) (dme[p] != 0 && IDS(dme[p]) == IDS(x))
#define FIRST_ALIVE(x) (OWNSLOT(x) -> (x) == dme[p] : JM(MAPPED, x))
#ifdef NO_PATH_CHECK /* seeded bug: a "dead" judged in an unlinked file stands */
#define VERDICT(x) FIRST_ALIVE(x)
#else
#define VERDICT(x) (FIRST_ALIVE(x) || (MAPPED != rinc && JM(rinc, x)))
#endif
/* an "alive" read in an unlinked file, where x's process still holds its slot lock */
#define STALE_ALIVE(x) (!OWNSLOT(x) && MAPPED != rinc && JM(MAPPED, x))

/* shard_current() found the file p maps unlinked: the mapping is dropped, and p's identity with
 * it if it was there (its descriptor closes, so the kernel drops p's slot lock in that file). */
inline drop_mapping()
{
    if
    :: dme[p] != 0 ->
        lk[RI(IDI(dme[p]), IDS(dme[p]))] = 0; live_id[RI(IDI(dme[p]), IDS(dme[p]))] = 0;
        past[p] = dme[p]; dme[p] = 0
    :: else
    fi;
    minc[p] = NONE
}

inline probe_effects(x)
{
    if
#ifndef NO_PATH_CHECK
    :: !FIRST_ALIVE(x) && MAPPED != rinc -> drop_mapping(); minc[p] = rinc /* judged again there */
#endif
    :: else -> if :: minc[p] == NONE -> minc[p] = rinc :: else fi /* judge() maps the file at the path */
    fi
}
#endif
/* wh_dir_alive(id) -> res (pst: the "alive" came from an unlinked file) */
inline probe()
{
    res = VERDICT(id);
    pst = (res && STALE_ALIVE(id));
    probe_effects(id)
}
/* wh_guard_lock: take over only from an owner that is not us and probes dead */
#define GUARD_DEAD(x) ((x) != me && !VERDICT(x))

/* ---- invariants ---- */

/* Mutual exclusion among the live processes, from what each believes it holds (REPL: among the
 * holds that are not lost). */
inline check_mutex()
{
    d_step {
        n = 0; m = 0; cnt = 0; tot = 0; i = 0;
        do
        :: i < NPROC ->
            if
            :: LOST(i) -> skip
            :: else ->
                if
                :: held[i] == M_LOCK -> n++
                :: held[i] == M_READ -> m++
                :: held[i] == M_WRITE || held[i] == H_UPGRADED -> cnt++
                :: held[i] == M_UPGR -> tot++
                :: else
                fi
            fi;
            i++
        :: else -> break
        od;
#if KIND == K_SEM
        A_MUTEX(n <= MAXC);
#else
        A_MUTEX(n <= 1);
#endif
        A_MUTEX(cnt <= 1 && tot <= 1);
        A_MUTEX(cnt == 0 || (m == 0 && tot == 0)); /* no reader beside a writer */
        n = 0; m = 0; cnt = 0; tot = 0; i = 0
    }
}

/* Every live process still finds in shared memory what it believes it holds (REPL: unless it is
 * lost). */
inline check_holds()
{
    d_step {
        i = 0;
        do
        :: i < NPROC ->
            id = hid[i];
            if
            :: held[i] == 0 || LOST(i) -> skip
            :: else ->
                if
                :: held[i] == M_LOCK && KIND == K_LOCK -> A_HELD(owner == id)
                :: held[i] == M_LOCK && KIND == K_SEM -> A_HELD(sid[IDS(id)] == id && scnt[IDS(id)] > 0)
                :: held[i] == M_READ -> A_HELD(sid[IDS(id)] == id && scnt[IDS(id)] > 0)
                :: held[i] == M_WRITE -> A_HELD(owner == id)
                :: held[i] == M_UPGR -> A_HELD(upg == id)
                :: held[i] == H_UPGRADED -> A_HELD(upg == id && owner == id)
                :: else
                fi
            fi;
            i++
        :: else -> break
        od;
        i = 0; id = 0
    }
}

/* wh_st_check: the derived fields agree with the entries (guard about to be dropped). */
inline check_state()
{
    d_step {
        sum = 0; n = 0; m = 0; cnt = 0; i = 0;
        do
        :: i < NS ->
            A_REPAIR(scnt[i] == 0 || (sid[i] != 0 && IDS(sid[i]) == i));
            sum = sum + scnt[i];
            i++
        :: else -> break
        od;
        A_REPAIR(!HAS_SLOTS || sum == total);
        A_REPAIR(KIND != K_SEM || (sum <= MAXC && owner == 0 && upg == 0));
        A_REPAIR(KIND != K_LOCK || (upg == 0 && total == 0));
        A_REPAIR(KIND != K_RW || owner == 0 || sum == 0);
        A_REPAIR(KIND != K_RW || owner == 0 || upg == 0 || owner == upg);
        i = 0;
        do
        :: i < NW ->
            if
            :: wid[i] != 0 ->
                n++;
                if :: wmode[i] & FUTEX -> m++ :: else fi;
                if :: MODEOF(wmode[i]) == M_WRITE || MODEOF(wmode[i]) == M_UPGRADE -> cnt++ :: else fi
            :: else
            fi;
            i++
        :: else -> break
        od;
        A_REPAIR(n == nwaiting && m == nfutex && cnt == nwriters);
        sum = 0; n = 0; m = 0; cnt = 0; i = 0
    }
}

/* ---- the state machines (csrc/state.c), called inside a guard section ---- */

/* recount_waits */
inline recount()
{
    n = 0; m = 0; cnt = 0; i = 0;
    do
    :: i < NW ->
        if
        :: wid[i] != 0 ->
            n++;
            if :: wmode[i] & FUTEX -> m++ :: else fi;
            if :: MODEOF(wmode[i]) == M_WRITE || MODEOF(wmode[i]) == M_UPGRADE -> cnt++ :: else fi
        :: else
        fi;
        i++
    :: else -> break
    od;
    CP; nwaiting = n;
    CP; nwriters = cnt;
    CP; nfutex = m;
    n = 0; m = 0; cnt = 0; i = 0
}

/* Frees wait entry j: ident = 0 first. The other fields of a free entry are never read; the
 * model zeroes them so that they do not split states. */
inline free_entry(j)
{
    CP;
    wid[j] = 0; wmode[j] = 0; wsince[j] = 0; wexp[j] = 0; wactive[j] = 0
}

/* waiters_first(v, c, mode, mine, since, cap) -> n */
inline waiters_first(cap)
{
    n = 0;
    if
    :: nwaiting == 0 || mode == M_UPGRADE -> skip
    :: else ->
        i = 0;
        do
        :: i < NW && n < cap ->
            if
            :: i == mine || wid[i] == 0 || wexp[i] -> skip /* entry_live */
            :: else ->
                m = MODEOF(wmode[i]);
                if
                :: KIND == K_RW && (mode == M_READ || mode == M_UPGR) && (m == M_WRITE || m == M_UPGRADE) ->
                    n++ /* writer preference */
                :: else ->
                    if
                    :: m != mode || mode == M_READ -> skip
                    :: else ->
                        if /* bounded barging */
                        :: OLD(wsince[i]) && (wsince[i] < sincex || (wsince[i] == sincex && mine != NONE && i < mine)) -> n++
                        :: else
                        fi
                    fi
                fi
            fi;
            i++
        :: else -> break
        od;
        i = 0; m = 0
    fi
}

/* wh_st_register */
inline st_register()
{
    i = 0;
    do
    :: i < NW && wid[i] != 0 && !wexp[i] -> i++
    :: i < NW && (wid[i] == 0 || wexp[i]) -> break
    :: i == NW -> break
    od;
    if
    :: i < NW ->
        widx = i;
        free_entry(widx); /* ST(ident, 0) */
        CP;               /* ST(since), ST(lease), ST(mode), ST(tag): a free entry meanwhile */
        wsince[widx] = psince[p]; wmode[widx] = wm; wexp[widx] = 0;
        CP;
        wid[widx] = me; wactive[widx] = 1;
        recount()
    :: else -> widx = NONE
    fi;
    i = 0
}

/* wh_st_withdraw of our own entry widx (owns_entry: ident and tag; see README.md on tags) */
inline st_withdraw()
{
    if
    :: widx != NONE && wid[widx] == me ->
        free_entry(widx);
        recount();
        rel = 1
    :: else -> rel = 0
    fi
}

/* Clearing a hold: assert that its process is dead. */
#define CLEARS(x) A_HELD(!PROT(x))

/* own_slot_stale: an identity of our slot number other than ours, taken for an earlier
 * generation of our slot without a probe. After a cleaner unlinked the registry file it may be a
 * live process of the new file that got our slot number (and our identity the dead one): C clears
 * its holds (REPL finds it). REPL_FIX models the proposed fix: such an identity is stale only if
 * wh_dir_alive, which checks our file against the path, answers "dead". -> res */
#define OWN_STALE(x) ((x) != 0 && (x) != me && IDS(x) == IDS(me))
inline own_stale(x)
{
    res = OWN_STALE(x);
#if REPL > 0 && defined(REPL_FIX)
    if
    :: res -> id = x; probe(); res = !res; pst = 0; id = 0
    :: else
    fi
#endif
}

/* own_entry: our slot's entry, made ours (counts of an earlier generation dropped) -> eok
 * (REPL_FIX: 0 if the entry is a live process's of our slot number) */
inline own_entry()
{
    eok = 1;
    if
    :: sid[s] != me ->
        own_stale(sid[s]);
        if
        :: sid[s] != 0 && IDS(sid[s]) == s && !res -> eok = 0
        :: else ->
            stale = scnt[s]; tot = total;
            if
            :: stale != 0 -> A_HELD(sid[s] == 0 || (IDS(sid[s]) == s && !PROT(sid[s]))); CP; scnt[s] = 0
            :: else
            fi;
            CP; sid[s] = me;
            if
            :: stale != 0 -> CP; total = (stale < tot -> tot - stale : 0)
            :: else
            fi
        fi;
        res = 0
    :: else
    fi;
    stale = 0; tot = 0
}

/* tidy_own_slot: leftovers of an earlier generation of our slot, cleared without a probe */
inline tidy_own_slot()
{
    ow = owner; up = upg;
    own_stale(up);
    if
    :: res ->
        CLEARS(up);
        if
        :: ow == up -> CP; owner = 0; ow = 0
        :: else
        fi;
        CP; upg = 0
    :: else
    fi;
    own_stale(ow);
    if
    :: res -> CLEARS(ow); CP; owner = 0
    :: else
    fi;
    res = 0;
    if
    :: HAS_SLOTS -> own_entry()
    :: else
    fi;
    ow = 0; up = 0; eok = 0
}

/* bump_token: token + 1, stored before the hold (a crash in between burns a token). C stops at
 * 2^53 - 1, which the model never reaches. */
inline bump_token()
{
    CP; tok = tok + 1
}

/* The token of an acquisition (wh_attempt_t: read under the guard after wh_st_try): it must
 * exceed every token handed out before. Then maxtok is that token; both are shifted down to 0. */
inline hand_token()
{
    A_TOKEN(tok > maxtok);
    tok = 0; maxtok = 0
}
#define TOKEN_MODE(m) ((m) == M_LOCK || (m) == M_WRITE || (m) == M_UPGRADE)

/* take_count */
inline take_count()
{
    own_entry();
    if
    :: eok ->
        cnt = scnt[s]; tot = total;
        CP; scnt[s] = cnt + 1;
        CP; total = tot + 1;
        r = 1
    :: else -> r = 0
    fi;
    cnt = 0; tot = 0; eok = 0
}

/* room(mode) -> avail: how many holds the state admits, ignoring waiters */
inline room()
{
    if
    :: KIND == K_LOCK -> avail = (mode == M_LOCK && owner == 0)
    :: KIND == K_SEM -> avail = ((mode == M_LOCK && total < MAXC) -> MAXC - total : 0)
    :: KIND == K_RW && mode == M_READ -> avail = (owner == 0)
    :: KIND == K_RW && mode == M_WRITE -> avail = (owner == 0 && upg == 0 && total == 0)
    :: KIND == K_RW && mode == M_UPGR -> avail = (owner == 0 && upg == 0)
    :: KIND == K_RW && mode == M_UPGRADE -> avail = (owner == 0 && upg == me && total == 0)
    fi
}

/* wh_st_try(mode, mine, sincex) -> r (2 stands for -1: not the upgradeable holder) */
inline st_try()
{
    if
    :: KIND == K_RW && mode == M_UPGRADE && upg != me -> r = 2
    :: KIND == K_RW && mode == M_UPGRADE && upg == me && owner == me -> r = 1
    :: else ->
        tidy_own_slot();
        room();
        if
        :: avail == 0 -> r = 0
        :: else ->
            waiters_first(avail);
            if
            :: n >= avail -> r = 0
            :: else ->
                if
                :: mode == M_LOCK && HAS_SLOTS -> bump_token(); take_count()
                :: mode == M_LOCK && !HAS_SLOTS -> bump_token(); CP; owner = me; r = 1
                :: mode == M_READ -> take_count()
                :: mode == M_WRITE || mode == M_UPGRADE ->
#if TOKEN_BUG == 1 /* seeded bug: an upgrade takes no token of its own */
                    if :: mode == M_WRITE -> bump_token() :: else fi;
#else
                    bump_token();
#endif
                    CP; owner = me; r = 1
                :: mode == M_UPGR -> CP; upg = me; r = 1
                fi
            fi
        fi
    fi;
    n = 0; avail = 0
}

/* drop_count(rid) -> rel */
inline drop_count()
{
    cnt = scnt[IDS(rid)];
    if
    :: sid[IDS(rid)] != rid || cnt == 0 -> rel = 0
    :: else ->
        tot = total;
        CP; scnt[IDS(rid)] = cnt - 1;
        CP; total = (tot > 0 -> tot - 1 : 0);
        rel = 1
    fi;
    cnt = 0; tot = 0
}

/* wh_st_release(rm, rid): a handle's mode (an upgraded handle releases as M_UPGR) and the
 * identity its hold was taken under -> rel */
inline st_release()
{
    if
    :: (rm == M_LOCK && HAS_SLOTS) || rm == M_READ -> drop_count()
    :: (rm == M_LOCK && !HAS_SLOTS) || rm == M_WRITE ->
        if
        :: owner == rid -> CP; owner = 0; rel = 1
        :: else -> rel = 0
        fi
    :: rm == M_UPGR ->
        if
        :: upg == rid ->
            if
            :: owner == rid -> CP; owner = 0
            :: else
            fi;
            CP; upg = 0; rel = 1
        :: else -> rel = 0
        fi
    fi
}

/* alive_cached(id) -> res; the probe of a dead identity may answer "alive" only while a new owner
 * of its slot has locked it and not yet stored its generation. */
inline alive_cached()
{
    if
    :: id == me -> res = 1
    :: id != me && (cmask & BIT(id)) -> res = ((amask & BIT(id)) != 0)
    :: else ->
        probe();
        cmask = cmask | BIT(id);
        if
        :: res ->
            amask = amask | BIT(id);
            if
            :: !PROT(id) -> A_RECLAIM(claiming[LIDX(id)] || pst); emask = emask | BIT(id)
            :: else
            fi
        :: else -> A_RECLAIM(!PROT(id)) /* no false "dead" */
        fi;
        pst = 0
    fi
}

/* Identities present in the object and dead, as a mask: dmask (ghost). */
/* (the reclaimer's own identity is never probed: alive_cached) */
#define RDEAD(x) (DEAD(x) && (x) != me)
inline dead_mask()
{
    dmask = 0;
    if :: RDEAD(owner) -> dmask = dmask | BIT(owner) :: else fi;
    if :: RDEAD(upg) -> dmask = dmask | BIT(upg) :: else fi;
    i = 0;
    do
    :: i < NS -> if :: RDEAD(sid[i]) -> dmask = dmask | BIT(sid[i]) :: else fi; i++
    :: else -> break
    od;
    i = 0;
    do
    :: i < NW -> if :: RDEAD(wid[i]) -> dmask = dmask | BIT(wid[i]) :: else fi; i++
    :: else -> break
    od;
    i = 0
}

/*
 * rfull: wh_st_reclaim; !rfull: wh_st_reclaim_waiters (reclaim_waits only). -> changed.
 * One loop over the items in C's order: owner, upgradeable, the slot entries (then total),
 * the wait entries (then recount_waits); each item's identity is probed through one alive
 * cache per call, as in C.
 */
inline st_reclaim()
{
    changed = 0; cmask = 0; amask = 0; emask = 0; sum = 0;
    dead_mask(); /* ghost: who was dead when the reclamation began */
    j = (rfull -> 0 : 2 + NS);
    do
    :: j < 2 + NS + NW ->
        pneed = 0; cnt = 0;
        if
        :: j == 0 -> id = owner; pneed = (id != 0 && KIND != K_SEM)
        :: j == 1 -> id = upg; pneed = (id != 0 && KIND == K_RW)
        :: j >= 2 && j < 2 + NS -> id = sid[j - 2]; cnt = scnt[j - 2]; pneed = (HAS_SLOTS && id != 0 && IDS(id) == j - 2)
        :: j >= 2 + NS -> id = wid[j - 2 - NS]; pneed = (id != 0 && !wexp[j - 2 - NS])
        fi;
        res = 0;
        if
        :: pneed -> alive_cached()
        :: else
        fi;
        if
        :: j == 0 ->
            if
            :: KIND == K_SEM && id != 0 -> CP; owner = 0 /* unused by semaphores */
            :: KIND != K_SEM && id != 0 && !res -> CLEARS(id); CP; owner = 0; changed = 1
            :: else
            fi
        :: j == 1 ->
            if
            :: id != 0 && !res -> /* an upgraded holder: owner first */
                CLEARS(id);
                if
                :: owner == id -> CP; owner = 0
                :: else
                fi;
                CP; upg = 0; changed = 1
            :: else
            fi
        :: j >= 2 && j < 2 + NS ->
            if
            :: !HAS_SLOTS || (id == 0 && cnt == 0) -> skip
            :: else ->
                if
                :: !res ->
                    A_HELD(id == 0 || cnt == 0 || !PROT(id));
                    CP; scnt[j - 2] = 0;
                    CP; sid[j - 2] = 0;
                    changed = changed || cnt != 0
                :: else -> sum = sum + cnt
                fi
            fi;
            if
            :: HAS_SLOTS && j == 1 + NS && total != sum -> changed = changed || total > sum; CP; total = sum
            :: else
            fi
        :: j >= 2 + NS ->
            if
            :: id != 0 && !res ->
                A_HELD(wexp[j - 2 - NS] || !PROT(id)); free_entry(j - 2 - NS); changed = 1
            :: else
            fi
        fi;
        j++
    :: else -> break
    od;
    recount();
    /* A hold or mark of a process dead when the reclamation began is gone (unless the probe
     * answered "alive" during a claim of its slot), and so is every expired mark. */
    d_step {
        A_RECLAIM(!rfull || !(owner != 0 && (dmask & BIT(owner)) && !(emask & BIT(owner))));
        A_RECLAIM(!rfull || !(upg != 0 && (dmask & BIT(upg)) && !(emask & BIT(upg))));
        i = 0;
        do
        :: i < NS -> A_RECLAIM(!rfull || !(sid[i] != 0 && (dmask & BIT(sid[i])) && !(emask & BIT(sid[i])))); i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NW ->
            A_RECLAIM(!(wid[i] != 0 && (dmask & BIT(wid[i])) && !(emask & BIT(wid[i]))));
            A_RECLAIM(!(wid[i] != 0 && wexp[i]));
            i++
        :: else -> break
        od;
        i = 0
    };
    j = 0; pneed = 0; cmask = 0; amask = 0; emask = 0; dmask = 0; id = 0; cnt = 0; sum = 0; res = 0
}

/* ---- operations (csrc/ops.c) ---- */

#if REPL > 0
/* claim_locked() in the file at the path: a free slot, its next generation (the first claim of a
 * slot in a new file: a value no process used); none free (or the wrap excluded below): EAGAIN. */
inline claim_again()
{
    if
    :: lk[RI(rinc, 0)] == 0 -> s = 0
    :: lk[RI(rinc, 1)] == 0 -> s = 1
    :: else -> s = NONE
    fi;
    if
    :: s != NONE ->
        m = gen[RI(rinc, s)];
        m = (m == 0 || m == (rinc + 1) * GMAX -> rinc * GMAX + 1 : m + 1);
        if
        :: PRESENT(ID(s, m)) -> s = NONE /* the wrap excluded (README.md), as at start */
        :: else ->
            lk[RI(rinc, s)] = p + 1; gen[RI(rinc, s)] = m; minc[p] = rinc;
            dme[p] = ID(s, m); live_id[RI(rinc, s)] = dme[p]; pid_id[p] = dme[p]
        fi;
        m = 0
    :: else
    fi
}

/* wh_dir_me(): our file still linked at the path? (checked at every attempt here; C checks at
 * most every 4 ms, LINK_RATE) If not, our identity is dropped and a slot claimed in the file at
 * the path. */
inline dir_me()
{
    if
    :: dme[p] != 0 && minc[p] != rinc ->
#ifdef LINK_RATE
        if
        :: true -> drop_mapping()
        :: true /* not yet time to look */
        fi
#else
        drop_mapping()
#endif
    :: else
    fi;
    if
    :: dme[p] == 0 -> claim_again()
    :: else
    fi
}

/* The identity c->me a section runs under, as ops.c gets it (REPL; otherwise always me). */
inline section_me()
{
    if
    :: op == OP_ATTEMPT -> dir_me() /* wh_attempt: wh_dir_me */
    :: op == OP_RELEASE && dme[p] != 0 && dme[p] == hid[p] -> skip /* wh_dir_current */
    :: op == OP_RELEASE && !(dme[p] != 0 && dme[p] == hid[p]) ->
        dir_me() /* a hold taken under a past identity: what is left of it is ours to clear */
    :: op == OP_WITHDRAW || op == OP_HELP -> skip /* wh_dir_current */
    fi;
    me = dme[p];
    s = (me != 0 -> IDS(me) : NONE)
}
#endif

/* The guard, waited for (wh_guard_lock): free, or its owner probes dead (a takeover). It is
 * never seen held by a live process (a section is atomic), so this blocks only while a dead
 * owner's slot is being claimed; a try may give up (BUSY: the guard stayed busy past the grace
 * period, e.g. its owner is stopped). */
inline enter_guard(may_busy)
{
    if
    :: guard == 0 -> gres = G_OK
    :: guard != 0 && GUARD_DEAD(guard) -> A_RECLAIM(!PROT(guard)); probe_effects(guard); gres = G_TAKEN
    :: may_busy -> gres = G_BUSY
    :: crashes > 0 -> crashes--; goto crash
    STOP_OPT /* stopped while waiting for the guard */
    fi;
    if
    :: gres != G_BUSY -> guard = me; wake = 0
    :: else
    fi
}

/* FAIR: renumbers the since values in use to their ranks (1, 2, ...), keeping their order and
 * which of them are old; clk becomes the next value. */
inline canon()
{
    d_step {
        cnt = 0; tot = 0; m = 1;
        do
        :: m < 16 ->
            n = 0; i = 0;
            do
            :: i < NPROC -> if :: psince[i] == m -> n = 1 :: else fi; i++
            :: else -> break
            od;
            i = 0;
            do
            :: i < NW -> if :: wid[i] != 0 && wsince[i] == m -> n = 1 :: else fi; i++
            :: else -> break
            od;
            if
            :: n ->
                cnt++;
                if :: m < oldc -> tot++ :: else fi;
                i = 0;
                do
                :: i < NPROC -> if :: psince[i] == m -> psince[i] = cnt + 16 :: else fi; i++
                :: else -> break
                od;
                i = 0;
                do
                :: i < NW -> if :: wid[i] != 0 && wsince[i] == m -> wsince[i] = cnt + 16 :: else fi; i++
                :: else -> break
                od
            :: else
            fi;
            m++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NPROC -> if :: psince[i] > 16 -> psince[i] = psince[i] - 16 :: else fi; i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NW -> if :: wsince[i] > 16 -> wsince[i] = wsince[i] - 16 :: else fi; i++
        :: else -> break
        od;
        oldc = tot + 1; clk = cnt + 1;
        i = 0; n = 0; m = 0; cnt = 0; tot = 0
    }
}

/* leave(): bump seq if a waiter may be admitted and someone waits, drop the guard, wake. */
inline leave()
{
    sleepers = nfutex;
    if
    :: wake == 2 || (wake != 0 && nwaiting != 0) ->
        CP; /* seq++: every process that has read seq since sees it changed */
        i = 0;
        do
        :: i < NPROC -> if :: waiting[i] -> chg[i] = 1 :: else fi; i++
        :: else -> break
        od;
        i = 0
    :: else -> wake = 0
    fi;
    if
    :: hasw -> chg[p] = 0 /* w->seq = seq */
    :: else
    fi;
    check_state();
    check_mutex();
    check_holds();
    CP;
    guard = 0;
#ifdef FAIR
    canon();
#endif
    if
    :: wake == 2 || (wake != 0 && sleepers != 0) ->
        CP; i = 0; do :: i < NPROC -> asleep[i] = 0; i++ :: else -> break od; i = 0
    :: else
    fi;
    sleepers = 0; wake = 0; gres = 0
}

/* ---- what a process does ---- */

#ifdef STOP
#define STOP_STEP :: atomic { stops > 0 -> stops--; goto stopped }
#else
#define STOP_STEP
#endif
#if REPL > 0
/* is_held(), is_lost() (wh_dir_current_checked, wh_dir_ours): the process finds its file
 * unlinked and drops its identity; it claims a new one at its next attempt */
#define NOTICE_STEP(at) :: atomic { dme[p] != 0 && minc[p] != rinc -> drop_mapping(); goto at }
#else
#define NOTICE_STEP(at)
#endif


#ifndef OP_MODES
#ifdef ROLES /* lineage 0 takes upgradeable reads, 1 writes, the others read */
#define OP_MODES if :: p == 0 -> mode = M_UPGR :: p == 1 -> mode = M_WRITE :: else -> mode = M_READ fi
#else
#define OP_MODES if :: mode = M_READ :: mode = M_WRITE :: mode = M_UPGR fi
#endif
#endif
#ifndef OP_STYLES
#define OP_STYLES if :: style = S_TRY :: style = S_BLOCK :: style = S_ASYNC fi
#endif
#ifndef UPGRADE_STYLES
#define UPGRADE_STYLES if :: style = S_TRY :: style = S_BLOCK :: style = S_ASYNC fi
#endif

inline choose_op()
{
#ifdef FAIR
    psince[p] = clk; canon(); /* the wait begins (Lua: since = now()) */
#endif
#if KIND == K_RW
    OP_MODES; /* mode = M_READ / M_WRITE / M_UPGR */
#else
    mode = M_LOCK;
#endif
    hmode = mode;
    OP_STYLES /* style = S_TRY / S_BLOCK / S_ASYNC */
}

#define RESET_LOCALS                                                                               \
    me = 0; s = NONE; mode = 0; hmode = 0; style = 0; rounds = 0;                                  \
    widx = NONE; wm = 0; hasw = 0; trym = 0; tried = 0; changed = 0; rel = 0; res = 0;  \
    r = 0; wake = 0; gres = 0; mine = 0; sincex = 0; aret = 0; qret = 0; op = 0; ph = 0; nph = 0;  \
    j = 0; rfull = 0; pneed = 0; eok = 0; tget = 0;                                                                \
    i = 0; id = 0; cnt = 0; tot = 0; sum = 0; stale = 0; ow = 0; up = 0; n = 0; avail = 0; m = 0;  \
    sleepers = 0; cmask = 0; amask = 0; emask = 0; dmask = 0; rm = 0; rid = 0; v = 0; rnd = 0; pst = 0

/* Marks that a sleeper relies on its timeout from now on (LIVE). */
inline justify_sleepers()
{
    i = 0;
    do
    :: i < NPROC -> if :: waiting[i] -> tmo_ok[i] = 1 :: else fi; i++
    :: else -> break
    od;
    i = 0
}

/* The end of an acquisition (the waiter is dropped), then on to what follows it: qret 1 after an
 * operation's acquisition, 2 after an upgrade. */
inline acq_continue()
{
    if
    :: widx != NONE && wid[widx] == me -> wactive[widx] = 0 /* abandoned: nobody refreshes it */
    :: else
    fi;
    hasw = 0; widx = NONE; wm = 0; trym = 0; aret = 0; style = 0; v = 0;
    waiting[p] = 0; tmo_ok[p] = 0; chg[p] = 0;
#ifdef FAIR
    psince[p] = 0; canon();
#endif
    if
    :: qret == 1 && r == 1 -> qret = 0; goto HOLD
    :: qret == 1 && r != 1 -> qret = 0; goto OP_DONE
    :: qret == 2 && r == 1 -> qret = 0; goto UPGRADED
    :: qret == 2 && r != 1 -> qret = 0; hmode = M_UPGR; goto RELEASE
    fi
}

/* The first attempt of an acquisition in `style` (Lua wait_for: d.step(nil), or an async poll). */
inline acq_start()
{
    if
    :: style == S_TRY -> hasw = 0; aret = 1
    :: style == S_BLOCK -> hasw = 0; aret = 2
    :: style == S_ASYNC -> hasw = 1; widx = NONE; wm = mode; aret = 4
    fi;
    trym = 1; op = OP_ATTEMPT;
    goto SECTION
}

proctype P(byte p)
{
    LOCALS;

start:
    /* claim_locked: lock a free slot's byte (in the file at the path), then bump its generation
     * (with no free slot the C code fails with EAGAIN; here the process waits until one is free,
     * or with STOP gives up) */
    if
    :: atomic { lk[RI(CINC, 0)] == 0 -> rnd = CINC; lk[RI(rnd, 0)] = p + 1; s = 0; claiming[RI(rnd, 0)] = 1 }
    :: atomic { lk[RI(CINC, 1)] == 0 -> rnd = CINC; lk[RI(rnd, 1)] = p + 1; s = 1; claiming[RI(rnd, 1)] = 1 }
#ifdef STOP
    :: atomic { lk[RI(CINC, 0)] != 0 && lk[RI(CINC, 1)] != 0 -> goto finish } /* EAGAIN */
#endif
    fi;
    atomic {
        CP;
        /* the next generation, wrapping within the file; a new file's first: a fresh value */
        m = gen[RI(rnd, s)];
        m = (m == 0 || m == (rnd + 1) * GMAX -> rnd * GMAX + 1 : m + 1);
        if
        :: PRESENT(ID(s, m)) ->
            /* Excluded: the wrap gives an identity that the object still holds (in C that
             * takes 2^47 claims of one slot). The process exits instead. */
            lk[RI(rnd, s)] = 0; claiming[RI(rnd, s)] = 0; s = NONE; m = 0; rnd = 0;
            goto finish
        :: else ->
            gen[RI(rnd, s)] = m; me = ID(s, m); live_id[RI(rnd, s)] = me; pid_id[p] = me;
            claiming[RI(rnd, s)] = 0; m = 0;
#if REPL > 0
            dme[p] = me; minc[p] = rnd;
#endif
            rnd = 0; rounds = ROUNDS
        fi
    };

NEXT_OP: /* an operation begins (its wait's since), then its first attempt */
    atomic { choose_op(); qret = 1 };
    atomic { acq_start() };

HOLD: /* the caller's critical section: it may die there */
#if TOKEN_BUG == 2
    atomic { if :: tget -> hand_token(); tget = 0 :: else fi };
#endif
    if
    :: atomic { crashes > 0 -> crashes--; goto crash }
    STOP_STEP
    NOTICE_STEP(HOLD)
#if KIND == K_RW
    :: atomic { hmode == M_UPGR -> mode = M_UPGRADE; hmode = H_UPGRADED; UPGRADE_STYLES; qret = 2; acq_start() }
#endif
    :: atomic { op = OP_RELEASE; trym = REL_BUSY; aret = 5; goto SECTION }
    fi;
UPGRADED: /* the upgraded holder's critical section */
#if TOKEN_BUG == 2
    atomic { if :: tget -> hand_token(); tget = 0 :: else fi };
#endif
    if
    :: atomic { crashes > 0 -> crashes--; goto crash }
    STOP_STEP
    :: true
    fi;
RELEASE: /* wh_release with the handle's mode (PENDING: deadline 0) */
    atomic { op = OP_RELEASE; trym = REL_BUSY; aret = 5; goto SECTION };

OP_DONE:
#ifdef PENDING
    if
    :: atomic { pend[p] != 0 -> op = OP_HELP; trym = 1; aret = 7; goto SECTION } /* the helper thread */
    NOTICE_STEP(OP_DONE)
    :: true
    fi;
#endif
    atomic {
        rounds--;
        if
        :: rounds > 0 -> goto NEXT_OP
        :: else -> goto finish
        fi
    };

WLOOP: /* wh_wait: an attempt with the FUTEX waiter (guard deadline: the wait's; none, but STOP) */
    atomic { trym = WAIT_BUSY; aret = 3; op = OP_ATTEMPT; goto SECTION };
FWAIT: /* FUTEX_WAIT(&seq, w->seq, slice): sleeps only if seq is unchanged */
    asleep[p] = !chg[p];
    if
    :: atomic { !asleep[p] -> waiting[p] = 0; tmo_ok[p] = 0; chg[p] = 0; goto WLOOP }
    :: atomic { asleep[p] && TMO_OK(p) -> asleep[p] = 0; waiting[p] = 0; tmo_ok[p] = 0; chg[p] = 0; goto WLOOP } /* timed out */
    :: atomic { crashes > 0 -> crashes--; goto crash }
    STOP_STEP
    fi;

WITHDRAW: /* wh_withdraw (the Lua waiter's withdraw: deadline passed, or an async wait given up) */
    atomic {
        if
        :: widx == NONE -> r = 0; acq_continue()
        :: else -> op = OP_WITHDRAW; trym = REL_BUSY; aret = 6; goto SECTION
        fi
    };

/* ---- one guard section: wh_attempt, wh_release or wh_withdraw (ops.c), one atomic step ---- */
SECTION:
    atomic {
#if REPL > 0
        section_me();
        if
        :: me != 0 -> enter_guard(trym)
        :: else -> gres = G_ERR /* no identity (no free slot: EAGAIN); the helper: d->me 0 */
        fi;
#else
        enter_guard(trym);
#endif
        if
        :: gres == G_BUSY || gres == G_ERR ->
            if
            :: op == OP_ATTEMPT && hasw && gres == G_BUSY -> chg[p] = 0 /* w->seq read without the guard */
            :: op == OP_RELEASE && gres == G_BUSY ->
                /* wh_release: the handle is released for its caller at once; the hold is recorded
                 * and given back later (pending.c) */
#ifdef DROP_RELEASE /* seeded bug: the release is given up, not recorded */
                held[p] = 0; hid[p] = 0
#else
                held[p] = 0; pend[p] = ((hmode == H_UPGRADED) -> M_UPGR : hmode); pend_id[p] = hid[p];
                hid[p] = 0
#endif
            :: op == OP_RELEASE && gres == G_ERR -> held[p] = 0; hid[p] = 0 /* lost; no slot to clear it under */
            :: op == OP_WITHDRAW -> /* the mark is left to its lease */
                if
                :: widx != NONE && MINE(wid[widx]) -> wactive[widx] = 0; abandoned_any = 1
                :: else
                fi;
                widx = NONE; hasw = 0
            :: op == OP_HELP ->
                /* wh_complete_pending: a turn of 100 ms waiting for the guard; with d->me 0 it
                 * returns at once, and the helper thread loops without waiting */
                A_HELPER(gres == G_BUSY)
            :: else
            fi;
            r = 0
        :: else ->
            if
            :: gres == G_TAKEN -> wake = 2; rfull = 1; ph = PH_RECLAIM; nph = PH_FIRST /* enter() */
            :: else -> ph = PH_FIRST
            fi;
            do
            :: ph == PH_RECLAIM -> st_reclaim(); ph = nph
#ifdef PENDING
            :: ph == PH_PEND ->
                /* enter(): give back this process's releases that could not wait */
                if
                :: pend[p] != 0 ->
                    rm = pend[p]; rid = pend_id[p];
                    st_release();
                    A_HELD(rel || !PROT(rid)); /* it finds the hold, unless the hold is lost */
                    pend[p] = 0; pend_id[p] = 0;
                    if
                    :: rel && wake == 0 -> wake = 1
                    :: else
                    fi;
                    rel = 0; rm = 0; rid = 0
                :: else
                fi;
                ph = PH_OP
            :: ph == PH_OP && op == OP_HELP ->
                if
                :: wake == 0 -> wake = 1 /* wh_complete_pending */
                :: else
                fi;
                ph = PH_LEAVE
#endif
            :: ph == PH_OP && op == OP_RELEASE ->
                held[p] = 0;
                rm = ((hmode == H_UPGRADED) -> M_UPGR : hmode); rid = hid[p];
                st_release();
                A_HELD(rel || LOST(p)); /* a live process's hold is never taken away */
                hid[p] = 0;
                if
                :: rel && wake == 0 -> wake = 1
                :: else
                fi;
                rel = 0; rm = 0; rid = 0; ph = PH_LEAVE
            :: ph == PH_OP && op == OP_WITHDRAW ->
                hasw = 0;
                st_withdraw(); /* others may have waited behind this entry */
                if
                :: rel && wake == 0 -> wake = 1
                :: else
                fi;
                widx = NONE; rel = 0; ph = PH_LEAVE
            :: ph == PH_OP && op == OP_ATTEMPT ->
                /* refresh our mark's lease, or find it gone */
                if
                :: hasw && widx != NONE ->
                    if
                    :: wid[widx] == me -> CP; wexp[widx] = 0
#if REPL > 0
                    :: wid[widx] != me && wid[widx] == past[p] && past[p] != 0 ->
                        wactive[widx] = 0; abandoned_any = 1; widx = NONE /* of a past identity: left */
                    :: else -> widx = NONE
#else
                    :: else -> widx = NONE
#endif
                    fi
                :: else
                fi;
                mine = (hasw -> widx : NONE);
#ifdef FAIR
                sincex = (hasw -> psince[p] : clk);
#endif
                tried = 0; ph = PH_TRY
            :: ph == PH_TRY ->
                st_try();
                if
                :: r == 0 && !tried ->
                    tried = 1;
                    if
                    :: true -> /* a reclamation is due (last_reclaim older than abandonment_check) */
                        rfull = 1; ph = PH_RECLAIM; nph = PH_DUE
                    :: true -> /* not due: probe the waiters ahead if only they refuse us */
                        room();
                        if
                        :: nwaiting != 0 && avail > 0 -> rfull = 0; ph = PH_RECLAIM; nph = PH_AHEAD
                        :: else -> ph = PH_DONE
                        fi;
                        avail = 0
                    fi
                :: else -> ph = PH_DONE
                fi
            :: ph == PH_DUE ->
                if
                :: changed && wake == 0 -> wake = 1
                :: else
                fi;
                ph = PH_TRY
            :: ph == PH_AHEAD ->
                if
                :: changed ->
                    if
                    :: wake == 0 -> wake = 1
                    :: else
                    fi;
                    ph = PH_TRY
                :: else -> ph = PH_DONE
                fi
            :: ph == PH_DONE ->
                A_HELD(r != 2 || LOST(p)); /* an upgrade by the upgradeable holder */
                if
                :: r == 1 ->
                    held[p] = hmode; hid[p] = me;
                    if
#if TOKEN_BUG == 2 /* seeded bug: the token is read after the guard is dropped */
                    :: TOKEN_MODE(mode) -> tget = 1
#else
                    :: TOKEN_MODE(mode) -> hand_token()
#endif
                    :: else
                    fi;
                    if
                    :: hasw && widx != NONE -> st_withdraw(); widx = NONE; rel = 0
                    :: else
                    fi
                :: r == 0 && hasw && widx == NONE -> st_register()
                :: else
                fi;
                if
                :: r == 0 && hasw ->
                    waiting[p] = 1;
                    tmo_ok[p] = (STALE || widx == NONE)
                :: else
                fi;
                ph = PH_LEAVE
            :: ph == PH_LEAVE -> leave(); break
            od
        fi;
        mine = 0; sincex = 0; changed = 0; tried = 0; ph = 0; nph = 0; rfull = 0; gres = 0; op = 0;
        if
        :: aret == 1 -> acq_continue() /* try_acquire */
        :: aret == 2 && r == 1 -> acq_continue()
        :: aret == 2 && r != 1 -> /* acquire: core.waiter(futex), then wh_wait */
            hasw = 1; widx = NONE; wm = mode | FUTEX; goto WLOOP
        :: aret == 3 && r == 1 -> acq_continue()
#ifdef STOP
        /* every wait has a deadline: at most WAITS sleeps (v counts them) */
        :: aret == 3 && r != 1 && v < WAITS -> v++; goto FWAIT
        :: aret == 3 && r != 1 -> v = 0; goto WITHDRAW /* the deadline passed */
#else
        :: aret == 3 && r != 1 -> goto FWAIT
        :: aret == 3 && r != 1 && giveups > 0 -> giveups--; goto WITHDRAW /* the deadline passed */
#endif
        :: aret == 4 && r == 1 -> acq_continue()
        :: aret == 4 && r != 1 && widx != NONE -> /* the async waiter is abandoned, mark and all */
            abandoned_any = 1; acq_continue()
        :: aret == 4 && r != 1 -> goto WITHDRAW /* or withdrawn */
        :: aret == 5 -> aret = 0; mode = 0; hmode = 0; goto OP_DONE
        :: aret == 6 -> r = 0; acq_continue()
        :: aret == 7 -> aret = 0; goto OP_DONE /* the helper's turn */
        fi
    };

crash: /* the process dies here; the kernel drops its slot lock */
    atomic {
        crashed_any = 1;
#if REPL > 0
        if
        :: s != NONE && claiming[RI(rnd, s)] && lk[RI(rnd, s)] == p + 1 -> /* inside its first claim */
            lk[RI(rnd, s)] = 0; claiming[RI(rnd, s)] = 0
        :: else
        fi;
        if
        :: dme[p] != 0 -> lk[LIDX(dme[p])] = 0; live_id[LIDX(dme[p])] = 0
        :: else
        fi;
        dme[p] = 0; minc[p] = NONE; past[p] = 0;
#else
        if
        :: s != NONE ->
            lk[s] = 0; claiming[s] = 0;
            if
            :: live_id[s] == me -> live_id[s] = 0
            :: else
            fi
        :: else
        fi;
#endif
        if
        :: widx != NONE && wid[widx] == me -> wactive[widx] = 0
        :: else
        fi;
        pend[p] = 0; pend_id[p] = 0; hid[p] = 0; /* its death gives back what it holds */
        pid_id[p] = 0; held[p] = 0; asleep[p] = 0; waiting[p] = 0; tmo_ok[p] = 0; chg[p] = 0;
        justify_sleepers();
#ifdef FAIR
        psince[p] = 0; canon();
#endif
        RESET_LOCALS;
        goto start /* a new process starts in this lineage */
    };

stopped: /* STOP: stopped for good; alive, with its slot, its holds and perhaps the guard */
    atomic {
        if
        :: widx != NONE && wid[widx] == me -> wactive[widx] = 0 /* nobody refreshes it */
        :: else
        fi;
        is_stopped[p] = 1;
        justify_sleepers()
    };
end_stopped:
    false;

finish: /* the process exits */
    atomic {
#if REPL > 0
        if
        :: dme[p] != 0 -> lk[LIDX(dme[p])] = 0; live_id[LIDX(dme[p])] = 0
        :: else
        fi;
        if
        :: (dme[p] != 0 && PRESENT(dme[p])) || (past[p] != 0 && PRESENT(past[p])) -> justify_sleepers()
        :: else
        fi;
        dme[p] = 0; minc[p] = NONE; past[p] = 0;
#else
        if
        :: s != NONE ->
            lk[s] = 0; live_id[s] = 0;
            if
            :: PRESENT(me) -> justify_sleepers() /* it leaves marks (abandoned waits) behind */
            :: else
            fi
        :: else
        fi;
#endif
        if
        :: pend[p] != 0 -> unreleased_any = 1; pend[p] = 0; pend_id[p] = 0 /* given back by its end */
        :: else
        fi;
        pid_id[p] = 0; hid[p] = 0;
        RESET_LOCALS;
        ndone++
    }

}

/* Time: leases of marks run out (any mark, whenever no guard section runs: its owner may be
 * dead, abandoned, or stopped); waits grow older than WH_BARGE_NS. LIVE: at some point the
 * environment settles: no more crashes, give-ups or ageing, and only the marks that nobody
 * refreshes any more (abandoned, or of a dead process) still run out, as time goes on. */
inline expire(j)
{
    wexp[j] = 1;
    k = 0;
    do
    :: k < NPROC -> if :: waiting[k] -> tmo_ok[k] = 1 :: else fi; k++
    :: else -> break
    od;
    k = 0
}

active proctype env()
{
    byte k;
end_env:
    do
    :: atomic { wid[0] != 0 && !wexp[0] && (!frozen || !wactive[0]) -> expire(0) }
#if NW >= 2
    :: atomic { wid[1] != 0 && !wexp[1] && (!frozen || !wactive[1]) -> expire(1) }
#endif
#if NW >= 3
    :: atomic { wid[2] != 0 && !wexp[2] && (!frozen || !wactive[2]) -> expire(2) }
#endif
#ifdef FAIR
    :: atomic { !frozen && oldc < clk -> oldc++ }
#endif
#ifdef LIVE
    :: atomic { !frozen -> frozen = 1; crashes = 0; giveups = 0 }
#endif
#if REPL > 0
    :: atomic { rinc < REPL -> rinc++; replaced_any = 1 } /* a cleaner unlinks the shard file */
#endif
#ifdef PAUSE
    :: atomic { paused[0] -> paused[0] = 0 } /* a paused process goes on */
    :: atomic { paused[1] -> paused[1] = 0 }
#if NPROC >= 3
    :: atomic { paused[2] -> paused[2] = 0 }
#endif
#endif
    od
}

/* After every process has stopped: nothing is held by anyone (if nobody crashed), and after
 * info() (guard, takeover, reclamation) nothing is held and no mark is left at all. */
active proctype checker()
{
    LOCALS;
    byte p = NPROC;
end_wait:
    (ndone == NPROC);
    atomic {
        crashes = 0; stops = 0;
#ifdef PAUSE
        pauses = 0;
#endif
        A_FINAL(guard == 0 || crashed_any);
        /* a release that could not wait, or a hold lost with its file, is given back by the end */
        A_FINAL(crashed_any || unreleased_any || replaced_any ||
                (owner == 0 && upg == 0 && total == 0 && scnt[0] == 0 && scnt[1] == 0));
        A_FINAL(crashed_any || abandoned_any || replaced_any || nwaiting == 0); /* marks of a past identity are left */
        me = CHECKER_ID; s = NS;
        enter_guard(0);
        rfull = 1;
        st_reclaim();
        A_FINAL(owner == 0 && upg == 0 && total == 0 && nwaiting == 0 && nfutex == 0 && nwriters == 0);
        A_FINAL(sid[0] == 0 && sid[1] == 0 && scnt[0] == 0 && scnt[1] == 0);
        i = 0;
        do
        :: i < NW -> A_FINAL(wid[i] == 0); i++
        :: else -> break
        od;
        guard = 0;
        RESET_LOCALS
    };
crash:
stopped:
    skip
}

init
{
    atomic {
        run P(0);
#if NPROC >= 2
        run P(1);
#endif
#if NPROC >= 3
        run P(2);
#endif
#if NPROC >= 4
        run P(3);
#endif
    }
}
