#!/bin/sh
# Installs what `make test`, `make demo` and `make bench` need on Debian 12.
# As root it uses apt-get; otherwise it names the missing packages and stops.
# Under CI=true it also installs every Lua version, clang's sanitizer runtime,
# luarocks and spin.
set -u
# shellcheck source=scripts/pkgs.sh
. "$(dirname "$0")/pkgs.sh"
quiet=0
[ "${1:-}" = "--quiet" ] && quiet=1

pkgs="make gcc clang lua5.4 liblua5.4-dev lua-busted luarocks strace groff-base"
pkgs="$pkgs libpq-dev postgresql-15 luajit2 libluajit2-5.1-dev" # the postgres backend, its specs on 5.4 and LuaJIT
# The hosts of spec/hosts_*_spec.lua: LÖVE (on the LuaJIT build of the module), cqueues, luv,
# and the C host of examples/embed, linked with every Lua's static library.
pkgs="$pkgs love libluajit2-5.1-dev lua-cqueues lua-luv"
pkgs="$pkgs liblua5.1-0-dev liblua5.2-dev liblua5.3-dev"
if [ "${CI:-}" = "true" ]; then
    pkgs="$pkgs lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev"
    pkgs="$pkgs libclang-rt-14-dev spin valgrind"
    pkgs="$pkgs nginx libnginx-mod-http-lua curl wrk" # spec/openresty_spec.lua
    pkgs="$pkgs xvfb xauth libgl1-mesa-dri" # spec/hosts_love_spec.lua: LÖVE with its window
fi

# Extra packages a make target needs (make fuzz, make torture set it).
pkgs="$pkgs ${WH_DEPS_EXTRA:-}"

# shellcheck disable=SC2086
pkgs_missing $pkgs
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    pkgs_needed waithandles
    exit 1
fi
[ $quiet = 1 ] || echo "installing:$missing"
pkgs_install || { pkgs_failed; exit 1; }
