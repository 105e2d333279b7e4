#!/bin/sh
# `luarocks make` of the rockspec into a temporary tree, then a require from it. The rockspec
# builds without -fvisibility=hidden: the module must still export nothing but its entry point.
set -eu
tree=$(mktemp -d /tmp/waithandles-rocks.XXXXXX)
trap 'rm -rf "$tree"' EXIT
luarocks --lua-version 5.4 make --tree "$tree" waithandles-*.rockspec >"$tree.log" 2>&1 || { cat "$tree.log"; exit 1; }
rm -f "$tree.log"
LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua" LUA_CPATH="$tree/lib/lua/5.4/?.so" \
    T="$tree" lua5.4 -e 'local wh = require "waithandles"; assert(wh._VERSION:match("^waithandles "))
               assert(package.searchpath("waithandles.core", package.cpath):find(os.getenv("T"), 1, true))' 
exported=$(nm -D --defined-only "$tree/lib/lua/5.4/waithandles/core.so" | awk '$2 ~ /^[A-Z]$/ { print $3 }')
[ "$exported" = luaopen_waithandles_core ] || {
    echo "core.so exports more than luaopen_waithandles_core:" $exported
    exit 1
}
