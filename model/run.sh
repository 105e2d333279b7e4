#!/bin/sh
# Checks the protocol models (model/README.md) exhaustively with spin and prints
# one TAP line per model and property. Exits non-zero if any property fails.
#
#   model/run.sh                 everything (about 8 minutes on 2 cores)
#   MODEL_ONLY=lock model/run.sh only the runs whose name starts with "lock"
#   MODEL_JOBS=1 model/run.sh    one pan at a time
#   MODEL_KEEP=1 model/run.sh    keep the work directory (trails, pan sources)
#   MODEL_DEEP=1 model/run.sh    also the wider bounds listed in DEEP_RUNS
#
# Besides the checks that must pass, some runs expect a failure, and are "ok" when the search
# finds it: a bug seeded on purpose (the property is able to catch it), or a known bug of the C
# code (README.md, "Findings"; such a line fails once the code and the model are fixed, and is
# then made a check that must pass).
#
# Needs spin (Debian package spin; 6.5.2 here) and a C compiler (PAN_CC, default gcc).
# All files are made in a temporary directory; nothing is written into the tree.
set -u

here=$(cd "$(dirname "$0")" && pwd)
SPIN=${SPIN:-spin}
PAN_CC=${PAN_CC:-gcc}
JOBS=${MODEL_JOBS:-2}
ONLY=${MODEL_ONLY:-}
# Exhaustive search (no bitstate, no hash compaction): -DCOLLAPSE only compresses states.
PAN_CFLAGS=${PAN_CFLAGS:--O2 -w -DSAFETY -DCOLLAPSE -DMEMLIM=3500}
PAN_RUNFLAGS=${PAN_RUNFLAGS:--m100000 -w26}

# name | model | defines (bounds and switches) | properties (P_* groups, "wakeup", "bounded")
#   | expect: empty (every property must hold), "seeded" (a bug put in on purpose that the property
#     must catch) or "known" (the C code as it is fails the property; README.md, "Findings")
# The bounds, switches and seeded bugs are explained in model/README.md.
A='MUTEX HELD RECLAIM REPAIR FINAL TOKEN'
B='-DNPROC=3 -DNW=2 -DGMAX=2'
RUNS="
guard|guard.pml|-DNPROC=3 -DGMAX=2 -DCRASHES=2 -DROUNDS=2|PROBE GUARD
guard|guard.pml|-DNPROC=3 -DGMAX=2 -DCRASHES=2 -DROUNDS=2 -DLIVE|wakeup
lock|lock.pml|$B -DCRASHES=2|$A
lock|lock.pml|$B -DCRASHES=1 -DFAIR -DLIVE|wakeup
lock-rounds|lock.pml|$B -DCRASHES=0 -DROUNDS=2 -DFAIR|$A
lock-rounds|lock.pml|$B -DCRASHES=0 -DROUNDS=2 -DFAIR -DLIVE|wakeup
semaphore|semaphore.pml|$B -DCRASHES=2 -DFAIR|$A
semaphore|semaphore.pml|$B -DCRASHES=1 -DFAIR -DLIVE|wakeup
rwlock|rwlock.pml|$B -DCRASHES=1 -DROLES -DFAIR|$A
rwlock|rwlock.pml|$B -DCRASHES=1 -DROLES -DFAIR -DLIVE|wakeup
rwlock-modes|rwlock.pml|$B -DCRASHES=0 -DFAIR|$A
rwlock-modes|rwlock.pml|$B -DCRASHES=0 -DFAIR -DLIVE|wakeup
lock-pending|lock.pml|$B -DCRASHES=1 -DPENDING|$A
semaphore-pending|semaphore.pml|$B -DCRASHES=1 -DFAIR -DPENDING|$A
lock-stop|lock.pml|$B -DCRASHES=0 -DSTOP|$A bounded
semaphore-stop|semaphore.pml|$B -DCRASHES=0 -DFAIR -DSTOP|$A bounded
rwlock-stop|rwlock.pml|$B -DCRASHES=0 -DROLES -DFAIR -DSTOP|$A bounded
lock-repl-fix|lock.pml|$B -DCRASHES=0 -DREPL=1 -DLINK_RATE -DREPL_FIX|$A
semaphore-repl-fix|semaphore.pml|$B -DCRASHES=0 -DREPL=1 -DLINK_RATE -DREPL_FIX|$A
seeded-token-upgrade|rwlock.pml|$B -DCRASHES=0 -DROLES -DTOKEN_BUG=1|TOKEN|seeded
seeded-token-late|semaphore.pml|$B -DCRASHES=0 -DTOKEN_BUG=2|TOKEN|seeded
seeded-old-release|lock.pml|$B -DCRASHES=0 -DSTOP -DOLD_RELEASE|bounded|seeded
seeded-drop-release|lock.pml|$B -DCRASHES=0 -DPENDING -DDROP_RELEASE|FINAL|seeded
seeded-no-path-check|lock.pml|$B -DCRASHES=0 -DREPL=1 -DLINK_RATE -DREPL_FIX -DNO_PATH_CHECK|RECLAIM|seeded
seeded-old-tidy|lock.pml|$B -DCRASHES=0 -DREPL=1 -DLINK_RATE|HELD|seeded
seeded-old-entry|semaphore.pml|$B -DCRASHES=0 -DREPL=1 -DLINK_RATE|HELD|seeded
known-repl-pause|lock.pml|$B -DCRASHES=0 -DREPL=1 -DREPL_FIX -DPAUSE|MUTEX|known
known-helper-spin|lock.pml|$B -DCRASHES=0 -DREPL=1 -DREPL_FIX -DPENDING|HELPER|known
"
# MODEL_DEEP=1 adds wider bounds (about 15 more CPU minutes and up to 3 GB per pan).
DEEP_RUNS="
guard-deep|guard.pml|-DNPROC=3 -DGMAX=2 -DCRASHES=3 -DROUNDS=3|PROBE GUARD
lock-rounds-crash|lock.pml|$B -DCRASHES=1 -DROUNDS=2|$A
rwlock-rounds|rwlock.pml|$B -DCRASHES=0 -DROUNDS=2 -DROLES -DFAIR|$A
rwlock-rounds|rwlock.pml|$B -DCRASHES=0 -DROUNDS=2 -DROLES -DFAIR -DLIVE|wakeup
rwlock-modes-crash|rwlock.pml|$B -DCRASHES=1|$A
lock-pending-crashes|lock.pml|$B -DCRASHES=2 -DPENDING|$A
rwlock-pending|rwlock.pml|$B -DCRASHES=1 -DROLES -DFAIR -DPENDING|$A
lock-pending|lock.pml|$B -DCRASHES=1 -DFAIR -DLIVE -DPENDING|wakeup
rwlock-repl-fix|rwlock.pml|$B -DCRASHES=0 -DROLES -DREPL=1 -DLINK_RATE -DREPL_FIX|$A
"
[ -n "${MODEL_DEEP:-}" ] && RUNS="$RUNS$DEEP_RUNS"

describe() {
    case $1 in
    PROBE) echo "liveness probe: no false dead, false alive only during a claim" ;;
    GUARD) echo "guard: one live holder, never taken over from a live owner" ;;
    MUTEX) echo "mutual exclusion" ;;
    HELD) echo "a live process's hold (or unexpired mark) is never taken away" ;;
    RECLAIM) echo "no hold or mark of a dead process survives a reclamation" ;;
    REPAIR) echo "derived fields repaired whenever the guard is dropped" ;;
    FINAL) echo "after all processes stop, nothing is held" ;;
    TOKEN) echo "fencing tokens strictly increase" ;;
    HELPER) echo "the helper thread waits for the guard, never spins" ;;
    wakeup) echo "no lost wake-up: no state where every live process waits forever" ;;
    bounded) echo "bounded waits: no state where a process that is not stopped waits forever" ;;
    *) echo "$1" ;;
    esac
}

if ! command -v "$SPIN" >/dev/null 2>&1; then
    echo "Bail out! spin not found (Debian: apt-get install spin)"
    exit 1
fi
if ! command -v "$PAN_CC" >/dev/null 2>&1; then
    echo "Bail out! C compiler $PAN_CC not found"
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/waithandles-model.XXXXXX") || exit 1
if [ -z "${MODEL_KEEP:-}" ]; then
    trap 'rm -rf "$work"' EXIT
    trap 'exit 130' INT TERM
else
    echo "# work directory: $work"
fi

# The selected runs, numbered.
echo "$RUNS" | grep -v '^$' | while IFS='|' read -r name model defs props expect; do
    case $name in "$ONLY"*) echo "$name|$model|$defs|$props|$expect" ;; esac
done >"$work/runs"
nruns=$(wc -l <"$work/runs")
ntests=0
while IFS='|' read -r name model defs props expect; do
    for p in $props; do ntests=$((ntests + 1)); done
done <"$work/runs"
echo "1..$ntests"
[ "$ntests" -gt 0 ] || exit 0

# The failing assertion's property: the A_<PROPERTY> macro on the line spin reports.
failed_property() { # dir
    loc=$(grep -o 'spin: [^ ]*:[0-9]*, Error: assertion violated' "$1/replay" | head -1 |
        sed 's/^spin: \([^ ]*\):\([0-9]*\),.*/\1 \2/')
    [ -n "$loc" ] || return 1
    set -- "$1" $loc
    sed -n "$3p" "$1/$2" | grep -o 'A_[A-Z]*\|CLEARS' | head -1 | sed 's/^A_//; s/^CLEARS$/HELD/'
}

# A short account of the error trail: the steps that read or write shared memory (or the
# ghost state of the properties), crashes, the violated assertion, each process's end state.
summary() { # dir
    awk '
        /assertion violated|Error:|terminates|end state|processes created|^#processes/ { print; next }
        /^ *[0-9]+:[ \t]+proc/ {
            st = $0; sub(/^[^[]*\[/, "", st)
            if (st ~ /^(\.\(goto\)|DO|IF|else|break|goto :b[0-9]+|\(1\))\]$/) next
            if (st ~ /(^|[^a-z_])(guard|owner|upg|total|nwaiting|nfutex|nwriters|sid|scnt|wid|wexp|wmode|wsince|lk|gen|chg|asleep|gsleep|held|inside|crashes|claiming|frozen|oldc|psince|tok|maxtok|rinc|dme|minc|past|pend|pend_id|stops|paused)([^a-z_]|$)/) print
        }' "$1/replay" |
        sed -e 's/^ *//' -e 's/[[:space:]][[:space:]]*/ /g' -e 's/ (state [0-9]*)//' -e 's/^/#   /' |
        cut -c1-160 | tail -n 80
}

# One pan run per property group: writes $work/res.<run>.<property>
# ("verdict|states|depth|seconds|MB") and, for a failure, $work/diag.<run>.<property>. A failing
# property is reported and the run is repeated without it, so that each property gets its own verdict. "wakeup" and "bounded" are
# spin's invalid end states (searched without -E); the others are assertion groups (-DP_<name>).
# A run that expects a failure (a seeded or a known bug) has one property; its verdict is "ok"
# when the search finds that property violated, with the trail's summary as diagnostics.
run_one() { # index model defs props expect
    idx=$1 model=$2 defs=$3 props=$4 expect=$5
    left=$props
    attempt=0
    while [ -n "$left" ]; do
        attempt=$((attempt + 1))
        d="$work/run.$idx.$attempt"
        mkdir -p "$d"
        cp "$here"/*.pml "$d"/
        pdefs=$defs
        endflag=-E # only the "wakeup" and "bounded" searches report invalid end states
        for p in $left; do
            case $p in
            wakeup | bounded) endflag= ;;
            *) pdefs="$pdefs -DP_$p" ;;
            esac
        done
        case $pdefs in *-DP_*) ;; *) pdefs="$pdefs -DNOASSERT" ;; esac
        cflags=$PAN_CFLAGS
        [ -n "$expect" ] && cflags=$(echo " $cflags " | sed 's/ -O[0-9s]* / -O0 /') # a short search
        start=$(date +%s)
        (
            cd "$d" &&
                "$SPIN" -a $pdefs "$model" >spin.out 2>&1 &&
                $PAN_CC $cflags -o pan pan.c >cc.out 2>&1 &&
                ./pan $PAN_RUNFLAGS $endflag >pan.out 2>&1
        )
        secs=$(($(date +%s) - start))
        states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' "$d/pan.out" 2>/dev/null | head -1)
        depth=$(sed -n 's/.*depth reached \([0-9][0-9]*\),.*/\1/p' "$d/pan.out" 2>/dev/null | head -1)
        errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$d/pan.out" 2>/dev/null | head -1)
        mem=$(sed -n 's/^ *\([0-9][0-9]*\)\.[0-9]*[[:space:]]*total actual memory usage.*/\1/p' "$d/pan.out" 2>/dev/null | head -1)
        trail=$(ls "$d"/*.trail 2>/dev/null | head -1)
        if [ -z "$errors" ]; then # spin, the compiler or pan failed before a verdict
            for p in $left; do
                echo "not ok|?|?|$secs|?" >"$work/res.$idx.$p"
                {
                    cat "$d/spin.out" "$d/cc.out" 2>/dev/null | head -20
                    tail -20 "$d/pan.out" 2>/dev/null
                } | sed 's/^/#   /' >"$work/diag.$idx.$p"
            done
            return
        fi
        incomplete=
        grep -qE 'max search depth too small|Search not completed|out of memory' "$d/pan.out" && incomplete=1
        if [ "$errors" = 0 ] && [ -z "$incomplete" ]; then
            verdict=ok
            [ -n "$expect" ] && verdict="not ok"
            for p in $left; do echo "$verdict|$states|$depth|$secs|$mem" >"$work/res.$idx.$p"; done
            [ -n "$expect" ] && echo "#   the search found no violation: the check misses this bug" >"$work/diag.$idx.$left"
            return
        fi
        if [ -z "$trail" ]; then # an incomplete search
            for p in $left; do
                echo "not ok|$states|$depth|$secs|$mem" >"$work/res.$idx.$p"
                grep -E 'too small|not completed|out of memory|error' "$d/pan.out" | sed 's/^/#   /' >"$work/diag.$idx.$p"
            done
            return
        fi
        (cd "$d" && "$SPIN" -t -p -g $pdefs "$model" >replay 2>&1)
        if grep -q '^pan:[0-9]*: invalid end state' "$d/pan.out"; then
            bad=wakeup
            case " $left " in *" bounded "*) bad=bounded ;; esac
        else
            bad=$(failed_property "$d")
        fi
        case " $left " in
        *" $bad "*) ;;
        *) bad=$(echo $left | cut -d' ' -f1) ;; # not recognised
        esac
        verdict="not ok"
        [ -n "$expect" ] && [ "$bad" = "$left" ] && verdict=ok
        echo "$verdict|$states|$depth|$secs|$mem" >"$work/res.$idx.$bad"
        {
            grep -E '^pan:[0-9]*: (assertion violated|invalid end state)' "$d/pan.out" | head -3 | sed 's/^/#   /'
            if [ "$verdict" = ok ]; then
                echo "#   as expected (MODEL_KEEP=1 keeps the error trail)"
            else
                echo "#   error trail (spin -t -p, the steps on shared state; MODEL_KEEP=1 keeps it):"
                summary "$d"
            fi
        } >"$work/diag.$idx.$bad"
        left=$(echo " $left " | sed "s/ $bad / /" | sed 's/^ *//; s/ *$//')
        [ -n "$expect" ] && return
    done
}

# $JOBS background workers take the runs in turn, each the next one not yet taken.
echo 1 >"$work/next"
take() { # -> the index of the next run, or nothing
    while ! mkdir "$work/lock" 2>/dev/null; do sleep 1; done
    k=$(cat "$work/next")
    echo $((k + 1)) >"$work/next"
    rmdir "$work/lock"
    [ "$k" -le "$nruns" ] && echo "$k"
}
i=0
while [ "$i" -lt "$JOBS" ]; do
    (
        while k=$(take) && [ -n "$k" ]; do
            IFS='|' read -r name model defs props expect <<EOF
$(sed -n "${k}p" "$work/runs")
EOF
            run_one "$k" "$model" "$defs" "$props" "$expect"
        done
    ) &
    i=$((i + 1))
done
wait

t=0
fail=0
n=0
while IFS='|' read -r name model defs props expect; do
    n=$((n + 1))
    for p in $props; do
        t=$((t + 1))
        what=$(describe "$p")
        case $expect in
        seeded) what="the seeded bug is caught: \"$what\" fails" ;;
        known) what="the known bug is found: \"$what\" fails" ;;
        esac
        line=$(cat "$work/res.$n.$p" 2>/dev/null)
        if [ -z "$line" ]; then
            echo "not ok $t - $name: $what (no result)"
            fail=1
            continue
        fi
        verdict=${line%%|*}
        rest=${line#*|}
        states=${rest%%|*}
        rest=${rest#*|}
        depth=${rest%%|*}
        rest=${rest#*|}
        secs=${rest%%|*}
        mem=${rest#*|}
        echo "$verdict $t - $name: $what ($states states, $depth depth)"
        echo "#   $model $defs: ${secs}s, ${mem} MB"
        [ -f "$work/diag.$n.$p" ] && cat "$work/diag.$n.$p"
        [ "$verdict" = ok ] || fail=1
    done
done <"$work/runs"
exit $fail
