#!/usr/bin/env node
/*
 * mock-aliyun.js -- local mock of Alibaba Cloud ID Verification
 * (cloudauth-intl, API version 2022-08-09) for the ngx_http_idv_module tests.
 *
 * It verifies V3 (ACS3-HMAC-SHA256) and V1 (HMAC-SHA1 RPC) signatures with
 * its own implementation (see /work/shared/idv-api/API.md sections 2, 3, 7, 8),
 * checks timestamps and nonces, answers Initialize / EkycVerify / CheckResult /
 * Id2MetaVerifyIntl with plausible results, fires result callbacks, injects
 * faults and keeps statistics that the tests read over /__mock/ endpoints.
 *
 * Usage:
 *   node t/mock/mock-aliyun.js --port P --cert FILE --key FILE
 *        [--keys id:secret[,id:secret...]] [--host 127.0.0.1] [--plain]
 *        [--replay-vectors FILE] [--keepalive-timeout MS] [--quiet]
 *        [--actions FILE]
 *
 * Prints "mock-aliyun listening on <port>\n" on stdout once listening (with
 * --port 0 the kernel picks the port); one line per request on stderr
 * (action, version, signature kind, code, status -- no parameter values).
 *
 * Placements: the API metadata the gateway's operations table is generated
 * from (--actions, default ngx_http_idv_module/data/actions.json, itself
 * generated from the official TypeScript client) says for each action
 * which parameters go in the query and which in the form body.  A known
 * parameter sent in the other place is answered 400 InvalidParameter
 * ("misplaced" in the request's log entry), so that a test proves the
 * gateway's placement against the client's, not against the C table.
 * Parameters the metadata do not list pass (idv_allow_param).
 *
 * API requests: any path other than /__mock/... ("/" expected; another path
 * gives 404 PathNotFound), POST or GET.  Authorization: ACS3-HMAC-SHA256 -> V3,
 * query parameter Signature -> V1, neither -> 400 MissingSignature.  The
 * method actually used goes into the string to sign.
 *
 * Control endpoints (no signature):
 *   GET  /__mock/stats     counters + last 100 API requests, see statsJson()
 *                          "connections" = TCP connections accepted since the
 *                          last reset, not counting ones used only for
 *                          /__mock/ calls ("connections_total" counts all);
 *                          calls == accepted (Code Success) + rejected.
 *   POST /__mock/reset     counters, log, faults, transactions (not nonces)
 *   POST /__mock/fault     {"mode", "count":1, "action", "delay_ms", "status",
 *                          "code", "bytes", "message", "result"} (or an array
 *                          of them) modes: timeout reset reset_mid garbage
 *                          truncated status code throttle big slow result
 *                          raw (result: HTTP 200, Code Success, "result" as
 *                          the Result object; raw: HTTP 200 with the bytes
 *                          of "body_b64", base64, as the answer)
 *   POST /__mock/complete  {"transactionId", "passed":"Y", "subCode":"200",
 *                          "url", "callbackToken" (null = omit), "fire_passed",
 *                          "fire_subCode", "fire_transactionId", "timeout_ms"}
 *                          -> {"fired", "status", "body", "url", "known"}
 *   POST /__mock/callback  {"url"} -> {"status", "body"}
 *   GET  /__mock/transactions, GET /__mock/health
 *   POST /__mock/sts       {"lifetime": seconds of the temporary credentials
 *                          issued from now on (default 3600), "fail": n
 *                          (the next n metadata/STS calls fail; -1 = all,
 *                          0 = none), "status": HTTP status of a failure
 *                          (default 500), "role": the instance's RAM role
 *                          (default "idv-gateway-role"), "oidc_token": the
 *                          only OIDC token AssumeRoleWithOIDC accepts (null =
 *                          any non-empty one), "revoke": true forgets every
 *                          temporary key issued so far}
 *                          Not cleared by /__mock/reset.  GET /__mock/stats
 *                          shows the counters under "sts".
 *
 * Temporary credentials (the gateway's idv_credentials_source):
 *   ECS metadata service, hardened mode: PUT /latest/api/token with
 *   X-aliyun-ecs-metadata-token-ttl-seconds gives a session token; GET
 *   /latest/meta-data/ram/security-credentials/ (the role) and .../ROLE (the
 *   credentials JSON) need it in X-aliyun-ecs-metadata-token.
 *   STS (Version 2015-04-01, RPC style, POST /): AssumeRole, V1-signed by a
 *   --keys key and checked with this mock's own signer; AssumeRoleWithOIDC,
 *   unsigned, with RoleArn, OIDCProviderArn, OIDCToken, RoleSessionName.
 *   The keys issued are accepted by the API only with their SecurityToken
 *   (V3: the signed x-acs-security-token header; V1: the SecurityToken
 *   parameter) and only until their Expiration.
 *
 * Only Node core modules are used.
 */
'use strict';

const http = require('http');
const https = require('https');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { URL } = require('url');

const API_VERSION = '2022-08-09';
const WINDOW_MS = 15 * 60 * 1000;          /* timestamp window and nonce memory */
const LOG_KEEP = 100;                      /* requests kept in /__mock/stats */
const MAX_BODY = 32 * 1024 * 1024;
const MAX_TRANSACTIONS = 200000;
const TS_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;
const V3_PREFIX = 'ACS3-HMAC-SHA256 ';
const V3_REQUIRED = ['host', 'x-acs-action', 'x-acs-version', 'x-acs-date',
                     'x-acs-signature-nonce', 'x-acs-content-sha256'];

/* ------------------------------------------------------------------ CLI */

function usage(msg) {
    if (msg) process.stderr.write('mock-aliyun: ' + msg + '\n');
    process.stderr.write(
        'usage: node mock-aliyun.js --port P (--cert FILE --key FILE | --plain)\n' +
        '       [--keys id:secret[,id:secret...]] [--host ADDR]\n' +
        '       [--replay-vectors FILE] [--keepalive-timeout MS] [--quiet]\n' +
        '       [--actions FILE]\n');
    process.exit(2);
}

function parseArgs(argv) {
    const o = { port: 0, host: '127.0.0.1', keys: 'testid:testsecret',
                plain: false, cert: null, key: null, replay: null,
                keepalive: 75000, quiet: false,
                actions: path.join(__dirname, '..', '..',
                    'ngx_http_idv_module', 'data', 'actions.json') };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const val = () => {
            if (i + 1 >= argv.length) usage('missing value for ' + a);
            return argv[++i];
        };
        switch (a) {
        case '--port': o.port = Number(val()); break;
        case '--host': o.host = val(); break;
        case '--cert': o.cert = val(); break;
        case '--key': o.key = val(); break;
        case '--keys': o.keys = val(); break;
        case '--plain': o.plain = true; break;
        case '--replay-vectors': o.replay = val(); break;
        case '--keepalive-timeout': o.keepalive = Number(val()); break;
        case '--quiet': o.quiet = true; break;
        case '--actions': o.actions = val(); break;
        case '-h': case '--help': usage(); break;
        default: usage('unknown argument ' + a);
        }
    }
    if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)
        usage('bad --port');
    if (!o.plain && (!o.cert || !o.key))
        usage('--cert and --key are required unless --plain is given');
    if (!Number.isFinite(o.keepalive) || o.keepalive < 0)
        usage('bad --keepalive-timeout');
    const keys = new Map();
    for (const item of o.keys.split(',')) {
        if (item === '') continue;
        const c = item.indexOf(':');
        if (c <= 0) usage('bad --keys entry (want id:secret)');
        keys.set(item.slice(0, c), item.slice(c + 1));
    }
    if (keys.size === 0) usage('no keys');
    o.keyMap = keys;
    return o;
}

const opt = parseArgs(process.argv.slice(2));

let replayCount = 0;
if (opt.replay) {
    /* The file is only read to make sure the caller pointed at real vectors;
     * replay mode switches the timestamp and nonce checks off (recorded
     * vectors carry a fixed 2024 timestamp) and the MerchantBizId length
     * rule of Initialize (one SDK vector uses a 33-character id). */
    try {
        const v = JSON.parse(fs.readFileSync(opt.replay, 'utf8'));
        replayCount = Array.isArray(v.vectors) ? v.vectors.length : 0;
    } catch (e) {
        usage('cannot read --replay-vectors file: ' + e.message);
    }
}

/* action -> Map(parameter -> 'query' | 'body'), from the API metadata */
const PLACEMENTS = new Map();
try {
    const meta = JSON.parse(fs.readFileSync(opt.actions, 'utf8'));
    for (const [action, a] of Object.entries(meta.actions)) {
        const m = new Map();
        for (const p of a.params)
            m.set(p.name, p.in === 'formData' ? 'body' : 'query');
        PLACEMENTS.set(action, m);
    }
} catch (e) {
    usage('cannot read --actions file: ' + e.message);
}

/* ------------------------------------------------------------- logging */

/* stderr through the thread pool: no synchronous write per request */
const logStream = opt.quiet ? null
    : fs.createWriteStream(null, { fd: 2, autoClose: false });
if (logStream) logStream.on('error', () => {});

function logLine(s) {
    if (logStream) logStream.write('mock-aliyun: ' + s + '\n');
}

/* ------------------------------------------------------------ encoding */

function hexVal(c) {
    if (c >= 0x30 && c <= 0x39) return c - 0x30;
    if (c >= 0x41 && c <= 0x46) return c - 0x37;
    if (c >= 0x61 && c <= 0x66) return c - 0x57;
    return -1;
}

/* application/x-www-form-urlencoded value decoding on raw bytes:
 * '+' -> ' ', %XX -> byte, the result read as UTF-8. */
function formDecodeBytes(buf, start, end) {
    let plain = true;
    for (let i = start; i < end; i++) {
        const c = buf[i];
        if (c === 0x2b || c === 0x25 || c >= 0x80) { plain = false; break; }
    }
    if (plain) return buf.toString('latin1', start, end);
    const out = Buffer.allocUnsafe(end - start);
    let j = 0;
    for (let i = start; i < end; i++) {
        const c = buf[i];
        if (c === 0x2b) {
            out[j++] = 0x20;
        } else if (c === 0x25 && i + 2 < end &&
                   hexVal(buf[i + 1]) >= 0 && hexVal(buf[i + 2]) >= 0) {
            out[j++] = (hexVal(buf[i + 1]) << 4) | hexVal(buf[i + 2]);
            i += 2;
        } else {
            out[j++] = c;
        }
    }
    return out.toString('utf8', 0, j);
}

/* -> array of [key, value]; empty segments skipped, "k" means k="" */
function formParse(buf) {
    const pairs = [];
    const n = buf.length;
    let s = 0;
    while (s <= n) {
        let e = buf.indexOf(0x26, s);
        if (e < 0) e = n;
        if (e > s) {
            let eq = buf.indexOf(0x3d, s);
            if (eq < 0 || eq > e) eq = -1;
            if (eq < 0) pairs.push([formDecodeBytes(buf, s, e), '']);
            else pairs.push([formDecodeBytes(buf, s, eq),
                             formDecodeBytes(buf, eq + 1, e)]);
        }
        s = e + 1;
    }
    return pairs;
}

/* canonical percent-encoding: UTF-8, only A-Za-z0-9-_.~ left alone,
 * upper-case hex */
function canonEnc(str) {
    return encodeURIComponent(str).replace(/[!'()*]/g,
        (ch) => '%' + ch.charCodeAt(0).toString(16).toUpperCase());
}

function byteCompare(a, b) {
    return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/* sorted (byte order of key, then value) "enc(k)=enc(v)" joined by '&' */
function canonicalize(pairs) {
    const sorted = pairs.slice().sort((x, y) =>
        byteCompare(x[0], y[0]) || byteCompare(x[1], y[1]));
    return sorted.map((p) => canonEnc(p[0]) + '=' + canonEnc(p[1])).join('&');
}

function sha256hex(data) {
    return crypto.createHash('sha256').update(data).digest('hex');
}

function safeEqual(a, b) {
    const x = Buffer.from(String(a), 'utf8');
    const y = Buffer.from(String(b), 'utf8');
    if (x.length !== y.length) {
        crypto.timingSafeEqual(x, x);      /* keep the timing shape */
        return false;
    }
    return crypto.timingSafeEqual(x, y);
}

function randomHex(bytes) {
    return crypto.randomBytes(bytes).toString('hex');
}

function requestId() {
    return crypto.randomUUID().toUpperCase();
}

function parseTimestamp(s) {
    const m = TS_RE.exec(s || '');
    if (!m) return NaN;
    const t = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
    const d = new Date(t);
    if (d.getUTCDate() !== +m[3] || d.getUTCMonth() !== +m[2] - 1) return NaN;
    return t;
}

/* ---------------------------------------------------------------- state */

const keys = opt.keyMap;
const STS_VERSION = '2015-04-01';
const STS_ACTIONS = new Set(['AssumeRole', 'AssumeRoleWithOIDC']);
/* temporary credentials outlive /__mock/reset, as the gateway keeps them */
const tempKeys = new Map();                 /* AccessKeyId -> {secret, token, expires} */
const mdSessions = new Map();               /* metadata session token -> expiry */
const sts = {
    conf: { lifetime: 3600, fail: 0, status: 500, role: 'idv-gateway-role',
            oidc_token: null },
    counts: Object.create(null),            /* "AssumeRole", "metadata:token", ... */
    failed: 0, issued: [], last: null, oidc_tokens: [],
};
const COUNTED = Symbol('counted');          /* socket -> epoch it was counted in */
const CARRIED_API = Symbol('api');          /* socket carried an API request */
const nonces = new Map();                   /* nonce -> expiry (ms) */
let state;

function freshState() {
    return {
        calls: 0, accepted: 0, rejected: 0, faulted: 0,
        byAction: Object.create(null), byCode: Object.create(null),
        connections: 0, connectionsTotal: 0, tlsHandshakes: 0, tlsResumed: 0,
        epoch: Symbol('epoch'),
        log: [], faults: [],
        transactions: new Map(),            /* TransactionId -> record */
        results: new Map(),                 /* TransactionId -> {Passed, SubCode} */
        callbacks: 0,
        lastImages: null,
    };
}
state = freshState();

setInterval(() => {
    const now = Date.now();
    for (const [k, exp] of nonces) if (exp <= now) nonces.delete(k);
}, 60000).unref();

/* -------------------------------------------------------------- replies */

const MESSAGES = {
    SignatureDoesNotMatch: 'Specified signature does not match our calculation.',
    IncompleteSignature: 'The request signature does not conform to Aliyun standards.',
    'InvalidAccessKeyId.NotFound': 'Specified access key is not found.',
    SignatureNonceUsed: 'Specified signature nonce was used already.',
    'InvalidTimeStamp.Expired': 'Specified time stamp or date value is expired.',
    'InvalidTimeStamp.Format': 'Specified time stamp or date value is not well formatted.',
    MissingSignature: 'Signature is mandatory for this action.',
    MissingTimestamp: 'Timestamp is mandatory for this action.',
    MissingAccessKeyId: 'AccessKeyId is mandatory for this action.',
    InvalidVersion: 'Specified parameter Version is not valid.',
    'Throttling.Api': 'Request was denied due to api flow control.',
    Throttling: 'Request was denied due to flow control.',
    'Throttling.User': 'Request was denied due to user flow control.',
    InternalError: 'The request processing has failed due to some unknown error, exception or failure.',
    ServiceUnavailable: 'The request has failed due to a temporary failure of the server.',
    'Forbidden.ExceptionRepeatedInvoke': 'Repeated invocation.',
    'Forbidden.RAM': 'User not authorized to operate on the specified resource.',
    MissingParameter: 'A required parameter is missing.',
    InvalidParameter: 'The specified parameter is invalid.',
    HighRisk: 'The request was blocked as high risk.',
    UnsupportedHTTPMethod: 'This http method is not supported.',
    PathNotFound: 'Specified api path is not found.',
    RequestTooLarge: 'The request body is too large.',
};

function defaultCodeForStatus(status) {
    if (status === 403) return 'Forbidden';
    if (status === 404) return 'NotFound';
    if (status === 429) return 'Throttling';
    if (status === 500) return 'InternalError';
    if (status === 502) return 'BadGateway';
    if (status === 503) return 'ServiceUnavailable';
    if (status === 504) return 'GatewayTimeout';
    if (status >= 500) return 'InternalError';
    return 'InvalidParameter';
}

class ApiError extends Error {
    constructor(status, code, message) {
        super(message || MESSAGES[code] || ('Mock error ' + code));
        this.status = status;
        this.code = code;
    }
}

function errorEnvelope(ctx, code, message) {
    const id = ctx.requestId;
    return {
        RequestId: id,
        Message: message || MESSAGES[code] || ('Mock error ' + code),
        Recommend: 'https://api.aliyun.com/troubleshoot?q=' +
            encodeURIComponent(code) + '&product=Cloudauth-intl&requestId=' + id,
        HostId: ctx.host,
        Code: code,
    };
}

function successEnvelope(ctx, result) {
    return { RequestId: ctx.requestId, Code: 'Success', Message: 'success',
             Result: result };
}

function finish(ctx, status, code) {
    const e = ctx.entry;
    e.code = code;
    e.status = status;
    if (code === 'Success') state.accepted++;
    else state.rejected++;
    state.byCode[code] = (state.byCode[code] || 0) + 1;
    logLine(ctx.req.method + ' action=' + (e.action || '-') +
            ' version=' + (ctx.version || '-') + ' sig=' + (e.sig || '-') +
            ' code=' + code + ' status=' + status +
            (e.fault ? ' fault=' + e.fault : ''));
}

function writeJson(res, status, obj, extraHeaders) {
    const body = Buffer.isBuffer(obj) ? obj
        : Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj),
                      'utf8');
    const h = { 'Content-Type': 'application/json;charset=utf-8',
                'Content-Length': body.length };
    if (extraHeaders) Object.assign(h, extraHeaders);
    res.writeHead(status, h);
    res.end(body);
}

function reply(ctx, status, code, obj) {
    finish(ctx, status, code);
    if (ctx.res.destroyed || ctx.res.writableEnded) return;
    writeJson(ctx.res, status, obj, { 'x-acs-request-id': ctx.requestId });
}

function replyError(ctx, err) {
    reply(ctx, err.status, err.code, errorEnvelope(ctx, err.code, err.message));
}

/* ------------------------------------------------------------ signatures */

function headerValue(req, name) {
    const v = req.headers[name];
    if (v === undefined) return undefined;
    return Array.isArray(v) ? v.join(',') : String(v);
}

function checkTimestamp(ts) {
    if (opt.replay) return;
    const t = parseTimestamp(ts);
    if (Number.isNaN(t)) throw new ApiError(400, 'InvalidTimeStamp.Format');
    if (Math.abs(Date.now() - t) > WINDOW_MS)
        throw new ApiError(400, 'InvalidTimeStamp.Expired');
}

function checkNonce(nonce) {
    if (opt.replay) return;
    const now = Date.now();
    const exp = nonces.get(nonce);
    if (exp !== undefined && exp > now)
        throw new ApiError(400, 'SignatureNonceUsed');
    nonces.set(nonce, now + WINDOW_MS);
}

function verifyV3(ctx) {
    const req = ctx.req;
    const auth = headerValue(req, 'authorization').slice(V3_PREFIX.length);
    const fields = Object.create(null);
    for (const part of auth.split(',')) {
        const eq = part.indexOf('=');
        if (eq > 0) fields[part.slice(0, eq)] = part.slice(eq + 1);
    }
    const incomplete = (sts) => new ApiError(400, 'IncompleteSignature',
        MESSAGES.IncompleteSignature + ' server string to sign is: ' + (sts || ''));
    if (!fields.Credential || fields.SignedHeaders === undefined ||
        !fields.Signature)
        throw incomplete('');

    const secret = lookupKey(fields.Credential,
        headerValue(req, 'x-acs-security-token'));
    ctx.accessKeyId = fields.Credential;

    const names = [...new Set(fields.SignedHeaders.split(';')
        .filter((s) => s !== '').map((s) => s.toLowerCase()))]
        .sort(byteCompare);
    const set = new Set(names);

    const payloadHash = sha256hex(ctx.body);
    const canonHeaders = names.map((n) => {
        const v = headerValue(req, n);
        return n + ':' + (v === undefined ? '' : v.trim()) + '\n';
    }).join('');
    const signedHeaders = names.join(';');
    const canonReq = req.method + '\n/\n' + canonicalize(ctx.queryPairs) +
        '\n' + canonHeaders + '\n' + signedHeaders + '\n' + payloadHash;
    const sts = 'ACS3-HMAC-SHA256\n' + sha256hex(canonReq);

    for (const n of V3_REQUIRED)
        if (!set.has(n)) throw incomplete(sts);
    if (tempKeys.has(fields.Credential) && !set.has('x-acs-security-token'))
        throw incomplete(sts);
    if (req.headers['content-type'] !== undefined && !set.has('content-type'))
        throw incomplete(sts);

    checkTimestamp(headerValue(req, 'x-acs-date'));

    const mismatch = new ApiError(400, 'SignatureDoesNotMatch',
        MESSAGES.SignatureDoesNotMatch + ' server StringToSign is [' + sts + ']');
    const claimedHash = (headerValue(req, 'x-acs-content-sha256') || '').trim();
    if (!safeEqual(claimedHash, payloadHash)) throw mismatch;
    const expected = crypto.createHmac('sha256', secret).update(sts)
        .digest('hex');
    if (!safeEqual(fields.Signature, expected)) throw mismatch;

    checkNonce(headerValue(req, 'x-acs-signature-nonce'));

    if (ctx.version !== API_VERSION) throw new ApiError(400, 'InvalidVersion');
}

/* a --keys key, or a temporary one with its token and before it expires */
function lookupKey(id, token) {
    const secret = keys.get(id);
    if (secret !== undefined) return secret;
    const t = tempKeys.get(id);
    if (t === undefined) throw new ApiError(404, 'InvalidAccessKeyId.NotFound');
    if (token === undefined || token === '')
        throw new ApiError(400, 'MissingSecurityToken',
                           'SecurityToken is mandatory for this action.');
    if (!safeEqual(token, t.token))
        throw new ApiError(400, 'InvalidSecurityToken.MismatchWithAccessKey',
                           'The SecurityToken does not match the AccessKeyId.');
    if (Date.now() >= t.expires)
        throw new ApiError(400, 'InvalidSecurityToken.Expired',
                           'Specified SecurityToken is expired.');
    return t.secret;
}

function verifyV1(ctx, signature, version) {
    const req = ctx.req;
    const pairs = ctx.queryPairs.filter((p) => p[0] !== 'Signature')
        .concat(ctx.bodyPairs);
    const p = Object.create(null);
    for (const [k, v] of pairs) if (!(k in p)) p[k] = v;

    const missing = (name) => new ApiError(400, 'Missing' + name,
        name + ' is mandatory for this action.');
    if (p.AccessKeyId === undefined || p.AccessKeyId === '')
        throw missing('AccessKeyId');
    /* STS itself takes long-lived keys only */
    if (version === STS_VERSION && !keys.has(p.AccessKeyId))
        throw new ApiError(404, 'InvalidAccessKeyId.NotFound');
    const secret = lookupKey(p.AccessKeyId, p.SecurityToken);
    ctx.accessKeyId = p.AccessKeyId;
    if (p.Timestamp === undefined || p.Timestamp === '')
        throw missing('Timestamp');
    for (const name of ['Action', 'Version', 'SignatureMethod',
                        'SignatureVersion', 'SignatureNonce'])
        if (p[name] === undefined || p[name] === '') throw missing(name);
    if (p.SignatureMethod !== 'HMAC-SHA1')
        throw new ApiError(400, 'InvalidSignatureMethod',
                           'Specified signature method is not valid.');
    if (p.SignatureVersion !== '1.0')
        throw new ApiError(400, 'InvalidSignatureVersion',
                           'Specified signature version is not valid.');

    checkTimestamp(p.Timestamp);

    const sts = req.method + '&' + canonEnc('/') + '&' +
        canonEnc(canonicalize(pairs));
    const expected = crypto.createHmac('sha1', secret + '&').update(sts)
        .digest('base64');
    if (!safeEqual(signature, expected))
        throw new ApiError(400, 'SignatureDoesNotMatch',
            'Specified signature is not matched with our calculation. ' +
            'server string to sign is:' + sts);

    checkNonce(p.SignatureNonce);

    if (p.Version !== (version || API_VERSION))
        throw new ApiError(400, 'InvalidVersion');
}

/* --------------------------------------------------------------- actions */

function need(params, name) {
    const v = params[name];
    if (v === undefined || v === '')
        throw new ApiError(400, 'MissingParameter',
            'The input parameter "' + name +
            '" that is mandatory for processing this request is not supplied.');
    return v;
}

function invalid(name, message) {
    return new ApiError(400, 'InvalidParameter',
        message || ('The specified parameter "' + name + '" is invalid.'));
}

function remember(id, rec) {
    const t = state.transactions;
    if (t.size >= MAX_TRANSACTIONS) {
        const oldest = t.keys().next().value;
        t.delete(oldest);
        state.results.delete(oldest);
    }
    t.set(id, rec);
}

function outcomeFor(bizId) {
    if (bizId.includes('fail')) return { Passed: 'N', SubCode: '205' };
    if (bizId.includes('passT')) return { Passed: 'T', SubCode: '200' };
    return { Passed: 'Y', SubCode: '200' };
}

function extFaceInfo(passed) {
    const ok = passed === 'Y' || passed === 'T';
    return JSON.stringify({ faceComparisonScore: ok ? 95.5 : 32.1,
                            facePassed: ok ? 'Y' : 'N' });
}

function extIdInfo(passed) {
    const ok = passed === 'Y' || passed === 'T';
    return JSON.stringify({ ocrIdInfo: { idNumber: '***' },
                            ocrIdPassed: ok ? 'Y' : 'N' });
}

function actInitialize(ctx, params) {
    need(params, 'ProductCode');
    const bizId = need(params, 'MerchantBizId');
    /* Replay mode skips the length rule: the SDK vector
     * *-initialize-ekyc-callback-metainfo carries a 33-character id. */
    if (bizId.length > 32 && !opt.replay) throw invalid('MerchantBizId');
    const id = randomHex(16);
    remember(id, {
        MerchantBizId: bizId,
        ProductCode: params.ProductCode,
        CallbackUrl: params.CallbackUrl,
        CallbackToken: params.CallbackToken,
        created: Date.now(),
    });
    return {
        TransactionId: id,
        TransactionUrl: 'https://mock.idv.test/h5/' + id,
        Protocol: 'hksb' + Buffer.from(JSON.stringify(
            { transactionId: id, mock: true, r: randomHex(8) })).toString('base64'),
        ClientCfg: '{"mock":true}',
    };
}

function imageInfo(ctx, name) {
    const inBody = ctx.bodyPairs.some((p) => p[0] === name);
    const inQuery = ctx.queryPairs.some((p) => p[0] === name);
    if (!inBody && !inQuery) return null;
    const v = ctx.params[name] || '';
    return { in_body: inBody, in_query: inQuery,
             decoded_bytes: Buffer.from(v, 'base64').length,
             encoded_chars: v.length };
}

function actEkycVerify(ctx, params) {
    const bizId = need(params, 'MerchantBizId');
    const images = {};
    for (const name of ['FacePictureBase64', 'IdOcrPictureBase64']) {
        const info = imageInfo(ctx, name);
        if (info) images[name] = info;
    }
    ctx.entry.images = images;
    state.lastImages = images;
    const out = outcomeFor(bizId);
    const id = randomHex(16);
    remember(id, { MerchantBizId: bizId, ProductCode: params.ProductCode,
                   created: Date.now() });
    state.results.set(id, out);
    return {
        TransactionId: id,
        Passed: out.Passed,
        SubCode: out.SubCode,
        ExtFaceInfo: out.Passed === 'N' ? extFaceInfo('N')
            : '{"faceComparisonScore":95.5,"facePassed":"Y"}',
        ExtIdInfo: out.Passed === 'N' ? extIdInfo('N')
            : '{"ocrIdInfo":{"idNumber":"***"},"ocrIdPassed":"Y"}',
    };
}

function actCheckResult(ctx, params) {
    const bizId = need(params, 'MerchantBizId');
    const id = need(params, 'TransactionId');
    const tx = state.transactions.get(id);
    if (tx && tx.MerchantBizId !== bizId)
        throw invalid('MerchantBizId', 'MerchantBizId does not match TransactionId');
    const out = state.results.get(id) || outcomeFor(bizId);
    const result = {
        Passed: out.Passed,
        SubCode: out.SubCode,
        ExtBasicInfo: JSON.stringify({ transactionId: id, certName: '***',
                                       certNo: '***', docType: '00000001' }),
        ExtFaceInfo: extFaceInfo(out.Passed),
        ExtIdInfo: extIdInfo(out.Passed),
    };
    if (params.IsReturnImage === 'Y') {
        result.ExtImageInfo = JSON.stringify({
            facePicture: crypto.createHash('sha512').update(id).digest('base64')
                .repeat(23).slice(0, 2000),
        });
    }
    return result;
}

function actId2Meta(ctx, params) {
    need(params, 'ParamType');
    const num = need(params, 'IdentifyNum');
    need(params, 'UserName');
    let code = '1';
    if (num.endsWith('0000')) code = '2';
    else if (num.endsWith('9999')) code = '3';
    return { BizCode: code };
}

/* V1 sends its own parameters in the query, whatever an action's are */
const V1_PARAMS = new Set(['AccessKeyId', 'Action', 'Format', 'RegionId',
    'SecurityToken', 'Signature', 'SignatureMethod', 'SignatureNonce',
    'SignatureVersion', 'Timestamp', 'Version']);

function checkPlacement(ctx) {
    const known = PLACEMENTS.get(ctx.entry.action);
    if (!known) return;
    const misplaced = [];
    for (const [pairs, here] of [[ctx.queryPairs, 'query'],
                                 [ctx.bodyPairs, 'body']]) {
        for (const [name] of pairs) {
            if (ctx.sig === 'v1' && here === 'query' && V1_PARAMS.has(name))
                continue;
            const want = known.get(name);
            if (want !== undefined && want !== here) misplaced.push(name);
        }
    }
    if (misplaced.length === 0) return;
    ctx.entry.misplaced = misplaced;
    throw invalid(misplaced[0], 'The parameter "' + misplaced[0] +
        '" is sent in the wrong place (query or body) for this action.');
}

const ACTIONS = {
    Initialize: actInitialize,
    EkycVerify: actEkycVerify,
    CheckResult: actCheckResult,
    Id2MetaVerifyIntl: actId2Meta,
};

/* ---------------------------------------------------------------- faults */

function takeFault(action) {
    const list = state.faults;
    for (let i = 0; i < list.length; i++) {
        const f = list[i];
        if (f.action && f.action !== action) continue;
        f.remaining--;
        if (f.remaining <= 0) list.splice(i, 1);
        return f;
    }
    return null;
}

function destroySocket(sock, hard) {
    if (!sock || sock.destroyed) return;
    if (hard && typeof sock.resetAndDestroy === 'function') {
        try { sock.resetAndDestroy(); return; } catch (e) { /* fall through */ }
    }
    sock.destroy();
}

function applyFault(ctx, f) {
    const { res, req } = ctx;
    const sock = req.socket;
    ctx.entry.fault = f.mode;
    state.faulted++;
    const transport = (status) => finish(ctx, status, 'fault:' + f.mode);
    const fakeSuccess = () => JSON.stringify(successEnvelope(ctx,
        { Action: ctx.entry.action || '', Mock: 'fault' }));

    switch (f.mode) {
    case 'timeout': {
        transport(0);
        const t = setTimeout(() => destroySocket(sock, false),
                             f.delay_ms === undefined ? 30000 : f.delay_ms);
        sock.once('close', () => clearTimeout(t));
        return;
    }
    case 'reset':
        transport(0);
        destroySocket(sock, true);
        return;
    case 'reset_mid': {
        transport(200);
        const body = Buffer.from(fakeSuccess());
        res.writeHead(200, { 'Content-Type': 'application/json;charset=utf-8',
                             'Content-Length': body.length });
        res.write(body.subarray(0, body.length >> 1),
                  () => setImmediate(() => destroySocket(sock, true)));
        return;
    }
    case 'garbage':
        transport(200);
        writeJson(res, 200, 'this is not json');
        return;
    case 'truncated': {
        transport(200);
        const full = fakeSuccess();
        writeJson(res, 200, full.slice(0, full.length >> 1));
        return;
    }
    case 'status': {
        const code = f.code || defaultCodeForStatus(f.status);
        reply(ctx, f.status, code, errorEnvelope(ctx, code, f.message));
        return;
    }
    case 'code': {
        const code = f.code;
        reply(ctx, 200, code, { RequestId: ctx.requestId, Code: code,
            Message: f.message || MESSAGES[code] || ('Mock error ' + code) });
        return;
    }
    case 'throttle':
        reply(ctx, 403, 'Throttling.Api',
              errorEnvelope(ctx, 'Throttling.Api', MESSAGES['Throttling.Api']));
        return;
    case 'big':
        reply(ctx, 200, 'Success', successEnvelope(ctx, {
            Action: ctx.entry.action || '', Big: 'B'.repeat(f.bytes) }));
        return;
    case 'result':
        reply(ctx, 200, 'Success', successEnvelope(ctx, f.result));
        return;
    case 'raw':
        transport(200);
        writeJson(res, 200, f.body);
        return;
    case 'slow': {
        const t = setTimeout(() => process_(ctx),
                             f.delay_ms === undefined ? 1000 : f.delay_ms);
        sock.once('close', () => clearTimeout(t));
        return;
    }
    }
}

const FAULT_MODES = new Set(['timeout', 'reset', 'reset_mid', 'garbage',
    'truncated', 'status', 'code', 'throttle', 'big', 'slow', 'result',
    'raw']);

function addFault(spec) {
    if (!spec || typeof spec !== 'object') throw new Error('JSON object expected');
    if (!FAULT_MODES.has(spec.mode)) throw new Error('unknown mode');
    const f = { mode: spec.mode };
    f.remaining = spec.count === undefined ? 1 : Number(spec.count);
    if (!Number.isInteger(f.remaining) || f.remaining < 1)
        throw new Error('bad count');
    if (spec.action !== undefined && spec.action !== null) {
        if (typeof spec.action !== 'string') throw new Error('bad action');
        f.action = spec.action;
    }
    if (spec.delay_ms !== undefined) {
        f.delay_ms = Number(spec.delay_ms);
        if (!Number.isFinite(f.delay_ms) || f.delay_ms < 0)
            throw new Error('bad delay_ms');
    }
    if (typeof spec.message === 'string') f.message = spec.message;
    if (f.mode === 'status') {
        f.status = Number(spec.status);
        if (!Number.isInteger(f.status) || f.status < 200 || f.status > 599)
            throw new Error('status mode needs "status" (200-599)');
        if (spec.code !== undefined) f.code = String(spec.code);
    }
    if (f.mode === 'code') {
        if (typeof spec.code !== 'string' || spec.code === '')
            throw new Error('code mode needs "code"');
        f.code = spec.code;
    }
    if (f.mode === 'result') {
        if (!spec.result || typeof spec.result !== 'object')
            throw new Error('result mode needs "result" (an object)');
        f.result = spec.result;
    }
    if (f.mode === 'raw') {
        if (typeof spec.body_b64 !== 'string')
            throw new Error('raw mode needs "body_b64"');
        f.body = Buffer.from(spec.body_b64, 'base64');
    }
    if (f.mode === 'big') {
        f.bytes = spec.bytes === undefined ? 1048576 : Number(spec.bytes);
        if (!Number.isInteger(f.bytes) || f.bytes < 0 || f.bytes > 256 * 1048576)
            throw new Error('bad bytes');
    }
    state.faults.push(f);
    return f;
}

/* ------------------------------------------------------------ API entry */

function summarizeBody(pairs) {
    const o = {};
    for (const [k, v] of pairs)
        o[k] = v.length > 64 ? '<' + Buffer.byteLength(v) + ' bytes>' : v;
    return o;
}

function pairsToObject(pairs) {
    const o = {};
    for (const [k, v] of pairs) if (!(k in o)) o[k] = v;
    return o;
}

function handleApi(req, res, body, qs, pathBad) {
    const ctype = req.headers['content-type'];
    const isForm = typeof ctype === 'string' &&
        /^\s*application\/x-www-form-urlencoded\s*(;|$)/i.test(ctype);
    const queryPairs = formParse(Buffer.from(qs, 'latin1'));
    const bodyPairs = isForm ? formParse(body) : [];
    const query = pairsToObject(queryPairs);
    const auth = headerValue(req, 'authorization');
    const isV3 = auth !== undefined && auth.startsWith(V3_PREFIX);
    const sig = isV3 ? 'v3' : (query.Signature !== undefined ? 'v1' : null);
    const bodyObj = pairsToObject(bodyPairs);
    const action = isV3 ? (headerValue(req, 'x-acs-action') || '')
        : (query.Action !== undefined ? query.Action : (bodyObj.Action || ''));
    const version = isV3 ? headerValue(req, 'x-acs-version')
        : (query.Version !== undefined ? query.Version : bodyObj.Version);

    const entry = {
        action, sig, code: null, status: null,
        method: req.method, path: req.url.split('?')[0], host: req.headers.host === undefined ? null
            : req.headers.host,
        query, body: summarizeBody(bodyPairs),
        headers: Object.assign({}, req.headers),
        content_type: ctype === undefined ? null : ctype,
        body_length: body.length,
    };
    if (STS_ACTIONS.has(action)) {
        handleSts({ req, res, body, entry, queryPairs, bodyPairs, isV3, sig,
                    version, pathBad, requestId: requestId(),
                    host: req.headers.host === undefined ? '' : req.headers.host,
                    params: Object.assign({}, query, bodyObj) });
        return;
    }
    state.calls++;
    const an = action || '(none)';
    state.byAction[an] = (state.byAction[an] || 0) + 1;
    state.log.push(entry);
    if (state.log.length > LOG_KEEP) state.log.shift();

    const ctx = {
        req, res, body, entry, queryPairs, bodyPairs, isV3, sig, version,
        pathBad,
        requestId: requestId(),
        host: req.headers.host === undefined ? '' : req.headers.host,
        params: Object.assign({}, query, bodyObj),
    };

    const f = takeFault(action);
    if (f) { applyFault(ctx, f); return; }
    process_(ctx);
}

function process_(ctx) {
    const { req } = ctx;
    try {
        if (req.method !== 'POST' && req.method !== 'GET')
            throw new ApiError(405, 'UnsupportedHTTPMethod');
        if (ctx.pathBad) throw new ApiError(404, 'PathNotFound');
        if (ctx.isV3) verifyV3(ctx);
        else if (ctx.sig === 'v1') verifyV1(ctx, ctx.entry.query.Signature);
        else throw new ApiError(400, 'MissingSignature');

        checkPlacement(ctx);

        const action = ctx.entry.action;
        const fn = ACTIONS[action];
        const result = fn ? fn(ctx, ctx.params) : { Action: action };
        reply(ctx, 200, 'Success', successEnvelope(ctx, result));
    } catch (e) {
        if (!(e instanceof ApiError)) {
            logLine('internal error: ' + (e && e.stack || e));
            e = new ApiError(500, 'InternalError');
        }
        replyError(ctx, e);
    }
}

/* ------------------------------------------- temporary credentials */

function stsCount(what) {
    sts.counts[what] = (sts.counts[what] || 0) + 1;
}

/* a fault of the sources: {status} to answer, or null */
function stsFault() {
    if (sts.conf.fail === 0) return null;
    if (sts.conf.fail > 0) sts.conf.fail--;
    sts.failed++;
    return sts.conf.status;
}

function isoSeconds(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function issue() {
    const id = 'STS.' + randomHex(12);
    const expires = Date.now() + sts.conf.lifetime * 1000;
    const t = { secret: randomHex(20), token: 'CAIS' + randomHex(160),
                expires };
    tempKeys.set(id, t);
    sts.issued.push(id);
    if (sts.issued.length > 100) sts.issued.shift();
    return { AccessKeyId: id, AccessKeySecret: t.secret,
             SecurityToken: t.token, Expiration: isoSeconds(expires) };
}

/* the ECS instance metadata service, hardened mode */
function handleMetadata(req, res, path) {
    const text = (status, body) => {
        res.writeHead(status, { 'Content-Type': 'text/plain',
                                'Content-Length': Buffer.byteLength(body) });
        res.end(body);
    };
    const base = '/latest/meta-data/ram/security-credentials/';

    if (path === '/latest/api/token') {
        stsCount('metadata:token');
        if (req.method !== 'PUT') return text(405, 'method not allowed');
        const ttl = Number(headerValue(req,
            'x-aliyun-ecs-metadata-token-ttl-seconds'));
        if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600)
            return text(400, 'missing or invalid ttl');
        const f = stsFault();
        if (f) return text(f, 'fault');
        const tok = randomHex(24);
        mdSessions.set(tok, Date.now() + ttl * 1000);
        return text(200, tok);
    }

    if (!path.startsWith(base)) return text(404, 'not found');
    if (req.method !== 'GET') return text(405, 'method not allowed');
    const role = path.slice(base.length);
    stsCount(role === '' ? 'metadata:role' : 'metadata:credentials');
    const tok = headerValue(req, 'x-aliyun-ecs-metadata-token');
    const exp = tok === undefined ? undefined : mdSessions.get(tok);
    if (exp === undefined || exp <= Date.now())
        return text(401, 'unauthorized');
    const f = stsFault();
    if (f) return text(f, 'fault');
    if (role === '') return text(200, sts.conf.role);
    if (role !== sts.conf.role) return text(404, 'not found');
    sts.last = { source: 'ecs', role };
    const c = issue();
    writeJson(res, 200, Object.assign({ Code: 'Success' }, c,
        { LastUpdated: isoSeconds(Date.now()) }));
}

/* STS: AssumeRole (V1-signed), AssumeRoleWithOIDC (unsigned) */
function handleSts(ctx) {
    const { params } = ctx;
    const action = ctx.entry.action;
    stsCount(action);
    const stsReply = (status, code, obj) => {
        logLine(ctx.req.method + ' sts action=' + action + ' code=' + code +
                ' status=' + status);
        writeJson(ctx.res, status, obj);
    };
    try {
        if (ctx.req.method !== 'POST') throw new ApiError(405, 'UnsupportedHTTPMethod');
        if (ctx.pathBad) throw new ApiError(404, 'PathNotFound');
        if (action === 'AssumeRole') {
            if (ctx.sig !== 'v1') throw new ApiError(400, 'MissingSignature');
            verifyV1(ctx, ctx.entry.query.Signature, STS_VERSION);
        } else {
            if (params.Signature !== undefined || params.AccessKeyId !== undefined)
                throw invalid('AccessKeyId',
                              'AssumeRoleWithOIDC is not signed.');
            if (params.Version !== STS_VERSION)
                throw new ApiError(400, 'InvalidVersion');
            checkTimestamp(params.Timestamp);
            need(params, 'OIDCProviderArn');
            const tok = need(params, 'OIDCToken');
            sts.oidc_tokens.push(tok);
            if (sts.oidc_tokens.length > 20) sts.oidc_tokens.shift();
            if (sts.conf.oidc_token !== null && tok !== sts.conf.oidc_token)
                throw new ApiError(400, 'AuthenticationFail.OIDCToken.Invalid',
                                   'The OIDC token is invalid.');
        }
        const arn = need(params, 'RoleArn');
        const session = need(params, 'RoleSessionName');
        if (!/^acs:ram::\d+:role\/[\w.@-]+$/.test(arn))
            throw invalid('RoleArn');
        const duration = Number(params.DurationSeconds || 3600);
        if (!Number.isInteger(duration) || duration < 900 || duration > 43200)
            throw invalid('DurationSeconds');
        const f = stsFault();
        if (f) throw new ApiError(f, defaultCodeForStatus(f));
        sts.last = { source: action, role_arn: arn, session, duration,
                     provider_arn: params.OIDCProviderArn || null,
                     access_key_id: ctx.accessKeyId || null };
        const body = {
            RequestId: ctx.requestId,
            AssumedRoleUser: { Arn: arn.replace(':role/', ':assumed-role/') +
                                    '/' + session,
                               AssumedRoleId: '3' + randomHex(8) + ':' + session },
            Credentials: issue(),
        };
        if (action === 'AssumeRoleWithOIDC')
            body.OIDCTokenInfo = { Subject: 'system:serviceaccount:idv:gateway',
                                   Issuer: 'https://oidc.example', ClientIds: 'sts.aliyuncs.com' };
        stsReply(200, 'Success', body);
    } catch (e) {
        if (!(e instanceof ApiError)) {
            logLine('internal error: ' + (e && e.stack || e));
            e = new ApiError(500, 'InternalError');
        }
        stsReply(e.status, e.code, errorEnvelope(ctx, e.code, e.message));
    }
}

function controlSts(spec) {
    const c = sts.conf;
    if (!spec || typeof spec !== 'object') spec = {};
    if (spec.lifetime !== undefined) {
        const l = Number(spec.lifetime);
        if (!Number.isFinite(l) || l < 1) throw new Error('bad lifetime');
        c.lifetime = l;
    }
    if (spec.fail !== undefined) c.fail = Number(spec.fail);
    if (spec.status !== undefined) c.status = Number(spec.status);
    if (spec.role !== undefined) c.role = String(spec.role);
    if (spec.oidc_token !== undefined)
        c.oidc_token = spec.oidc_token === null ? null : String(spec.oidc_token);
    if (spec.revoke) tempKeys.clear();
    return Object.assign({}, c);
}

/* ------------------------------------------------------ control endpoints */

function statsJson() {
    return {
        calls: state.calls,
        accepted: state.accepted,
        rejected: state.rejected,
        faulted: state.faulted,
        by_action: state.byAction,
        by_code: state.byCode,
        connections: state.connections,
        connections_total: state.connectionsTotal,
        tls_handshakes: state.tlsHandshakes,
        tls_resumed: state.tlsResumed,
        transactions: state.transactions.size,
        callbacks_fired: state.callbacks,
        faults_pending: state.faults.map((f) => Object.assign({}, f)),
        last_images: state.lastImages,
        replay_mode: !!opt.replay,
        sts: { conf: sts.conf, counts: sts.counts, failed: sts.failed,
               issued: sts.issued, last: sts.last,
               oidc_tokens: sts.oidc_tokens,
               valid_keys: [...tempKeys].filter(([, t]) => t.expires > Date.now())
                   .map(([id]) => id) },
        requests: state.log,
    };
}

function httpGet(urlStr, timeoutMs) {
    return new Promise((resolve) => {
        let u;
        try { u = new URL(urlStr); } catch (e) {
            resolve({ ok: false, status: 0, body: '', error: 'bad url' });
            return;
        }
        const mod = u.protocol === 'https:' ? https
            : u.protocol === 'http:' ? http : null;
        if (!mod) {
            resolve({ ok: false, status: 0, body: '', error: 'unsupported scheme' });
            return;
        }
        const r = mod.request(u, {
            method: 'GET', agent: false, rejectUnauthorized: false,
            headers: { 'User-Agent': 'mock-aliyun-callback/1.0',
                       Accept: '*/*' },
        }, (resp) => {
            const chunks = [];
            let len = 0;
            resp.on('data', (c) => {
                if (len < 65536) chunks.push(c);
                len += c.length;
            });
            resp.on('end', () => resolve({
                ok: true, status: resp.statusCode,
                body: Buffer.concat(chunks).toString('utf8').slice(0, 65536) }));
            resp.on('error', (e) => resolve({ ok: false, status: resp.statusCode,
                                              body: '', error: e.message }));
        });
        r.setTimeout(timeoutMs, () => r.destroy(new Error('timeout')));
        r.on('error', (e) => resolve({ ok: false, status: 0, body: '',
                                       error: e.code || e.message }));
        r.end();
    });
}

function appendQuery(url, fields) {
    const q = fields.filter((f) => f[1] !== undefined && f[1] !== null)
        .map((f) => encodeURIComponent(f[0]) + '=' + encodeURIComponent(String(f[1])))
        .join('&');
    if (q === '') return url;
    const hash = url.indexOf('#');
    const base = hash >= 0 ? url.slice(0, hash) : url;
    const frag = hash >= 0 ? url.slice(hash) : '';
    const sep = base.includes('?')
        ? (base.endsWith('?') || base.endsWith('&') ? '' : '&') : '?';
    return base + sep + q + frag;
}

async function controlComplete(spec) {
    if (!spec || typeof spec.transactionId !== 'string' || spec.transactionId === '')
        return [400, { error: 'transactionId required' }];
    const id = spec.transactionId;
    const passed = spec.passed === undefined ? 'Y' : String(spec.passed);
    const subCode = spec.subCode === undefined ? '200' : String(spec.subCode);
    state.results.set(id, { Passed: passed, SubCode: subCode });
    const tx = state.transactions.get(id);
    const url = spec.url !== undefined ? spec.url : (tx && tx.CallbackUrl);
    if (!url) return [200, { fired: false, status: 0, body: '',
                             known: !!tx, reason: 'no callback url' }];
    const token = 'callbackToken' in spec ? spec.callbackToken
        : (tx ? tx.CallbackToken : undefined);
    const target = appendQuery(String(url), [
        ['callbackToken', token === '' ? undefined : token],
        ['transactionId', spec.fire_transactionId !== undefined
            ? spec.fire_transactionId : id],
        ['passed', spec.fire_passed !== undefined ? spec.fire_passed : passed],
        ['subCode', spec.fire_subCode !== undefined ? spec.fire_subCode : subCode],
    ]);
    const r = await httpGet(target, Number(spec.timeout_ms) || 10000);
    if (r.ok) state.callbacks++;
    logLine('callback fired ok=' + r.ok + ' status=' + r.status);
    const out = { fired: r.ok, status: r.status, body: r.body, url: target,
                  known: !!tx };
    if (r.error) out.error = r.error;
    return [200, out];
}

async function controlCallback(spec) {
    if (!spec || typeof spec.url !== 'string')
        return [400, { error: 'url required' }];
    const r = await httpGet(spec.url, Number(spec.timeout_ms) || 10000);
    const out = { status: r.status, body: r.body };
    if (r.error) out.error = r.error;
    return [200, out];
}

function handleControl(req, res, path, body) {
    const send = (status, obj) => writeJson(res, status, obj);
    let spec = null;
    if (req.method === 'POST' && body.length > 0) {
        try { spec = JSON.parse(body.toString('utf8')); } catch (e) {
            send(400, { error: 'invalid JSON' });
            return;
        }
    }
    const route = req.method + ' ' + path;
    try {
        switch (route) {
        case 'GET /__mock/stats':
            send(200, statsJson());
            return;
        case 'GET /__mock/health':
            send(200, { ok: true });
            return;
        case 'GET /__mock/transactions': {
            const o = {};
            for (const [k, v] of state.transactions)
                o[k] = Object.assign({}, v, { result: state.results.get(k) || null });
            send(200, o);
            return;
        }
        case 'POST /__mock/reset':
            state = freshState();
            send(200, { reset: true });
            return;
        case 'POST /__mock/fault': {
            const specs = Array.isArray(spec) ? spec : [spec];
            const added = specs.map(addFault);
            send(200, { queued: added.length, faults_pending: state.faults.length });
            return;
        }
        case 'POST /__mock/complete':
            controlComplete(spec).then(([s, o]) => send(s, o),
                (e) => send(500, { error: String(e && e.message || e) }));
            return;
        case 'POST /__mock/sts':
            send(200, controlSts(spec));
            return;
        case 'POST /__mock/callback':
            controlCallback(spec).then(([s, o]) => send(s, o),
                (e) => send(500, { error: String(e && e.message || e) }));
            return;
        default:
            send(404, { error: 'unknown control endpoint ' + route });
        }
    } catch (e) {
        send(400, { error: String(e && e.message || e) });
    }
}

/* ---------------------------------------------------------------- server */

function onRequest(req, res) {
    const url = req.url || '/';
    const qi = url.indexOf('?');
    const path = qi >= 0 ? url.slice(0, qi) : url;
    const qs = qi >= 0 ? url.slice(qi + 1) : '';
    const chunks = [];
    let len = 0;
    let tooBig = false;
    req.on('data', (c) => {
        if (tooBig) return;
        len += c.length;
        if (len > MAX_BODY) { tooBig = true; chunks.length = 0; return; }
        chunks.push(c);
    });
    req.on('error', () => {});
    req.on('end', () => {
        const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, len);
        const sock = req.socket;
        if (path.startsWith('/__mock/')) {
            if (!sock[CARRIED_API] && sock[COUNTED] === state.epoch) {
                state.connections--;
                sock[COUNTED] = null;
            }
            handleControl(req, res, path, body);
            return;
        }
        if (!sock[CARRIED_API]) {
            sock[CARRIED_API] = true;
            if (!sock[COUNTED]) {
                state.connections++;
                sock[COUNTED] = state.epoch;
            }
        }
        if (path.startsWith('/latest/')) {
            handleMetadata(req, res, path);
            return;
        }
        if (tooBig) {
            writeJson(res, 413, { RequestId: requestId(), Code: 'RequestTooLarge',
                                  Message: MESSAGES.RequestTooLarge });
            return;
        }
        handleApi(req, res, body, qs, !(path === '/' || path === ''));
    });
}

let server;
if (opt.plain) {
    server = http.createServer({ maxHeaderSize: 65536 }, onRequest);
} else {
    let cert, key;
    try {
        cert = fs.readFileSync(opt.cert);
        key = fs.readFileSync(opt.key);
    } catch (e) {
        usage('cannot read certificate/key: ' + e.message);
    }
    server = https.createServer({ cert, key, maxHeaderSize: 65536 }, onRequest);
    server.on('secureConnection', (s) => {
        /* requests see the TLS socket, 'connection' saw the TCP socket */
        const raw = s._parent;
        s[COUNTED] = raw && raw[COUNTED] !== undefined ? raw[COUNTED]
            : state.epoch;
        state.tlsHandshakes++;
        if (s.isSessionReused()) state.tlsResumed++;
    });
    server.on('tlsClientError', () => {});
}

server.keepAliveTimeout = opt.keepalive;
server.headersTimeout = Math.max(60000, opt.keepalive + 1000);
server.requestTimeout = 0;
/* "connections" counts accepted TCP connections except those used only
 * for /__mock/ control requests (so that a test's own stats/reset calls do
 * not disturb keep-alive checks); "connections_total" counts all of them. */
server.on('connection', (s) => {
    state.connectionsTotal++;
    state.connections++;
    s[COUNTED] = state.epoch;
    s.on('error', () => {});
});
server.on('clientError', (err, sock) => {
    if (sock.writable && !sock.destroyed)
        sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else sock.destroy();
});

server.on('error', (e) => {
    process.stderr.write('mock-aliyun: ' + e.message + '\n');
    process.exit(1);
});

server.listen(opt.port, opt.host, () => {
    const port = server.address().port;
    process.stdout.write('mock-aliyun listening on ' + port + '\n');
    logLine((opt.plain ? 'http' : 'https') + ' on ' + opt.host + ':' + port +
            ', keys: ' + keys.size +
            (opt.replay ? ', replay mode (' + replayCount +
                          ' vectors; timestamp/nonce checks off)' : ''));
});

function shutdown() {
    server.close();
    if (logStream) logStream.end(() => process.exit(0));
    else process.exit(0);
    setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
