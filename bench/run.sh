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

# The parts, in the order a run uses them, are in bench/lib/; the nginx
# configurations are templates in bench/conf/:
#
#   bench/lib/common.sh      messages, median and other small helpers
#   bench/lib/ports.sh       free loopback ports
#   bench/lib/proc.sh        starting and stopping processes
#   bench/lib/prepare.sh     packages, the module, the SDK, certificates
#   bench/lib/conf.sh        bench/conf/*.conf rendered into $OUT, nginx -t
#   bench/lib/requests.sh    the raw requests; the floor's, captured
#   bench/lib/callgrind.sh   instructions per request
#   bench/lib/copies.sh      copies of the EkycVerify body (DHAT)
#   bench/lib/native.sh      CPU per call and throughput, natively
#   bench/lib/shm.sh         shared memory per cache and limit entry
#   bench/lib/redis.sh       limit and cache on Redis against shared memory
#   bench/lib/table.sh       the table

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
    EKYC_N=40       # EkycVerify calls per round: gateway and its floor
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
    EKYC_N=10
    PAIRS=2
    SECS=2
    SHM_N=800
fi

STARTED=$SECONDS

# shellcheck source=bench/lib/common.sh
. "$BENCH/lib/common.sh"
# shellcheck source=bench/lib/ports.sh
. "$BENCH/lib/ports.sh"
# shellcheck source=bench/lib/proc.sh
. "$BENCH/lib/proc.sh"
# shellcheck source=bench/lib/prepare.sh
. "$BENCH/lib/prepare.sh"
# shellcheck source=bench/lib/conf.sh
. "$BENCH/lib/conf.sh"
# shellcheck source=bench/lib/requests.sh
. "$BENCH/lib/requests.sh"
# shellcheck source=bench/lib/callgrind.sh
. "$BENCH/lib/callgrind.sh"
# shellcheck source=bench/lib/copies.sh
. "$BENCH/lib/copies.sh"
# shellcheck source=bench/lib/native.sh
. "$BENCH/lib/native.sh"
# shellcheck source=bench/lib/shm.sh
. "$BENCH/lib/shm.sh"
# shellcheck source=bench/lib/redis.sh
. "$BENCH/lib/redis.sh"
# shellcheck source=bench/lib/table.sh
. "$BENCH/lib/table.sh"

ulimit -c 0

trap cleanup EXIT
trap 'exit 130' INT TERM


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
    redis_cases
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
