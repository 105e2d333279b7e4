# shellcheck shell=sh
# Sourced by deps.sh and deps-openresty.sh: which Debian packages are missing,
# and installing them with apt-get.

# Sets $missing to those of the packages named that are not installed (" a b", or "").
pkgs_missing() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
}

# Says that $1 (who) needs $missing, and how to install them.
pkgs_needed() {
    echo "$1 needs these Debian packages:$missing" >&2
    echo "install them (sudo apt-get install$missing) and run this again" >&2
}

# Installs $missing (as root), updating the package lists if the first try fails. Returns 1 if
# it still fails; pkgs_failed then says so.
pkgs_install() {
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/tmp/waithandles-apt.log 2>&1 && return 0
    apt-get update -q >>/tmp/waithandles-apt.log 2>&1
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >>/tmp/waithandles-apt.log 2>&1
}

pkgs_failed() {
    echo "apt-get failed; see /tmp/waithandles-apt.log" >&2
    tail -20 /tmp/waithandles-apt.log >&2
}
