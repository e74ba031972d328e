#!/usr/bin/env node
'use strict';
/*
 * sdk-client.js -- what one API call costs an application that embeds the
 * official Alibaba Cloud SDK instead of calling the gateway.
 *
 *   node sdk-client.js --endpoint localhost:PORT [--n 500] [--warmup 20]
 *   node sdk-client.js --gateway http://127.0.0.1:PORT/PATH [--n ...]
 *
 * Makes Initialize calls one after another through @alicloud/openapi-core's
 * callApi(), the way the generated cloudauth-intl 2022-08-09 client does
 * (RPC style, POST /, query parameters, an empty form body, JSON answer,
 * AK auth, the SDK's default V3 signature), over HTTPS to ENDPOINT: the test
 * CA comes from NODE_EXTRA_CA_CERTS.  The first --warmup calls open the
 * connection and warm the JIT; then it prints, as one JSON line, the
 * process CPU time (user + system, process.cpuUsage()) the next --n calls
 * took.  Exits 1 if a call fails.
 *
 * With --gateway, the same Initialize as a backend sends it to the
 * gateway instead: a plain JSON POST over a keep-alive HTTP connection
 * (node's http module, tenant "acme"), for what a Node backend still pays
 * per call once the gateway signs for it.
 */

const http = require('http');

const OpenApi = require('@alicloud/openapi-core');
const $dara = require('@darabonba/typescript');

const Client = OpenApi.default;
const OpenApiUtil = OpenApi.OpenApiUtil;
const $OpenApiUtil = OpenApi.$OpenApiUtil;


function args() {
  const a = { endpoint: null, gateway: null, n: 500, warmup: 20 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in a) || argv[i + 1] === undefined) {
      throw new Error(`usage: sdk-client.js --endpoint HOST:PORT [--n N] [--warmup N] (at ${argv[i]})`);
    }
    a[k] = (k === 'endpoint' || k === 'gateway') ? argv[i + 1]
                                                 : Number(argv[i + 1]);
  }
  if (!a.endpoint === !a.gateway) {
    throw new Error('one of --endpoint and --gateway is required');
  }
  return a;
}


/* the same parameters the gateway's Initialize benchmark sends */
const QUERY = {
  DocType: '01000000',
  MerchantBizId: 'benchinit0001',
  MerchantUserId: 'user-0001',
  MetaInfo: '{"apdidToken":"","appName":"com.example.app","bioMetaInfo":"4.1.0:1150000,0","deviceType":"ios"}',
  ProductCode: 'eKYC',
};


async function call(client) {
  const req = new $OpenApiUtil.OpenApiRequest({
    query: OpenApiUtil.query(QUERY),
    body: OpenApiUtil.parseToMap({}),
  });
  const params = new $OpenApiUtil.Params({
    action: 'Initialize', version: '2022-08-09', protocol: 'HTTPS',
    pathname: '/', method: 'POST', authType: 'AK', style: 'RPC',
    reqBodyType: 'formData', bodyType: 'json',
  });
  const res = await client.callApi(params, req, new $dara.RuntimeOptions({}));
  if (!res || !res.body || res.body.Code !== 'Success') {
    throw new Error('Initialize did not succeed: ' + JSON.stringify(res && res.body));
  }
}


/* the backend's side of a gateway call: one POST, the JSON answer parsed */
function post(url, agent, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST', agent,
      headers: { 'Content-Type': 'application/json',
                 'Content-Length': Buffer.byteLength(body),
                 'X-Idv-Tenant': 'acme' },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (res.statusCode !== 200 || json.Code !== 'Success') {
          reject(new Error('HTTP ' + res.statusCode + ': ' + JSON.stringify(json)));
        } else {
          resolve(json);
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}


async function main() {
  const a = args();
  let one;

  if (a.gateway) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const q = Object.assign({}, QUERY);
    delete q.ProductCode;               /* the gateway's location sets it */
    const body = JSON.stringify(q);
    one = () => post(a.gateway, agent, body);

  } else {
    const client = new Client(new $OpenApiUtil.Config({
      accessKeyId: 'testid',
      accessKeySecret: 'testsecret',
      endpoint: a.endpoint,
    }));
    one = () => call(client);
  }

  for (let i = 0; i < a.warmup; i++) await one();

  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();

  for (let i = 0; i < a.n; i++) await one();

  const c = process.cpuUsage(c0);
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = c.user + c.system;

  console.log(JSON.stringify({
    calls: a.n,
    cpu_us: cpu,
    cpu_us_per_call: cpu / a.n,
    wall_ms: Math.round(wall),
    openapi_core: require('@alicloud/openapi-core/package.json').version,
    node: process.versions.node,
  }));
}


main().catch((e) => {
  console.error('sdk-client.js: ' + (e && e.stack || e));
  process.exit(1);
});
