# shellcheck shell=bash
# shellcheck disable=SC2164  # build.sh runs with set -e: a failed cd stops it
#
# scripts/unit.sh -- the C unit tests: each t/unit/test_*.c linked with
# the pure core ($CORE_SRCS), built into build/unit/ (run by t/00-unit.t).
#
# Sourced by build.sh; uses newer and CORE_SRCS (lib.sh), ensure_pkgs
# (deps.sh).  ./build.sh unit

UNIT_CFLAGS="-std=gnu99 -O1 -g -W -Wall -Wpointer-arith -Wno-unused-parameter
    -Werror -Ingx_http_idv_module"
UNIT_LIBS="-lcjson -lcrypto"

# the scripts that hold the flags and the list of sources: when one
# changes, everything is rebuilt
UNIT_SCRIPTS=("$ROOT/scripts/lib.sh" "$ROOT/scripts/unit.sh")


cmd_unit() {
    local srcs=() objs=() headers=() f name obj bin

    ensure_pkgs gcc libcjson-dev libssl-dev

    cd "$ROOT"
    mkdir -p "$BUILD/unit/obj"

    for f in $CORE_SRCS; do
        [ -f "$f" ] && srcs+=("$f")
    done
    for f in ngx_http_idv_module/*.h t/unit/*.h; do
        [ -f "$f" ] && headers+=("$f")
    done

    for f in ${srcs[@]+"${srcs[@]}"}; do
        name=$(basename "$f" .c)
        obj=$BUILD/unit/obj/$name.o
        if newer "$obj" "$f" ${headers[@]+"${headers[@]}"} \
                 "${UNIT_SCRIPTS[@]}"
        then
            # shellcheck disable=SC2086
            gcc $UNIT_CFLAGS -c -o "$obj" "$f"
        fi
        objs+=("$obj")
    done

    # binaries whose test source is gone
    for bin in "$BUILD"/unit/test_*; do
        [ -f "$bin" ] || continue
        [ -f "t/unit/$(basename "$bin").c" ] || rm -f "$bin"
    done

    local n=0
    for f in t/unit/test_*.c; do
        [ -f "$f" ] || continue
        name=$(basename "$f" .c)
        bin=$BUILD/unit/$name
        if newer "$bin" "$f" ${objs[@]+"${objs[@]}"} \
                 ${headers[@]+"${headers[@]}"} "${UNIT_SCRIPTS[@]}"
        then
            # shellcheck disable=SC2086
            gcc $UNIT_CFLAGS -o "$bin" "$f" ${objs[@]+"${objs[@]}"} \
                $UNIT_LIBS
        fi
        n=$((n + 1))
    done

    say "build.sh: $n unit test binaries in $BUILD/unit"
}
