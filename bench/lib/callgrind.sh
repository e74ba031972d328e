# shellcheck shell=bash
#
# bench/lib/callgrind.sh -- instructions per request (callgrind), for the
# floor and each gateway case; the profiles stay in $OUT/cg/.
#
# Sourced by bench/run.sh; uses common.sh and proc.sh.  Fills CG[case].

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

    # what a case counts besides instructions starts here (CG_WARM_HOOK)
    ${CG_WARM_HOOK:-:}

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

    GW_PORT_OF=$FLOOR_PORT
    cg_case f0-floor floor "$R/floor-ekyc.req" "$N_EKYC"
    GW_PORT_OF=$GW_PORT

    cg_case g-check gw-v3 "$R/check.req" "$N"
}
