# shellcheck shell=bash
# shellcheck disable=SC2034  # its variables are read by the other parts
#
# scripts/lib.sh -- what every part of ./build.sh shares: the paths, the
# output directory of a build, the pure core's sources, messages, and two
# small helpers (is a target stale; which nginx runs the module).
#
# Sourced by build.sh (which sets ROOT) before the other scripts/*.sh.
# Like them, it only defines functions and variables: build.sh runs the
# command.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BUILD=$ROOT/build

# where a build goes: objs/, the module, configure stamp and log; the
# sanitizer build has its own (build/asan/) so that it never replaces the
# module a normal test run loads
set_out() {
    OUT=$1
    OBJS=$OUT/objs
    MODULE_SO=$OUT/ngx_http_idv_module.so
    # a test module of the store's (t/store/), loaded only by its test
    PROBE_SO=$OUT/ngx_http_idv_store_probe_module.so
}

set_out "$BUILD"
SYSTEM_NGINX=/usr/sbin/nginx
SYSTEM_NGINX_SRC=/usr/share/nginx/src

# The pure core: sources that compile without nginx.  Each unit test in
# t/unit/test_*.c is linked with those of them that exist.
CORE_SRCS="
    ngx_http_idv_module/ngx_http_idv_sign.c
    ngx_http_idv_module/ngx_http_idv_ops.c
    ngx_http_idv_module/ngx_http_idv_ops_table.c
    ngx_http_idv_module/ngx_http_idv_request.c
    ngx_http_idv_module/ngx_http_idv_token.c
    ngx_http_idv_module/ngx_http_idv_verify.c
    ngx_http_idv_module/ngx_http_idv_siphash.c
    ngx_http_idv_module/ngx_http_idv_json.c
"


say() { printf '%s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }


# newer TARGET DEP...: true if TARGET is missing or older than a DEP
newer() {
    local target=$1 dep
    shift

    [ -e "$target" ] || return 0
    for dep in "$@"; do
        [ "$dep" -nt "$target" ] && return 0
    done
    return 1
}


# the nginx binary that runs the module
nginx_bin() {
    if [ -n "${IDV_NGINX:-}" ]; then
        printf '%s\n' "$IDV_NGINX"
    elif [ -n "${NGINX_SRC:-}" ]; then
        printf '%s\n' "$OBJS/nginx"
    else
        printf '%s\n' "$SYSTEM_NGINX"
    fi
}
