#!/usr/bin/env bash
# bench/soak.sh MINUTES -- sustained mixed traffic against nginx with the
# module, on loopback, for MINUTES (a positive number; 0.5 is 30 s).
#
# Starts the HTTPS mock of the API (t/mock/mock-aliyun.js) and nginx with
# build/ngx_http_idv_module.so (two workers, every zone of the module in
# use), then drives it with a small keep-alive client (Node, core modules
# only, written below) at a steady rate:
#
#   Initialize (eKYC, through the TransactionId cache; some repeated, so
#   that the cache answers), EkycVerify with small synthetic images,
#   CheckResult of earlier transactions, Id2MetaVerifyIntl, result
#   callbacks fired through the mock's /__mock/complete (some twice: the
#   replay guard), and a tenant "noisy" above its idv_limit rate (its 429
#   Gateway.Throttled answers are intended).
#
# It stops by itself after MINUTES (and after at most
# SOAK_RATE x seconds x 1.1 requests) and reports requests by operation
# and status, errors (anything but 200 Success, and the noisy tenant's
# 429), the VmRSS of each worker after warm-up (20 % of the run, at least
# 30 s and at most half of it) and at
# the end, and the occupancy of the module's shared memory zones
# (idv_zone_used_ratio from idv_metrics).  It exits non-zero on any error,
# on a worker RSS that grew more than 5 %, on a worker that was replaced,
# or on [alert], [crit] or [emerg] in error.log.
#
# Environment:
#   SOAK_RATE=150         requests per second offered (all operations)
#   SOAK_CONCURRENCY=16   requests in flight at most
#   SOAK_DIR=build/soak   configuration, logs, summary.json
#   SOAK_RSS_LIMIT=5      allowed RSS growth in percent
#   SOAK_CHECK_AFTER_CALLBACK=1
#                         also CheckResult transactions whose callback was
#                         delivered (fails until docs/security.md F1 is
#                         fixed)
#   IDV_NGINX=/usr/sbin/nginx, IDV_MODULE=build/ngx_http_idv_module.so
#
# Everything listens on 127.0.0.1 and talks to 127.0.0.1 only.

set -euo pipefail

# one compound command: bash reads it whole before running it, so that an
# edit or a checkout of this file during a run cannot change the run
{

ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    echo "usage: bench/soak.sh MINUTES   (e.g. 10, or 1 for CI, 0.5 for a try)" >&2
    exit 2
}

[ $# -eq 1 ] || usage
MINUTES=$1
[[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || usage
SECONDS_TOTAL=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
[ "$SECONDS_TOTAL" -ge 10 ] || { echo "soak: MINUTES must be at least 10 seconds' worth" >&2; exit 2; }
[ "$SECONDS_TOTAL" -le 7200 ] || { echo "soak: at most 120 minutes" >&2; exit 2; }

# lifetimes in the zones scale with the run, so that every zone has
# reached its steady state (entries expiring as fast as they come) well
# before the "start" sample at 20 % of the run
LIFE=$(( SECONDS_TOTAL / 10 < 6 ? 6 : SECONDS_TOTAL / 10 ))
HALF=$(( (LIFE + 1) / 2 ))

RATE=${SOAK_RATE:-150}
CONCURRENCY=${SOAK_CONCURRENCY:-16}
RSS_LIMIT=${SOAK_RSS_LIMIT:-5}
DIR=${SOAK_DIR:-$ROOT/build/soak}
NGINX=${IDV_NGINX:-/usr/sbin/nginx}
MODULE=${IDV_MODULE:-$ROOT/build/ngx_http_idv_module.so}

case $MODULE in /*) ;; *) MODULE=$ROOT/$MODULE ;; esac

for tool in node perl awk; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is needed (./build.sh test installs it)" >&2; exit 1; }
done

if [ ! -f "$MODULE" ]; then
    "$ROOT/build.sh" build
fi

[ -x "$NGINX" ] || { echo "soak: no nginx at $NGINX" >&2; exit 1; }

rm -rf "$DIR"
mkdir -p "$DIR"
chmod 755 "$DIR"

NGINX_PID=
MOCK_PID=

cleanup() {
    local pid
    for pid in $NGINX_PID $MOCK_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $NGINX_PID $MOCK_PID; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port, shared with bench/run.sh
# shellcheck source=bench/lib/ports.sh
. "$ROOT/bench/lib/ports.sh"

PORT=$(free_port)
BACKEND_PORT=$(free_port)

# --- test certificates and credentials -------------------------------------

sh "$ROOT/t/lib/mkcerts.sh" "$DIR/certs"

cat > "$DIR/credentials" <<'END'
[default]
type = access_key
access_key_id = testid
access_key_secret = testsecret
END
chmod 600 "$DIR/credentials"

# --- the mock ----------------------------------------------------------------

node "$ROOT/t/mock/mock-aliyun.js" --port 0 --quiet \
    --cert "$DIR/certs/mock.pem" --key "$DIR/certs/mock.key" \
    > "$DIR/mock.out" 2> "$DIR/mock.log" &
MOCK_PID=$!

MOCK_PORT=
for _ in $(seq 100); do
    MOCK_PORT=$(sed -n 's/^mock-aliyun listening on \([0-9]*\)$/\1/p' "$DIR/mock.out")
    [ -n "$MOCK_PORT" ] && break
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$DIR/mock.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$MOCK_PORT" ] || { echo "soak: the mock did not start" >&2; exit 1; }

# --- nginx ---------------------------------------------------------------------

cat > "$DIR/nginx.conf" <<END
load_module $MODULE;
daemon off;
master_process on;
worker_processes 2;
pid $DIR/nginx.pid;
lock_file $DIR/nginx.lock;
error_log $DIR/error.log notice;

events {
    worker_connections 1024;
}

http {
    access_log off;

    client_body_temp_path $DIR/client_body_temp;
    proxy_temp_path $DIR/proxy_temp;
    fastcgi_temp_path $DIR/fastcgi_temp;
    uwsgi_temp_path $DIR/uwsgi_temp;
    scgi_temp_path $DIR/scgi_temp;

    idv_credentials $DIR/credentials;
    idv_endpoint 127.0.0.1:$MOCK_PORT;

    idv_metrics_zone 1m tenants=20;
    idv_cache_zone zone=soak_tx:4m ttl=${HALF}s;
    idv_tenancy_zone zone=soak_owners:4m ttl=${LIFE}s;
    idv_limit_zone zone=soak_tenants:1m;
    idv_callback_zone zone=soak_cb:1m ttl=${LIFE}s;

    # every tenant far above what it sends, but "noisy"
    map \$http_x_tenant \$soak_rate {
        default 1000r/s;
        noisy   5r/s;
    }

    upstream idv_mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 16;
    }

    server {                                # the backend that gets results
        listen 127.0.0.1:$BACKEND_PORT;
        location = /kyc/result { return 200 '{"ok":true}'; }
    }

    server {
        listen 127.0.0.1:$PORT;

        client_max_body_size    4m;
        client_body_buffer_size 4m;

        idv_pass   /_idv_upstream;
        idv_tenant \$http_x_tenant;
        idv_cache  soak_tx;
        idv_limit  zone=soak_tenants rate=\$soak_rate burst=5 nodelay;
        idv_limit_log_level info;
        idv_callback_ttl ${HALF}s;

        location = /idv/ekyc/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            idv_callback_url https://gateway.example/idv/callback;
        }

        location = /idv/ekyc/verify {
            idv_action EkycVerify;
            idv_product_code eKYC_MIN;
        }

        location = /idv/result {
            idv_action CheckResult;
        }

        location = /idv/id2meta {
            idv_action Id2MetaVerifyIntl;
            idv_product_code ID_2META;
        }

        location = /idv/callback {
            idv_callback;
            idv_callback_pass /_app_result;
        }

        location = /_app_result {
            internal;
            proxy_pass http://127.0.0.1:$BACKEND_PORT/kyc/result;
        }

        location = /metrics {
            idv_metrics;
        }

        location = /_idv_upstream {
            internal;
            proxy_pass https://idv_mock/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$idv_host;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $DIR/certs/ca.pem;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            subrequest_output_buffer_size 256k;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }
    }
}
END

"$NGINX" -p "$DIR/" -c "$DIR/nginx.conf" -e "$DIR/error.log" \
    > "$DIR/nginx.stderr" 2>&1 &
NGINX_PID=$!

for _ in $(seq 100); do
    if perl -MIO::Socket::IP -e 'exit !IO::Socket::IP->new(PeerHost => "127.0.0.1", PeerPort => shift)' "$PORT" 2>/dev/null; then
        break
    fi
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$DIR/error.log" "$DIR/nginx.stderr" >&2; exit 1; }
    sleep 0.1
done

# --- the client ------------------------------------------------------------------

cat > "$DIR/client.js" <<'END'
'use strict';
/*
 * The soak client: keep-alive HTTP to the gateway, HTTPS to the mock's
 * control API, at a steady rate with a bounded number in flight; samples
 * the workers' memory and the zones' occupancy after warm-up and at the
 * end; prints a JSON summary.  Node core modules only.
 */
const http = require('http');
const https = require('https');
const fs = require('fs');
const crypto = require('crypto');

const cfg = JSON.parse(process.argv[2]);
const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.concurrency });
const mockAgent = new https.Agent({ keepAlive: true, maxSockets: 4,
    ca: fs.readFileSync(cfg.ca) });

const TENANTS = ['acme', 'globex', 'initech', 'umbrella'];

/* small synthetic images whose headers pass the gateway's checks */
function jpeg(w, h, bytes) {
    const soi = Buffer.from([0xff, 0xd8]);
    const app0 = Buffer.concat([Buffer.from([0xff, 0xe0, 0, 16]),
        Buffer.from('JFIF\0\x01\x01\0\0\x01\0\x01\0\0', 'latin1')]);
    const sof = Buffer.from([0xff, 0xc0, 0, 17, 8, h >> 8, h & 255, w >> 8,
        w & 255, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    const sos = Buffer.from([0xff, 0xda, 0, 12, 3, 1, 0, 2, 0x11, 3, 0x11, 0,
        0x3f, 0]);
    const fill = Buffer.alloc(Math.max(0, bytes - 2 - 18 - 19 - 14 - 2));
    return Buffer.concat([soi, app0, sof, sos, fill, Buffer.from([0xff, 0xd9])]);
}

function png(w, h, bytes) {
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(w, 0);
    ihdr.writeUInt32BE(h, 4);
    ihdr[8] = 8; ihdr[9] = 2;
    const pad = Math.max(0, bytes - 8 - 25 - 24);
    const idat = Buffer.alloc(12 + pad, 0x55);
    idat.writeUInt32BE(pad, 0);
    idat.write('IDAT', 4, 'latin1');
    idat.writeUInt32BE(0, 8 + pad);
    return Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'),
        Buffer.from([0, 0, 0, 13]), Buffer.from('IHDR'), ihdr,
        Buffer.alloc(4), Buffer.from([0, 0, 0, 0]), Buffer.from('IEND'),
        Buffer.from([0xae, 0x42, 0x60, 0x82]), idat]);
}

const FACE = jpeg(720, 1280, 6000).toString('base64');
const IDPIC = png(1024, 768, 5000).toString('base64');

const stats = { requests: 0, by_op: {}, errors: 0, intended_429: 0,
                error_samples: [] };
const recent = [];                      /* {tenant, biz, tx, at, fired, params} */
let seq = 0;

function count(op, key) {
    const o = stats.by_op[op] || (stats.by_op[op] = {});
    o[key] = (o[key] || 0) + 1;
}

function fail(op, what) {
    stats.errors++;
    count(op, 'error');
    if (stats.error_samples.length < 20)
        stats.error_samples.push(op + ': ' + String(what).slice(0, 300));
}

function post(path, tenant, body) {
    return new Promise((resolve) => {
        const data = Buffer.from(JSON.stringify(body));
        const req = http.request({ host: '127.0.0.1', port: cfg.port, path,
            method: 'POST', agent, headers: {
                'Content-Type': 'application/json',
                'Content-Length': data.length, 'X-Tenant': tenant } },
            (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () => {
                    let json = null;
                    try { json = JSON.parse(Buffer.concat(chunks)); } catch (e) { /* */ }
                    resolve({ status: res.statusCode, json });
                });
                res.on('error', (e) => resolve({ status: 0, error: e.message }));
            });
        req.setTimeout(30000, () => req.destroy(new Error('timeout')));
        req.on('error', (e) => resolve({ status: 0, error: e.message }));
        req.end(data);
    });
}

function mockPost(path, body) {
    return new Promise((resolve) => {
        const data = Buffer.from(JSON.stringify(body));
        const req = https.request({ host: '127.0.0.1', port: cfg.mockPort, path,
            method: 'POST', agent: mockAgent, servername: 'localhost',
            headers: { 'Content-Type': 'application/json',
                       'Content-Length': data.length } },
            (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () => {
                    let json = null;
                    try { json = JSON.parse(Buffer.concat(chunks)); } catch (e) { /* */ }
                    resolve({ status: res.statusCode, json });
                });
            });
        req.setTimeout(30000, () => req.destroy(new Error('timeout')));
        req.on('error', (e) => resolve({ status: 0, error: e.message }));
        req.end(data);
    });
}

function httpGet(path) {
    return new Promise((resolve) => {
        http.get({ host: '127.0.0.1', port: cfg.port, path, agent }, (res) => {
            let s = '';
            res.on('data', (c) => { s += c; });
            res.on('end', () => resolve({ status: res.statusCode, body: s }));
        }).on('error', (e) => resolve({ status: 0, body: '', error: e.message }));
    });
}

function ok(op, r) {
    stats.requests++;
    if (r.status === 200 && r.json && r.json.Code === 'Success') {
        count(op, '200');
        return true;
    }
    count(op, String(r.status));
    fail(op, r.status + ' ' + (r.error || JSON.stringify(r.json)));
    return false;
}

const pick = (a) => a[Math.floor(Math.random() * a.length)];

async function opInitialize() {
    const now = Date.now();
    const again = recent.filter((x) => now - x.at < cfg.half * 1000 - 500);
    let params, tenant, repeat = false;
    if (again.length && Math.random() < 0.2) {
        /* the same request again: answered by the cache */
        const x = pick(again);
        tenant = x.tenant;
        params = x.params;
        repeat = true;
    } else {
        tenant = pick(TENANTS);
        params = { MerchantBizId: 'soak' + (++seq) + 'x' +
                       crypto.randomBytes(4).toString('hex'),
                   MerchantUserId: 'user-' + (seq % 997),
                   DocType: '01000000',
                   MetaInfo: '{"deviceType":"h5","ua":"soak"}' };
    }
    const r = await post('/idv/ekyc/initialize', tenant, params);
    if (!ok('Initialize', r)) return;
    if (r.json.Gateway && r.json.Gateway.cached) count('Initialize', 'cached');
    if (!repeat) {
        recent.push({ tenant, biz: params.MerchantBizId,
                      tx: r.json.Result.TransactionId, at: now, fired: 0,
                      params });
        if (recent.length > 2000) recent.shift();
    }
}

async function opCheckResult() {
    /*
     * docs/security.md F1: after a callback went to idv_callback_pass,
     * CheckResult of that transaction answers 200 with broken JSON; left
     * out unless SOAK_CHECK_AFTER_CALLBACK=1
     */
    const pool = cfg.checkAfterCallback ? recent
                                        : recent.filter((x) => !x.fired);
    if (!pool.length) return opInitialize();
    const x = pick(pool);
    const r = await post('/idv/result', x.tenant,
                         { MerchantBizId: x.biz, TransactionId: x.tx });
    ok('CheckResult', r);
}

async function opEkycVerify() {
    const tenant = pick(TENANTS);
    const r = await post('/idv/ekyc/verify', tenant, {
        MerchantBizId: 'soakv' + (++seq), MerchantUserId: 'u-' + (seq % 991),
        DocType: '00000001', FacePictureBase64: FACE,
        IdOcrPictureBase64: IDPIC });
    ok('EkycVerify', r);
}

function id2meta() {
    let n = String(110101199000000000 + Math.floor(Math.random() * 1e9));
    if (n.endsWith('0000') || n.endsWith('9999')) n = n.slice(0, -1) + '5';
    return { ParamType: 'normal', IdentifyNum: n, UserName: 'Soak Tester' };
}

async function opId2Meta() {
    ok('Id2MetaVerifyIntl', await post('/idv/id2meta', pick(TENANTS), id2meta()));
}

async function opNoisy() {
    const r = await post('/idv/id2meta', 'noisy', id2meta());
    stats.requests++;
    if (r.status === 429 && r.json && r.json.Code === 'Gateway.Throttled') {
        stats.intended_429++;
        count('noisy', '429');
    } else if (r.status === 200 && r.json && r.json.Code === 'Success') {
        count('noisy', '200');
    } else {
        count('noisy', String(r.status));
        fail('noisy', r.status + ' ' + (r.error || JSON.stringify(r.json)));
    }
}

async function opCallback() {
    const now = Date.now();
    /* tokens expire at a whole second: the first fire and the repeat
       both within (idv_callback_ttl - 1) s of the Initialize */
    const young = (x) => now - x.at < (cfg.half - 1) * 1000 - 200;
    const fresh = recent.filter((x) => young(x) && x.fired === 0);
    const twice = recent.filter((x) => young(x) && x.fired === 1);
    let x;
    if (twice.length && Math.random() < 0.1) x = pick(twice);
    else if (fresh.length) x = pick(fresh);
    else return opInitialize();
    const nth = ++x.fired;
    const r = await mockPost('/__mock/complete', {
        transactionId: x.tx, passed: 'Y', subCode: '200',
        url: 'http://127.0.0.1:' + cfg.port + '/idv/callback' });
    stats.requests++;
    const c = r.json || {};
    let body = null;
    try { body = JSON.parse(c.body); } catch (e) { /* */ }
    const code = body && body.Code;
    if (r.status === 200 && c.fired && c.status === 200 && code === 'Success'
        && body.Message === (nth === 1 ? 'delivered' : 'already delivered')) {
        count('callback', nth === 1 ? '200 delivered' : '200 duplicate');
    } else if (nth > 1 && c.status === 409 && code === 'Callback.InProgress') {
        /* the repeat came while the first was still being confirmed */
        count('callback', '409 in progress');
    } else {
        count('callback', String(c.status || r.status));
        fail('callback', JSON.stringify(c).slice(0, 300));
    }
}

const MIX = [[opInitialize, 25], [opCheckResult, 20], [opEkycVerify, 15],
             [opId2Meta, 15], [opCallback, 10], [opNoisy, 15]];
const TOTAL = MIX.reduce((s, m) => s + m[1], 0);

function nextOp() {
    let n = Math.random() * TOTAL;
    for (const [fn, w] of MIX) {
        if ((n -= w) < 0) return fn;
    }
    return opId2Meta;
}

/* the workers of the nginx master, and their memory */
function workers() {
    const out = [];
    for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        let st;
        try { st = fs.readFileSync('/proc/' + d + '/stat', 'latin1'); } catch (e) { continue; }
        const m = /^\d+ \(.*\) \S+ (\d+)/.exec(st);
        if (m && Number(m[1]) === cfg.master) out.push(Number(d));
    }
    return out.sort((a, b) => a - b).map((pid) => {
        const s = fs.readFileSync('/proc/' + pid + '/status', 'latin1');
        const kb = (k) => Number((new RegExp('^' + k + ':\\s+(\\d+)', 'm').exec(s) || [0, 0])[1]);
        return { pid, VmRSS_kB: kb('VmRSS'), RssAnon_kB: kb('RssAnon'),
                 RssShmem_kB: kb('RssShmem'), RssFile_kB: kb('RssFile') };
    });
}

async function sample(name) {
    /*
     * memory first: a scrape of idv_metrics allocates its worst-case
     * buffer (~360 kB), which malloc keeps in the heap from the second
     * scrape of a worker on; it must not count as growth
     */
    const w = workers();
    const m = await httpGet('/metrics');
    const zones = {};
    for (const line of m.body.split('\n')) {
        const z = /^idv_zone_used_ratio\{zone="([^"]*)",kind="([^"]*)"\} (\S+)$/.exec(line);
        if (z) zones[z[1] + ' (' + z[2] + ')'] = Number(z[3]);
    }
    return { at_s: Math.round((Date.now() - start) / 1000), requests: stats.requests,
             workers: w, zones };
}

const start = Date.now();
const end = start + cfg.seconds * 1000;
const maxRequests = Math.ceil(cfg.rate * cfg.seconds * 1.1);
let issued = 0;

async function loop() {
    for (;;) {
        const due = start + issued * 1000 / cfg.rate;
        if (issued >= maxRequests || due >= end) return;
        issued++;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (Date.now() >= end) return;
        await nextOp()();
    }
}

(async () => {
    const samples = {};
    /* warm-up: 20 % of the run, but at least 30 s (at most half of it),
       so that a short run has seen its busiest moments before "start" */
    const warmMs = Math.min(Math.max(cfg.seconds * 200, 30000), cfg.seconds * 500);
    const warm = setTimeout(async () => { samples.start = await sample('start'); },
                            warmMs);
    const near = setTimeout(async () => { samples.end = await sample('end'); },
                            Math.max(cfg.seconds * 1000 - 2000, cfg.seconds * 900));
    const series = [];
    const progress = setInterval(() => {
        let w = [];
        try { w = workers(); } catch (e) { /* a worker just went */ }
        series.push({ at_s: Math.round((Date.now() - start) / 1000),
                      requests: stats.requests,
                      anon_kB: w.map((x) => x.RssAnon_kB),
                      rss_kB: w.map((x) => x.VmRSS_kB) });
        process.stderr.write('soak: ' + Math.round((Date.now() - start) / 1000)
            + ' s, ' + stats.requests + ' requests, ' + stats.errors
            + ' errors, ' + stats.intended_429 + ' intended 429; worker RSS '
            + w.map((x) => x.VmRSS_kB).join('/') + ' kB, anon '
            + w.map((x) => x.RssAnon_kB).join('/') + ' kB\n');
    }, 30000);

    await Promise.all(Array.from({ length: cfg.concurrency }, loop));
    clearInterval(progress);
    clearTimeout(warm);
    clearTimeout(near);
    if (!samples.start) samples.start = await sample('start');
    if (!samples.end) samples.end = await sample('end');
    samples.after = await sample('after');

    const seconds = (Date.now() - start) / 1000;
    const rss = [];
    let rssOk = true;
    const startPids = samples.start.workers.map((w) => w.pid).join(',');
    const endPids = samples.end.workers.map((w) => w.pid).join(',');
    if (startPids !== endPids || samples.start.workers.length === 0) {
        rssOk = false;
        stats.error_samples.push('workers changed: ' + startPids + ' -> ' + endPids);
    }
    for (const w of samples.start.workers) {
        const e = samples.end.workers.find((x) => x.pid === w.pid);
        if (!e) continue;
        const growth = (e.VmRSS_kB - w.VmRSS_kB) * 100 / w.VmRSS_kB;
        rss.push({ pid: w.pid, start_kB: w.VmRSS_kB, end_kB: e.VmRSS_kB,
                   growth_pct: Math.round(growth * 100) / 100,
                   anon_start_kB: w.RssAnon_kB, anon_end_kB: e.RssAnon_kB,
                   shmem_start_kB: w.RssShmem_kB, shmem_end_kB: e.RssShmem_kB });
        if (growth > cfg.rssLimit) rssOk = false;
    }

    const summary = {
        minutes: cfg.seconds / 60, seconds: Math.round(seconds),
        rate_offered: cfg.rate, rate_achieved: Math.round(stats.requests / seconds),
        concurrency: cfg.concurrency, requests: stats.requests,
        errors: stats.errors, intended_429: stats.intended_429,
        by_op: stats.by_op, rss, rss_ok: rssOk, rss_limit_pct: cfg.rssLimit,
        samples, series, error_samples: stats.error_samples,
    };
    fs.writeFileSync(cfg.summary, JSON.stringify(summary, null, 1) + '\n');
    process.exit(stats.errors === 0 && rssOk ? 0 : 1);
})();
END

CLIENT_CFG=$(printf '{"port":%s,"mockPort":%s,"ca":"%s","seconds":%s,"rate":%s,"concurrency":%s,"master":%s,"rssLimit":%s,"summary":"%s","half":%s,"checkAfterCallback":%s}' \
    "$PORT" "$MOCK_PORT" "$DIR/certs/ca.pem" "$SECONDS_TOTAL" "$RATE" \
    "$CONCURRENCY" "$NGINX_PID" "$RSS_LIMIT" "$DIR/summary.json" "$HALF" \
    "$([ "${SOAK_CHECK_AFTER_CALLBACK:-0}" = 1 ] && echo true || echo false)")

echo "soak: $MINUTES min at $RATE requests/s offered, $CONCURRENCY in flight; nginx on 127.0.0.1:$PORT, mock on 127.0.0.1:$MOCK_PORT; files in $DIR"

client_rc=0
timeout $((SECONDS_TOTAL + 120)) node "$DIR/client.js" "$CLIENT_CFG" || client_rc=$?

MOCK_STATS=$(node -e '
const https = require("https"), fs = require("fs");
https.get({ host: "127.0.0.1", port: process.argv[1], path: "/__mock/stats",
            ca: fs.readFileSync(process.argv[2]), servername: "localhost" }, (r) => {
    let s = ""; r.on("data", (c) => s += c);
    r.on("end", () => { const j = JSON.parse(s);
        console.log(JSON.stringify({ calls: j.calls, accepted: j.accepted,
            rejected: j.rejected, faulted: j.faulted, by_action: j.by_action,
            connections: j.connections, tls_handshakes: j.tls_handshakes,
            callbacks_fired: j.callbacks_fired })); });
}).on("error", (e) => console.log(JSON.stringify({ error: e.message })));
' "$MOCK_PORT" "$DIR/certs/ca.pem")

# --- stop nginx, read its log ------------------------------------------------------

kill -QUIT "$NGINX_PID" 2>/dev/null || true
for _ in $(seq 100); do
    kill -0 "$NGINX_PID" 2>/dev/null || break
    sleep 0.1
done
nginx_rc=0
wait "$NGINX_PID" || nginx_rc=$?
NGINX_PID=

LOG_BAD=$(grep -E '\[(alert|crit|emerg)\]|exited on signal|open socket .* left' "$DIR/error.log" || true)
LOG_ERRORS=$(grep -c '\[error\]' "$DIR/error.log" || true)

node -e '
const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const mock = JSON.parse(process.argv[2]);
const out = [];
out.push("soak: " + s.seconds + " s, " + s.requests + " requests (" +
         s.rate_achieved + "/s), " + s.errors + " errors, " +
         s.intended_429 + " intended 429 (tenant noisy)");
out.push("requests by operation and status:");
for (const [op, st] of Object.entries(s.by_op).sort())
    out.push("  " + op.padEnd(18) + Object.entries(st).map(([k, v]) => k + ": " + v).join(", "));
out.push("upstream (mock): " + mock.calls + " calls, " + mock.accepted +
         " accepted, " + mock.rejected + " rejected; " + mock.connections +
         " connections, " + mock.tls_handshakes + " TLS handshakes; " +
         mock.callbacks_fired + " callbacks fired");
out.push("worker VmRSS after warm-up (" + s.samples.start.at_s + " s) and at the end (" +
         s.samples.end.at_s + " s), limit +" + s.rss_limit_pct + " %:");
for (const w of s.rss)
    out.push("  pid " + w.pid + ": " + w.start_kB + " kB -> " + w.end_kB + " kB (" +
             (w.growth_pct >= 0 ? "+" : "") + w.growth_pct + " %); anon " +
             w.anon_start_kB + " -> " + w.anon_end_kB + " kB, shmem " +
             w.shmem_start_kB + " -> " + w.shmem_end_kB + " kB");
if (s.series.length) {
    out.push("worker RssAnon every 30 s (kB):");
    const n = Math.max(...s.series.map((x) => x.anon_kB.length));
    for (let i = 0; i < n; i++)
        out.push("  worker " + (i + 1) + ": " + s.series.map((x) => x.anon_kB[i] ?? "-").join(" "));
}
out.push("shared memory zones (idv_zone_used_ratio), after warm-up -> end:");
for (const z of Object.keys(s.samples.end.zones).sort())
    out.push("  " + z.padEnd(28) + (s.samples.start.zones[z] ?? "-") + " -> " + s.samples.end.zones[z]);
for (const e of s.error_samples) out.push("  error: " + e);
console.log(out.join("\n"));
' "$DIR/summary.json" "$MOCK_STATS" || client_rc=1

echo "error.log: $LOG_ERRORS [error] lines"

rc=0
if [ -n "$LOG_BAD" ]; then
    echo "soak: FAIL: error.log has:" >&2
    echo "$LOG_BAD" | head -20 >&2
    rc=1
fi
if [ "$nginx_rc" -ne 0 ]; then
    echo "soak: FAIL: nginx exited with status $nginx_rc" >&2
    rc=1
fi
if ! echo "$MOCK_STATS" | grep -q '"rejected":0,'; then
    echo "soak: FAIL: the mock rejected calls (signatures?): $MOCK_STATS" >&2
    rc=1
fi
if [ "$client_rc" -ne 0 ]; then
    echo "soak: FAIL: errors or RSS growth (see above, $DIR/summary.json)" >&2
    rc=1
fi

[ "$rc" -eq 0 ] && echo "soak: PASS"
exit "$rc"
}
