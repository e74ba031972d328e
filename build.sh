#!/usr/bin/env bash
#
# Build, test and demo ngx_http_idv_module.
#
#   ./build.sh [build]          build build/ngx_http_idv_module.so
#   ./build.sh unit             build the C unit tests into build/unit/
#   ./build.sh test [ARGS...]   build, unit, then prove (ARGS: prove
#                               options and/or test files; default t/)
#   ./build.sh test --asan [ARGS...]
#                               the same against nginx 1.22.1 built from
#                               Debian's source with ASan and UBSan (and
#                               the module with the same flags), in
#                               build/asan/; any sanitizer report fails
#   ./build.sh asan             only build that nginx and module
#   ./build.sh fuzz [SECONDS] [TARGET...]
#                               build the libFuzzer targets
#                               t/fuzz/fuzz_TARGET.c (clang, ASan, UBSan)
#                               and run each (default: all) for SECONDS
#                               (default 30) on a copy of its seed corpus
#                               t/fuzz/corpus/TARGET; any crash fails
#   ./build.sh demo [stop]      start (or stop) nginx with the module on
#                               127.0.0.1:8080 in front of the mock API
#
# Environment:
#   NGINX_SRC=DIR        build against a full nginx source tree instead of
#                        Debian's nginx-dev; the nginx binary is built too
#                        (build/objs/nginx) and is the one tested
#   NGINX_CC_OPT, NGINX_LD_OPT
#                        extra --with-cc-opt/--with-ld-opt (NGINX_SRC only,
#                        e.g. sanitizers)
#   IDV_NGINX            nginx binary for tests (default /usr/sbin/nginx,
#                        or build/objs/nginx with NGINX_SRC)
#   IDV_DEMO_PORT        demo listen port (default 8080)
#   IDV_DEMO_MOCK_PORT   port of the demo's mock API (default 8443)
#   IDV_DEMO_DIR         the demo's files and logs, an absolute path
#                        (default build/demo)
#   IDV_DEMO_NO_CALL=1   the demo prints the example call without making it
#   IDV_KEEP=1           keep the t/tmp/ directories of passing tests
#   IDV_DEBIAN_MIRROR
#                        Debian mirrors for the source packages (nginx for
#                        --asan, cjson for fuzz; default: those apt uses)
#   IDV_FUZZ_JOBS        fuzz targets run at a time (default: nproc)
#   IDV_ASAN_KEEP_MODULES=1
#                        test --asan: nginx never unloads the module, so
#                        leak reports name its frames (debugging only)
#   ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
#   IDV_ENDPOINT         all three set: the demo talks to the real API

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
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
"

UNIT_CFLAGS="-std=gnu99 -O1 -g -W -Wall -Wpointer-arith -Wno-unused-parameter
    -Werror -Ingx_http_idv_module"
UNIT_LIBS="-lcjson -lcrypto"

DEMO=${IDV_DEMO_DIR:-$BUILD/demo}
DEMO_MOCK_PORT=${IDV_DEMO_MOCK_PORT:-8443}


say() { printf '%s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }


# --- packages -------------------------------------------------------------

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

    say "build.sh: installing ${missing[*]}"

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


# --- build ----------------------------------------------------------------

module_signature() {
    strings -a "$1" | grep -E '^[0-9],[0-9],[0-9],[01]{30,}' | head -n 1
}


# what, if it changes, calls for a new configure
build_fingerprint() {
    {
        printf 'src=%s\n' "${NGINX_SRC:-system}"
        if [ -n "${NGINX_SRC:-}" ]; then
            printf 'cc=%s\nld=%s\n' "${NGINX_CC_OPT:-}" "${NGINX_LD_OPT:-}"
        else
            dpkg-query -W -f='${Version}\n' nginx-dev
        fi
        cat "$ROOT/config"
        cat "$ROOT/t/store/config"
        (cd "$ROOT" && ls -1 ngx_http_idv_module/*.c ngx_http_idv_module/*.h \
                           2>/dev/null) || true
    } | sha256sum | cut -d' ' -f1
}


configure_system() {
    local marker=$OUT/.configure-start

    touch "$marker"

    (
        cd "$SYSTEM_NGINX_SRC"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure "${NGX_CONF_FLAGS[@]}" --builddir="$OBJS" \
                    --add-dynamic-module="$ROOT" \
                    --add-dynamic-module="$ROOT/t/store"
    ) > "$OUT/configure.log" 2>&1 \
        || { tail -n 30 "$OUT/configure.log" >&2
             die "configure failed (full log: $OUT/configure.log)"; }

    check_untouched "$marker"
}


# nothing may be written under Debian's /usr/share/nginx/src
check_untouched() {
    local left

    left=$(find "$SYSTEM_NGINX_SRC" -newer "$1" -print 2>/dev/null | head)
    [ -z "$left" ] || die "the build wrote under $SYSTEM_NGINX_SRC:
$left"
}


configure_custom() {
    local extra=()

    [ -x "$NGINX_SRC/configure" ] || [ -x "$NGINX_SRC/auto/configure" ] \
        || die "NGINX_SRC=$NGINX_SRC is not an nginx source tree"
    [ -n "${NGINX_CC_OPT:-}" ] && extra+=("--with-cc-opt=$NGINX_CC_OPT")
    [ -n "${NGINX_LD_OPT:-}" ] && extra+=("--with-ld-opt=$NGINX_LD_OPT")

    (
        cd "$NGINX_SRC"
        cfg=./configure
        [ -x "$cfg" ] || cfg=./auto/configure
        "$cfg" --with-compat --with-http_ssl_module --with-debug \
               --builddir="$OBJS" --add-dynamic-module="$ROOT" \
               --add-dynamic-module="$ROOT/t/store" \
               ${extra[@]+"${extra[@]}"}
    ) > "$OUT/configure.log" 2>&1 \
        || { tail -n 30 "$OUT/configure.log" >&2
             die "configure failed (full log: $OUT/configure.log)"; }
}


cmd_build() {
    local fp stamp=$OUT/.configure-stamp src ref sig_mod sig_ref

    if [ -n "${NGINX_SRC:-}" ]; then
        NGINX_SRC=$(cd "$NGINX_SRC" && pwd) \
            || die "NGINX_SRC=$NGINX_SRC: no such directory"
        src=$NGINX_SRC
        ensure_pkgs binutils gcc make libcjson-dev libssl-dev libpcre2-dev \
                    zlib1g-dev
    else
        src=$SYSTEM_NGINX_SRC
        ensure_pkgs binutils gcc make nginx-core nginx-dev libcjson-dev \
                    libssl-dev
    fi

    mkdir -p "$OUT"
    exec 9> "$OUT/.lock"
    flock 9

    fp=$(build_fingerprint)

    if [ ! -f "$OBJS/Makefile" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$fp" ]
    then
        say "build.sh: configure against $src"
        rm -f "$stamp"
        rm -rf "$OBJS"
        if [ -n "${NGINX_SRC:-}" ]; then
            configure_custom
        else
            configure_system
        fi
        printf '%s\n' "$fp" > "$stamp"
    fi

    local marker=$OUT/.make-start
    touch "$marker"

    if [ -n "${NGINX_SRC:-}" ]; then
        # binary and module: the binary is the one the tests run
        (cd "$src" && make -j"$(nproc)" -f "$OBJS/Makefile" binary modules) \
            || die "make failed"
        ref=$OBJS/nginx
    else
        (cd "$src" && make -j"$(nproc)" -f "$OBJS/Makefile" modules) \
            || die "make failed"
        check_untouched "$marker"
        ref=$SYSTEM_NGINX
    fi

    [ -f "$OBJS/ngx_http_idv_module.so" ] || die "make built no module"

    sig_mod=$(module_signature "$OBJS/ngx_http_idv_module.so")
    sig_ref=$(module_signature "$ref")

    if [ -z "$sig_mod" ] || [ "$sig_mod" != "$sig_ref" ]; then
        die "binary incompatibility: module signature '$sig_mod' differs" \
            "from $ref's '$sig_ref'"
    fi

    # replace, never overwrite in place: a running nginx maps the old file
    cp "$OBJS/ngx_http_idv_module.so" "$MODULE_SO.tmp"
    mv -f "$MODULE_SO.tmp" "$MODULE_SO"
    cp "$OBJS/ngx_http_idv_store_probe_module.so" "$PROBE_SO.tmp"
    mv -f "$PROBE_SO.tmp" "$PROBE_SO"

    exec 9>&-

    say "$MODULE_SO"
    say "load_module $MODULE_SO;"
}


# --- unit tests -----------------------------------------------------------

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
        if newer "$obj" "$f" ${headers[@]+"${headers[@]}"} "$ROOT/build.sh"
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
                 ${headers[@]+"${headers[@]}"} "$ROOT/build.sh"
        then
            # shellcheck disable=SC2086
            gcc $UNIT_CFLAGS -o "$bin" "$f" ${objs[@]+"${objs[@]}"} \
                $UNIT_LIBS
        fi
        n=$((n + 1))
    done

    say "build.sh: $n unit test binaries in $BUILD/unit"
}


# --- test -----------------------------------------------------------------

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


mkcerts() {
    local script=$ROOT/t/lib/mkcerts.sh

    [ -f "$script" ] || die "t/lib/mkcerts.sh is missing"
    if [ -x "$script" ]; then
        "$script" "$@"
    else
        bash "$script" "$@"
    fi
}


ensure_test_pkgs() {
    local pkgs=(openssl perl libio-socket-ssl-perl)

    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    ensure_pkgs "${pkgs[@]}"
}


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


# --- sanitizers -------------------------------------------------------------

# nginx built from Debian's source package with ASan and UBSan; the module
# is compiled with the same flags (NGINX_CC_OPT reaches the addon too)
NGINX_VERSION=1.22.1
NGINX_ORIG=nginx_$NGINX_VERSION.orig.tar.gz
# sha256 of the orig tarball (the same bytes as nginx.org's release)
NGINX_ORIG_SHA256=9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31
NGINX_SRC_CACHE=$BUILD/nginx-src
SAN_CC_OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined"
SAN_LD_OPT="-fsanitize=address,undefined"
SAN_DIR=$ROOT/t/sanitizers


# the mirror apt uses for the main suite of this release (deb822 or
# one-line sources), else deb.debian.org
debian_mirror() {
    local codename=$1 f uri=

    if [ -n "${IDV_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$IDV_DEBIAN_MIRROR"
        return 0
    fi

    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$codename" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") \
                    && uris != "" && !found) {
                    split(uris, u, " "); print u[1]; found = 1
                }
                types = ""; suites = ""; uris = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^Types:/   { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^Suites:/  { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^URIs:/    { sub(/^URIs:[ \t]*/, ""); uris = $0 }
            END { flush() }' "$f")
        [ -n "$uri" ] && break
    done

    if [ -z "$uri" ]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            uri=$(awk -v suite="$codename" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$f")
            [ -n "$uri" ] && break
        done
    fi

    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}


# apt_source DIR ARGS...: apt-get source ARGS in DIR with a private deb-src
# list (the release's main, -updates and -security suites) and private apt
# state under build/apt-src/, so the system's apt configuration is not
# changed; apt checks what it fetches against the signed Release files
APT_SRC=$BUILD/apt-src
APT_SRC_READY=

apt_source() {
    local dir=$1 apt=$APT_SRC codename mirror keyring opts
    shift

    opts=(-o "Dir::Etc::SourceList=$apt/sources.list"
          -o "Dir::Etc::SourceParts=$apt/parts"
          -o "Dir::State::Lists=$apt/lists"
          -o "Dir::Cache=$apt/cache"
          -o "APT::Get::List-Cleanup=0")
    # apt's download sandbox user cannot write under build/
    [ "$(id -u)" -eq 0 ] && opts+=(-o "APT::Sandbox::User=root")

    if [ -z "$APT_SRC_READY" ]; then
        ensure_pkgs apt ca-certificates >&2

        codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
        [ -n "$codename" ] || codename=bookworm
        mirror=$(debian_mirror "$codename")

        keyring=
        [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] \
            && keyring="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "

        rm -rf "$apt"
        mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" \
                 "$apt/parts"
        {
            # the main suite only: the security suite's index can name
            # revisions whose files the reachable mirror does not hold,
            # and the orig tarballs (all that is built) are the same in
            # every revision
            printf 'deb-src %s%s %s main\n' "$keyring" "$mirror" "$codename"
            printf 'deb-src %s%s %s-updates main\n' "$keyring" "$mirror" \
                   "$codename"
        } > "$apt/sources.list"

        say "build.sh: reading Debian's source index ($mirror $codename)" >&2

        apt-get -q "${opts[@]}" update > "$apt/update.log" 2>&1 \
            || { cat "$apt/update.log" >&2
                 die "apt-get update (deb-src, see $apt/sources.list) failed"; }

        APT_SRC_READY=1
    fi

    mkdir -p "$dir"
    (cd "$dir" && apt-get -q "${opts[@]}" source "$@") \
        > "$apt/source.log" 2>&1 \
        || { cat "$apt/source.log" >&2
             die "apt-get source $* failed"; }
}


# fetch_nginx_source: Debian's orig tarball of nginx $NGINX_VERSION,
# downloaded once (apt-get source --download-only), unpacked under
# build/nginx-src/; prints the source tree
fetch_nginx_source() {
    local dir=$NGINX_SRC_CACHE tree=$NGINX_SRC_CACHE/nginx-$NGINX_VERSION
    local sum

    if [ -x "$tree/configure" ]; then
        printf '%s\n' "$tree"
        return 0
    fi

    if [ ! -f "$dir/$NGINX_ORIG" ]; then
        say "build.sh: fetching Debian's nginx source" >&2
        apt_source "$dir" --download-only nginx
        [ -f "$dir/$NGINX_ORIG" ] \
            || die "apt-get source brought no $NGINX_ORIG:" \
                   "$(ls "$dir" | tr '\n' ' ')"
    fi

    sum=$(sha256sum "$dir/$NGINX_ORIG" | cut -d' ' -f1)
    [ "$sum" = "$NGINX_ORIG_SHA256" ] \
        || die "$dir/$NGINX_ORIG: sha256 $sum, expected $NGINX_ORIG_SHA256"

    rm -rf "$tree.tmp"
    mkdir -p "$tree.tmp"
    tar -xzf "$dir/$NGINX_ORIG" -C "$tree.tmp" --strip-components=1 \
        || die "cannot unpack $dir/$NGINX_ORIG"
    mv "$tree.tmp" "$tree"

    printf '%s\n' "$tree"
}


# asan_setup: the next cmd_build makes the sanitizer nginx in build/asan/
asan_setup() {
    local tree

    ensure_pkgs binutils gcc make libcjson-dev libssl-dev libpcre2-dev \
                zlib1g-dev
    tree=$(fetch_nginx_source)

    NGINX_SRC=$tree
    NGINX_CC_OPT=$SAN_CC_OPT
    NGINX_LD_OPT=$SAN_LD_OPT
    export NGINX_SRC NGINX_CC_OPT NGINX_LD_OPT

    set_out "$BUILD/asan"
}


# asan_env: sanitizer options for the nginx the tests start.  Reports go to
# stderr, which nginx points at error.log once it runs (before that the
# harness captures it in nginx.stderr); t/lib/IdvTest.pm fails a test on
# any of them.  The suppressions are explained in t/sanitizers/*.supp and
# docs/hardening.md.
asan_env() {
    [ -f "$SAN_DIR/lsan.supp" ] && [ -f "$SAN_DIR/ubsan.supp" ] \
        || die "t/sanitizers/lsan.supp or ubsan.supp is missing"

    # detect_odr_violation=0: ngx_module_names is defined by nginx and by
    # every dynamic module (nginx's own design, not a bug)
    export ASAN_OPTIONS="detect_odr_violation=0:detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=30"
    export LSAN_OPTIONS="suppressions=$SAN_DIR/lsan.supp:print_suppressions=0"
    # recoverable: a report fails the test, the run goes on
    export UBSAN_OPTIONS="suppressions=$SAN_DIR/ubsan.supp:print_stacktrace=1:print_suppressions=0:halt_on_error=0"
}


# asan_keep_modules: a wrapper of the sanitizer nginx that preloads
# t/sanitizers/keep-modules.c (dlclose does nothing), for leak reports
# with the module's frames named; prints the wrapper
asan_keep_modules() {
    local libasan

    libasan=$(gcc -print-file-name=libasan.so)
    [ -f "$libasan" ] || die "no libasan.so for gcc"

    gcc -shared -fPIC -O1 -o "$OUT/keep-modules.so" \
        "$SAN_DIR/keep-modules.c" || die "cannot build keep-modules.so"

    printf '#!/bin/sh\nLD_PRELOAD="%s %s${LD_PRELOAD:+ $LD_PRELOAD}" exec "%s" "$@"\n' \
        "$libasan" "$OUT/keep-modules.so" "$OBJS/nginx" \
        > "$OUT/nginx-keep-modules"
    chmod 755 "$OUT/nginx-keep-modules"

    printf '%s\n' "$OUT/nginx-keep-modules"
}


cmd_asan() {
    asan_setup
    cmd_build
}


# --- fuzzing --------------------------------------------------------------

# libFuzzer targets t/fuzz/fuzz_*.c, each linked with the pure core; a
# failed check in a target aborts, which libFuzzer records as a crash
FUZZ_CFLAGS="-std=gnu99 -g -O1 -fno-omit-frame-pointer
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
    -W -Wall -Wno-unused-parameter -Werror -Ingx_http_idv_module -It/fuzz"
FUZZ_LIBS="-lcrypto"
FUZZ=$BUILD/fuzz


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
                 ${deps[@]+"${deps[@]}"} "$ROOT/build.sh"
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


# --- demo -----------------------------------------------------------------

# wait_port PORT SECONDS
wait_port() {
    local i

    for ((i = 0; i < $2 * 10; i++)); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}


# pid_alive PIDFILE PATTERN: the pid in PIDFILE runs a command matching
# PATTERN (never signal a recycled pid)
pid_alive() {
    local pid

    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$2"
}


# stop_pid PIDFILE PATTERN SIGNAL
stop_pid() {
    local pid i

    pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(cat "$1")
    kill "-$3" "$pid" 2>/dev/null || true

    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
        sleep 0.1
    done

    say "build.sh: $2 (pid $pid) did not exit, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}


demo_stop() {
    local was=

    pid_alive "$DEMO/nginx.pid" nginx && was=1
    pid_alive "$DEMO/mock.pid" mock-aliyun && was=1
    stop_pid "$DEMO/nginx.pid" nginx QUIT
    stop_pid "$DEMO/mock.pid" mock-aliyun TERM
    [ -n "$was" ] && say "build.sh: demo stopped"
    return 0
}


# subst FILE KEY=VALUE...: replace @KEY@ placeholders
subst() {
    local file=$1 kv text
    shift

    text=$(cat "$file")
    for kv in "$@"; do
        text=${text//@${kv%%=*}@/${kv#*=}}
    done
    printf '%s\n' "$text"
}


cmd_demo() {
    case ${1:-start} in
        start) ;;
        stop)  demo_stop; return 0 ;;
        *)     die "usage: ./build.sh demo [stop]" ;;
    esac

    local port=${IDV_DEMO_PORT:-8080} real='' endpoint upstream ca
    local curl_cmd body

    if [ -n "${ALIBABA_CLOUD_ACCESS_KEY_ID:-}" ] \
       && [ -n "${ALIBABA_CLOUD_ACCESS_KEY_SECRET:-}" ] \
       && [ -n "${IDV_ENDPOINT:-}" ]
    then
        real=1
    fi

    cmd_build
    ensure_pkgs curl
    [ -n "$real" ] || ensure_test_pkgs

    demo_stop
    mkdir -p "$DEMO"
    cd "$ROOT"

    if [ -n "$real" ]; then
        # the Host signed and sent is the endpoint as given; the TCP peer
        # needs a port
        endpoint=$IDV_ENDPOINT
        case $endpoint in
            *:*) upstream=$endpoint ;;
            *)   upstream=$endpoint:443 ;;
        esac
        ca=/etc/ssl/certs/ca-certificates.crt
        [ -f "$ca" ] || ensure_pkgs ca-certificates
        say "build.sh: demo against https://$endpoint (real API)"

    else
        [ -f t/mock/mock-aliyun.js ] || die "t/mock/mock-aliyun.js is missing"
        [ -f "$DEMO/certs/mock.pem" ] \
            || mkcerts "$DEMO/certs" > "$DEMO/mkcerts.log" 2>&1 \
            || die "t/lib/mkcerts.sh failed, see $DEMO/mkcerts.log"

        # the mock accepts the test key pair
        export ALIBABA_CLOUD_ACCESS_KEY_ID=testid
        export ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret

        # the mock's certificate is for "localhost": sign and send that
        # name (proxy_ssl_name follows it), connect to 127.0.0.1
        endpoint=localhost:$DEMO_MOCK_PORT
        upstream=127.0.0.1:$DEMO_MOCK_PORT
        ca=$DEMO/certs/ca.pem

        setsid node t/mock/mock-aliyun.js --port "$DEMO_MOCK_PORT" \
            --cert "$DEMO/certs/mock.pem" --key "$DEMO/certs/mock.key" \
            > "$DEMO/mock.log" 2>&1 < /dev/null &
        echo $! > "$DEMO/mock.pid"

        # the port answering must be this mock, not something else there
        if ! wait_port "$DEMO_MOCK_PORT" 10 \
           || ! pid_alive "$DEMO/mock.pid" mock-aliyun
        then
            cat "$DEMO/mock.log" >&2
            demo_stop
            die "the mock did not start on port $DEMO_MOCK_PORT"
        fi
        say "build.sh: mock API on https://127.0.0.1:$DEMO_MOCK_PORT" \
            "(log: $DEMO/mock.log)"
    fi

    subst docs/examples/nginx.conf \
        "MODULE=$MODULE_SO" "PREFIX=$DEMO" "PORT=$port" \
        "ENDPOINT=$endpoint" "UPSTREAM=$upstream" "CA=$ca" \
        > "$DEMO/nginx.conf"

    rm -f "$DEMO/error.log"

    "$(nginx_bin)" -t -q -p "$DEMO" -c "$DEMO/nginx.conf" -e stderr \
        || { demo_stop; die "the demo configuration does not pass nginx -t"; }

    "$(nginx_bin)" -p "$DEMO" -c "$DEMO/nginx.conf" -e "$DEMO/error.log" \
        || { demo_stop; die "nginx did not start (see $DEMO/error.log)"; }

    wait_port "$port" 10 || {
        tail -n 20 "$DEMO/error.log" >&2
        demo_stop
        die "nginx does not answer on 127.0.0.1:$port"
    }

    body='{"MerchantBizId":"demo0001","MerchantUserId":"user-1","DocType":"01000000","MetaInfo":"{\"deviceType\":\"h5\"}"}'
    curl_cmd="curl -s -X POST http://127.0.0.1:$port/idv/ekyc/initialize -H 'Content-Type: application/json' -d '$body'"

    say ""
    say "nginx with ngx_http_idv_module: http://127.0.0.1:$port" \
        "(config: $DEMO/nginx.conf, log: $DEMO/error.log)"
    say "Stop with: ./build.sh demo stop"
    say ""
    say "Try:"
    say "  $curl_cmd"
    say ""

    if [ -n "${IDV_DEMO_NO_CALL:-}" ]; then
        return 0
    fi

    local out status
    out=$(curl -s -w '\n%{http_code}' -X POST \
               "http://127.0.0.1:$port/idv/ekyc/initialize" \
               -H 'Content-Type: application/json' -d "$body") || true
    status=${out##*$'\n'}
    out=${out%$'\n'*}

    say "Response (HTTP $status):"
    say "$out"

    if [ "$status" != 200 ]; then
        say ""
        say "build.sh: the demo call failed; last lines of $DEMO/error.log:" >&2
        tail -n 10 "$DEMO/error.log" >&2 || true
        return 1
    fi
}


# --- main -----------------------------------------------------------------

case ${1:-build} in
    build)  cmd_build ;;
    unit)   cmd_unit ;;
    test)   shift; cmd_test "$@" ;;
    asan)   cmd_asan ;;
    fuzz)   shift; cmd_fuzz "$@" ;;
    demo)   shift; cmd_demo "$@" ;;
    -h|--help|help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0" ;;
    *)      die "unknown command '$1' (build, unit, test, asan, fuzz, demo, demo stop)" ;;
esac
