# shellcheck shell=bash
#
# scripts/module.sh -- build the module: configure nginx (Debian's
# nginx-dev, or NGINX_SRC) only when the fingerprint of what configure
# depends on changed, make, check the module's binary signature against
# the nginx that will load it, and install it as $MODULE_SO.
#
# Sourced by build.sh; uses lib.sh and ensure_pkgs (deps.sh).
# ./build.sh [build]

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
        ensure_pkgs binutils gcc make libcjson-dev libssl-dev libhiredis-dev \
                    libpcre2-dev \
                    zlib1g-dev
    else
        src=$SYSTEM_NGINX_SRC
        ensure_pkgs binutils gcc make nginx-core nginx-dev libcjson-dev \
                    libhiredis-dev \
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
