#!/usr/bin/env bash
#
# bench/run.sh -- what the gateway costs, against the nginx floor and
# against the official SDK.  Everything runs on loopback against a fast
# local upstream (nginx answering canned envelopes over TLS) and stops by
# itself; one table comes out, each figure next to its target.
#
#   bench/run.sh            the full run (about 3 minutes)
#   bench/run.sh --quick    small counts, fewer pairs (CI's smoke test,
#                           under 3 minutes)
#
# Installs what it lacks (as root): valgrind and wrk from Debian, the
# official SDK core @alicloud/openapi-core 1.0.8 from npm into
# bench/node_modules (bench/package-lock.json pins it).  Builds the module
# with ./build.sh unless IDV_MODULE names a built one.  Targets are
# reported, never asserted: the exit status is 0 unless the benchmark
# itself breaks.  docs/performance.md explains every figure.
#
# Environment:
#   IDV_MODULE=FILE      benchmark this ngx_http_idv_module.so (no build)
#   IDV_NGINX=FILE       nginx binary (default /usr/sbin/nginx)
#   IDV_BENCH_OUT=DIR    work directory (default build/bench): configs,
#                        logs, callgrind profiles, results.md

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${IDV_BENCH_OUT:-$ROOT/build/bench}
NGINX=${IDV_NGINX:-/usr/sbin/nginx}

MODE=full

case ${1:-} in
    "")         ;;
    --quick)    MODE=quick ;;
    -h|--help)  sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *)          printf 'usage: bench/run.sh [--quick]\n' >&2; exit 2 ;;
esac

if [ $MODE = full ]; then
    N=400           # light requests per callgrind case
    N_EKYC=8        # EkycVerify requests per callgrind case
    WARM=5          # requests before counting starts
    DHAT_R=2        # EkycVerify requests in the copy profile
    ROUNDS=5        # rounds of the CPU-per-call figures
    CPU_N=1000      # calls per round: gateway and floor / SDK
    SDK_N=300
    PAIRS=5         # interleaved wrk pairs
    SECS=5          # seconds per wrk run
    SHM_N=4000      # inserts for the shared-memory figures
else
    N=40
    N_EKYC=2
    WARM=3
    DHAT_R=1
    ROUNDS=3
    CPU_N=300
    SDK_N=100
    PAIRS=2
    SECS=2
    SHM_N=800
fi

STARTED=$SECONDS
PIDS=()

ulimit -c 0


say() { printf 'bench: [%3ds] %s\n' $((SECONDS - STARTED)) "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }


# --- processes --------------------------------------------------------------

# every process started here is stopped here, by its pid

stop_pid() {
    local pid=$1 i

    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -QUIT "$pid" 2>/dev/null || true

    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done

    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}


cleanup() {
    local pid

    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        kill -QUIT "$pid" 2>/dev/null || true
    done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        stop_pid "$pid"
    done
    PIDS=()
}

trap cleanup EXIT
trap 'exit 130' INT TERM


# start LOG CMD...: run CMD in the background; its pid in $PID
start() {
    local log=$1
    shift

    "$@" > "$log" 2>&1 < /dev/null &
    PID=$!
    PIDS+=("$PID")
}


# stop PID: stop it and forget it
stop() {
    local keep=() p

    stop_pid "$1"
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}


# wait_port PORT PID LOG: until PORT accepts, or fail with LOG
wait_port() {
    local i

    for ((i = 0; i < 600; i++)); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done

    tail -n 20 "$3" >&2 || true
    die "nothing accepts on 127.0.0.1:$1 (log: $3)"
}


free_port() {
    perl -MIO::Socket::IP -e '
        my $s = IO::Socket::IP->new(LocalHost => "127.0.0.1",
                                    LocalPort => 0, Listen => 1)
            or die "no free port: $@\n";
        print $s->sockport, "\n";'
}


# --- what the benchmark needs -----------------------------------------------

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed$'
}


ensure_pkgs() {
    local missing=() p

    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done

    [ ${#missing[@]} -eq 0 ] && return 0

    [ "$(id -u)" -eq 0 ] \
        || die "missing packages: ${missing[*]} (sudo apt-get install ${missing[*]})"

    say "installing ${missing[*]}"
    apt-get update -q > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
        < /dev/null > /dev/null || die "apt-get install ${missing[*]} failed"
}


prepare() {
    local pkgs=(valgrind wrk perl openssl binutils) stamp

    command -v node > /dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm > /dev/null 2>&1 || pkgs+=(npm)
    ensure_pkgs "${pkgs[@]}"

    rm -rf "$OUT/run" "$OUT/logs" "$OUT/tmp" "$OUT/cg" "$OUT/dhat"
    mkdir -p "$OUT/run" "$OUT/logs" "$OUT/tmp" "$OUT/cg" "$OUT/dhat" \
             "$OUT/req"

    # the module: one copy for the whole run, whatever rebuilds it meanwhile
    if [ -n "${IDV_MODULE:-}" ]; then
        [ -f "$IDV_MODULE" ] || die "IDV_MODULE=$IDV_MODULE: no such file"
        cp "$IDV_MODULE" "$OUT/ngx_http_idv_module.so"
    else
        say "building the module (./build.sh build)"
        "$ROOT/build.sh" build > "$OUT/logs/build.log" 2>&1 \
            || { tail -n 30 "$OUT/logs/build.log" >&2; die "the build failed"; }
        cp "$ROOT/build/ngx_http_idv_module.so" "$OUT/ngx_http_idv_module.so"
    fi
    MODULE=$OUT/ngx_http_idv_module.so

    [ -x "$NGINX" ] || die "no nginx at $NGINX (./build.sh installs Debian's)"

    # the official SDK, as pinned by the lock file
    stamp=$BENCH/node_modules/.bench-lock
    if ! cmp -s "$BENCH/package-lock.json" "$stamp" 2>/dev/null; then
        say "installing the official SDK (npm ci in bench/)"
        (cd "$BENCH" && npm ci --no-audit --no-fund --loglevel=error) \
            > "$OUT/logs/npm.log" 2>&1 \
            || { tail -n 20 "$OUT/logs/npm.log" >&2; die "npm ci failed"; }
        cp "$BENCH/package-lock.json" "$stamp"
    fi

    CERTS=$OUT/certs
    "$ROOT/t/lib/mkcerts.sh" "$CERTS" > "$OUT/logs/mkcerts.log" 2>&1 \
        || { cat "$OUT/logs/mkcerts.log" >&2; die "t/lib/mkcerts.sh failed"; }
}


# --- configurations ---------------------------------------------------------

# the top of every nginx.conf: one process, nothing outside $OUT
main_conf() {
    local name=$1

    mkdir -p "$OUT/tmp/$name"

    cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $OUT/run/$name.pid;
lock_file $OUT/run/$name.lock;
error_log $OUT/logs/$name.err notice;

events {
    worker_connections 1024;
}

http {
    access_log off;

    client_body_temp_path $OUT/tmp/$name/client_body;
    proxy_temp_path $OUT/tmp/$name/proxy;
    fastcgi_temp_path $OUT/tmp/$name/fastcgi;
    uwsgi_temp_path $OUT/tmp/$name/uwsgi;
    scgi_temp_path $OUT/tmp/$name/scgi;
EOF
}


# the upstream's TLS client side, the same for the floor and the gateway
TLS_TO_UPSTREAM='
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate @CA@;
            proxy_ssl_session_reuse on;'


write_upstream_conf() {
    {
        main_conf upstream
        cat <<EOF

    include $BENCH/canned.conf;

    server {
        listen 127.0.0.1:$UP_PORT ssl;

        ssl_certificate $CERTS/mock.pem;
        ssl_certificate_key $CERTS/mock.key;

        keepalive_requests 1000000;
        client_max_body_size 8m;
        default_type application/json;

        location / {
            return 200 '{"RequestId":"\$request_id","Code":"Success","Message":"success","Result":\$bench_result}';
        }
    }
}
EOF
    } > "$OUT/upstream.conf"
}


write_floor_conf() {
    {
        main_conf floor
        cat <<EOF

    upstream api {
        server 127.0.0.1:$UP_PORT;
        keepalive 16;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$FLOOR_PORT;
        keepalive_requests 1000000;

        # the pre-signed request as it is, Host as signed
        location / {
            proxy_pass https://api;
            proxy_set_header Host localhost:$UP_PORT;
${TLS_TO_UPSTREAM//@CA@/$CERTS/ca.pem}
        }
    }
}
EOF
    } > "$OUT/floor.conf"
}


# write_gw_conf NAME SIGNATURE HTTP_EXTRA SERVER_EXTRA LOCATION_EXTRA [capture]
write_gw_conf() {
    local name=$1 sig=$2 http_extra=$3 server_extra=$4 loc_extra=$5
    local pass

    if [ "${6:-}" = capture ]; then
        pass="proxy_pass http://127.0.0.1:$CAPTURE_PORT/;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";"
    else
        pass="proxy_pass https://idv_api/;
${TLS_TO_UPSTREAM//@CA@/$CERTS/ca.pem}"
    fi

    {
        printf 'load_module %s;\n\n' "$MODULE"
        main_conf "$name"
        cat <<EOF

    idv_access_key_id testid;
    idv_access_key_secret testsecret;
    idv_endpoint localhost:$UP_PORT;
    idv_signature $sig;

    $http_extra

    upstream idv_api {
        server 127.0.0.1:$UP_PORT;
        keepalive 16;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$GW_PORT;
        keepalive_requests 1000000;

        client_max_body_size 8m;
        client_body_buffer_size 4m;

        idv_pass /_idv_upstream;
        idv_tenant \$http_x_idv_tenant;

        $server_extra

        location = /idv/ekyc/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            $loc_extra
        }

        # an H5 flow: its answer has a TransactionUrl, no Protocol
        location = /idv/ocr/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
            $loc_extra
        }

        location = /idv/ekyc/verify {
            idv_action EkycVerify;
            idv_product_code eKYC_MIN;
        }

        location = /idv/result {
            idv_action CheckResult;
        }

        location = /_idv_upstream {
            internal;
            $pass
            proxy_set_header Host \$idv_host;
            subrequest_output_buffer_size 1m;
        }
    }
}
EOF
    } > "$OUT/$name.conf"
}


# nginx_t NAME: "ok", "notbuilt" or "rejected: <the [emerg] line>"
nginx_t() {
    local out

    if out=$("$NGINX" -t -q -p "$OUT/" -c "$OUT/$1.conf" \
                  -e "$OUT/logs/$1.t.err" 2>&1); then
        echo ok
    elif grep -q 'unknown directive "idv_\(limit\|cache\)' <<< "$out"; then
        echo notbuilt
    else
        echo "rejected: $(grep -m1 -o 'emerg\] .*' <<< "$out")"
    fi
}


# the rooms being built beside the gateway: a directive nginx -t does not
# know means "not built"; the one that uses a zone may sit in server{} or
# in the location, whichever the module allows.  Sets STATUS and PLACE.
write_optional_conf() {
    local name=$1 http_extra=$2 directive=$3

    PLACE=server
    write_gw_conf "$name" v3 "$http_extra" "$directive" ""
    STATUS=$(nginx_t "$name")

    if [ "${STATUS%%:*}" = rejected ]; then
        PLACE=location
        write_gw_conf "$name" v3 "$http_extra" "" "$directive"
        STATUS=$(nginx_t "$name")
    fi
}


# write_placed_conf NAME HTTP_EXTRA DIRECTIVE: where write_optional_conf
# found the directive is accepted
write_placed_conf() {
    if [ "$PLACE" = server ]; then
        write_gw_conf "$1" v3 "$2" "$3" ""
    else
        write_gw_conf "$1" v3 "$2" "" "$3"
    fi
}


write_configs() {
    UP_PORT=$(free_port)
    GW_PORT=$(free_port)
    FLOOR_PORT=$(free_port)

    write_upstream_conf
    write_floor_conf
    write_gw_conf gw-v3 v3 "" "" ""
    write_gw_conf gw-v1 v1 "" "" ""

    # a rate callgrind's pace never reaches: the cost of passing
    write_optional_conf gw-limit "idv_limit_zone zone=bench_qps:3m;" \
        "idv_limit zone=bench_qps rate=50000r/s burst=100000 nodelay;"
    LIMIT=$STATUS

    # one request a minute: each tenant's bucket stays while it is counted
    if [ "$LIMIT" = ok ]; then
        write_placed_conf gw-limit-shm "idv_limit_zone zone=bench_qps:3m;" \
            "idv_limit zone=bench_qps rate=1r/m burst=10 nodelay;"
    fi

    write_optional_conf gw-cache "idv_cache_zone zone=bench_tx:7m ttl=30m;" \
        "idv_cache bench_tx;"
    CACHE=$STATUS

    say "per-tenant limit: $LIMIT; TransactionId cache: $CACHE"

    local t
    for t in upstream floor gw-v3 gw-v1; do
        [ "$(nginx_t $t)" = ok ] \
            || die "$OUT/$t.conf does not pass nginx -t: $(nginx_t $t)"
    done
}


# --- requests ---------------------------------------------------------------

make_requests() {
    local R=$OUT/req T='X-Idv-Tenant: acme'

    perl "$BENCH/mkreq.pl" init /idv/ekyc/initialize "$T" > "$R/init.req"
    perl "$BENCH/mkreq.pl" init-vary /idv/ekyc/initialize "$T" \
        > "$R/init-vary.req"
    perl "$BENCH/mkreq.pl" init-vary /idv/ocr/initialize "$T" \
        > "$R/init-h5-vary.req"
    perl "$BENCH/mkreq.pl" init /idv/ekyc/initialize \
        'X-Idv-Tenant: t{seq:08}' > "$R/init-tenants.req"
    perl "$BENCH/mkreq.pl" ekyc /idv/ekyc/verify "$T" > "$R/ekyc.req"
    perl "$BENCH/mkreq.pl" checkresult /idv/result "$T" > "$R/check.req"

    EKYC_BODY=$(perl -ne 'print $1 if /^Content-Length: (\d+)/' "$R/ekyc.req")
}


# the floor's request: the gateway's own signed Initialize, captured on
# its way upstream
capture_floor_request() {
    local cap pid i

    rm -f "$OUT/run/capture.port"
    start "$OUT/logs/capture.log" perl "$BENCH/capture.pl" \
          "$OUT/run/capture.port" "$OUT/req/floor.req"
    cap=$PID

    for ((i = 0; i < 100; i++)); do
        [ -s "$OUT/run/capture.port" ] && break
        sleep 0.1
    done
    CAPTURE_PORT=$(cat "$OUT/run/capture.port") \
        || die "capture.pl did not start: $(cat "$OUT/logs/capture.log")"

    write_gw_conf gw-capture v3 "" "" "" capture
    start "$OUT/logs/gw-capture.out" "$NGINX" -p "$OUT/" \
          -c "$OUT/gw-capture.conf" -e "$OUT/logs/gw-capture.err"
    pid=$PID
    wait_port "$GW_PORT" "$pid" "$OUT/logs/gw-capture.err"

    perl "$BENCH/client.pl" "$GW_PORT" "$OUT/req/init.req" 1 > /dev/null \
        || die "the capture request failed"

    stop "$pid"
    stop "$cap"

    [ -s "$OUT/req/floor.req" ] || die "no request captured"
}


# --- instructions per request (callgrind) -----------------------------------

summary() {
    sed -n 's/^summary: //p' "$1"
}


# cg_case NAME CONF REQUEST N [FIRST]: instructions per request, in CG[NAME]
#
# nginx (one process) under callgrind; WARM requests open the connections
# (the client's, the keep-alive TLS one upstream) and fill the caches; an
# idle window is counted; then N requests on one keep-alive connection;
# (counted - idle) / N.
declare -A CG

cg_case() {
    local name=$1 conf=$2 req=$3 n=$4 first=${5:-0} pid f idle total

    f=$OUT/cg/$name
    start "$OUT/logs/$name.valgrind" valgrind --tool=callgrind -q \
          --callgrind-out-file="$f.out" \
          "$NGINX" -p "$OUT/" -c "$OUT/$conf.conf" -e "$OUT/logs/$conf.err"
    pid=$PID
    wait_port "$GW_PORT_OF" "$pid" "$OUT/logs/$name.valgrind"

    perl "$BENCH/client.pl" "$GW_PORT_OF" "$req" "$WARM" "$first" > /dev/null \
        || die "$name: the warm-up requests failed"
    sleep 0.3

    callgrind_control -z "$pid" > /dev/null 2>&1
    sleep 0.5
    callgrind_control -d "$pid" > /dev/null 2>&1

    callgrind_control -z "$pid" > /dev/null 2>&1
    perl "$BENCH/client.pl" "$GW_PORT_OF" "$req" "$n" $((first + WARM)) \
        > /dev/null || die "$name: the counted requests failed"
    sleep 0.3
    callgrind_control -d "$pid" > /dev/null 2>&1

    stop "$pid"

    idle=$(summary "$f.out.1")
    total=$(summary "$f.out.2")
    [ -n "$idle" ] && [ -n "$total" ] || die "$name: no callgrind dumps"

    mv "$f.out.2" "$f.callgrind"
    rm -f "$f.out" "$f.out".*

    CG[$name]=$(( (total - idle) / n ))
    say "$name: $(kinstr "${CG[$name]}") instructions per request" \
        "(idle window: $idle)"
}


callgrind_cases() {
    local R=$OUT/req

    GW_PORT_OF=$FLOOR_PORT
    cg_case a-floor floor "$R/floor.req" "$N"

    GW_PORT_OF=$GW_PORT
    cg_case b-v3 gw-v3 "$R/init.req" "$N"
    cg_case c-v1 gw-v1 "$R/init.req" "$N"

    if [ "$LIMIT" = ok ]; then
        cg_case d-limit gw-limit "$R/init.req" "$N"
    fi

    if [ "$CACHE" = ok ]; then
        cg_case e-miss gw-cache "$R/init-vary.req" "$N" 1000000
        cg_case e-hit gw-cache "$R/init.req" "$N"
    fi

    cg_case f-ekyc gw-v3 "$R/ekyc.req" "$N_EKYC"
    cg_case g-check gw-v3 "$R/check.req" "$N"
}


# --- copies of the EkycVerify body (DHAT) -----------------------------------

ekyc_copies() {
    local pid f=$OUT/dhat/ekyc.json

    start "$OUT/logs/dhat.valgrind" valgrind --tool=dhat -q \
          --dhat-out-file="$f" \
          "$NGINX" -p "$OUT/" -c "$OUT/gw-v3.conf" -e "$OUT/logs/gw-v3.err"
    pid=$PID
    wait_port "$GW_PORT" "$pid" "$OUT/logs/dhat.valgrind"

    perl "$BENCH/client.pl" "$GW_PORT" "$OUT/req/ekyc.req" "$DHAT_R" \
        > /dev/null || die "EkycVerify under DHAT failed"

    # nginx unloads the module before DHAT reports: keep its addresses
    cp "/proc/$pid/maps" "$OUT/dhat/maps"
    stop "$pid"

    perl "$BENCH/copies.pl" "$f" "$OUT/dhat/maps" "$EKYC_BODY" "$DHAT_R" \
        > "$OUT/dhat/copies.txt" || die "copies.pl failed"

    COPIES=$(sed -n 's/^GATEWAY_COPIES //p' "$OUT/dhat/copies.txt")
    say "EkycVerify body copies by the gateway: $COPIES"
    sed 's/^/bench:        /' "$OUT/dhat/copies.txt" | grep -v GATEWAY_ >&2
}


# --- native runs: CPU per call, throughput, shared memory -------------------

# on-CPU nanoseconds of a process so far
cpu_ns() {
    local a
    if read -r a _ < "/proc/$1/schedstat" 2>/dev/null; then
        echo "$a"
    else
        awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1e9 / hz }' \
            "/proc/$1/stat"
    fi
}


# cpu_per_call PID PORT REQUEST N: microseconds of PID's CPU per request
cpu_per_call() {
    local before after

    perl "$BENCH/client.pl" "$2" "$3" 50 > /dev/null || die "warm-up failed"
    sleep 0.2
    before=$(cpu_ns "$1")
    perl "$BENCH/client.pl" "$2" "$3" "$4" > /dev/null || die "calls failed"
    sleep 0.2
    after=$(cpu_ns "$1")

    awk -v a="$after" -v b="$before" -v n="$4" \
        'BEGIN { printf "%.1f", (a - b) / n / 1000 }'
}


# sdk_cpu ARGS...: microseconds of the node process's CPU per call
sdk_cpu() {
    local out

    out=$(NODE_EXTRA_CA_CERTS=$CERTS/ca.pem node "$BENCH/sdk-client.js" \
              "$@" --n "$SDK_N" --warmup 30) \
        || die "sdk-client.js $* failed: $out"
    perl -MJSON::PP -e 'printf "%.1f", decode_json($ARGV[0])->{cpu_us_per_call}' \
        "$out"
}


# wrk_rps PORT REQUEST SECONDS: requests per second
wrk_rps() {
    local out rps bad

    out=$(BENCH_REQ=$2 wrk -t1 -c16 -d"$3"s -s "$BENCH/wrk.lua" \
              "http://127.0.0.1:$1/" 2>&1) || die "wrk failed: $out"
    rps=$(sed -n 's/^Requests\/sec: *//p' <<< "$out")
    bad=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' <<< "$out")

    [ -n "$rps" ] || die "wrk printed no rate: $out"
    [ -z "$bad" ] || die "wrk got $bad answers other than 2xx: $out"

    echo "$rps"
}


native_runs() {
    local gw fl i a b ratios=() out

    start "$OUT/logs/gw-v3.out" "$NGINX" -p "$OUT/" -c "$OUT/gw-v3.conf" \
          -e "$OUT/logs/gw-v3.err"
    gw=$PID
    wait_port "$GW_PORT" "$gw" "$OUT/logs/gw-v3.err"

    start "$OUT/logs/floor.out" "$NGINX" -p "$OUT/" -c "$OUT/floor.conf" \
          -e "$OUT/logs/floor.err"
    fl=$PID
    wait_port "$FLOOR_PORT" "$fl" "$OUT/logs/floor.err"

    # CPU per call, in rounds (gateway, floor, SDK, Node backend): the
    # load of the machine changes from minute to minute, the ratios within
    # a round much less; medians over the rounds

    local r_gw=() r_fl=() r_sdk=() r_node=() r_ratio=() r_gwfl=() g f k n

    # a fresh nginx grows its pools and malloc arenas for a while
    perl "$BENCH/client.pl" "$GW_PORT" "$OUT/req/init.req" 1000 > /dev/null \
        || die "gateway warm-up failed"
    perl "$BENCH/client.pl" "$FLOOR_PORT" "$OUT/req/floor.req" 1000 \
        > /dev/null || die "floor warm-up failed"

    for ((i = 0; i < ROUNDS; i++)); do
        g=$(cpu_per_call "$gw" "$GW_PORT" "$OUT/req/init.req" "$CPU_N")
        f=$(cpu_per_call "$fl" "$FLOOR_PORT" "$OUT/req/floor.req" "$CPU_N")
        k=$(sdk_cpu --endpoint "localhost:$UP_PORT")
        n=$(sdk_cpu --gateway "http://127.0.0.1:$GW_PORT/idv/ekyc/initialize")

        r_gw+=("$g")
        r_fl+=("$f")
        r_sdk+=("$k")
        r_node+=("$n")
        r_ratio+=("$(awk -v a="$k" -v b="$g" 'BEGIN { printf "%.1f", a / b }')")
        r_gwfl+=("$(awk -v a="$g" -v b="$f" 'BEGIN { printf "%.2f", a / b }')")

        say "CPU per call, round $((i + 1))/$ROUNDS: gateway $g us," \
            "floor $f us, official SDK $k us, Node backend calling the" \
            "gateway $n us"
    done

    CPU_GW=$(median "${r_gw[@]}")
    CPU_FLOOR=$(median "${r_fl[@]}")
    CPU_SDK=$(median "${r_sdk[@]}")
    CPU_NODE_GW=$(median "${r_node[@]}")
    CPU_RATIO=$(median "${r_ratio[@]}")
    CPU_RATIOS=${r_ratio[*]}
    CPU_GWFL=$(median "${r_gwfl[@]}")

    # throughput, interleaved: gateway, floor, gateway, floor, ...

    wrk_rps "$GW_PORT" "$OUT/req/init.req" 1 > /dev/null
    wrk_rps "$FLOOR_PORT" "$OUT/req/floor.req" 1 > /dev/null

    RPS_GW=()
    RPS_FLOOR=()

    for ((i = 0; i < PAIRS; i++)); do
        a=$(wrk_rps "$GW_PORT" "$OUT/req/init.req" "$SECS")
        b=$(wrk_rps "$FLOOR_PORT" "$OUT/req/floor.req" "$SECS")
        RPS_GW+=("$a")
        RPS_FLOOR+=("$b")
        ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')")
        say "wrk pair $((i + 1))/$PAIRS: gateway $a/s, floor $b/s"
    done

    TPUT_RATIO=$(median "${ratios[@]}")
    TPUT_RATIOS=${ratios[*]}

    stop "$fl"
    stop "$gw"
}


median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}


# rss_kb PID SIZE_KB: resident kB of PID's shared mapping of SIZE_KB
rss_kb() {
    awk -v want="$2" '
        /^[0-9a-f]+-[0-9a-f]+ / { shared = ($2 ~ /s/) }
        /^Size:/ { size = $2 }
        /^Rss:/ && shared && size == want { print $2; found = 1; exit }
        END { if (!found) print "" }' "/proc/$1/smaps"
}


# shm_per_entry CONF ZONE_KB REQUEST: bytes of the zone each new entry
# touches (resident pages of the zone before and after SHM_N new keys)
shm_per_entry() {
    local pid before after

    start "$OUT/logs/$1.out" "$NGINX" -p "$OUT/" -c "$OUT/$1.conf" \
          -e "$OUT/logs/$1.err"
    pid=$PID
    wait_port "$GW_PORT" "$pid" "$OUT/logs/$1.err"

    # one request first: anything a zone sets up on first use
    perl "$BENCH/client.pl" "$GW_PORT" "$3" 1 2000000 > /dev/null \
        || die "$1: the first request failed"

    before=$(rss_kb "$pid" "$2")
    perl "$BENCH/client.pl" "$GW_PORT" "$3" "$SHM_N" 3000000 > /dev/null \
        || die "$1: the inserts failed"
    after=$(rss_kb "$pid" "$2")

    stop "$pid"

    [ -n "$before" ] && [ -n "$after" ] \
        || { echo "n/a (no ${2} kB zone mapping found)"; return; }

    awk -v a="$after" -v b="$before" -v n="$SHM_N" \
        'BEGIN { printf "%.0f", (a - b) * 1024 / n }'
}


# n/a text for a room that is not there
absent() {
    case $1 in
        ok)         ;;
        notbuilt)   echo "n/a (not built)" ;;
        *)          echo "n/a (config $1)" ;;
    esac
}


shared_memory() {
    SHM_CACHE=$(absent "$CACHE")
    SHM_CACHE_H5=$SHM_CACHE
    SHM_LIMIT=$(absent "$LIMIT")

    if [ "$CACHE" = ok ]; then
        SHM_CACHE=$(shm_per_entry gw-cache 7168 "$OUT/req/init-vary.req")
        SHM_CACHE_H5=$(shm_per_entry gw-cache 7168 \
                           "$OUT/req/init-h5-vary.req")
    fi
    if [ "$LIMIT" = ok ]; then
        SHM_LIMIT=$(shm_per_entry gw-limit-shm 3072 \
                        "$OUT/req/init-tenants.req")
    fi

    # the entry alone, as the cache zone reports it at start: the
    # issue's measure excludes the answer strings (TransactionUrl, ...)
    SHM_CACHE_ENTRY=$(absent "$CACHE")
    if [ "$CACHE" = ok ]; then
        SHM_CACHE_ENTRY=$(grep -ho 'a transaction takes [0-9]*' \
                              "$OUT"/logs/gw-cache*.err 2>/dev/null \
                          | head -n 1 | grep -o '[0-9]*$' || true)
        SHM_CACHE_ENTRY=${SHM_CACHE_ENTRY:-n/a}
    fi

    say "shared memory per cached transaction: $SHM_CACHE (app answer)," \
        "$SHM_CACHE_H5 (H5 answer); per limit entry: $SHM_LIMIT"
}


# --- the table --------------------------------------------------------------

kinstr() {
    awk -v v="$1" 'BEGIN {
        if (v >= 10000000) printf "%.1fM", v / 1000000
        else printf "%.1fk", v / 1000 }'
}


ROWS=()

# row FIGURE VALUE TARGET MET
row() {
    ROWS+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4")
}


# met VALUE OP LIMIT: yes / no
met() {
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
        ok = (op == "<=") ? v <= l : v >= l
        print ok ? "yes" : "**no**" }'
}


# shm_row LABEL BYTES LIMIT
shm_row() {
    if [[ $2 =~ ^[0-9]+$ ]]; then
        row "$1" "$2 B" "${3:+<= $3 B}" "${3:+$(met "$2" "<=" "$3")}"
    else
        row "$1" "$2" "${3:+<= $3 B}" "${3:+—}"
    fi
}


ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'
}


# optional_row LABEL NAME STATUS
cg_row() {
    local label=$1 name=$2 status=${3:-ok}

    if [ "$status" = ok ]; then
        row "$label" "$(kinstr "${CG[$name]}") instr/req" "" ""
    else
        row "$label" "$(absent "$status")" "" ""
    fi
}


# ratio_row LABEL NUM DEN OP LIMIT
ratio_row() {
    local label=$1 num=${CG[$2]:-} den=${CG[$3]:-} r

    if [ -z "$num" ] || [ -z "$den" ]; then
        row "$label" "n/a" "${4:+$4 $5}" "${4:+—}"
        return
    fi

    r=$(ratio "$num" "$den")

    if [ -n "$4" ]; then
        row "$label" "$r" "$4 $5" "$(met "$r" "$4" "$5")"
    else
        row "$label" "$r" "" ""
    fi
}


table() {
    local r copies_n

    row "(a) floor: proxy_pass over TLS, pre-signed Initialize" \
        "$(kinstr "${CG[a-floor]}") instr/req" "reference" ""
    cg_row "(b) gateway Initialize, V3" b-v3
    cg_row "(c) gateway Initialize, V1" c-v1
    cg_row "(d) (b) + per-tenant limit" d-limit "$LIMIT"
    cg_row "(e) (b) + cache, miss (new MerchantBizId)" e-miss "$CACHE"
    cg_row "(e) (b) + cache, hit" e-hit "$CACHE"
    cg_row "(f) EkycVerify, two 0.7 MB base64 images" f-ekyc
    cg_row "(g) CheckResult" g-check

    ratio_row "b/a: gateway over the floor" b-v3 a-floor "<=" 1.25
    ratio_row "c/b: V1 over V3" c-v1 b-v3 "" ""
    ratio_row "d/b: limit" d-limit b-v3 "<=" 1.03
    ratio_row "e/b: cache miss" e-miss b-v3 "<=" 1.03
    ratio_row "e/b: cache hit" e-hit b-v3 "<=" 0.5

    row "CPU per Initialize: gateway (nginx process, median)" \
        "$CPU_GW µs" "" ""
    row "CPU per Initialize: official SDK (Node process, median)" \
        "$CPU_SDK µs" "" ""
    row "SDK / gateway CPU per call (median of $ROUNDS rounds)" \
        "${CPU_RATIO}× (rounds: $CPU_RATIOS)" ">= 10×" \
        "$(met "$CPU_RATIO" ">=" 10)"
    row "for reference: floor CPU per call" "$CPU_FLOOR µs" "" ""
    row "for reference: gateway / floor CPU per call (native)" \
        "$CPU_GWFL" "" ""
    row "for reference: Node backend's own CPU per gateway call" \
        "$CPU_NODE_GW µs" "" ""

    row "throughput gateway / floor (wrk, median of $PAIRS pairs)" \
        "$TPUT_RATIO (pairs: $TPUT_RATIOS)" "" ""
    row "  gateway req/s (median)" "$(median "${RPS_GW[@]}" | xargs printf '%.0f')" "" ""
    row "  floor req/s (median)" "$(median "${RPS_FLOOR[@]}" | xargs printf '%.0f')" "" ""

    shm_row "shared memory per cached transaction, entry (no answer strings)" \
        "$SHM_CACHE_ENTRY" 256
    shm_row "  with the app answer it replays (Protocol)" "$SHM_CACHE" ""
    shm_row "  with the H5 answer it replays (TransactionUrl)" \
        "$SHM_CACHE_H5" ""
    shm_row "shared memory per limit entry" "$SHM_LIMIT" ""

    copies_n=${COPIES%% *}
    row "EkycVerify body copies made by the gateway (DHAT)" \
        "$copies_n (${COPIES#* })" "<= 2" "$(met "$copies_n" "<=" 2)"

    printf '%s\n' "${ROWS[@]}" | perl -CSD -ne '
        chomp; push @r, [split /\t/, $_, -1];
        END {
            unshift @r, ["figure", "value", "target", "met"];
            for my $r (@r) {
                for my $i (0 .. 3) {
                    my $l = length($r->[$i] // "");
                    $w[$i] = $l if $l > ($w[$i] // 0);
                }
            }
            my $line = sub {
                "| " . join(" | ", map { sprintf "%-*s", $w[$_],
                    $_[0][$_] // "" } 0 .. 3) . " |\n" };
            print $line->($r[0]);
            print "|", join("|", map { "-" x ($_ + 2) } @w), "|\n";
            print $line->($_) for @r[1 .. $#r];
        }'
}


# --- main -------------------------------------------------------------------

main() {
    local up

    say "mode: $MODE"
    prepare
    write_configs
    make_requests

    start "$OUT/logs/upstream.out" "$NGINX" -p "$OUT/" -c "$OUT/upstream.conf" \
          -e "$OUT/logs/upstream.err"
    up=$PID
    wait_port "$UP_PORT" "$up" "$OUT/logs/upstream.err"
    say "fast upstream on https://127.0.0.1:$UP_PORT"

    capture_floor_request
    callgrind_cases
    ekyc_copies
    native_runs
    shared_memory

    stop "$up"

    {
        printf '# bench/run.sh%s, %s\n\n' \
               "$([ $MODE = quick ] && echo ' --quick')" "$(date -u '+%F %H:%M UTC')"
        printf 'nginx %s, OpenSSL %s, node %s, %s cores; N=%s (EkycVerify %s)\n\n' \
               "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')" \
               "$(openssl version | cut -d' ' -f2)" "$(node --version)" \
               "$(nproc)" "$N" "$N_EKYC"
        table
    } > "$OUT/results.md"

    cat "$OUT/results.md"

    local log
    for log in "$OUT"/logs/*.err; do
        case $log in *.t.err) continue ;; esac
        if grep -q '\[\(alert\|crit\|emerg\)\]' "$log"; then
            grep -m3 '\[\(alert\|crit\|emerg\)\]' "$log" >&2
            say "warning: the lines above are in $log"
        fi
    done

    say "done in $((SECONDS - STARTED)) s; profiles: $OUT/cg/*.callgrind" \
        "(callgrind_annotate FILE), copies: $OUT/dhat/copies.txt"
}

main
