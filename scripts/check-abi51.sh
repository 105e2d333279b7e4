#!/bin/sh
# PUC Lua 5.1 and LuaJIT share the 5.1 ABI directory (lib/lua/5.1), so one core.so there must
# load in both: install one, then the other, into one prefix, and use the module from both
# interpreters (a yield in a coroutine; a wait inside pcall); then the other order. TAP lines.
set -u
MAKE=${MAKE:-make}
for lua in lua5.1 luajit; do
    command -v $lua >/dev/null 2>&1 || { echo "ok - skipped: $lua is not installed"; exit 0; }
done
tmp=$(mktemp -d /tmp/waithandles-abi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
n=0
for order in "5.1 luajit" "luajit 5.1"; do
    prefix="$tmp/$(echo "$order" | tr ' ' '-')"
    for v in $order; do
        $MAKE -s --no-print-directory install PREFIX="$prefix" LUA_VERSION=$v BUILD="build/abi-$v" \
            >"$tmp/log" 2>&1 || { cat "$tmp/log"; echo "not ok - make install LUA_VERSION=$v"; exit 1; }
    done
    for lua in lua5.1 luajit; do
        n=$((n + 1))
        if LUA_PATH="$prefix/share/lua/5.1/?.lua;$prefix/share/lua/5.1/?/init.lua" \
            LUA_CPATH="$prefix/lib/lua/5.1/?.so" WAITHANDLES_DIR="$tmp/locks" $lua -e '
            local wh = require "waithandles"
            local l = wh.lock("abi")
            local held = assert(l:try_acquire())
            local co = coroutine.create(function() return l:acquire_async(5) end)
            local ok, v = coroutine.resume(co)
            assert(ok and type(v) == "number", "it did not yield: " .. tostring(v))
            held:release()
            while coroutine.status(co) ~= "dead" do ok, v = coroutine.resume(co) assert(ok, v) end
            assert(v:is_held())
            v:release()
            -- Inside pcall: LuaJIT yields, PUC 5.1 takes the blocking wait; neither fails.
            co = coroutine.create(function() return select(2, assert(pcall(l.acquire_async, l, 5))) end)
            ok, v = coroutine.resume(co)
            assert(ok and coroutine.status(co) == "dead" and v:is_held(), tostring(v))
            v:release()' >"$tmp/log" 2>&1; then
            echo "ok $n - installed $order, used from $lua"
        else
            cat "$tmp/log"
            echo "not ok $n - installed $order, used from $lua"
        fi
    done
done
