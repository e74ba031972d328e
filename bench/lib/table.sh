# shellcheck shell=bash
#
# bench/lib/table.sh -- the table of results: one row per figure, its
# value, its target and whether it is met, as Markdown.
#
# Sourced by bench/run.sh; uses kinstr, median, absent (common.sh) and
# the figures the other parts set.

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
    row "(f0) floor: proxy_pass over TLS, pre-signed EkycVerify" \
        "$(kinstr "${CG[f0-floor]}") instr/req" "reference" ""
    cg_row "(g) CheckResult" g-check

    ratio_row "b/a: gateway over the floor" b-v3 a-floor "<=" 1.6
    ratio_row "c/b: V1 over V3" c-v1 b-v3 "" ""
    ratio_row "d/b: limit" d-limit b-v3 "<=" 1.03
    ratio_row "e/b: cache miss" e-miss b-v3 "<=" 1.05
    ratio_row "e/b: cache hit" e-hit b-v3 "<=" 0.35
    ratio_row "f/f0: EkycVerify over its own floor" f-ekyc f0-floor "<=" 7.5
    redis_rows

    row "CPU per Initialize: gateway (nginx process, median)" \
        "$CPU_GW µs" "" ""
    row "CPU per Initialize: official SDK (Node process, median)" \
        "$CPU_SDK µs" "" ""
    row "SDK / gateway CPU per call (median of $ROUNDS rounds)" \
        "${CPU_RATIO}× (rounds: $CPU_RATIOS)" ">= 40×" \
        "$(met "$CPU_RATIO" ">=" 40)"
    row "CPU per Initialize: floor (median)" "$CPU_FLOOR µs" "" ""
    row "b/a native: gateway / floor CPU per Initialize (median of rounds)" \
        "$CPU_GWFL (rounds: $CPU_GWFLS)" "<= 1.15" \
        "$(met "$CPU_GWFL" "<=" 1.15)"
    row "CPU per EkycVerify: gateway / its floor (medians)" \
        "$CPU_EKYC_GW µs / $CPU_EKYC_FLOOR µs" "" ""
    row "f/f0 native: EkycVerify gateway / floor CPU (median of rounds)" \
        "$CPU_EKYC_RATIO (rounds: $CPU_EKYC_RATIOS)" "<= 2.0" \
        "$(met "$CPU_EKYC_RATIO" "<=" 2.0)"
    row "for reference: Node backend's own CPU per gateway call" \
        "$CPU_NODE_GW µs" "" ""

    row "throughput gateway / floor (wrk, median of $PAIRS pairs)" \
        "$TPUT_RATIO (pairs: $TPUT_RATIOS)" ">= 0.90" \
        "$(met "$TPUT_RATIO" ">=" 0.90)"
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
