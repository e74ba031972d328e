# shellcheck shell=bash
# shellcheck disable=SC2164  # build.sh runs with set -e: a failed cd stops it
#
# scripts/demo.sh -- the demo: nginx with the module on 127.0.0.1:8080 in
# front of the mock API (or the real API when credentials and an endpoint
# are set), docs/examples/nginx.conf as its configuration, one example
# call; and stopping it again.
#
# Sourced by build.sh; uses nginx_bin (lib.sh), ensure_pkgs and
# ensure_test_pkgs (deps.sh), cmd_build (module.sh).  ./build.sh demo [stop]

DEMO=${IDV_DEMO_DIR:-$BUILD/demo}
DEMO_MOCK_PORT=${IDV_DEMO_MOCK_PORT:-8443}


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


# port_free PORT VARIABLE: nothing listens on 127.0.0.1:PORT, or the demo
# stops here naming the port and the variable that chooses another one
# (started anyway, the mock or nginx would fail to listen while whatever
# is there answers in their place)
port_free() {
    local who=''

    if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        if command -v ss > /dev/null 2>&1; then
            who=$(ss -Hltnp "sport = :$1" 2>/dev/null \
                  | grep -o 'users:(([^)]*))' | head -n 1) || true
        fi
        die "port $1 is in use${who:+ ($who)}: stop what listens there," \
            "or choose a free port with $2=PORT"
    fi
}


# mock_ours PORT CA SECONDS: the mock we started listens on PORT, and the
# server that answers there is it (its certificate, its health endpoint)
mock_ours() {
    local i

    for ((i = 0; i < $3 * 10; i++)); do
        pid_alive "$DEMO/mock.pid" mock-aliyun || return 1
        grep -q "mock-aliyun listening on $1\$" "$DEMO/mock.log" 2>/dev/null \
            && break
        sleep 0.1
    done

    curl -sf -o /dev/null --max-time 5 --cacert "$2" \
         --resolve "localhost:$1:127.0.0.1" \
         "https://localhost:$1/__mock/health"
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


mkcerts() {
    local script=$ROOT/t/lib/mkcerts.sh

    [ -f "$script" ] || die "t/lib/mkcerts.sh is missing"
    if [ -x "$script" ]; then
        "$script" "$@"
    else
        bash "$script" "$@"
    fi
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

    port_free "$port" IDV_DEMO_PORT
    [ -n "$real" ] || port_free "$DEMO_MOCK_PORT" IDV_DEMO_MOCK_PORT

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
        if ! mock_ours "$DEMO_MOCK_PORT" "$ca" 10; then
            cat "$DEMO/mock.log" >&2
            demo_stop
            die "the mock did not start on port $DEMO_MOCK_PORT, or" \
                "another server answers there: choose a free port with" \
                "IDV_DEMO_MOCK_PORT=PORT"
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
