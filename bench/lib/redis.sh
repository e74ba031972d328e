# shellcheck shell=bash
#
# bench/lib/redis.sh -- the state on Redis against the same state in
# shared memory: Initialize with a per-tenant limit and the TransactionId
# cache, a miss (a new MerchantBizId: the flight and the charge before the
# call, the answer written back after it) and a hit, instructions per
# request and round trips to Redis per request (EVALSHA/EVAL calls the
# server counted during the counted requests).
#
# Sourced by bench/run.sh; uses common.sh, ports.sh, proc.sh, conf.sh and
# callgrind.sh.  Fills CG[h-*] and RT[*].

declare -A RT

# evals: the script calls the server has counted since CONFIG RESETSTAT
evals() {
    redis-cli -p "$REDIS_PORT" INFO commandstats \
        | sed -n 's/^cmdstat_eval\(sha\)\{0,1\}:calls=\([0-9]*\).*/\2/p' \
        | awk '{ n += $1 } END { print n + 0 }'
}


redis_resetstat() {
    redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT > /dev/null
}


# redis_case NAME CONF REQUEST N [FIRST]: cg_case, and the round trips of
# its counted requests (the server's statistics reset after the warm-up)
redis_case() {
    local name=$1 total

    CG_WARM_HOOK=redis_resetstat cg_case "$@"
    total=$(evals)

    RT[$name]=$(awk -v t="$total" -v n="$4" 'BEGIN { printf "%.2f", t / n }')
    say "$name: ${RT[$name]} round trips to Redis per request"
}


redis_cases() {
    local R=$OUT/req pid limit cache zones

    REDIS_STATUS=ok

    if [ "$LIMIT" != ok ] || [ "$CACHE" != ok ]; then
        REDIS_STATUS="needs the limit and the cache"
        return
    fi

    REDIS_PORT=$(free_port)
    start "$OUT/logs/redis.out" redis-server --port "$REDIS_PORT" \
          --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT"
    pid=$PID
    wait_port "$REDIS_PORT" "$pid" "$OUT/logs/redis.out"

    limit="idv_limit zone=bench_qps rate=50000r/s burst=100000 nodelay;"
    cache="idv_cache bench_tx;"

    zones="idv_limit_zone zone=bench_qps:3m;
    idv_cache_zone zone=bench_tx:7m ttl=30m;"
    write_gw_conf gw-lc-shm v3 "$zones" "$cache $limit" ""

    zones="idv_redis name=bench server=127.0.0.1:$REDIS_PORT;
    idv_limit_zone zone=bench_qps:3m store=redis:bench;
    idv_cache_zone zone=bench_tx:7m ttl=30m store=redis:bench;"
    write_gw_conf gw-lc-redis v3 "$zones" "$cache $limit" ""

    [ "$(nginx_t gw-lc-redis)" = ok ] \
        || die "$OUT/gw-lc-redis.conf: $(nginx_t gw-lc-redis)"

    GW_PORT_OF=$GW_PORT
    cg_case h-shm-miss gw-lc-shm "$R/init-vary.req" "$N" 2000000
    redis_case h-redis-miss gw-lc-redis "$R/init-vary.req" "$N" 3000000
    cg_case h-shm-hit gw-lc-shm "$R/init.req" "$N"
    redis_case h-redis-hit gw-lc-redis "$R/init.req" "$N"

    stop "$pid"
}


redis_rows() {
    if [ "$REDIS_STATUS" != ok ]; then
        row "(h) (b) + limit + cache on Redis" "$(absent "$REDIS_STATUS")" \
            "" ""
        return
    fi

    cg_row "(h) (b) + limit + cache, miss, shared memory" h-shm-miss
    cg_row "(h) the same on Redis" h-redis-miss
    ratio_row "h/h: Redis over shared memory, miss" h-redis-miss h-shm-miss \
        "<=" 1.15
    row "  round trips to Redis per request, miss" "${RT[h-redis-miss]}" \
        "<= 2" "$(met "${RT[h-redis-miss]}" "<=" 2)"
    cg_row "(h) (b) + limit + cache, hit, shared memory" h-shm-hit
    cg_row "(h) the same on Redis" h-redis-hit
    ratio_row "h/h: Redis over shared memory, hit" h-redis-hit h-shm-hit \
        "<=" 1.15
    row "  round trips to Redis per request, hit" "${RT[h-redis-hit]}" \
        "<= 1" "$(met "${RT[h-redis-hit]}" "<=" 1)"
}
