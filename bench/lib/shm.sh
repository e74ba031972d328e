# shellcheck shell=bash
#
# bench/lib/shm.sh -- shared memory per entry of the TransactionId cache
# and of the per-tenant limit (resident pages of the zone before and
# after many new keys).
#
# Sourced by bench/run.sh; uses common.sh and proc.sh.  Sets SHM_*.

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
