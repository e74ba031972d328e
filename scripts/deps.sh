# shellcheck shell=bash
#
# scripts/deps.sh -- Debian packages: install those a command needs and
# lacks (apt-get, as root; otherwise say what to install).
#
# Sourced by build.sh (and bench/lib/prepare.sh); uses say and die.

APT_UPDATED=

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed$'
}


# ensure_pkgs PKG...: install those that are missing (root only)
ensure_pkgs() {
    local missing=() p

    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done

    [ ${#missing[@]} -eq 0 ] && return 0

    if [ "$(id -u)" -ne 0 ]; then
        die "missing packages: ${missing[*]} (run as root, or:" \
            "sudo apt-get install ${missing[*]})"
    fi

    say "installing ${missing[*]}"

    if [ -z "$APT_UPDATED" ]; then
        apt-get update -q >/dev/null
        APT_UPDATED=1
    fi

    without_services env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q "${missing[@]}" </dev/null >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}


# without_services CMD...: run CMD (apt-get, dpkg) with a policy-rc.d
# that keeps package scripts from starting or reloading services (nginx
# on port 80), unless the machine has one of its own
without_services() {
    local policy='' rc=0

    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
    fi

    "$@" || rc=$?

    [ -n "$policy" ] && rm -f "$policy"
    return $rc
}


ensure_test_pkgs() {
    local pkgs=(openssl perl libio-socket-ssl-perl redis-server)

    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    ensure_pkgs "${pkgs[@]}"
}
