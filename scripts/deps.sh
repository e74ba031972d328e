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

    # keep package scripts from starting services (nginx on port 80)
    local policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
    fi

    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
        </dev/null >/dev/null || rc=$?

    [ -n "$policy" ] && rm -f "$policy"
    [ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed"
}


ensure_test_pkgs() {
    local pkgs=(openssl perl libio-socket-ssl-perl redis-server)

    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    ensure_pkgs "${pkgs[@]}"
}
