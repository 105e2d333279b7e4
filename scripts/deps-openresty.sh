#!/bin/sh
# Installs what the nginx specs (spec/openresty*_spec.lua) and `make
# bench-openresty` need on Debian 12: nginx with its lua module, OpenResty's
# LuaJIT and its headers (the module is built for it), curl and wrk. As root
# it uses apt-get; otherwise it names the missing packages and stops
# (--soft: says nothing and succeeds, the specs then say what is missing).
set -u
# shellcheck source=scripts/pkgs.sh
. "$(dirname "$0")/pkgs.sh"
soft=0
[ "${1:-}" = "--soft" ] && soft=1
pkgs_missing nginx libnginx-mod-http-lua luajit2 libluajit2-5.1-dev curl wrk
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    [ $soft = 1 ] && exit 0
    pkgs_needed "the OpenResty benchmark"
    exit 1
fi
# The nginx package must not start a server of its own on port 80.
policy=/usr/sbin/policy-rc.d
[ -e $policy ] || { printf '#!/bin/sh\nexit 101\n' >$policy && chmod 0755 $policy && trap 'rm -f $policy' EXIT; }
pkgs_install || { [ $soft = 1 ] && exit 0; pkgs_failed; exit 1; }
