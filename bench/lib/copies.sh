# shellcheck shell=bash
#
# bench/lib/copies.sh -- copies of the EkycVerify body made by the gateway
# (DHAT, counted by bench/copies.pl).
#
# Sourced by bench/run.sh; uses common.sh and proc.sh.  Sets COPIES.

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
