#!/bin/sh
# `luarocks make` of the rockspec into a temporary tree, then a require from it and a run of the
# installed command-line tool. The rockspec builds without -fvisibility=hidden: each module must
# still export nothing but its entry point.
set -eu
tree=$(mktemp -d /tmp/waithandles-rocks.XXXXXX)
trap 'rm -rf "$tree"' EXIT
luarocks --lua-version 5.4 make --tree "$tree" waithandles-*.rockspec >"$tree.log" 2>&1 || { cat "$tree.log"; exit 1; }
rm -f "$tree.log"
LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua" LUA_CPATH="$tree/lib/lua/5.4/?.so" \
    T="$tree" lua5.4 -e 'local wh = require "waithandles"; assert(wh._VERSION:match("^waithandles "))
               assert(package.searchpath("waithandles.core", package.cpath):find(os.getenv("T"), 1, true))' 
for m in core proc; do
    exported=$(nm -D --defined-only "$tree/lib/lua/5.4/waithandles/$m.so" | awk '$2 ~ /^[A-Z]$/ { print $3 }')
    [ "$exported" = "luaopen_waithandles_$m" ] || {
        echo "$m.so exports more than luaopen_waithandles_$m:" $exported
        exit 1
    }
done
# install.bin: the tool runs from the tree, with the tree's module.
version=$(env -u LUA_PATH -u LUA_CPATH "$tree/bin/waithandle" --version)
case $version in "waithandle (waithandles "*) ;; *) echo "bin/waithandle --version: $version"; exit 1 ;; esac
rc=0
env -u LUA_PATH -u LUA_CPATH "$tree/bin/waithandle" --dir "$tree/locks" job -- sh -c 'exit 3' || rc=$?
[ "$rc" = 3 ] || { echo "bin/waithandle job -- sh -c 'exit 3' exited $rc"; exit 1; }
