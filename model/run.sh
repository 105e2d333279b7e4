#!/bin/sh
# Checks the protocol models (model/README.md) exhaustively with spin and prints
# one TAP line per model and property. Exits non-zero if any property fails.
#
#   model/run.sh                 everything (about 4 minutes on 2 cores)
#   MODEL_ONLY=lock model/run.sh only the runs whose name starts with "lock"
#   MODEL_JOBS=1 model/run.sh    one pan at a time
#   MODEL_KEEP=1 model/run.sh    keep the work directory (trails, pan sources)
#   MODEL_DEEP=1 model/run.sh    also the wider bounds listed in DEEP_RUNS
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

# name | model | defines (bounds and switches) | properties (P_* groups, or "wakeup")
# The bounds are explained in model/README.md.
RUNS='
guard|guard.pml|-DNPROC=3 -DGMAX=2 -DCRASHES=2 -DROUNDS=2|PROBE GUARD
guard|guard.pml|-DNPROC=3 -DGMAX=2 -DCRASHES=2 -DROUNDS=2 -DLIVE|wakeup
lock|lock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=2|MUTEX HELD RECLAIM REPAIR FINAL
lock|lock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=1 -DFAIR -DLIVE|wakeup
lock-rounds|lock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=0 -DROUNDS=2 -DFAIR|MUTEX HELD RECLAIM REPAIR FINAL
lock-rounds|lock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=0 -DROUNDS=2 -DFAIR -DLIVE|wakeup
semaphore|semaphore.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=2 -DFAIR|MUTEX HELD RECLAIM REPAIR FINAL
semaphore|semaphore.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=1 -DFAIR -DLIVE|wakeup
rwlock|rwlock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=1 -DROLES -DFAIR|MUTEX HELD RECLAIM REPAIR FINAL
rwlock|rwlock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=1 -DROLES -DFAIR -DLIVE|wakeup
rwlock-modes|rwlock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=0 -DFAIR|MUTEX HELD RECLAIM REPAIR FINAL
rwlock-modes|rwlock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=0 -DFAIR -DLIVE|wakeup
'
# MODEL_DEEP=1 adds wider bounds (about 10 more CPU minutes and up to 3 GB per pan).
DEEP_RUNS='
guard-deep|guard.pml|-DNPROC=3 -DGMAX=2 -DCRASHES=3 -DROUNDS=3|PROBE GUARD
lock-rounds-crash|lock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=1 -DROUNDS=2|MUTEX HELD RECLAIM REPAIR FINAL
rwlock-rounds|rwlock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=0 -DROUNDS=2 -DROLES -DFAIR|MUTEX HELD RECLAIM REPAIR FINAL
rwlock-rounds|rwlock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=0 -DROUNDS=2 -DROLES -DFAIR -DLIVE|wakeup
rwlock-modes-crash|rwlock.pml|-DNPROC=3 -DNW=2 -DGMAX=2 -DCRASHES=1|MUTEX HELD RECLAIM REPAIR FINAL
'
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
    wakeup) echo "no lost wake-up: no state where every live process waits forever" ;;
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
echo "$RUNS" | grep -v '^$' | while IFS='|' read -r name model defs props; do
    case $name in "$ONLY"*) echo "$name|$model|$defs|$props" ;; esac
done >"$work/runs"
nruns=$(wc -l <"$work/runs")
ntests=0
while IFS='|' read -r name model defs props; do
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
    sed -n "$3p" "$1/$2" | grep -o 'A_[A-Z]*' | head -1 | sed 's/^A_//'
}

# A short account of the error trail: the steps that read or write shared memory (or the
# ghost state of the properties), crashes, the violated assertion, each process's end state.
summary() { # dir
    awk '
        /assertion violated|Error:|terminates|end state|processes created|^#processes/ { print; next }
        /^ *[0-9]+:[ \t]+proc/ {
            st = $0; sub(/^[^[]*\[/, "", st)
            if (st ~ /^(\.\(goto\)|DO|IF|else|break|goto :b[0-9]+|\(1\))\]$/) next
            if (st ~ /(^|[^a-z_])(guard|owner|upg|total|nwaiting|nfutex|nwriters|sid|scnt|wid|wexp|wmode|wsince|lk|gen|chg|asleep|gsleep|held|inside|crashes|claiming|frozen|oldc|psince)([^a-z_]|$)/) print
        }' "$1/replay" |
        sed -e 's/^ *//' -e 's/[[:space:]][[:space:]]*/ /g' -e 's/ (state [0-9]*)//' -e 's/^/#   /' |
        cut -c1-160 | tail -n 80
}

# One pan run per property group: writes $work/res.<run>.<property> ("verdict|states|depth|s")
# and, for a failure, $work/diag.<run>.<property>. A failing property is reported and the run is
# repeated without it, so that each property gets its own verdict.
run_one() { # index model defs props
    idx=$1 model=$2 defs=$3 props=$4
    left=$props
    attempt=0
    while [ -n "$left" ]; do
        attempt=$((attempt + 1))
        d="$work/run.$idx.$attempt"
        mkdir -p "$d"
        cp "$here"/*.pml "$d"/
        pdefs=$defs
        for p in $left; do
            [ "$p" = wakeup ] || pdefs="$pdefs -DP_$p"
        done
        endflag=-E # the assertion runs leave deadlocks to the "wakeup" runs
        [ "$left" = wakeup ] && endflag=
        start=$(date +%s)
        (
            cd "$d" &&
                "$SPIN" -a $pdefs "$model" >spin.out 2>&1 &&
                $PAN_CC $PAN_CFLAGS -o pan pan.c >cc.out 2>&1 &&
                ./pan $PAN_RUNFLAGS $endflag >pan.out 2>&1
        )
        secs=$(($(date +%s) - start))
        states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' "$d/pan.out" 2>/dev/null | head -1)
        depth=$(sed -n 's/.*depth reached \([0-9][0-9]*\),.*/\1/p' "$d/pan.out" 2>/dev/null | head -1)
        errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$d/pan.out" 2>/dev/null | head -1)
        trail=$(ls "$d"/*.trail 2>/dev/null | head -1)
        if [ -z "$errors" ]; then # spin, the compiler or pan failed before a verdict
            for p in $left; do
                echo "not ok|?|?|$secs" >"$work/res.$idx.$p"
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
            for p in $left; do echo "ok|$states|$depth|$secs" >"$work/res.$idx.$p"; done
            return
        fi
        if [ -z "$trail" ]; then # an incomplete search
            for p in $left; do
                echo "not ok|$states|$depth|$secs" >"$work/res.$idx.$p"
                grep -E 'too small|not completed|out of memory|error' "$d/pan.out" | sed 's/^/#   /' >"$work/diag.$idx.$p"
            done
            return
        fi
        (cd "$d" && "$SPIN" -t -p -g $pdefs "$model" >replay 2>&1)
        bad=$(failed_property "$d")
        case " $left " in
        *" $bad "*) ;;
        *) bad=$(echo $left | cut -d' ' -f1) ;; # an invalid end state, or not recognised
        esac
        echo "not ok|$states|$depth|$secs" >"$work/res.$idx.$bad"
        {
            grep -E 'assertion violated|invalid end state' "$d/pan.out" | head -3 | sed 's/^/#   pan: /'
            echo "#   error trail (spin -t -p, the steps on shared state; MODEL_KEEP=1 keeps it):"
            summary "$d"
        } >"$work/diag.$idx.$bad"
        left=$(echo " $left " | sed "s/ $bad / /" | sed 's/^ *//; s/ *$//')
    done
}

# Runs are dealt round-robin to $JOBS background workers (POSIX sh has no job pool).
i=0
while [ "$i" -lt "$JOBS" ]; do
    (
        n=0
        while IFS='|' read -r name model defs props; do
            n=$((n + 1))
            [ $(((n - 1) % JOBS)) -eq "$i" ] || continue
            run_one "$n" "$model" "$defs" "$props"
        done <"$work/runs"
    ) &
    i=$((i + 1))
done
wait

t=0
fail=0
n=0
while IFS='|' read -r name model defs props; do
    n=$((n + 1))
    for p in $props; do
        t=$((t + 1))
        line=$(cat "$work/res.$n.$p" 2>/dev/null)
        if [ -z "$line" ]; then
            echo "not ok $t - $name: $(describe "$p") (no result)"
            fail=1
            continue
        fi
        verdict=${line%%|*}
        rest=${line#*|}
        states=${rest%%|*}
        rest=${rest#*|}
        depth=${rest%%|*}
        secs=${rest#*|}
        echo "$verdict $t - $name: $(describe "$p") ($states states, $depth depth)"
        echo "#   $model $defs: ${secs}s"
        [ -f "$work/diag.$n.$p" ] && cat "$work/diag.$n.$p"
        [ "$verdict" = ok ] || fail=1
    done
done <"$work/runs"
exit $fail
