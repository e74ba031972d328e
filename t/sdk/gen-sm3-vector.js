#!/usr/bin/env node
'use strict';
/*
 * gen-sm3-vector.js -- records what the official SDK core sends for one
 * ACS3-HMAC-SM3 call (client.js with "signature": "sm3", i.e.
 * Config.signatureAlgorithm), for the unit test of the verifier
 * (t/unit/test_verify.c reads t/data/sm3-vectors.json):
 *
 *   cd t/sdk && npm ci && node gen-sm3-vector.js > ../data/sm3-vectors.json
 *
 * The call goes to a local HTTP listener that records the request and
 * answers an empty success; the SDK picks its own nonce and date, so each
 * run writes another valid vector.
 */

const http = require('http');

const { client, call } = require('./client.js');

const KEY_ID = 'testid';
const SECRET = 'testsecret';


function record() {
    return new Promise((resolve) => {
        const server = http.createServer((req, res) => {
            const chunks = [];
            req.on('data', (c) => chunks.push(c));
            req.on('end', () => {
                res.writeHead(200, { 'content-type': 'application/json' });
                res.end('{"RequestId":"x","Code":"Success"}');
                server.close();
                resolve({ req, body: Buffer.concat(chunks) });
            });
        });
        server.listen(0, '127.0.0.1', () => {
            const c = client({ endpoint: '127.0.0.1:' + server.address().port,
                               protocol: 'HTTP', signature: 'sm3',
                               accessKeyId: KEY_ID,
                               accessKeySecret: SECRET });
            call(c, { action: 'EkycVerify',
                      query: { ProductCode: 'eKYC_MIN',
                               MerchantBizId: 'sm3biz0001',
                               UserName: '张三' },
                      body: { FacePictureBase64: 'AAEC/+8=' } });
        });
    });
}


record().then(({ req, body }) => {
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2)
        headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
    const vector = {
        id: 'sm3-ekycverify-form-body',
        description: 'EkycVerify signed by @alicloud/openapi-core with '
            + 'signatureAlgorithm ACS3-HMAC-SM3: the SM3 of the body in '
            + 'x-acs-content-sha256, HMAC-SM3 over ACS3-HMAC-SM3 and the '
            + 'SM3 of the canonical request',
        access_key_id: KEY_ID,
        access_key_secret: SECRET,
        wire: {
            request_target: req.url,
            body: body.toString('utf8'),
            headers_in_order: headers,
        },
    };
    process.stdout.write(JSON.stringify({
        generated_by: 't/sdk/gen-sm3-vector.js',
        vectors: [vector],
    }, null, 1) + '\n');
});
