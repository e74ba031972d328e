# shellcheck shell=bash
# shellcheck disable=SC2034  # MODULE and CERTS are read by the other parts
#
# bench/lib/prepare.sh -- what the benchmark needs: Debian packages
# (valgrind, wrk, ...), the module (built, or IDV_MODULE), the official
# SDK from npm as bench/package-lock.json pins it, test certificates.
#
# Sourced by bench/run.sh; uses say, die (common.sh).  Sets MODULE, CERTS.

# packages: the one installer of the repository (scripts/deps.sh)
# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"


prepare() {
    local pkgs=(valgrind wrk perl openssl binutils redis-server) stamp

    command -v node > /dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm > /dev/null 2>&1 || pkgs+=(npm)
    ensure_pkgs "${pkgs[@]}"

    rm -rf "$OUT/run" "$OUT/logs" "$OUT/tmp" "$OUT/cg" "$OUT/dhat"
    mkdir -p "$OUT/run" "$OUT/logs" "$OUT/tmp" "$OUT/cg" "$OUT/dhat" \
             "$OUT/req"

    # the module: one copy for the whole run, whatever rebuilds it meanwhile
    if [ -n "${IDV_MODULE:-}" ]; then
        [ -f "$IDV_MODULE" ] || die "IDV_MODULE=$IDV_MODULE: no such file"
        cp "$IDV_MODULE" "$OUT/ngx_http_idv_module.so"
    else
        say "building the module (./build.sh build)"
        "$ROOT/build.sh" build > "$OUT/logs/build.log" 2>&1 \
            || { tail -n 30 "$OUT/logs/build.log" >&2; die "the build failed"; }
        cp "$ROOT/build/ngx_http_idv_module.so" "$OUT/ngx_http_idv_module.so"
    fi
    MODULE=$OUT/ngx_http_idv_module.so

    [ -x "$NGINX" ] || die "no nginx at $NGINX (./build.sh installs Debian's)"

    # the official SDK, as pinned by the lock file
    stamp=$BENCH/node_modules/.bench-lock
    if ! cmp -s "$BENCH/package-lock.json" "$stamp" 2>/dev/null; then
        say "installing the official SDK (npm ci in bench/)"
        (cd "$BENCH" && npm ci --no-audit --no-fund --loglevel=error) \
            > "$OUT/logs/npm.log" 2>&1 \
            || { tail -n 20 "$OUT/logs/npm.log" >&2; die "npm ci failed"; }
        cp "$BENCH/package-lock.json" "$stamp"
    fi

    CERTS=$OUT/certs
    "$ROOT/t/lib/mkcerts.sh" "$CERTS" > "$OUT/logs/mkcerts.log" 2>&1 \
        || { cat "$OUT/logs/mkcerts.log" >&2; die "t/lib/mkcerts.sh failed"; }
}
