# shellcheck shell=bash
# shellcheck disable=SC2034  # EKYC_BODY and CAPTURE_PORT are read by the other parts
#
# bench/lib/requests.sh -- the raw requests the clients send
# (bench/mkreq.pl, into $OUT/req/), and the floors' requests: the
# gateway's own signed Initialize and EkycVerify, captured on their way
# upstream (bench/capture.pl).
#
# Sourced by bench/run.sh; uses common.sh, proc.sh and conf.sh.  Sets
# EKYC_BODY, CAPTURE_PORT.

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


# the floors' requests: the gateway's own signed Initialize and
# EkycVerify, captured on their way upstream
capture_floor_request() {
    capture_one "$OUT/req/init.req" "$OUT/req/floor.req"
    capture_one "$OUT/req/ekyc.req" "$OUT/req/floor-ekyc.req"
}


# capture_one REQUEST OUT: the gateway's signed call for REQUEST, as sent
capture_one() {
    local cap pid i

    rm -f "$OUT/run/capture.port" "$2"
    start "$OUT/logs/capture.log" perl "$BENCH/capture.pl" \
          "$OUT/run/capture.port" "$2"
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

    perl "$BENCH/client.pl" "$GW_PORT" "$1" 1 > /dev/null \
        || die "the capture request failed"

    stop "$pid"
    stop "$cap"

    [ -s "$2" ] || die "no request captured for $1"
}
