<?php
// eKYC through ngx_http_idv_module: Initialize, a retry, CheckResult.
//
// PHP 8 CLI, no extension beyond the default ones (file_get_contents with
// a stream context; no curl extension needed).  Run:  php php.php
//
// The gateway (nginx with the module) holds the AccessKey and signs every
// call; this program sends the API's own parameters as plain JSON and gets
// the API's JSON answer back, plus a "Gateway" object the gateway adds.
// No Alibaba SDK, no signature, no secret here.  See docs/backend-api.md.
//
// Environment:
//   IDV_GATEWAY          the gateway (default http://127.0.0.1:8080)
//   IDV_MERCHANT_BIZ_ID  your id of this verification (default: a new one)

declare(strict_types=1);

define('GATEWAY', rtrim(getenv('IDV_GATEWAY') ?: 'http://127.0.0.1:8080', '/'));

final class IdvError extends RuntimeException {}

// POST $params as JSON to the gateway; return the answer as an array.
// Every answer, error or not, is the API's JSON envelope: RequestId, Code,
// Message, Result, and Gateway.  HTTP 200 always means Code "Success";
// anything else throws IdvError.  429 (throttled by the API or by the
// gateway's limits) and 409 with Retry-After (Gateway.IdempotencyInProgress:
// the same Initialize is still running): nothing was done; wait Retry-After
// seconds and send it again.
function call(string $path, array $params, int $tries = 3): array
{
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => "Content-Type: application/json\r\n",
        'content' => json_encode($params, JSON_THROW_ON_ERROR),
        'timeout' => 30,
        'ignore_errors' => true,        // read the body of 4xx/5xx too
        'follow_location' => 0,
    ]]);

    for ($attempt = 1; ; $attempt++) {
        $body = @file_get_contents(GATEWAY . $path, false, $context);
        if ($body === false) {
            throw new IdvError('cannot reach ' . GATEWAY . ': '
                               . (error_get_last()['message'] ?? ''));
        }
        // $http_response_header: set by file_get_contents, status line first
        preg_match('{^HTTP/\S+ (\d{3})}', $http_response_header[0], $m);
        $status = (int) $m[1];
        $answer = json_decode($body, true) ?: [];

        if ($status >= 200 && $status < 300) {
            return $answer;
        }
        $retryAfter = null;
        foreach ($http_response_header as $h) {
            if (preg_match('/^Retry-After:\s*(\d+)/i', $h, $m)) {
                $retryAfter = (int) $m[1];
            }
        }
        if (($status === 429 || $retryAfter !== null) && $attempt < $tries) {
            $wait = max(1, $retryAfter ?? 1);
            $code = $answer['Code'] ?? '-';
            fwrite(STDERR, "$status $code: retrying in $wait s\n");
            sleep($wait);
            continue;
        }
        throw new IdvError(sprintf('HTTP %d %s: %s', $status,
                                   $answer['Code'] ?? '-',
                                   $answer['Message'] ?? '-'));
    }
}

// Letters and digits, at most 32: unique per verification, yours.
$bizId = getenv('IDV_MERCHANT_BIZ_ID') ?: 'php' . bin2hex(random_bytes(12));

// Keys are the API's parameter names, values are strings.  The location
// /idv/ekyc/initialize adds ProductCode=eKYC; the gateway adds the
// signature, AccessKeyId, timestamp and nonce.
$init = [
    'MerchantBizId' => $bizId,
    'MerchantUserId' => 'user-0001',
    'DocType' => '01000000',                        // passport
    // the string the client SDK's getMetaInfo() returned, unchanged
    'MetaInfo' => '{"deviceType":"h5"}',
];

try {
    $first = call('/idv/ekyc/initialize', $init);
    $tx = $first['Result']['TransactionId'];
    echo "TransactionId: $tx\n";
    echo "TransactionUrl: {$first['Result']['TransactionUrl']}\n";

    // Lost the answer (timeout, restart)?  Send the same Initialize with
    // the same MerchantBizId.  With idv_cache the gateway answers from its
    // cache: same TransactionId, no second (billable) call.  Without it
    // this is a second call and a new transaction.
    $again = call('/idv/ekyc/initialize', $init);
    printf("Retry: TransactionId %s, Gateway.cached %s\n",
           $again['Result']['TransactionId'],
           $again['Gateway']['cached'] ? 'true (from the cache)'
                                       : 'false (a second call)');

    // CheckResult is a read: free, and retried by the gateway itself.  Use
    // the TransactionId you stored, never one from the client.
    $result = call('/idv/result',
                   ['MerchantBizId' => $bizId, 'TransactionId' => $tx]);
} catch (IdvError $e) {
    fwrite(STDERR, 'error: ' . $e->getMessage() . "\n");
    exit(1);
}

// 200 means the call worked, not that the person passed.
printf("Passed: %s, SubCode: %s\n",
       $result['Result']['Passed'] ?? '(pending)',
       $result['Result']['SubCode'] ?? '-');
