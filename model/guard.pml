/*
 * The registry and the guard, step by step (csrc/registry.c: claim_locked, wh_dir_alive;
 * csrc/guard.c: wh_guard_lock, wh_guard_unlock). Every shared read and write is its own step,
 * and a process may crash between any two of them (its kernel slot lock is then dropped);
 * a new process then starts in its lineage and may claim the same slot with the next
 * generation. The other models (wh.pml) take the guard and probe liveness in one atomic step;
 * this model is what justifies that (README.md).
 *
 * Checked: a probe never answers "dead" for a live identity, and answers "alive" for a dead
 * one only while a new owner of its slot has locked it and not yet stored its generation;
 * no two live processes hold the guard; the guard is never taken over from a live owner and
 * its owner still holds it when it drops it; with -DLIVE, no reachable state where every
 * live process sleeps on the guard and nothing but a timeout would wake it.
 */

#ifndef NPROC
#define NPROC 3
#endif
#define NS 2
#ifndef GMAX
#define GMAX 2
#endif
#ifndef CRASHES
#define CRASHES 2
#endif
#ifndef ROUNDS
#define ROUNDS 2
#endif

/* Properties: P_PROBE (the liveness probe), P_GUARD (the guard); none given: both. LIVE: no lost
 * guard wake-up (a different state space, no assertions). */
#if !defined(P_PROBE) && !defined(P_GUARD) && !defined(LIVE)
#define P_PROBE
#define P_GUARD
#endif
#ifdef P_PROBE
#define A_PROBE(e) assert(e)
#else
#define A_PROBE(e) skip
#endif
#ifdef P_GUARD
#define A_GUARD(e) assert(e)
#else
#define A_GUARD(e) skip
#endif

#define NONE 255
#define ID(sl, g) ((g) * 4 + (sl) + 1)
#define IDS(x) (((x) & 3) - 1)
#define IDG(x) ((x) >> 2)
#define SLEEPERS 128 /* bit 63 of the guard word */
#define LOW(x) ((x) & 127) /* the low 32 bits: the identity (its generation below 2^16) */
#ifdef FUTEX_LOW
/* the code before the fix (model/README.md, "Findings"): sleep on the low 32 bits */
#define FUTEX_WORD(x) LOW(x)
#else
/* csrc/guard.c: high_half(), the high 32 bits, which hold SLEEPERS (and generation bits 16-46) */
#define FUTEX_WORD(x) ((x) & SLEEPERS)
#endif

/* shared */
byte lk[NS];  /* kernel OFD write lock of the slot byte: 0 or lineage + 1 */
byte gen[NS];
byte guard;   /* identity | SLEEPERS */
bit gsleep[NPROC]; /* in FUTEX_WAIT on the guard word */
byte cur[NPROC];   /* each process's copy of the guard word (global only for the ghost check) */
byte crashes = CRASHES;

/* ghosts */
byte live_id[NS];
bit claiming[NS];
bit inside[NPROC]; /* believes it holds the guard */
bit tmo_ok[NPROC]; /* LIVE: its guard sleep may time out (its owner died meanwhile) */
bit frozen;

#define ALIVE(x) ((x) != 0 && live_id[IDS(x)] == (x))

#define CRASH_OPT :: atomic { crashes > 0 -> crashes--; goto crash }
#define CP if CRASH_OPT :: true fi

#ifdef LIVE
#define TMO_OK tmo_ok[p]
#else
#define TMO_OK 1
#endif

proctype G(byte p)
{
    byte me, s = NONE, m, owner, ps, pg, rounds, old, q;
    bit res, took, excused;

start:
    rounds = ROUNDS;
    /* claim_locked */
    if
    :: atomic { lk[0] == 0 -> lk[0] = p + 1; s = 0; claiming[0] = 1 }
    :: atomic { lk[1] == 0 -> lk[1] = p + 1; s = 1; claiming[1] = 1 }
    fi;
    CP;
    atomic {
        m = gen[s] + 1;
        if
        :: m > GMAX -> m = 1
        :: else
        fi;
        if
        :: LOW(guard) == ID(s, m) || LOW(cur[0]) == ID(s, m) || LOW(cur[1]) == ID(s, m) ||
           LOW(cur[NPROC - 1]) == ID(s, m) ->
            /* excluded: the wrap gives an identity still in use, in the guard or in a waiter's
             * copy of it (2^47 claims of the slot in C) */
            lk[s] = 0; claiming[s] = 0; s = NONE; m = 0;
            goto finish
        :: else ->
            gen[s] = m; me = ID(s, m); live_id[s] = me; claiming[s] = 0; m = 0
        fi
    };

next:
    /* wh_guard_lock: CAS 0 -> me (the first try and the spins are the same step) */
    cur[p] = 0; took = 0;
    if
    :: atomic { guard == 0 -> guard = me; goto got }
    :: true
    fi;
L:
    if
    :: cur[p] = guard
    CRASH_OPT
    fi;
    if
    :: cur[p] == 0 ->
        atomic {
            if
            :: guard == 0 -> guard = me; goto got
            :: else
            fi
        };
        goto L
    :: else
    fi;
    /* now >= next_probe: probe the owner (any time here) */
    if
    :: LOW(cur[p]) != me ->
        owner = LOW(cur[p]); ps = IDS(owner); pg = IDG(owner);
        if
        :: ps == IDS(me) -> res = 0 /* our own slot: alive iff it is us */
        :: else ->
            /* wh_dir_alive, steps 3 to 5: three separate reads */
            res = (gen[ps] == pg);
            if
            :: res ->
                atomic {
                    res = (lk[ps] != 0);
                    /* ghost: the owner lives, or a new owner has locked its slot and not yet
                     * stored the generation (a completed claim is caught by the re-read) */
                    excused = ALIVE(owner) || claiming[ps]
                };
                if
                :: res -> res = (gen[ps] == pg)
                :: else
                fi;
                A_PROBE(!res || excused); /* a false "alive" only during a claim */
                excused = 0
            :: else
            fi
        fi;
        A_PROBE(res || !ALIVE(owner)); /* never a false "dead" */
        if
        :: !res ->
            atomic {
                if
                :: guard == cur[p] -> /* takeover, keeping the sleepers flag */
                    A_GUARD(!ALIVE(owner));
                    guard = me | (cur[p] & SLEEPERS); took = 1; goto got
                :: else
                fi
            };
            goto L
        :: else
        fi
    :: true
    fi;
    /* set SLEEPERS, then sleep while the futex half is unchanged (at most until the next probe) */
    if
    :: !(cur[p] & SLEEPERS) ->
        atomic {
            if
            :: guard == cur[p] -> guard = cur[p] | SLEEPERS; cur[p] = cur[p] | SLEEPERS
            :: else -> goto L
            fi
        }
    :: else
    fi;
    atomic {
        if
        :: FUTEX_WORD(guard) == FUTEX_WORD(cur[p]) -> gsleep[p] = 1; tmo_ok[p] = !ALIVE(LOW(cur[p]))
        :: else
        fi
    };
    if
    :: atomic { !gsleep[p] -> tmo_ok[p] = 0 }
    :: atomic { gsleep[p] && TMO_OK -> gsleep[p] = 0; tmo_ok[p] = 0 } /* timed out */
    CRASH_OPT
    fi;
    goto L;

got: /* the guard section */
    atomic {
        q = 0;
        do
        :: q < NPROC -> A_GUARD(q == p || !inside[q]); q++ /* one live holder */
        :: else -> break
        od;
        q = 0; inside[p] = 1; cur[p] = 0; owner = 0; ps = 0; pg = 0; res = 0; took = 0
    };
    CP; /* a crash anywhere inside the section */
    /* wh_guard_unlock: exchange with 0, then wake if SLEEPERS was set */
    atomic {
        A_GUARD(LOW(guard) == me); /* nobody took it from us */
        old = guard; guard = 0; inside[p] = 0; cur[p] = 0
    };
    if
    :: old & SLEEPERS ->
        CP;
        atomic { q = 0; do :: q < NPROC -> gsleep[q] = 0; q++ :: else -> break od; q = 0 }
    :: else
    fi;
    old = 0;
    rounds--;
    if
    :: rounds > 0 -> goto next
    :: else
    fi;

finish:
    atomic {
        if
        :: s != NONE -> lk[s] = 0; live_id[s] = 0
        :: else
        fi;
        s = NONE; me = 0
    };
    goto end;

crash:
    atomic {
        if
        :: s != NONE ->
            lk[s] = 0; claiming[s] = 0;
            if
            :: live_id[s] == me -> live_id[s] = 0
            :: else
            fi
        :: else
        fi;
        inside[p] = 0; gsleep[p] = 0; tmo_ok[p] = 0;
        q = 0;
        do
        :: q < NPROC -> tmo_ok[q] = tmo_ok[q] || gsleep[q]; q++ /* sleepers may rely on the probe */
        :: else -> break
        od;
        me = 0; s = NONE; m = 0; cur[p] = 0; owner = 0; ps = 0; pg = 0; rounds = 0; old = 0; q = 0;
        res = 0; took = 0;
        goto start
    };
end:
    skip
}

#ifdef LIVE
active proctype env()
{
    atomic { crashes = 0; frozen = 1 } /* at some point, no more crashes */
}
#endif

init
{
    atomic {
        run G(0);
        run G(1);
#if NPROC >= 3
        run G(2);
#endif
    }
}
