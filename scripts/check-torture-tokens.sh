#!/bin/sh
# The torture's own test of its fencing-token check (torture/run.lua): workers record a stale
# token (an earlier hold's) instead of their hold's own now and then, without kills, stops or
# unlinks by the chaos, so no hold is lost and none of them may be excused. The torture must
# fail, and report exactly as many fencing-token violations as tokens were planted, and no
# other violation.
set -u
MAKE=${MAKE:-make}
out=$(WH_TORTURE_STALE_TOKEN=${STALE:-0.02} WH_TORTURE_KILLS=0 WH_TORTURE_STOPS=0 \
    WH_TORTURE_UNLINKS=0 WH_TORTURE_REG_UNLINKS=0 \
    $MAKE -s --no-print-directory torture DURATION="${DURATION:-5}" 2>&1)
planted=$(echo "$out" | sed -n 's/^stale tokens planted[^:]*: \([0-9][0-9]*\)$/\1/p')
found=$(echo "$out" | sed -n 's/^violations: \([0-9][0-9]*\) (fencing tokens: \([0-9][0-9]*\))$/\1 \2/p')
echo "$out" | grep '^\(fencing tokens\|stale tokens\|violations\|not ok\|ok\)' | sed 's/^\(not \)\{0,1\}ok/# &/'
if [ -z "$planted" ] || [ "$planted" -eq 0 ]; then
    echo "no stale token was planted" >&2
    exit 1
fi
if [ "$found" != "$planted $planted" ]; then
    echo "planted $planted stale tokens; violations (all, of fencing tokens): ${found:-none}" >&2
    exit 1
fi
echo "$out" | grep -q '^not ok - torture' || { echo "the torture did not fail" >&2; exit 1; }
