#!/bin/sh
# The whole test suite (what `make test` runs). Each step reports TAP lines;
# the last line is "N passed, M failed". Under CI=true it also runs every Lua
# version, a clang -Werror build, AddressSanitizer+UBSan builds of the C tests
# and the specs, the protocol model, the torture, the fuzzers and the soak.
set -u
MAKE=${MAKE:-make}
passed=0
failed=0
log=$(mktemp -d /tmp/waithandles-test.XXXXXX)
ci=0
[ "${CI:-}" = "true" ] && ci=1

# Runs a command whose output holds TAP lines ("ok ..." / "not ok ...") and adds them up.
# A command that fails without reporting a failing test counts as one failure.
step() {
    name=$1
    shift
    start=$(date +%s)
    out="$log/$(echo "$name" | tr -c 'A-Za-z0-9.\n-' '_').log"
    timeout "${STEP_TIMEOUT:-1500}" "$@" >"$out" 2>&1
    rc=$?
    p=$(grep -c '^ok ' "$out")
    f=$(grep -c '^not ok ' "$out")
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        f=1
        echo "not ok - $name: exited with status $rc" >>"$out"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-44s %5s passed %3s failed  %4ss\n' "$name" "$p" "$f" "$(($(date +%s) - start))"
    if [ "$f" != 0 ]; then
        # Show what failed: the failing TAP lines with their diagnostics, and the tail.
        awk '/^not ok/{show=1} /^ok /{show=0} show' "$out" | head -150
        tail -25 "$out"
    fi
}

# Prints lines of a step's log (selected by a sed script), indented: figures worth seeing.
figures() {
    sed -n "$2" "$log/$(echo "$1" | tr -c 'A-Za-z0-9.\n-' '_').log" | sed 's/^/    /'
}

# A step that is one check: ok if the command succeeds.
check() {
    name=$1
    shift
    step "$name" sh -c '"$@" && echo "ok - $0"' "$name" "$@"
}

specs() { # version [make args...]
    v=$1
    shift
    step "specs (Lua $v)$*" $MAKE -s --no-print-directory test-one LUA_VERSION="$v" BUSTED_ARGS="-o TAP" "$@"
}

ASAN_RT=$(clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null)
# Executables link the sanitizer runtime statically; the module uses the shared one, preloaded
# into the (uninstrumented) interpreter.
SAN_EXE="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
SAN="$SAN_EXE -shared-libasan"

echo "waithandles tests$( [ $ci = 1 ] && echo ' (CI=true: every Lua version, clang, sanitizers, model, torture, fuzzing, soak)')"

# The postgres backend's specs (spec/conformance_spec.lua, spec/pg_spec.lua) run against a
# throwaway PostgreSQL cluster in a temporary directory, started here for every step and
# stopped at the end; where it cannot start, they report pending.
pgdir=$(mktemp -d /tmp/waithandles-pg.XXXXXX)
if WH_PG_CONNINFO=$(scripts/pg-cluster.sh start "$pgdir" 2>"$log/pg-cluster.log"); then
    WH_PG_DIR=$pgdir
    export WH_PG_CONNINFO WH_PG_DIR
    trap 'scripts/pg-cluster.sh stop "$pgdir"' EXIT
    echo "PostgreSQL: a throwaway cluster at $WH_PG_CONNINFO"
else
    echo "PostgreSQL did not start; the postgres specs are pending:"
    tail -3 "$log/pg-cluster.log"
    unset WH_PG_CONNINFO
    rm -rf "$pgdir"
fi
step "C unit and process tests (gcc)" $MAKE -s --no-print-directory test-c
# The nginx specs (spec/openresty*_spec.lua) need nginx, its lua module, OpenResty's LuaJIT, curl
# and wrk: installed here as root; where they cannot be, those specs are pending and say why.
scripts/deps-openresty.sh --soft
specs 5.4
if [ $ci = 0 ] && command -v luajit >/dev/null 2>&1 && [ -f /usr/include/luajit-2.1/lua.h ]; then
    step "specs (LuaJIT): conformance and postgres" $MAKE -s --no-print-directory test-one \
        LUA_VERSION=luajit BUSTED_ARGS="-o TAP spec/conformance_spec.lua spec/pg_spec.lua"
fi
check "luarocks make into a temporary tree" scripts/check-rockspec.sh
# The main jobs and the benchmark still run (a short benchmark: only that every row produced a
# number is checked, not the figures).
check "make demo-lua: the counter is exact" sh -c "$MAKE -s --no-print-directory demo-lua | grep -q 'EXACT'"
check "make demo: waithandle -s 2 keeps its limit" sh -c "$MAKE -s --no-print-directory demo | grep -q 'LIMIT HELD'"
check "doc/waithandle.1: no groff warning" sh -c '[ -z "$(groff -Tutf8 -ww -man -z doc/waithandle.1 2>&1)" ]'
step "make bench-quick: every row has a number" $MAKE -s --no-print-directory bench-quick
if [ -n "${WH_PG_CONNINFO:-}" ]; then
    check "bench/pg.lua: every row has a number" sh -c 'BENCH_ROUNDS=3 \
        LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/5.4/?.so;;" lua5.4 bench/pg.lua |
        grep -Ec "^\| .*[0-9] (µs|ms) \| [0-9.]+ (/ [0-9.]+ )?(µs|ms) \|$" | grep -qx 3'
fi

if [ $ci = 1 ]; then
    for v in 5.1 5.2 5.3 luajit; do
        specs $v
    done
    step "one core.so for the 5.1 ABI: PUC 5.1 and LuaJIT, installed in either order" scripts/check-abi51.sh
    check "clang -Wall -Wextra -Werror build" $MAKE -s --no-print-directory CC=clang BUILD=build/clang all build/clang/whtest.so build/clang/whfloor.so \
        build/clang/whbench.so build/clang/whcpair
    step "C tests under ASan+UBSan (clang)" $MAKE -s --no-print-directory CC=clang SANFLAGS="$SAN_EXE" test-c
    step "specs (Lua 5.4) under ASan+UBSan" env LD_PRELOAD="$ASAN_RT" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        $MAKE -s --no-print-directory test-one CC=clang BUILD=build/asan SANFLAGS="$SAN" BUSTED_ARGS="-o TAP"
    # Finalisers at the worst moments: a collection cycle always in progress (spec/helpers.lua).
    step "specs (Lua 5.4) under GC stress" env WH_GCSTRESS=1 $MAKE -s --no-print-directory test-one BUSTED_ARGS="-o TAP"
    step "specs (Lua 5.1) under GC stress" env WH_GCSTRESS=1 $MAKE -s --no-print-directory test-one LUA_VERSION=5.1 BUSTED_ARGS="-o TAP"
    # The C hosts of examples/embed (spec/hosts_embed_spec.lua runs them plain): lua_States in
    # threads of one process under ThreadSanitizer, and a host whose lua_close releases a
    # script's hold under AddressSanitizer+UBSan.
    check "clang -Werror build of libwaithandles.a and the C hosts" $MAKE -s --no-print-directory \
        CC=clang BUILD=build/clang static embed
    check "C host: lua_States in 8 threads under ThreadSanitizer" sh -c "$MAKE -s --no-print-directory \
        CC=clang BUILD=build/tsan SANFLAGS='-fsanitize=thread -fno-omit-frame-pointer' embed && \
        mkdir -p '$log/tsan' && WAITHANDLES_DIR='$log/tsan/locks' TSAN_OPTIONS=halt_on_error=1 \
        build/tsan/embed/threads 8 100"
    # The 5.1 ABI (PUC 5.1 and LuaJIT) has a yieldability check of its own (csrc/lcore.c).
    check "C host (Lua 5.1 ABI): lua_States in 8 threads under ThreadSanitizer" sh -c "$MAKE -s \
        --no-print-directory CC=clang LUA_VERSION=5.1 BUILD=build/tsan-5.1 \
        SANFLAGS='-fsanitize=thread -fno-omit-frame-pointer' embed && mkdir -p '$log/tsan-5.1' && \
        WAITHANDLES_DIR='$log/tsan-5.1/locks' TSAN_OPTIONS=halt_on_error=1 build/tsan-5.1/embed/threads 8 100"
    check "C host: scripts and lua_close under ASan+UBSan" sh -c "$MAKE -s --no-print-directory \
        CC=clang BUILD=build/asan-embed SANFLAGS='$SAN_EXE' embed && mkdir -p '$log/asan-embed' && \
        cd examples/embed && WAITHANDLES_DIR='$log/asan-embed/locks' COUNTER_FILE='$log/asan-embed/n' \
        ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        ../../build/asan-embed/embed/host counter.lua leave.lua after.lua && \
        WAITHANDLES_DIR='$log/asan-embed/locks' ASAN_OPTIONS=abort_on_error=1 \
        ../../build/asan-embed/embed/threads 4 50"
    VG="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"
    step "C tests under valgrind memcheck" $MAKE -s --no-print-directory test-c RUNNER="$VG"
    step "specs (Lua 5.4) under valgrind memcheck (boundary, lock, upgrade)" \
        $MAKE -s --no-print-directory test-one RUNNER="$VG" BUSTED_ARGS="-o TAP spec/boundary_spec.lua spec/lock_spec.lua spec/upgrade_spec.lua"
    step "protocol model (spin)" $MAKE -s --no-print-directory model
    # The evidence of torture/README.md, fuzz/README.md and scripts/soak.lua.
    step "torture (${TORTURE_SECONDS:-120} s; 5.4, 5.1, LuaJIT; kills, stops, unlinks)" \
        $MAKE -s --no-print-directory torture DURATION="${TORTURE_SECONDS:-120}"
    figures "torture (${TORTURE_SECONDS:-120} s; 5.4, 5.1, LuaJIT; kills, stops, unlinks)" \
        '/^\(critical\|kills\|stops\|unlinks\|lost\|witness\|deadlines\|fencing\|violations\)/p'
    # The torture's own test: a worker that enters critical sections without the hold is seen.
    check "torture: a planted second holder is reported" sh -c "WH_TORTURE_SABOTAGE=0.02 \
        WH_TORTURE_KILLS=0 WH_TORTURE_STOPS=0 WH_TORTURE_UNLINKS=0 WH_TORTURE_REG_UNLINKS=0 \
        $MAKE -s --no-print-directory torture DURATION=5 2>&1 | grep -q '^not ok - torture.*violations'"
    # And of its fencing-token check: every stale token planted is reported, nothing else is.
    check "torture: planted stale fencing tokens are reported, each" scripts/check-torture-tokens.sh
    step "fuzzing (libFuzzer ${FUZZ_TIME:-60} s per target; the CLI parser)" \
        $MAKE -s --no-print-directory fuzz FUZZ_TIME="${FUZZ_TIME:-60}"
    step "soak (5.4, 5.1, LuaJIT)" $MAKE -s --no-print-directory soak SOAK_VERSIONS="5.4 5.1 luajit"
fi

echo "logs: $log"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
