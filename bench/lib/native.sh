# shellcheck shell=bash
# shellcheck disable=SC2034  # the figures are read by table.sh
#
# bench/lib/native.sh -- the native runs (no valgrind): CPU per call of
# the gateway, the floor and the official SDK, in rounds (EkycVerify too,
# against its own floor); throughput of
# gateway and floor with wrk, interleaved.
#
# Sourced by bench/run.sh; uses common.sh and proc.sh.  Sets CPU_*,
# RPS_GW, RPS_FLOOR, TPUT_RATIO, TPUT_RATIOS.

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


# cpu_per_call PID PORT REQUEST N [WARM]: microseconds of PID's CPU per
# request (after WARM requests, 50 by default)
cpu_per_call() {
    local before after

    perl "$BENCH/client.pl" "$2" "$3" "${5:-50}" > /dev/null \
        || die "warm-up failed"
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
    local r_egw=() r_efl=() r_eratio=() eg ef

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

        eg=$(cpu_per_call "$gw" "$GW_PORT" "$OUT/req/ekyc.req" "$EKYC_N" 5)
        ef=$(cpu_per_call "$fl" "$FLOOR_PORT" "$OUT/req/floor-ekyc.req" \
                          "$EKYC_N" 5)
        r_egw+=("$eg")
        r_efl+=("$ef")
        r_eratio+=("$(awk -v a="$eg" -v b="$ef" 'BEGIN { printf "%.2f", a / b }')")

        say "CPU per call, round $((i + 1))/$ROUNDS: gateway $g us," \
            "floor $f us, official SDK $k us, Node backend calling the" \
            "gateway $n us; EkycVerify: gateway $eg us, floor $ef us"
    done

    CPU_GW=$(median "${r_gw[@]}")
    CPU_FLOOR=$(median "${r_fl[@]}")
    CPU_SDK=$(median "${r_sdk[@]}")
    CPU_NODE_GW=$(median "${r_node[@]}")
    CPU_RATIO=$(median "${r_ratio[@]}")
    CPU_RATIOS=${r_ratio[*]}
    CPU_GWFL=$(median "${r_gwfl[@]}")
    CPU_GWFLS=${r_gwfl[*]}
    CPU_EKYC_GW=$(median "${r_egw[@]}")
    CPU_EKYC_FLOOR=$(median "${r_efl[@]}")
    CPU_EKYC_RATIO=$(median "${r_eratio[@]}")
    CPU_EKYC_RATIOS=${r_eratio[*]}

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
