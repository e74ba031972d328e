# shellcheck shell=bash
#
# scripts/asan.sh -- nginx 1.22.1 and the module built with ASan and
# UBSan in build/asan/, and the sanitizer settings of a test run against
# them (docs/hardening.md).
#
# Sourced by build.sh; uses set_out (lib.sh), ensure_pkgs (deps.sh),
# apt_source (debsrc.sh), cmd_build (module.sh).  For ./build.sh asan and
# ./build.sh test --asan (scripts/test.sh).

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

    ensure_pkgs binutils gcc make libcjson-dev libssl-dev libhiredis-dev \
                libpcre2-dev \
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
