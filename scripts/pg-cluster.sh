#!/bin/sh
# A throwaway PostgreSQL cluster for the tests of the postgres backend.
#   scripts/pg-cluster.sh start DIR   initdb in DIR, start it (Unix socket in DIR, a free port on
#                                     127.0.0.1), print the conninfo on stdout
#   scripts/pg-cluster.sh stop DIR    stop it and remove DIR
#   scripts/pg-cluster.sh restart DIR stop it (fast) and start it again on the same port
# PostgreSQL refuses to run as root: as root the cluster runs as `nobody` (setpriv), which owns
# DIR. Exits 3 (and says why on stderr) where PostgreSQL cannot start: no binaries, no setpriv.
set -u
# Not for the server: a sanitizer runtime preloaded into the tests' interpreter.
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|restart DIR" >&2; exit 2; }

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && bindir=$d
    done
fi
[ -n "$bindir" ] && [ -x "$bindir/pg_ctl" ] || { echo "PostgreSQL server binaries not found (install postgresql-15)" >&2; exit 3; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        command -v setpriv >/dev/null 2>&1 || { echo "setpriv not found" >&2; exit 3; }
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}

free_port() {
    # The kernel picks an unused port; a race with another process is unlikely and fails loudly.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        p=$(( ($(od -An -N2 -tu2 /dev/urandom) % 20000) + 20000 ))
        if ! (ss -ltn 2>/dev/null || netstat -ltn 2>/dev/null) | grep -q ":$p "; then
            echo "$p"
            return
        fi
    done
    echo 25432
}

start() {
    port=$1
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 -o \
        "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >"$dir/pg_ctl.out" 2>&1 || { cat "$dir/pg_ctl.out" "$dir/log" >&2; exit 3; }
    echo "$port" >"$dir/port"
}

case $cmd in
start)
    mkdir -p "$dir" || exit 3
    chmod 0755 "$dir"
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$dir"
    (cd "$dir" && as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
        --no-sync >"$dir/initdb.out" 2>&1) || { cat "$dir/initdb.out" >&2; exit 3; }
    start "$(free_port)"
    echo "postgresql://postgres@/postgres?host=$dir&port=$(cat "$dir/port")"
    ;;
restart)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
    start "$(cat "$dir/port")"
    ;;
stop)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop|restart DIR" >&2
    exit 2
    ;;
esac
