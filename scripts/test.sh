# shellcheck shell=bash
# shellcheck disable=SC2164  # build.sh runs with set -e: a failed cd stops it
#
# scripts/test.sh -- the test suite: build, unit tests, then prove over
# t/ against a real nginx (with --asan: the sanitizer nginx of
# scripts/asan.sh).
#
# Sourced by build.sh; uses nginx_bin (lib.sh), ensure_test_pkgs
# (deps.sh), cmd_build (module.sh), cmd_unit (unit.sh), asan_setup,
# asan_env and asan_keep_modules (asan.sh).
# ./build.sh test [--asan] [ARGS...]

cmd_test() {
    local a args=() paths=no asan=

    for a in "$@"; do
        case $a in
            --asan) asan=1 ;;
            -*)     args+=("$a") ;;
            *)      args+=("$a"); paths=yes ;;
        esac
    done

    if [ -n "$asan" ]; then
        asan_setup
    fi

    cmd_build
    cmd_unit
    ensure_test_pkgs

    cd "$ROOT"

    export IDV_ROOT=$ROOT
    export IDV_MODULE=$MODULE_SO
    export IDV_STORE_PROBE=$PROBE_SO
    IDV_NGINX=$(nginx_bin)
    [ -n "$asan" ] && IDV_NGINX=$OBJS/nginx
    export IDV_NGINX

    if [ -n "$asan" ]; then
        asan_env
        [ -n "${IDV_ASAN_KEEP_MODULES:-}" ] && IDV_NGINX=$(asan_keep_modules)
        say "build.sh: testing $IDV_NGINX (ASan, UBSan)"
    fi

    if [ $paths = yes ]; then
        exec prove -j2 -It/lib ${args[@]+"${args[@]}"}
    fi

    exec prove -r -j2 -It/lib ${args[@]+"${args[@]}"} t/
}
