#!/bin/sh
# `luarocks make` of the rockspec into a temporary tree, then a require from it.
set -eu
tree=$(mktemp -d /tmp/waithandles-rocks.XXXXXX)
trap 'rm -rf "$tree"' EXIT
luarocks --lua-version 5.4 make --tree "$tree" waithandles-*.rockspec >"$tree.log" 2>&1 || { cat "$tree.log"; exit 1; }
rm -f "$tree.log"
LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua" LUA_CPATH="$tree/lib/lua/5.4/?.so" \
    T="$tree" lua5.4 -e 'local wh = require "waithandles"; assert(wh._VERSION:match("^waithandles "))
               assert(package.searchpath("waithandles.core", package.cpath):find(os.getenv("T"), 1, true))' 
