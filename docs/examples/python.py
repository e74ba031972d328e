#!/usr/bin/env python3
"""eKYC through ngx_http_idv_module: Initialize, a retry, CheckResult.

Python 3, standard library only.  Run:  python3 python.py

The gateway (nginx with the module) holds the AccessKey and signs every
call; this program sends the API's own parameters as plain JSON and gets
the API's JSON answer back, plus a "Gateway" object the gateway adds.
No Alibaba SDK, no signature, no secret here.  See docs/backend-api.md.

Environment:
  IDV_GATEWAY          the gateway (default http://127.0.0.1:8080)
  IDV_MERCHANT_BIZ_ID  your id of this verification (default: a new one)
"""

import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request

GATEWAY = os.environ.get("IDV_GATEWAY", "http://127.0.0.1:8080").rstrip("/")


class IdvError(Exception):
    """A non-2xx answer: the gateway's or the API's Code and Message."""

    def __init__(self, status, code, message):
        super().__init__(f"HTTP {status} {code}: {message}")


def call(path, params, tries=3):
    """POST params as JSON to the gateway; return the answer as a dict.

    Every answer, error or not, is the API's JSON envelope: RequestId,
    Code, Message, Result, and Gateway.  HTTP 200 always means Code
    "Success"; anything else raises IdvError.  429 (throttled by the API
    or by the gateway's limits) and 409 with Retry-After
    (Gateway.IdempotencyInProgress: the same Initialize is still
    running): nothing was done; wait Retry-After seconds and send it
    again.
    """
    body = json.dumps(params).encode("utf-8")
    for attempt in range(1, tries + 1):
        req = urllib.request.Request(
            GATEWAY + path, data=body, method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                answer = json.load(e)
            except ValueError:
                answer = {}
            retry_after = e.headers.get("Retry-After")
            if (e.code == 429 or retry_after) and attempt < tries:
                wait = int(retry_after or 1)
                print(f"{e.code} {answer.get('Code')}: retrying in {wait} s",
                      file=sys.stderr)
                time.sleep(wait)
                continue
            raise IdvError(e.code, answer.get("Code"), answer.get("Message"))


def main():
    # Letters and digits, at most 32: unique per verification, yours.
    biz_id = (os.environ.get("IDV_MERCHANT_BIZ_ID")
              or "py" + secrets.token_hex(12))

    # Keys are the API's parameter names, values are strings.  The
    # location /idv/ekyc/initialize adds ProductCode=eKYC; the gateway
    # adds the signature, AccessKeyId, timestamp and nonce.
    init = {
        "MerchantBizId": biz_id,
        "MerchantUserId": "user-0001",
        "DocType": "01000000",                      # passport
        # the string the client SDK's getMetaInfo() returned, unchanged
        "MetaInfo": '{"deviceType":"h5"}',
    }

    try:
        first = call("/idv/ekyc/initialize", init)
        tx = first["Result"]["TransactionId"]
        print("TransactionId:", tx)
        print("TransactionUrl:", first["Result"]["TransactionUrl"])

        # Lost the answer (timeout, restart)?  Send the same Initialize
        # with the same MerchantBizId.  With idv_cache the gateway answers
        # from its cache: same TransactionId, no second (billable) call.
        # Without it this is a second call and a new transaction.
        again = call("/idv/ekyc/initialize", init)
        cached = again["Gateway"]["cached"]
        print(f"Retry: TransactionId {again['Result']['TransactionId']},",
              "Gateway.cached true (from the cache)" if cached
              else "Gateway.cached false (a second call)")

        # CheckResult is a read: free, and retried by the gateway itself.
        # Use the TransactionId you stored, never one from the client.
        result = call("/idv/result", {"MerchantBizId": biz_id,
                                      "TransactionId": tx})
    except IdvError as e:
        print("error:", e, file=sys.stderr)
        return 1
    except (urllib.error.URLError, TimeoutError) as e:
        # no answer: connection refused, timeout
        why = getattr(e, "reason", e)
        print(f"error: cannot reach {GATEWAY}: {why}", file=sys.stderr)
        return 1

    # 200 means the call worked, not that the person passed.
    r = result["Result"]
    print(f"Passed: {r.get('Passed', '(pending)')},",
          f"SubCode: {r.get('SubCode', '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
