#!/bin/sh
# Installs what the nginx specs (spec/openresty*_spec.lua) and `make
# bench-openresty` need on Debian 12: nginx with its lua module, OpenResty's
# LuaJIT and its headers (the module is built for it), curl and wrk. As root
# it uses apt-get; otherwise it names the missing packages and stops
# (--soft: says nothing and succeeds, the specs then say what is missing).
set -u
soft=0
[ "${1:-}" = "--soft" ] && soft=1
pkgs="nginx libnginx-mod-http-lua luajit2 libluajit2-5.1-dev curl wrk"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    [ $soft = 1 ] && exit 0
    echo "the OpenResty benchmark needs these Debian packages:$missing" >&2
    echo "install them (sudo apt-get install$missing) and run this again" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The nginx package must not start a server of its own on port 80.
policy=/usr/sbin/policy-rc.d
[ -e $policy ] || { printf '#!/bin/sh\nexit 101\n' >$policy && chmod 0755 $policy && trap 'rm -f $policy' EXIT; }
# shellcheck disable=SC2086
if ! apt-get install -y -q --no-install-recommends $missing >/tmp/waithandles-apt.log 2>&1; then
    apt-get update -q >>/tmp/waithandles-apt.log 2>&1
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >>/tmp/waithandles-apt.log 2>&1 || {
        [ $soft = 1 ] && exit 0
        echo "apt-get failed; see /tmp/waithandles-apt.log" >&2
        tail -20 /tmp/waithandles-apt.log >&2
        exit 1
    }
fi
