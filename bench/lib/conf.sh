# shellcheck shell=bash
#
# bench/lib/conf.sh -- the nginx configurations of a run, written into
# $OUT from the templates in bench/conf/: the fast upstream, the floor,
# the gateway (V3, V1, with the per-tenant limit, with the TransactionId
# cache), each checked with nginx -t.
#
# Sourced by bench/run.sh; uses say, die (common.sh) and free_port
# (ports.sh).  Reads BENCH, OUT, NGINX, MODULE, CERTS; sets UP_PORT,
# GW_PORT, FLOOR_PORT, LIMIT, CACHE.

CONF=$BENCH/conf


# render TEMPLATE KEY=VALUE...: the template with each @KEY@ replaced by
# VALUE, in the order given; the template's leading comment lines (which
# describe the template) are left out
render() {
    local text kv

    text=$(cat "$1") || die "cannot read $1"
    shift

    while [[ $text == '#'* ]]; do
        case $text in
            *$'\n'*) text=${text#*$'\n'} ;;
            *)       text= ;;
        esac
    done

    for kv in "$@"; do
        text=${text//"@${kv%%=*}@"/"${kv#*=}"}
    done
    printf '%s\n' "$text"
}


# nginx_conf NAME TEMPLATE KEY=VALUE...: main.conf around the rendered
# TEMPLATE; one process, nothing outside $OUT
nginx_conf() {
    local name=$1 template=$2 http
    shift 2

    mkdir -p "$OUT/tmp/$name"

    http=$(render "$CONF/$template" "$@")
    render "$CONF/main.conf" "OUT=$OUT" "NAME=$name" "HTTP=$http"
}


# the upstream's TLS client side, the same for the floor and the gateway
tls_to_upstream() {
    render "$CONF/tls-to-upstream.conf" "CA=$CERTS/ca.pem"
}


write_upstream_conf() {
    nginx_conf upstream upstream.conf "BENCH=$BENCH" "UP_PORT=$UP_PORT" \
        "CERTS=$CERTS" > "$OUT/upstream.conf"
}


write_floor_conf() {
    nginx_conf floor floor.conf "UP_PORT=$UP_PORT" "FLOOR_PORT=$FLOOR_PORT" \
        "TLS_TO_UPSTREAM=$(tls_to_upstream)" > "$OUT/floor.conf"
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
$(tls_to_upstream)"
    fi

    {
        printf 'load_module %s;\n\n' "$MODULE"
        nginx_conf "$name" gateway.conf "UP_PORT=$UP_PORT" "SIGNATURE=$sig" \
            "GW_PORT=$GW_PORT" "HTTP_EXTRA=$http_extra" \
            "SERVER_EXTRA=$server_extra" "LOCATION_EXTRA=$loc_extra" \
            "PASS=$pass"
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
