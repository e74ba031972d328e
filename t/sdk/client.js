#!/usr/bin/env node
'use strict';
/*
 * client.js -- calls cloudauth-intl (2022-08-09) actions through the
 * official SDK core (npm @alicloud/openapi-core, pinned in package.json)
 * exactly the way the generated @alicloud/cloudauth-intl20220809 client
 * does: Client.callApi() with RPC Params and the generated client's split
 * of parameters between the query (OpenApiUtil.query) and a form body
 * (OpenApiUtil.parseToMap, only for the actions that have one).
 *
 * Usage: node client.js JOB.json   (prints a JSON array of results)
 * or require('./client.js'): { client(job), call(client, spec) }
 *
 * JOB = {
 *   "endpoint": "127.0.0.1:8080",      host[:port], as Config.endpoint
 *   "protocol": "HTTP" | "HTTPS",
 *   "accessKeyId": "...", "accessKeySecret": "...",
 *   "signature": "v3" | "sm3" | "v1",  v1: Config.signatureAlgorithm "v2",
 *                                      sm3: "ACS3-HMAC-SM3"
 *   "calls": [ { "action": "Initialize", "query": {...},
 *                "body": {...} | null } ]
 * }
 *
 * Each result: { "ok": true, "statusCode": 200, "body": {...} } or
 * { "ok": false, "name": "ClientError", "code": "...", "statusCode": 400,
 *   "message": "...", "data": {...} }.
 */

const fs = require('fs');

const OpenApi = require('@alicloud/openapi-core');
const $dara = require('@darabonba/typescript');

const Client = OpenApi.default;
const OpenApiUtil = OpenApi.OpenApiUtil;
const $OpenApiUtil = OpenApi.$OpenApiUtil;

const API_VERSION = '2022-08-09';


function client(job) {
    const config = new $OpenApiUtil.Config({
        accessKeyId: job.accessKeyId,
        accessKeySecret: job.accessKeySecret,
        endpoint: job.endpoint,
        protocol: job.protocol || 'HTTP',
        readTimeout: 10000,
        connectTimeout: 5000,
    });

    /* the SDK switch for HMAC-SHA1 / SignatureVersion 1.0 */
    if (job.signature === 'v1') config.signatureAlgorithm = 'v2';
    /* V3 with SM3 instead of SHA-256 */
    if (job.signature === 'sm3') config.signatureAlgorithm = 'ACS3-HMAC-SM3';

    return new Client(config);
}


async function call(c, spec) {
    const init = { query: OpenApiUtil.query(spec.query || {}) };

    /* Initialize and EkycVerify always carry a (maybe empty) form body */
    if (spec.body !== undefined && spec.body !== null)
        init.body = OpenApiUtil.parseToMap(spec.body);

    const params = new $OpenApiUtil.Params({
        action: spec.action, version: API_VERSION, protocol: 'HTTPS',
        pathname: '/', method: 'POST', authType: 'AK', style: 'RPC',
        reqBodyType: 'formData', bodyType: 'json',
    });

    try {
        const res = await c.callApi(params,
                                    new $OpenApiUtil.OpenApiRequest(init),
                                    new $dara.RuntimeOptions({}));
        return { ok: true, statusCode: res.statusCode, body: res.body };
    } catch (e) {
        return {
            ok: false, name: e && e.name, code: e && e.code,
            statusCode: e && e.statusCode, message: e && e.message,
            data: e && e.data,
        };
    }
}


module.exports = { client, call };

if (require.main !== module) return;


(async () => {
    const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
    const c = client(job);
    const out = [];

    for (const spec of job.calls) out.push(await call(c, spec));

    process.stdout.write(JSON.stringify(out) + '\n');
    setTimeout(() => process.exit(0), 10);
})().catch((e) => {
    process.stderr.write(((e && e.stack) || String(e)) + '\n');
    process.exit(2);
});
