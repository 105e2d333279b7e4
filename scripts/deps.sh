#!/bin/sh
# Installs what `make test`, `make demo` and `make bench` need on Debian 12.
# As root it uses apt-get; otherwise it names the missing packages and stops.
# Under CI=true it also installs every Lua version, clang's sanitizer runtime,
# luarocks and spin.
set -u
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

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "waithandles needs these Debian packages:$missing" >&2
    echo "install them (sudo apt-get install$missing) and run this again" >&2
    exit 1
fi
[ $quiet = 1 ] || echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! apt-get install -y -q --no-install-recommends $missing >/tmp/waithandles-apt.log 2>&1; then
    apt-get update -q >>/tmp/waithandles-apt.log 2>&1
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >>/tmp/waithandles-apt.log 2>&1 || {
        echo "apt-get failed; see /tmp/waithandles-apt.log" >&2
        tail -20 /tmp/waithandles-apt.log >&2
        exit 1
    }
fi
