// eKYC through ngx_http_idv_module: Initialize, a retry, CheckResult.
//
// Node.js 18 or later, built-in fetch, no npm packages.  Run:  node node.mjs
//
// The gateway (nginx with the module) holds the AccessKey and signs every
// call; this program sends the API's own parameters as plain JSON and gets
// the API's JSON answer back, plus a "Gateway" object the gateway adds.
// No Alibaba SDK, no signature, no secret here.  See docs/backend-api.md.
//
// Environment:
//   IDV_GATEWAY          the gateway (default http://127.0.0.1:8080)
//   IDV_MERCHANT_BIZ_ID  your id of this verification (default: a new one)

import { randomBytes } from 'node:crypto';

const GATEWAY = (process.env.IDV_GATEWAY || 'http://127.0.0.1:8080')
    .replace(/\/$/, '');

class IdvError extends Error {}

// POST params as JSON to the gateway; resolve to the answer.  Every answer,
// error or not, is the API's JSON envelope: RequestId, Code, Message,
// Result, and Gateway.  HTTP 200 always means Code "Success"; anything else
// throws IdvError.  429 (throttled by the API or by the gateway's limits)
// and 409 with Retry-After (Gateway.IdempotencyInProgress: the same
// Initialize is still running): nothing was done; wait Retry-After seconds
// and send it again.
async function call(path, params, tries = 3) {
    for (let attempt = 1; ; attempt++) {
        const res = await fetch(GATEWAY + path, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(params),
            signal: AbortSignal.timeout(30000),
        });
        const answer = await res.json().catch(() => ({}));
        if (res.ok) return answer;

        const retryAfter = res.headers.get('Retry-After');
        if ((res.status === 429 || retryAfter) && attempt < tries) {
            const wait = Number(retryAfter) || 1;
            console.error(
                `${res.status} ${answer.Code}: retrying in ${wait} s`);
            await new Promise((resolve) => setTimeout(resolve, wait * 1000));
            continue;
        }
        throw new IdvError(
            `HTTP ${res.status} ${answer.Code}: ${answer.Message}`);
    }
}

// Letters and digits, at most 32: unique per verification, yours.
const bizId = process.env.IDV_MERCHANT_BIZ_ID
    || 'js' + randomBytes(12).toString('hex');

// Keys are the API's parameter names, values are strings.  The location
// /idv/ekyc/initialize adds ProductCode=eKYC; the gateway adds the
// signature, AccessKeyId, timestamp and nonce.
const init = {
    MerchantBizId: bizId,
    MerchantUserId: 'user-0001',
    DocType: '01000000',                            // passport
    // the string the client SDK's getMetaInfo() returned, unchanged
    MetaInfo: '{"deviceType":"h5"}',
};

try {
    const first = await call('/idv/ekyc/initialize', init);
    const tx = first.Result.TransactionId;
    console.log(`TransactionId: ${tx}`);
    console.log(`TransactionUrl: ${first.Result.TransactionUrl}`);

    // Lost the answer (timeout, restart)?  Send the same Initialize with the
    // same MerchantBizId.  With idv_cache the gateway answers from its cache:
    // same TransactionId, no second (billable) call.  Without it this is a
    // second call and a new transaction.
    const again = await call('/idv/ekyc/initialize', init);
    console.log(`Retry: TransactionId ${again.Result.TransactionId}, `
        + (again.Gateway.cached ? 'Gateway.cached true (from the cache)'
                                : 'Gateway.cached false (a second call)'));

    // CheckResult is a read: free, and retried by the gateway itself.  Use
    // the TransactionId you stored, never one from the client.
    const result = await call('/idv/result',
                              { MerchantBizId: bizId, TransactionId: tx });

    // 200 means the call worked, not that the person passed.
    const r = result.Result;
    console.log(`Passed: ${r.Passed ?? '(pending)'}, `
        + `SubCode: ${r.SubCode ?? '-'}`);
} catch (e) {
    if (e instanceof IdvError) {
        console.error(`error: ${e.message}`);
    } else {                        // no answer: connection refused, timeout
        const why = e.cause?.code ?? e.cause?.message ?? e.message;
        console.error(`error: cannot reach ${GATEWAY}: ${why}`);
    }
    process.exitCode = 1;
}
