#!/usr/bin/env node
/*
 * selftest.js -- self-test of t/mock/mock-aliyun.js.
 *
 *   node t/mock/selftest.js t/data/signature-vectors.json
 *
 * 1. Starts the mock (plain HTTP, free port, --replay-vectors) as a child,
 *    replays the wire requests of every SDK vector byte for byte over one
 *    keep-alive connection (chunked bodies included) and expects Success;
 *    then flips one byte of the signature / query / body of each and expects
 *    SignatureDoesNotMatch (plus a few encoding edge cases).
 * 2. Starts a second mock without --replay-vectors and, with a small signer
 *    of its own (written independently of the mock's verifier), checks
 *    fresh requests, nonce reuse, stale/future timestamps, unknown keys,
 *    the per-action behaviour, callbacks, fault injection and statistics.
 * 3. If openssl is available, creates certificates with t/lib/mkcerts.sh and
 *    checks the HTTPS mode (trusted CA accepted, unrelated CA refused).
 *
 * Output is TAP; the exit status is non-zero when a test fails.
 * Only Node core modules are used.
 */
'use strict';

const net = require('net');
const http = require('http');
const https = require('https');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, execFile } = require('child_process');

const MOCK = path.join(__dirname, 'mock-aliyun.js');
const MKCERTS = path.join(__dirname, '..', 'lib', 'mkcerts.sh');
const AK = 'testid';
const SK = 'testsecret';
const VERSION = '2022-08-09';

/* ------------------------------------------------------------------ TAP */

let testNo = 0;
let failures = 0;

function ok(cond, name, diag) {
    testNo++;
    if (cond) {
        process.stdout.write('ok ' + testNo + ' - ' + name + '\n');
    } else {
        failures++;
        process.stdout.write('not ok ' + testNo + ' - ' + name + '\n');
        if (diag !== undefined) {
            const text = typeof diag === 'string' ? diag
                : JSON.stringify(diag, null, 1);
            for (const line of String(text).split('\n').slice(0, 30))
                process.stdout.write('#   ' + line.slice(0, 400) + '\n');
        }
    }
    return !!cond;
}

function note(s) {
    process.stdout.write('# ' + s + '\n');
}

/* --------------------------------------------------------- mock process */

const children = [];

function startMock(args) {
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [MOCK].concat(args),
                            { stdio: ['ignore', 'pipe', 'pipe'] });
        children.push(child);
        let out = '';
        let err = '';
        const timer = setTimeout(() => reject(new Error(
            'mock did not start: ' + err)), 10000);
        child.stdout.on('data', (d) => {
            out += d;
            const m = /^mock-aliyun listening on (\d+)\n/m.exec(out);
            if (m) {
                clearTimeout(timer);
                resolve({ child, port: Number(m[1]), stderr: () => err,
                          stdout: () => out });
            }
        });
        child.stderr.on('data', (d) => { err += d; });
        child.on('exit', (code) => {
            clearTimeout(timer);
            reject(new Error('mock exited with ' + code + ': ' + err));
        });
    });
}

function stopAll() {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}

/* ------------------------------------------------- raw HTTP/1.1 client */

class RawConn {
    constructor(port, host) {
        this.port = port;
        this.host = host || '127.0.0.1';
        this.sock = null;
        this.buf = Buffer.alloc(0);
        this.pending = null;
        this.closed = true;
    }

    open() {
        return new Promise((resolve, reject) => {
            const s = net.connect(this.port, this.host);
            s.once('connect', () => { this.closed = false; resolve(); });
            s.once('error', reject);
            s.on('data', (d) => {
                this.buf = Buffer.concat([this.buf, d]);
                this.tryParse();
            });
            s.on('close', () => {
                this.closed = true;
                this.tryParse(true);
            });
            s.on('error', (e) => { this.lastError = e; });
            this.sock = s;
            this.buf = Buffer.alloc(0);
        });
    }

    tryParse(eof) {
        const p = this.pending;
        if (!p) return;
        const he = this.buf.indexOf('\r\n\r\n');
        if (he < 0) {
            if (eof) { this.pending = null; p.reject(this.closeError()); }
            return;
        }
        const head = this.buf.toString('latin1', 0, he).split('\r\n');
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
        if (!m) {
            this.pending = null;
            p.reject(new Error('bad status line: ' + head[0]));
            return;
        }
        const headers = {};
        for (const line of head.slice(1)) {
            const c = line.indexOf(':');
            headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
        }
        const rest = this.buf.subarray(he + 4);
        let body = null;
        let used = 0;
        if (headers['content-length'] !== undefined) {
            const n = Number(headers['content-length']);
            if (rest.length >= n) { body = rest.subarray(0, n); used = n; }
        } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
            const parts = [];
            let off = 0;
            for (;;) {
                const le = rest.indexOf('\r\n', off);
                if (le < 0) break;
                const size = parseInt(rest.toString('latin1', off, le), 16);
                if (size === 0) {
                    const end = rest.indexOf('\r\n\r\n', le);
                    const end2 = rest.indexOf('\r\n', le + 2);
                    if (end2 === le + 2) { body = Buffer.concat(parts); used = le + 4; }
                    else if (end >= 0) { body = Buffer.concat(parts); used = end + 4; }
                    break;
                }
                if (rest.length < le + 2 + size + 2) break;
                parts.push(rest.subarray(le + 2, le + 2 + size));
                off = le + 2 + size + 2;
            }
        } else if (eof) {
            body = rest;
            used = rest.length;
        }
        if (body === null) {
            if (eof) { this.pending = null; p.reject(this.closeError(true)); }
            return;
        }
        this.buf = this.buf.subarray(he + 4 + used);
        this.pending = null;
        const text = body.toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
        p.resolve({ status: Number(m[1]), headers, text, json });
    }

    closeError(partial) {
        const e = new Error(partial ? 'connection closed mid-response'
                                    : 'connection closed without response');
        e.partial = !!partial;
        e.cause = this.lastError;
        return e;
    }

    async request(method, target, headers, body, chunked) {
        if (this.closed) await this.open();
        let head = method + ' ' + target + ' HTTP/1.1\r\n';
        for (const [k, v] of headers) head += k + ': ' + v + '\r\n';
        head += '\r\n';
        const parts = [Buffer.from(head, 'utf8')];
        const b = Buffer.isBuffer(body) ? body : Buffer.from(body || '', 'utf8');
        if (chunked) {
            /* two chunks, to make the server reassemble */
            const cut = b.length >> 1;
            for (const piece of [b.subarray(0, cut), b.subarray(cut)]) {
                if (piece.length === 0) continue;
                parts.push(Buffer.from(piece.length.toString(16) + '\r\n'),
                           piece, Buffer.from('\r\n'));
            }
            parts.push(Buffer.from('0\r\n\r\n'));
        } else if (b.length) {
            parts.push(b);
        }
        return new Promise((resolve, reject) => {
            this.pending = { resolve, reject };
            this.sock.write(Buffer.concat(parts));
            this.tryParse(this.closed);
        });
    }

    close() {
        if (this.sock) this.sock.destroy();
    }
}

/* --------------------------------------------------- independent signer */

function pct(str) {
    const bytes = Buffer.from(String(str), 'utf8');
    let out = '';
    for (const c of bytes) {
        const keep = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) ||
            (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f ||
            c === 0x2e || c === 0x7e;
        out += keep ? String.fromCharCode(c)
            : '%' + (c < 16 ? '0' : '') + c.toString(16).toUpperCase();
    }
    return out;
}

function sortedForm(obj) {
    return Object.keys(obj)
        .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
        .map((k) => pct(k) + '=' + pct(obj[k])).join('&');
}

function utcStamp(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/* -> { method, target, headers: [[k, v]], body } */
function signV3(o) {
    const query = o.query || {};
    const body = o.bodyParams ? sortedForm(o.bodyParams) : (o.body || '');
    const h = {
        host: o.host,
        'x-acs-action': o.action,
        'x-acs-version': o.version || VERSION,
        'x-acs-date': o.date || utcStamp(Date.now()),
        'x-acs-signature-nonce': o.nonce || crypto.randomBytes(16).toString('hex'),
        'x-acs-content-sha256': crypto.createHash('sha256').update(body).digest('hex'),
    };
    if (o.bodyParams || o.contentType)
        h['content-type'] = o.contentType || 'application/x-www-form-urlencoded';
    const names = Object.keys(h).sort();
    const cq = sortedForm(query);
    const canonical = [
        o.method || 'POST', '/', cq,
        names.map((n) => n + ':' + String(h[n]).trim() + '\n').join(''),
        names.join(';'),
        h['x-acs-content-sha256'],
    ].join('\n');
    const sts = 'ACS3-HMAC-SHA256\n' +
        crypto.createHash('sha256').update(canonical).digest('hex');
    const sig = crypto.createHmac('sha256', o.secret || SK).update(sts).digest('hex');
    const headers = names.map((n) => [n, h[n]]);
    headers.push(['Authorization', 'ACS3-HMAC-SHA256 Credential=' + (o.ak || AK) +
                  ',SignedHeaders=' + names.join(';') + ',Signature=' + sig]);
    if (body.length) headers.push(['Content-Length', String(Buffer.byteLength(body))]);
    else if (o.method !== 'GET') headers.push(['Content-Length', '0']);
    return { method: o.method || 'POST', target: '/' + (cq ? '?' + cq : ''),
             headers, body, sts };
}

function signV1(o) {
    const common = {
        AccessKeyId: o.ak || AK,
        Action: o.action,
        Format: 'json',
        SignatureMethod: 'HMAC-SHA1',
        SignatureNonce: o.nonce || crypto.randomBytes(16).toString('hex'),
        SignatureVersion: '1.0',
        Timestamp: o.timestamp || utcStamp(Date.now()),
        Version: o.version || VERSION,
    };
    if (o.omit) for (const k of o.omit) delete common[k];
    const query = Object.assign({}, o.query || {}, common);
    const all = Object.assign({}, query, o.bodyParams || {});
    const sts = 'POST&' + pct('/') + '&' + pct(sortedForm(all));
    const sig = crypto.createHmac('sha1', (o.secret || SK) + '&').update(sts)
        .digest('base64');
    const target = '/?' + sortedForm(query) + '&Signature=' + pct(sig);
    const body = o.bodyParams ? sortedForm(o.bodyParams) : '';
    const headers = [['Host', o.host]];
    if (o.bodyParams) headers.push(['Content-Type', 'application/x-www-form-urlencoded']);
    headers.push(['Content-Length', String(Buffer.byteLength(body))]);
    return { method: 'POST', target, headers, body, sts };
}

/* ------------------------------------------------------------- helpers */

function send(conn, r, chunked) {
    let headers = r.headers;
    if (chunked && !headers.some((h) => /^transfer-encoding$/i.test(h[0]))) {
        headers = headers.filter((h) => !/^content-length$/i.test(h[0]));
        headers.push(['Transfer-Encoding', 'chunked']);
    }
    return conn.request(r.method, r.target, headers, r.body, chunked);
}

function control(port, method, p, obj) {
    return new Promise((resolve, reject) => {
        const data = obj === undefined ? '' : JSON.stringify(obj);
        const req = http.request({ host: '127.0.0.1', port, method, path: p,
            agent: false, headers: { 'Content-Type': 'application/json',
                                     'Content-Length': Buffer.byteLength(data) } },
        (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const t = Buffer.concat(chunks).toString('utf8');
                let j = null;
                try { j = JSON.parse(t); } catch (e) { /* keep null */ }
                resolve({ status: res.statusCode, json: j, text: t });
            });
        });
        req.on('error', reject);
        req.end(data);
    });
}

/* flip one alphanumeric character at index i of a string */
function flipChar(s, i) {
    const c = s[i];
    let r;
    if (c >= '0' && c <= '8') r = String.fromCharCode(c.charCodeAt(0) + 1);
    else if (c === '9') r = '0';
    else if ((c >= 'a' && c < 'z') || (c >= 'A' && c < 'Z'))
        r = String.fromCharCode(c.charCodeAt(0) + 1);
    else if (c === 'z') r = 'a';
    else if (c === 'Z') r = 'A';
    else throw new Error('not alphanumeric: ' + c);
    return s.slice(0, i) + r + s.slice(i + 1);
}

/* index of the first alphanumeric char of the value of query param `name` */
function paramValueIndex(target, name) {
    const re = new RegExp('[?&]' + name + '=([^&]*)');
    const m = re.exec(target);
    if (!m) return -1;
    const start = m.index + m[0].length - m[1].length;
    for (let i = start; i < start + m[1].length; i++)
        if (/[A-Za-z0-9]/.test(target[i])) return i;
    return -1;
}

function isSigMismatch(r) {
    return r && r.status === 400 && r.json && r.json.Code === 'SignatureDoesNotMatch';
}

function errorShapeOk(r, host) {
    const j = r.json;
    if (!j) return false;
    const keys = Object.keys(j).join(',');
    return keys === 'RequestId,Message,Recommend,HostId,Code' &&
        /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/.test(j.RequestId) &&
        j.HostId === host &&
        j.Recommend === 'https://api.aliyun.com/troubleshoot?q=' + j.Code +
            '&product=Cloudauth-intl&requestId=' + j.RequestId &&
        /^application\/json;charset=utf-8$/i.test(r.headers['content-type'] || '');
}

function successShapeOk(r) {
    return r.status === 200 && r.json &&
        Object.keys(r.json).join(',') === 'RequestId,Code,Message,Result' &&
        r.json.Code === 'Success' && r.json.Message === 'success';
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

function vectorReq(v) {
    const w = v.wire;
    const headers = w.headers_in_order.map((h) => [h[0], h[1]]);
    const chunked = headers.some((h) => /^transfer-encoding$/i.test(h[0]) &&
                                        /chunked/i.test(h[1]));
    return { method: w.method, target: w.request_target, headers,
             body: w.body, chunked };
}

function cloneReq(r) {
    return { method: r.method, target: r.target,
             headers: r.headers.map((h) => [h[0], h[1]]), body: r.body,
             chunked: r.chunked };
}

function setHeader(r, name, value) {
    const h = r.headers.find((x) => x[0].toLowerCase() === name.toLowerCase());
    if (h) h[1] = value;
    else r.headers.push([name, value]);
}

function getHeader(r, name) {
    const h = r.headers.find((x) => x[0].toLowerCase() === name.toLowerCase());
    return h ? h[1] : undefined;
}

/* ---------------------------------------------------------- part 1 */

async function replayVectors(file, data) {
    const m = await startMock(['--plain', '--port', '0', '--host', '127.0.0.1',
                               '--replay-vectors', file]);
    note('part 1: replay of ' + data.vectors.length + ' vectors (mock port ' +
         m.port + ', --replay-vectors)');
    const conn = new RawConn(m.port);
    const host = data.fixed.host;

    for (const v of data.vectors) {
        const r = vectorReq(v);
        let res;
        try { res = await conn.request(r.method, r.target, r.headers, r.body, r.chunked); }
        catch (e) { res = { error: e.message }; }
        ok(res.status === 200 && res.json && res.json.Code === 'Success',
           'vector ' + v.id + ' accepted (' + v.signature_version +
           (r.chunked ? ', chunked body' : '') + ')', res.json || res);
    }
    const st = (await control(m.port, 'GET', '/__mock/stats')).json;
    ok(st.connections === 1 && st.calls === data.vectors.length &&
       st.accepted === data.vectors.length,
       'all vectors went over one keep-alive connection',
       { connections: st.connections, calls: st.calls, accepted: st.accepted });

    for (const v of data.vectors) {
        const base = vectorReq(v);

        /* a) signature */
        const a = cloneReq(base);
        if (v.signature_version === 'v3') {
            const auth = getHeader(a, 'authorization');
            const i = auth.indexOf('Signature=') + 'Signature='.length;
            setHeader(a, 'Authorization', flipChar(auth, i));
        } else {
            a.target = flipChar(a.target, paramValueIndex(a.target, 'Signature'));
        }
        let res = await send(conn, a, a.chunked);
        ok(isSigMismatch(res) && errorShapeOk(res, host),
           v.id + ': flipped signature byte -> SignatureDoesNotMatch', res.json);

        /* b) query parameter value */
        const b = cloneReq(base);
        const qi = paramValueIndex(b.target, 'MerchantBizId') >= 0
            ? paramValueIndex(b.target, 'MerchantBizId')
            : paramValueIndex(b.target, 'IdentifyNum');
        b.target = flipChar(b.target, qi);
        res = await send(conn, b, b.chunked);
        const msgOk = res.json && (v.signature_version === 'v3'
            ? /^Specified signature does not match our calculation\. server StringToSign is \[ACS3-HMAC-SHA256\n[0-9a-f]{64}\]$/.test(res.json.Message)
            : /^Specified signature is not matched with our calculation\. server string to sign is:POST&%2F&AccessKeyId%3D/.test(res.json.Message));
        ok(isSigMismatch(res) && msgOk,
           v.id + ': flipped query byte -> SignatureDoesNotMatch with server string to sign',
           res.json);

        /* c) body */
        if (base.body.length > 0) {
            const c = cloneReq(base);
            const i = c.body.indexOf('=') + 1;
            c.body = flipChar(c.body, i);
            res = await send(conn, c, c.chunked);
            ok(isSigMismatch(res), v.id + ': flipped body byte -> SignatureDoesNotMatch',
               res.json);
        }
    }

    /* encoding edge cases on the reserved-characters vectors */
    for (const id of ['v1-initialize-reserved-characters',
                      'v3-initialize-reserved-characters']) {
        const v = data.vectors.find((x) => x.id === id);
        if (!v) { ok(false, id + ' present'); continue; }
        const base = vectorReq(v);

        const plus = cloneReq(base);
        plus.target = plus.target.replace('%2B', '+');
        let res = await send(conn, plus);
        ok(isSigMismatch(res), id + ': raw "+" instead of %2B breaks the signature',
           res.json);

        const alt = cloneReq(base);
        /* other valid wire spellings of the same values: '*' as %2A,
         * lower-case hex, space as '+' */
        alt.target = alt.target.replace(/\*/g, '%2A').replace(/%7B/g, '%7b')
            .replace(/%20/g, '+');
        res = await send(conn, alt);
        ok(res.status === 200 && res.json && res.json.Code === 'Success',
           id + ': equivalent re-encoding (%2A, lower-case hex, + for space) accepted',
           res.json);
    }

    /* Host header is signed under V3 */
    {
        const v = data.vectors.find((x) => x.id === 'v3-checkresult');
        const r = vectorReq(v);
        setHeader(r, 'host', host + ':443');
        const res = await send(conn, r);
        ok(isSigMismatch(res) && res.json.HostId === host + ':443',
           'v3-checkresult: Host with added port -> SignatureDoesNotMatch, HostId echoes Host',
           res.json);
    }
    /* content-type present but not signed */
    {
        const v = data.vectors.find((x) => x.id === 'v3-initialize-idr-global');
        const r = vectorReq(v);
        const auth = getHeader(r, 'authorization');
        setHeader(r, 'Authorization', auth.replace('SignedHeaders=content-type;', 'SignedHeaders='));
        const res = await send(conn, r);
        ok(res.status === 400 && res.json && res.json.Code === 'IncompleteSignature',
           'v3 with content-type sent but not in SignedHeaders -> IncompleteSignature',
           res.json);
    }
    /* x-acs-version not signed */
    {
        const v = data.vectors.find((x) => x.id === 'v3-checkresult');
        const r = vectorReq(v);
        const mh = v.v3_minimal_headers;
        /* minimal header set variant from the vector file */
        const r2 = { method: 'POST', target: r.target, body: '',
                     headers: Object.entries(mh.headers) };
        r2.headers.push(['Authorization', mh.authorization]);
        r2.headers.push(['Content-Length', '0']);
        let res = await send(conn, r2);
        ok(res.status === 200 && res.json && res.json.Code === 'Success',
           'v3-checkresult minimal-header variant accepted', res.json);
        const r3 = cloneReq(r2);
        setHeader(r3, 'Authorization', mh.authorization.replace(';x-acs-version', ''));
        res = await send(conn, r3);
        ok(res.status === 400 && res.json && res.json.Code === 'IncompleteSignature',
           'v3 without x-acs-version in SignedHeaders -> IncompleteSignature', res.json);
    }
    conn.close();
    m.child.kill('SIGTERM');
}

/* ---------------------------------------------------------- part 2 */

async function liveChecks() {
    const m = await startMock(['--plain', '--port', '0', '--host', '127.0.0.1',
                               '--keys', AK + ':' + SK + ',other:othersecret']);
    const port = m.port;
    const host = '127.0.0.1:' + port;
    note('part 2: live checks (mock port ' + port + ', no replay mode)');
    const conn = new RawConn(port);
    let res;

    /* signer sanity against the vector file is implicit: the mock accepts */
    let r = signV3({ host, action: 'CheckResult',
                     query: { MerchantBizId: 'biz1', TransactionId: 'tx-unknown' } });
    res = await send(conn, r);
    ok(successShapeOk(res) && res.json.Result.Passed === 'Y' &&
       res.json.Result.SubCode === '200' &&
       typeof JSON.parse(res.json.Result.ExtFaceInfo) === 'object' &&
       typeof JSON.parse(res.json.Result.ExtIdInfo) === 'object' &&
       typeof JSON.parse(res.json.Result.ExtBasicInfo) === 'object',
       'fresh V3 CheckResult accepted (signed Host includes the port)', res.json);
    res = await send(conn, r);
    ok(res.status === 400 && res.json.Code === 'SignatureNonceUsed' &&
       res.json.Message === 'Specified signature nonce was used already.' &&
       errorShapeOk(res, host),
       'V3 nonce reuse -> SignatureNonceUsed', res.json);

    r = signV1({ host, action: 'Initialize',
                 query: { ProductCode: 'ID_OCR', MerchantBizId: 'v1biz' } });
    res = await send(conn, r);
    ok(successShapeOk(res) && /^[0-9a-f]{32}$/.test(res.json.Result.TransactionId) &&
       res.json.Result.TransactionUrl ===
           'https://mock.idv.test/h5/' + res.json.Result.TransactionId &&
       typeof res.json.Result.Protocol === 'string' &&
       res.json.Result.ClientCfg === '{"mock":true}',
       'fresh V1 Initialize accepted with TransactionId/Url/Protocol/ClientCfg', res.json);
    res = await send(conn, r);
    ok(res.status === 400 && res.json.Code === 'SignatureNonceUsed',
       'V1 nonce reuse -> SignatureNonceUsed', res.json);

    const stale = utcStamp(Date.now() - 16 * 60 * 1000);
    res = await send(conn, signV3({ host, action: 'CheckResult', date: stale,
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 400 && res.json.Code === 'InvalidTimeStamp.Expired' &&
       res.json.Message === 'Specified time stamp or date value is expired.',
       'V3 x-acs-date 16 min old -> InvalidTimeStamp.Expired', res.json);
    res = await send(conn, signV3({ host, action: 'CheckResult',
        date: utcStamp(Date.now() + 16 * 60 * 1000),
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 400 && res.json.Code === 'InvalidTimeStamp.Expired',
       'V3 x-acs-date 16 min ahead -> InvalidTimeStamp.Expired', res.json);
    res = await send(conn, signV1({ host, action: 'CheckResult', timestamp: stale,
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 400 && res.json.Code === 'InvalidTimeStamp.Expired',
       'V1 Timestamp 16 min old -> InvalidTimeStamp.Expired', res.json);
    res = await send(conn, signV3({ host, action: 'CheckResult',
        date: utcStamp(Date.now() - 14 * 60 * 1000),
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 200 && res.json.Code === 'Success',
       'V3 x-acs-date 14 min old still accepted', res.json);

    res = await send(conn, signV3({ host, action: 'CheckResult', ak: 'nosuchkey',
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 404 && res.json.Code === 'InvalidAccessKeyId.NotFound' &&
       res.json.Message === 'Specified access key is not found.' && errorShapeOk(res, host),
       'V3 unknown AccessKeyId -> 404 InvalidAccessKeyId.NotFound', res.json);
    res = await send(conn, signV1({ host, action: 'CheckResult', ak: 'nosuchkey',
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 404 && res.json.Code === 'InvalidAccessKeyId.NotFound',
       'V1 unknown AccessKeyId -> 404 InvalidAccessKeyId.NotFound', res.json);
    res = await send(conn, signV3({ host, action: 'CheckResult', ak: 'other',
        secret: 'othersecret', query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 200 && res.json.Code === 'Success',
       'second key from --keys accepted', res.json);
    res = await send(conn, signV3({ host, action: 'CheckResult', ak: 'other',
        secret: SK, query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(isSigMismatch(res), 'wrong secret -> SignatureDoesNotMatch', res.json);

    res = await conn.request('POST', '/?Action=CheckResult', [['Host', host],
        ['Content-Length', '0']], '');
    ok(res.status === 400 && res.json.Code === 'MissingSignature',
       'no signature -> MissingSignature', res.json);
    res = await send(conn, signV1({ host, action: 'CheckResult', omit: ['Timestamp'],
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 400 && res.json.Code === 'MissingTimestamp',
       'V1 without Timestamp -> MissingTimestamp', res.json);
    res = await send(conn, signV3({ host, action: 'CheckResult', version: '2019-03-07',
        query: { MerchantBizId: 'b', TransactionId: 't' } }));
    ok(res.status === 400 && res.json.Code === 'InvalidVersion',
       'V3 x-acs-version other than 2022-08-09 rejected', res.json);

    /* V3 payload hash must match the received body */
    r = signV3({ host, action: 'EkycVerify', query: { MerchantBizId: 'hb' },
                 bodyParams: { FacePictureBase64: 'QUJD' } });
    r.body = r.body.replace('QUJD', 'QUJE');
    res = await send(conn, r);
    ok(isSigMismatch(res), 'V3 body not matching x-acs-content-sha256 -> SignatureDoesNotMatch',
       res.json);

    /* ---- actions ---- */
    const face = crypto.randomBytes(3000).toString('base64');
    const idimg = crypto.randomBytes(1234).toString('base64');
    r = signV1({ host, action: 'EkycVerify',
                 query: { ProductCode: 'eKYC_MIN', MerchantBizId: 'ek1', DocType: '00000001' },
                 bodyParams: { FacePictureBase64: face, IdOcrPictureBase64: idimg } });
    res = await send(conn, r);
    ok(successShapeOk(res) && res.json.Result.Passed === 'Y' &&
       res.json.Result.SubCode === '200' &&
       JSON.parse(res.json.Result.ExtFaceInfo).facePassed === 'Y' &&
       JSON.parse(res.json.Result.ExtIdInfo).ocrIdPassed === 'Y',
       'V1 EkycVerify with base64 images in the form body', res.json);
    let st = (await control(port, 'GET', '/__mock/stats')).json;
    let last = st.requests[st.requests.length - 1];
    ok(last.action === 'EkycVerify' && last.sig === 'v1' &&
       last.images.FacePictureBase64.in_body === true &&
       last.images.FacePictureBase64.decoded_bytes === 3000 &&
       last.images.IdOcrPictureBase64.decoded_bytes === 1234 &&
       last.body.FacePictureBase64 === '<' + face.length + ' bytes>' &&
       last.body_length === Buffer.byteLength(r.body) &&
       last.content_type === 'application/x-www-form-urlencoded',
       'stats record image presence, decoded sizes and summarised body', last);

    r = signV3({ host, action: 'EkycVerify',
                 query: { ProductCode: 'eKYC_MIN', MerchantBizId: 'ekfail1' },
                 bodyParams: { FacePictureBase64: face } });
    res = await send(conn, r, true);
    ok(successShapeOk(res) && res.json.Result.Passed === 'N' &&
       res.json.Result.SubCode === '205',
       'V3 EkycVerify (chunked body), MerchantBizId with "fail" -> Passed N / 205', res.json);
    r = signV3({ host, action: 'EkycVerify',
                 query: { ProductCode: 'eKYC_MIN', MerchantBizId: 'ekpassT' },
                 bodyParams: { FacePictureBase64: face } });
    res = await send(conn, r);
    ok(successShapeOk(res) && res.json.Result.Passed === 'T',
       'EkycVerify, MerchantBizId with "passT" -> Passed T', res.json);
    res = await send(conn, signV3({ host, action: 'EkycVerify', query: {},
                                    bodyParams: {} }));
    ok(res.status === 400 && res.json.Code === 'MissingParameter',
       'EkycVerify without MerchantBizId -> MissingParameter', res.json);

    res = await send(conn, signV3({ host, action: 'Initialize',
        query: { MerchantBizId: 'x' }, bodyParams: {} }));
    ok(res.status === 400 && res.json.Code === 'MissingParameter' &&
       /ProductCode/.test(res.json.Message),
       'Initialize without ProductCode -> MissingParameter', res.json);
    res = await send(conn, signV3({ host, action: 'Initialize',
        query: { ProductCode: 'eKYC', MerchantBizId: 'x'.repeat(33) }, bodyParams: {} }));
    ok(res.status === 400 && res.json.Code === 'InvalidParameter',
       'Initialize with 33-char MerchantBizId -> InvalidParameter', res.json);

    for (const [num, code] of [['110101199001011234', '1'], ['110101199001010000', '2'],
                               ['110101199001019999', '3']]) {
        res = await send(conn, signV3({ host, action: 'Id2MetaVerifyIntl',
            query: { ProductCode: 'ID_2META', ParamType: 'normal', IdentifyNum: num,
                     UserName: '张三' } }));
        ok(successShapeOk(res) && res.json.Result.BizCode === code,
           'Id2MetaVerifyIntl IdentifyNum ...' + num.slice(-4) + ' -> BizCode ' + code,
           res.json);
    }
    res = await send(conn, signV1({ host, action: 'Id2MetaVerifyIntl',
        query: { ParamType: 'normal', IdentifyNum: '1' } }));
    ok(res.status === 400 && res.json.Code === 'MissingParameter' &&
       /UserName/.test(res.json.Message),
       'Id2MetaVerifyIntl without UserName -> MissingParameter', res.json);
    res = await send(conn, signV3({ host, action: 'DescribeSomething', query: {} }));
    ok(successShapeOk(res) && res.json.Result.Action === 'DescribeSomething',
       'other action -> Success with Result.Action', res.json);

    /* ---- Initialize with callback, complete, CheckResult ---- */
    const cbHits = [];
    const cbServer = http.createServer((req, resp) => {
        cbHits.push(req.url);
        resp.writeHead(200, { 'Content-Type': 'text/plain' });
        resp.end('cb-ok');
    });
    await new Promise((resolve) => cbServer.listen(0, '127.0.0.1', resolve));
    const cbUrl = 'http://127.0.0.1:' + cbServer.address().port + '/cb?tenant=a&x=1';
    r = signV3({ host, action: 'Initialize', bodyParams: {},
        query: { ProductCode: 'eKYC', MerchantBizId: 'flow1', MerchantUserId: 'u1',
                 CallbackUrl: cbUrl, CallbackToken: 'tok+/= 1', MetaInfo: '{"a":"b c"}' } });
    res = await send(conn, r);
    const tid = res.json && res.json.Result && res.json.Result.TransactionId;
    ok(successShapeOk(res) && /^[0-9a-f]{32}$/.test(tid),
       'Initialize with CallbackUrl/CallbackToken', res.json);

    res = await control(port, 'POST', '/__mock/complete',
                        { transactionId: tid, passed: 'N', subCode: '205' });
    const hit = cbHits[cbHits.length - 1] || '';
    const q = new URL(hit, 'http://x').searchParams;
    ok(res.status === 200 && res.json.fired === true && res.json.status === 200 &&
       res.json.body === 'cb-ok' && hit.startsWith('/cb?tenant=a&x=1&callbackToken=') &&
       q.get('callbackToken') === 'tok+/= 1' && q.get('transactionId') === tid &&
       q.get('passed') === 'N' && q.get('subCode') === '205',
       '/__mock/complete fires the callback with token, transactionId, passed, subCode',
       { reply: res.json, hit });

    res = await send(conn, signV3({ host, action: 'CheckResult',
        query: { MerchantBizId: 'flow1', TransactionId: tid, IsReturnImage: 'Y' } }));
    ok(successShapeOk(res) && res.json.Result.Passed === 'N' &&
       res.json.Result.SubCode === '205' &&
       typeof res.json.Result.ExtImageInfo === 'string' &&
       res.json.Result.ExtImageInfo.length >= 1800 &&
       res.json.Result.ExtImageInfo.length <= 2500,
       'CheckResult returns the completed result (+ ExtImageInfo with IsReturnImage=Y)',
       res.json && res.json.Result);
    res = await send(conn, signV3({ host, action: 'CheckResult',
        query: { MerchantBizId: 'someoneelse', TransactionId: tid } }));
    ok(res.status === 400 && res.json.Code === 'InvalidParameter' &&
       res.json.Message === 'MerchantBizId does not match TransactionId',
       'CheckResult with another MerchantBizId -> InvalidParameter', res.json);
    res = await send(conn, signV1({ host, action: 'CheckResult',
        query: { MerchantBizId: 'flow1' } }));
    ok(res.status === 400 && res.json.Code === 'MissingParameter',
       'CheckResult without TransactionId -> MissingParameter', res.json);

    res = await control(port, 'POST', '/__mock/complete',
        { transactionId: tid, passed: 'N', subCode: '205', fire_passed: 'Y',
          callbackToken: 'forged' });
    const hit2 = new URL(cbHits[cbHits.length - 1], 'http://x').searchParams;
    ok(res.json.fired === true && hit2.get('passed') === 'Y' &&
       hit2.get('callbackToken') === 'forged',
       '/__mock/complete tamper overrides (fire_passed, callbackToken)', res.json);
    res = await control(port, 'POST', '/__mock/callback', { url: cbUrl + '&direct=1' });
    ok(res.json.status === 200 && res.json.body === 'cb-ok' &&
       /direct=1$/.test(cbHits[cbHits.length - 1]),
       '/__mock/callback GETs a URL', res.json);
    r = signV1({ host, action: 'Initialize',
                 query: { ProductCode: 'eKYC', MerchantBizId: 'nocb' } });
    res = await send(conn, r);
    res = await control(port, 'POST', '/__mock/complete',
                        { transactionId: res.json.Result.TransactionId });
    ok(res.json.fired === false, '/__mock/complete without CallbackUrl does not fire',
       res.json);
    cbServer.close();

    /* ---- stats and reset ---- */
    res = await control(port, 'POST', '/__mock/reset');
    ok(res.status === 200, '/__mock/reset');
    const c2 = new RawConn(port);
    for (let i = 0; i < 3; i++)
        await send(c2, signV3({ host, action: 'CheckResult',
            query: { MerchantBizId: 'k', TransactionId: 't' + i } }));
    await send(c2, signV3({ host, action: 'CheckResult', ak: 'nosuch',
        query: { MerchantBizId: 'k', TransactionId: 't' } }));
    c2.close();
    st = (await control(port, 'GET', '/__mock/stats')).json;
    last = st.requests[st.requests.length - 1];
    ok(st.calls === 4 && st.accepted === 3 && st.rejected === 1 &&
       st.by_action.CheckResult === 4 && st.by_code.Success === 3 &&
       st.by_code['InvalidAccessKeyId.NotFound'] === 1 && st.connections === 1 &&
       st.requests.length === 4 && last.sig === 'v3' && last.status === 404 &&
       last.method === 'POST' && last.host === host && last.query.TransactionId === 't' &&
       typeof last.headers['x-acs-date'] === 'string' && st.transactions === 0,
       'stats after reset: counters, by_action, by_code, connections, request log',
       { calls: st.calls, accepted: st.accepted, rejected: st.rejected,
         by_action: st.by_action, by_code: st.by_code, connections: st.connections,
         last });

    /* ---- faults ---- */
    const fq = (spec) => control(port, 'POST', '/__mock/fault', spec);
    const chk = () => signV3({ host, action: 'CheckResult',
        query: { MerchantBizId: 'f', TransactionId: 't' } });
    const idm = () => signV3({ host, action: 'Id2MetaVerifyIntl',
        query: { ParamType: 'normal', IdentifyNum: '1', UserName: 'n' } });

    res = await fq({ mode: 'bogus' });
    ok(res.status === 400, 'unknown fault mode refused');

    await fq({ mode: 'throttle', action: 'CheckResult' });
    res = await send(conn, idm());
    ok(res.status === 200 && res.json.Code === 'Success',
       'fault with action filter does not hit other actions', res.json);
    res = await send(conn, chk());
    ok(res.status === 403 && res.json.Code === 'Throttling.Api' &&
       res.json.Message === 'Request was denied due to api flow control.' &&
       errorShapeOk(res, host), 'fault throttle -> 403 Throttling.Api', res.json);
    res = await send(conn, chk());
    ok(res.status === 200, 'fault consumed after count=1', res.json);

    await fq({ mode: 'status', status: 503, code: 'ServiceUnavailable', count: 2 });
    res = await send(conn, chk());
    const res2 = await send(conn, chk());
    ok(res.status === 503 && res.json.Code === 'ServiceUnavailable' &&
       res2.status === 503 && errorShapeOk(res, host),
       'fault status 503 ServiceUnavailable, count=2', res.json);

    await fq({ mode: 'code', code: 'OcrFail' });
    res = await send(conn, chk());
    ok(res.status === 200 && res.json.Code === 'OcrFail' && !res.json.Result,
       'fault code -> HTTP 200 with Code OcrFail', res.json);

    await fq({ mode: 'garbage' });
    res = await send(conn, chk());
    ok(res.status === 200 && res.text === 'this is not json', 'fault garbage', res.text);

    await fq({ mode: 'raw', body_b64: Buffer.from('{"Code":1} x').toString('base64') });
    res = await send(conn, chk());
    ok(res.status === 200 && res.text === '{"Code":1} x', 'fault raw: the bytes as given', res.text);

    await fq({ mode: 'truncated' });
    res = await send(conn, chk());
    ok(res.status === 200 && res.json === null && res.text.startsWith('{"RequestId"') &&
       Number(res.headers['content-length']) === Buffer.byteLength(res.text),
       'fault truncated: cut JSON with matching Content-Length', res.text);

    await fq({ mode: 'big', bytes: 200000 });
    res = await send(conn, chk());
    ok(successShapeOk(res) && res.json.Result.Big.length === 200000,
       'fault big: 200000-byte string in Result', res.status);

    await fq({ mode: 'slow', delay_ms: 300 });
    let t0 = Date.now();
    res = await send(conn, chk());
    ok(res.status === 200 && res.json.Code === 'Success' && Date.now() - t0 >= 280,
       'fault slow: correct answer after delay_ms', Date.now() - t0);

    await fq({ mode: 'reset' });
    let err = null;
    try { await send(conn, chk()); } catch (e) { err = e; }
    ok(err && !err.partial, 'fault reset: connection dropped without an answer',
       err ? err.message : 'got an answer');

    await fq({ mode: 'reset_mid' });
    err = null;
    try { await send(conn, chk()); } catch (e) { err = e; }
    ok(err && err.partial, 'fault reset_mid: headers and half a body, then dropped',
       err ? err.message : 'got an answer');

    await fq({ mode: 'timeout', delay_ms: 400 });
    t0 = Date.now();
    err = null;
    try { await send(conn, chk()); } catch (e) { err = e; }
    ok(err && !err.partial && Date.now() - t0 >= 380,
       'fault timeout: no answer, closed after delay_ms', Date.now() - t0);

    res = await send(conn, chk());
    ok(res.status === 200 && res.json.Code === 'Success', 'normal service after faults',
       res.json);
    st = (await control(port, 'GET', '/__mock/stats')).json;
    ok(st.faulted === 12 && st.by_code['fault:reset'] === 1 &&
       st.by_code['Throttling.Api'] === 1 && st.faults_pending.length === 0 &&
       st.calls === st.accepted + st.rejected,
       'stats count faulted requests', { faulted: st.faulted, by_code: st.by_code });

    res = await control(port, 'GET', '/__mock/nothing');
    ok(res.status === 404, 'unknown control endpoint -> 404');
    conn.close();

    const logText = m.stderr();
    ok(/action=CheckResult version=2022-08-09 sig=v3 code=Success status=200/.test(logText) &&
       !logText.includes('tok+/= 1') && !logText.includes('flow1'),
       'stderr log has one line per request without parameter values',
       logText.split('\n').slice(-5).join('\n'));
    m.child.kill('SIGTERM');
}

/* ---------------------------------------------------------- part 3 */

function execp(cmd, args) {
    return new Promise((resolve) => {
        execFile(cmd, args, (e, stdout, stderr) =>
            resolve({ code: e ? (e.code || 1) : 0, stdout, stderr }));
    });
}

function httpsRequest(port, ca, r, servername) {
    return new Promise((resolve) => {
        const headers = {};
        for (const [k, v] of r.headers) headers[k] = v;
        const req = https.request({ host: '127.0.0.1', port, method: r.method,
            path: r.target, headers, ca, servername, agent: false }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                let j = null;
                try { j = JSON.parse(Buffer.concat(chunks).toString()); } catch (e) { /**/ }
                resolve({ status: res.statusCode, json: j });
            });
        });
        req.on('error', (e) => resolve({ error: e.code || e.message }));
        req.end(r.body);
    });
}

async function tlsChecks() {
    const which = await execp('sh', ['-c', 'command -v openssl']);
    if (which.code !== 0) {
        note('part 3 skipped: no openssl');
        return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mock-aliyun-selftest-'));
    try {
        let t0 = Date.now();
        let rc = await execp('sh', [MKCERTS, dir]);
        const files = ['ca.pem', 'ca.key', 'mock.pem', 'mock.key', 'other-ca.pem',
                       'other.pem', 'other.key'];
        ok(rc.code === 0 && rc.stdout === '' && rc.stderr === '' &&
           files.every((f) => fs.existsSync(path.join(dir, f))),
           'mkcerts.sh creates the CA, mock and unrelated certificates quietly (' +
           (Date.now() - t0) + ' ms)', rc);
        const before = fs.statSync(path.join(dir, 'mock.pem')).mtimeMs;
        rc = await execp('sh', [MKCERTS, dir]);
        ok(rc.code === 0 && fs.statSync(path.join(dir, 'mock.pem')).mtimeMs === before,
           'mkcerts.sh is idempotent', rc);

        const m = await startMock(['--port', '0', '--cert', path.join(dir, 'mock.pem'),
                                   '--key', path.join(dir, 'mock.key')]);
        note('part 3: HTTPS (mock port ' + m.port + ')');
        const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
        const otherCa = fs.readFileSync(path.join(dir, 'other-ca.pem'));
        const host = 'mock.idv.test:' + m.port;
        let res = await httpsRequest(m.port, ca, signV3({ host, action: 'CheckResult',
            query: { MerchantBizId: 'b', TransactionId: 't' } }), 'mock.idv.test');
        ok(res.status === 200 && res.json && res.json.Code === 'Success',
           'HTTPS request verified against ca.pem (SNI mock.idv.test)', res);
        res = await httpsRequest(m.port, ca, signV1({ host: 'localhost:' + m.port,
            action: 'CheckResult', query: { MerchantBizId: 'b', TransactionId: 't' } }),
            'localhost');
        ok(res.status === 200 && res.json && res.json.Code === 'Success',
           'HTTPS V1 request verified against ca.pem (SNI localhost)', res);
        res = await httpsRequest(m.port, otherCa, signV3({ host, action: 'CheckResult',
            query: { MerchantBizId: 'b', TransactionId: 't' } }), 'mock.idv.test');
        ok(res.error && /CERT|SIGNATURE|ISSUER|verify/i.test(res.error),
           'HTTPS with other-ca.pem as trust anchor fails verification', res);
        const st = (await control2(m.port, ca)).json;
        ok(st && st.tls_handshakes >= 2 && st.connections >= 3,
           'TLS handshakes/connections counted', st && { tls: st.tls_handshakes,
                                                        connections: st.connections });
        m.child.kill('SIGTERM');
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}

function control2(port, ca) {
    return new Promise((resolve) => {
        https.get({ host: '127.0.0.1', port, path: '/__mock/stats', ca,
                    servername: 'localhost', agent: false }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve({ json: JSON.parse(Buffer.concat(chunks)) }));
        }).on('error', (e) => resolve({ error: e.message }));
    });
}

/* ---------------------------------------------------------------- main */

async function main() {
    const file = process.argv[2];
    if (!file) {
        process.stderr.write('usage: node selftest.js signature-vectors.json\n');
        process.exit(2);
    }
    const data = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (!Array.isArray(data.vectors) || data.vectors.length === 0)
        throw new Error('no vectors in ' + file);
    await replayVectors(file, data);
    await liveChecks();
    await tlsChecks();
    process.stdout.write('1..' + testNo + '\n');
    if (failures) process.stdout.write('# ' + failures + ' of ' + testNo + ' failed\n');
}

process.on('exit', stopAll);
main().then(() => {
    stopAll();
    process.exit(failures ? 1 : 0);
}, (e) => {
    ok(false, 'selftest crashed', e && e.stack || String(e));
    process.stdout.write('1..' + testNo + '\n');
    stopAll();
    process.exit(1);
});
