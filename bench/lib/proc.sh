# shellcheck shell=bash
#
# bench/lib/proc.sh -- the processes a run starts (nginx, valgrind,
# capture.pl): started in the background, waited for on their port, and
# every one stopped here, by its pid, also when the run fails
# (bench/run.sh traps EXIT with cleanup).
#
# Sourced by bench/run.sh; uses die (common.sh).  Keeps the pids in PIDS.

# every process started here is stopped here, by its pid
PIDS=()


stop_pid() {
    local pid=$1 i

    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -QUIT "$pid" 2>/dev/null || true

    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done

    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}


cleanup() {
    local pid

    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        kill -QUIT "$pid" 2>/dev/null || true
    done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        stop_pid "$pid"
    done
    PIDS=()
}


# start LOG CMD...: run CMD in the background; its pid in $PID
start() {
    local log=$1
    shift

    "$@" > "$log" 2>&1 < /dev/null &
    PID=$!
    PIDS+=("$PID")
}


# stop PID: stop it and forget it
stop() {
    local keep=() p

    stop_pid "$1"
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}


# wait_port PORT PID LOG: until PORT accepts, or fail with LOG
wait_port() {
    local i

    for ((i = 0; i < 600; i++)); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done

    tail -n 20 "$3" >&2 || true
    die "nothing accepts on 127.0.0.1:$1 (log: $3)"
}
