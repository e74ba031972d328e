#!/bin/sh
# eKYC through ngx_http_idv_module: Initialize, a retry, CheckResult.
#
# POSIX sh, curl and sed.  Run:  sh curl.sh
#
# The gateway (nginx with the module) holds the AccessKey and signs every
# call; this script sends the API's own parameters as plain JSON and gets
# the API's JSON answer back, plus a "Gateway" object the gateway adds.
# No Alibaba SDK, no signature, no secret here.  See docs/backend-api.md.
#
# Environment:
#   IDV_GATEWAY          the gateway (default http://127.0.0.1:8080)
#   IDV_MERCHANT_BIZ_ID  your id of this verification (default: a new one)

set -eu

GATEWAY=${IDV_GATEWAY:-http://127.0.0.1:8080}
GATEWAY=${GATEWAY%/}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# field NAME: the value of "NAME" in the last answer, a string (still
# JSON-escaped), a number or a boolean.  Enough for these flat values; a
# real JSON parser (jq -r .Result.TransactionId) is the robust way.
field() {
    sed -n -E 's/.*"'"$1"'":("(([^"\\]|\\.)*)"|([a-z0-9.]+)).*/\2\4/p' \
        "$tmp/body"
}

# call PATH JSON: POST JSON to the gateway (curl --data-binary POSTs; the
# Content-Type must say JSON, curl's default is a form); the answer is in
# $tmp/body.  Every answer, error or not, is the API's JSON envelope:
# RequestId, Code, Message, Result, and Gateway.  HTTP 200 always means
# Code "Success"; anything else ends the script with Code and Message.
# 429 (throttled by the API or by the gateway's limits) and 409 with
# Retry-After (Gateway.IdempotencyInProgress: the same Initialize is still
# running): nothing was done; wait Retry-After seconds and send it again.
call() {
    attempt=1
    while :; do
        status=$(curl -sS --max-time 30 -o "$tmp/body" -D "$tmp/headers" \
                      -w '%{http_code}' "$GATEWAY$1" \
                      -H 'Content-Type: application/json' \
                      --data-binary "$2") \
            || { echo "error: cannot reach $GATEWAY" >&2; exit 1; }
        case $status in 2??) return 0 ;; esac

        secs=$(sed -n -E 's/^[Rr]etry-[Aa]fter: *([0-9]+).*/\1/p' \
                   "$tmp/headers")
        if [ "$attempt" -lt 3 ] && { [ "$status" = 429 ] || [ -n "$secs" ]; }
        then
            echo "$status $(field Code): retrying in ${secs:=1} s" >&2
            sleep "$secs"
            attempt=$((attempt + 1))
            continue
        fi
        echo "error: HTTP $status $(field Code): $(field Message)" >&2
        exit 1
    done
}

# Letters and digits, at most 32: unique per verification, yours.
biz=${IDV_MERCHANT_BIZ_ID:-sh$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}

# Keys are the API's parameter names, values are strings.  MetaInfo is the
# string the client SDK's getMetaInfo() returned, unchanged (JSON inside a
# JSON string, hence the \").  The location /idv/ekyc/initialize adds
# ProductCode=eKYC; the gateway adds the signature, AccessKeyId, timestamp
# and nonce.  DocType 01000000 is a passport.
init='{"MerchantBizId":"'$biz'","MerchantUserId":"user-0001",
       "DocType":"01000000","MetaInfo":"{\"deviceType\":\"h5\"}"}'

call /idv/ekyc/initialize "$init"
tx=$(field TransactionId)
echo "TransactionId: $tx"
echo "TransactionUrl: $(field TransactionUrl)"

# Lost the answer (timeout, restart)?  Send the same Initialize with the
# same MerchantBizId.  With idv_cache the gateway answers from its cache:
# same TransactionId, no second (billable) call.  Without it this is a
# second call and a new transaction.
call /idv/ekyc/initialize "$init"
if [ "$(field cached)" = true ]; then
    how='true (from the cache)'
else
    how='false (a second call)'
fi
echo "Retry: TransactionId $(field TransactionId), Gateway.cached $how"

# CheckResult is a read: free, and retried by the gateway itself.  Use the
# TransactionId you stored, never one from the client.
call /idv/result \
     "$(printf '{"MerchantBizId":"%s","TransactionId":"%s"}' "$biz" "$tx")"

# 200 means the call worked, not that the person passed.
passed=$(field Passed)
echo "Passed: ${passed:-(pending)}, SubCode: $(field SubCode)"
