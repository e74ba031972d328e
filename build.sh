#!/usr/bin/env bash
#
# Build, test and demo ngx_http_idv_module.
#
#   ./build.sh [build]          build build/ngx_http_idv_module.so
#   ./build.sh unit             build the C unit tests into build/unit/
#   ./build.sh test [ARGS...]   build, unit, then prove (ARGS: prove
#                               options and/or test files; default t/)
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
#   IDV_DEMO_NO_CALL=1   the demo prints the example call without making it
#   IDV_KEEP=1           keep the t/tmp/ directories of passing tests
#   ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
#   IDV_ENDPOINT         all three set: the demo talks to the real API

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$ROOT/build
OBJS=$BUILD/objs
MODULE_SO=$BUILD/ngx_http_idv_module.so
SYSTEM_NGINX=/usr/sbin/nginx
SYSTEM_NGINX_SRC=/usr/share/nginx/src

# The pure core: sources that compile without nginx.  Each unit test in
# t/unit/test_*.c is linked with those of them that exist.
CORE_SRCS="
    ngx_http_idv_module/ngx_http_idv_sign.c
    ngx_http_idv_module/ngx_http_idv_ops.c
    ngx_http_idv_module/ngx_http_idv_ops_table.c
    ngx_http_idv_module/ngx_http_idv_request.c
"

UNIT_CFLAGS="-std=gnu99 -O1 -g -W -Wall -Wpointer-arith -Wno-unused-parameter
    -Werror -Ingx_http_idv_module"
UNIT_LIBS="-lcjson -lcrypto"

DEMO=$BUILD/demo
DEMO_MOCK_PORT=8443


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
        (cd "$ROOT" && ls -1 ngx_http_idv_module/*.c ngx_http_idv_module/*.h \
                           2>/dev/null) || true
    } | sha256sum | cut -d' ' -f1
}


configure_system() {
    local marker=$BUILD/.configure-start

    touch "$marker"

    (
        cd "$SYSTEM_NGINX_SRC"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure "${NGX_CONF_FLAGS[@]}" --builddir="$OBJS" \
                    --add-dynamic-module="$ROOT"
    ) > "$BUILD/configure.log" 2>&1 \
        || { tail -n 30 "$BUILD/configure.log" >&2
             die "configure failed (full log: $BUILD/configure.log)"; }

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
               ${extra[@]+"${extra[@]}"}
    ) > "$BUILD/configure.log" 2>&1 \
        || { tail -n 30 "$BUILD/configure.log" >&2
             die "configure failed (full log: $BUILD/configure.log)"; }
}


cmd_build() {
    local fp stamp=$BUILD/.configure-stamp src ref sig_mod sig_ref

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

    mkdir -p "$BUILD"
    exec 9> "$BUILD/.lock"
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

    local marker=$BUILD/.make-start
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
    local a paths=no

    cmd_build
    cmd_unit
    ensure_test_pkgs

    cd "$ROOT"

    export IDV_ROOT=$ROOT
    export IDV_MODULE=$MODULE_SO
    IDV_NGINX=$(nginx_bin)
    export IDV_NGINX

    for a in "$@"; do
        case $a in
            -*) ;;
            *)  paths=yes ;;
        esac
    done

    if [ $paths = yes ]; then
        exec prove -j2 -It/lib "$@"
    fi

    exec prove -r -j2 -It/lib "$@" t/
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
    demo)   shift; cmd_demo "$@" ;;
    -h|--help|help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0" ;;
    *)      die "unknown command '$1' (build, unit, test, demo, demo stop)" ;;
esac
