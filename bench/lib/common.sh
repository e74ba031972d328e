# shellcheck shell=bash
#
# bench/lib/common.sh -- messages and the small number helpers of
# bench/run.sh: say, die, median, kinstr, absent.
#
# Sourced by bench/run.sh first; reads STARTED (the run's start, in
# $SECONDS).

say() { printf 'bench: [%3ds] %s\n' $((SECONDS - STARTED)) "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }


median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}


kinstr() {
    awk -v v="$1" 'BEGIN {
        if (v >= 10000000) printf "%.1fM", v / 1000000
        else printf "%.1fk", v / 1000 }'
}


# n/a text for a room that is not there
absent() {
    case $1 in
        ok)         ;;
        notbuilt)   echo "n/a (not built)" ;;
        *)          echo "n/a (config $1)" ;;
    esac
}
