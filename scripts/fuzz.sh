# shellcheck shell=bash
#
# scripts/fuzz.sh -- the libFuzzer targets t/fuzz/fuzz_*.c: built with
# clang, ASan and UBSan (with cJSON from Debian's source), run in
# parallel on copies of their seed corpora, summed up in a table; any
# crash fails (docs/hardening.md).
#
# Sourced by build.sh; uses newer and CORE_SRCS (lib.sh), ensure_pkgs
# (deps.sh), apt_source (debsrc.sh).  ./build.sh fuzz [SECONDS] [TARGET...]

# libFuzzer targets t/fuzz/fuzz_*.c, each linked with the pure core; a
# failed check in a target aborts, which libFuzzer records as a crash
FUZZ_CFLAGS="-std=gnu99 -g -O1 -fno-omit-frame-pointer
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
    -W -Wall -Wno-unused-parameter -Werror -Ingx_http_idv_module -It/fuzz"
FUZZ_LIBS="-lcrypto"
FUZZ=$BUILD/fuzz

# the scripts that hold the flags and the list of sources: when one
# changes, every target is rebuilt
FUZZ_SCRIPTS=("$ROOT/scripts/lib.sh" "$ROOT/scripts/fuzz.sh")


# fetch_cjson_source: Debian's source of the cJSON installed here (its
# security patches applied by dpkg-source), unpacked once under
# build/cjson-src/; prints the tree.  The fuzzers compile cJSON.c with
# their own instrumentation: libFuzzer then sees the parser's branches,
# and ASan sees its reads of the (not NUL-terminated) input.
fetch_cjson_source() {
    local ver dir=$BUILD/cjson-src tree

    ver=$(dpkg-query -W -f='${Version}' libcjson-dev)
    tree=$dir/$ver

    if [ -f "$tree/cJSON.c" ]; then
        printf '%s\n' "$tree"
        return 0
    fi

    ensure_pkgs dpkg-dev >&2
    say "build.sh: fetching Debian's cjson $ver source" >&2

    rm -rf "$dir/tmp"

    # the installed revision, or the main suite's when that one is not
    # indexed there (same upstream 1.7.15)
    if apt-cache -o Dir::Etc::SourceList="$APT_SRC/sources.list" \
           -o Dir::Etc::SourceParts="$APT_SRC/parts" \
           -o Dir::State::Lists="$APT_SRC/lists" \
           showsrc "cjson=$ver" 2>/dev/null | grep -q '^Package: cjson'
    then
        apt_source "$dir/tmp" "cjson=$ver"
    else
        apt_source "$dir/tmp" cjson
    fi

    set -- "$dir"/tmp/cjson-*/cJSON.c
    [ -f "$1" ] || die "apt-get source cjson=$ver brought no cJSON.c"

    rm -rf "$tree"
    mv "$(dirname "$1")" "$tree"
    rm -rf "$dir/tmp"

    printf '%s\n' "$tree"
}


# fuzz_build NAME...: build/fuzz/bin/NAME from t/fuzz/NAME.c
fuzz_build() {
    local cc name src srcs=() deps=() f cjson

    cc=$(command -v clang || command -v clang-14) \
        || die "clang is missing"

    cjson=$(fetch_cjson_source)
    mkdir -p "$FUZZ/include/cjson"
    cmp -s "$cjson/cJSON.h" "$FUZZ/include/cjson/cJSON.h" \
        || cp "$cjson/cJSON.h" "$FUZZ/include/cjson/cJSON.h"

    for f in $CORE_SRCS; do
        [ -f "$ROOT/$f" ] && srcs+=("$ROOT/$f")
    done
    srcs+=("$cjson/cJSON.c")
    for f in "$ROOT"/ngx_http_idv_module/*.h "$ROOT"/t/fuzz/*.h \
             "$FUZZ/include/cjson/cJSON.h"
    do
        [ -f "$f" ] && deps+=("$f")
    done

    mkdir -p "$FUZZ/bin"

    for name in "$@"; do
        src=$ROOT/t/fuzz/$name.c
        if newer "$FUZZ/bin/$name" "$src" "${srcs[@]}" \
                 ${deps[@]+"${deps[@]}"} "${FUZZ_SCRIPTS[@]}"
        then
            say "build.sh: building $name"
            # shellcheck disable=SC2086
            (cd "$ROOT" && "$cc" $FUZZ_CFLAGS -I"$FUZZ/include" \
                 -o "$FUZZ/bin/$name.tmp" \
                 "$src" "${srcs[@]}" $FUZZ_LIBS) \
                || die "cannot build t/fuzz/$name.c"
            mv -f "$FUZZ/bin/$name.tmp" "$FUZZ/bin/$name"
        fi
    done
}


# fuzz_run NAME SECONDS: target fuzz_NAME on a fresh copy of its seed
# corpus t/fuzz/corpus/NAME (which stays as it is); new inputs go to
# build/fuzz/corpus/NAME
fuzz_run() {
    local name=$1 secs=$2 seeds=$ROOT/t/fuzz/corpus/${1#fuzz_} rc=0
    local work=$FUZZ/corpus/${1#fuzz_}

    rm -rf "$work"
    mkdir -p "$work" "$FUZZ/artifacts"
    [ -d "$seeds" ] || die "no seed corpus $seeds"
    cp -pR "$seeds"/. "$work"/

    (
        cd "$FUZZ"
        # the sanitizer settings of the caller (a test run) do not apply
        ASAN_OPTIONS=detect_leaks=1 \
        UBSAN_OPTIONS=print_stacktrace=1 \
        LSAN_OPTIONS= \
        exec "bin/$name" -max_total_time="$secs" -print_final_stats=1 \
             -timeout=10 -rss_limit_mb=2048 \
             -artifact_prefix="artifacts/$name-" "$work"
    ) < /dev/null > "$FUZZ/$name.log" 2>&1 || rc=$?

    printf '%s\n' "$rc" > "$FUZZ/$name.rc"
}


# fuzz_stats NAME: "executions coverage features corpus" from the log
fuzz_stats() {
    awk '
        / DONE / || /^#[0-9]+/ {
            for (i = 1; i <= NF; i++) {
                if ($i == "cov:") cov = $(i + 1)
                if ($i == "ft:") ft = $(i + 1)
                if ($i == "corp:") corp = $(i + 1)
            }
        }
        /^stat::number_of_executed_units:/ { execs = $2 }
        END { printf "%s %s %s %s\n", execs ? execs : "?", cov ? cov : "?",
                     ft ? ft : "?", corp ? corp : "?" }' "$FUZZ/$1.log"
}


cmd_fuzz() {
    local secs=30 names=() name f jobs running=0 failed=() stats
    local start

    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
        secs=$1
        shift
    fi

    if [ $# -gt 0 ]; then
        for name in "$@"; do
            names+=("fuzz_${name#fuzz_}")
        done
    else
        for f in "$ROOT"/t/fuzz/fuzz_*.c; do
            [ -f "$f" ] && names+=("$(basename "$f" .c)")
        done
    fi

    [ ${#names[@]} -gt 0 ] || die "no fuzz targets in t/fuzz/"

    for name in "${names[@]}"; do
        [ -f "$ROOT/t/fuzz/$name.c" ] || die "no fuzz target t/fuzz/$name.c"
    done

    ensure_pkgs clang libclang-rt-14-dev libcjson-dev libssl-dev

    mkdir -p "$FUZZ"
    exec 8> "$FUZZ/.lock"
    flock -n 8 || die "another ./build.sh fuzz runs in this tree"

    fuzz_build "${names[@]}"

    jobs=${IDV_FUZZ_JOBS:-$(nproc)}
    say "build.sh: fuzzing ${#names[@]} targets for ${secs}s each," \
        "$jobs at a time"
    start=$(date +%s)

    for name in "${names[@]}"; do
        rm -f "$FUZZ/$name.rc"
        if [ $running -ge "$jobs" ]; then
            wait -n || true
            running=$((running - 1))
        fi
        fuzz_run "$name" "$secs" &
        running=$((running + 1))
    done
    wait || true

    say ""
    printf '%-18s %6s %12s %6s %7s %6s\n' target result executions cov \
        features corpus
    for name in "${names[@]}"; do
        stats=$(fuzz_stats "$name")
        # shellcheck disable=SC2086
        set -- $stats
        if [ "$(cat "$FUZZ/$name.rc" 2>/dev/null)" = 0 ]; then
            printf '%-18s %6s %12s %6s %7s %6s\n' "$name" ok "$1" "$2" "$3" "$4"
        else
            printf '%-18s %6s %12s %6s %7s %6s\n' "$name" FAIL "$1" "$2" "$3" "$4"
            failed+=("$name")
        fi
    done
    say "($(( $(date +%s) - start ))s; logs in $FUZZ/)"

    exec 8>&-

    if [ ${#failed[@]} -gt 0 ]; then
        for name in "${failed[@]}"; do
            say "" >&2
            say "--- $name ($FUZZ/$name.log)" >&2
            grep -v '^#[0-9]' "$FUZZ/$name.log" | tail -n 40 >&2
            ls "$FUZZ/artifacts/$name-"* 2>/dev/null >&2 || true
        done
        die "fuzzing found a crash in: ${failed[*]} (fix it, then add the" \
            "input to t/fuzz/corpus/TARGET/ as regress-WHAT)"
    fi
}
