# Errors: every bad input gets a clear 4xx in the API's envelope before
# anything billable is sent; every upstream failure gets a clear status and
# a JSON body; nothing the backend did not ask for reaches upstream.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(extra_server => <<'END'));
        location = /idv/small {
            client_max_body_size 1k;
            idv_action Initialize;
            idv_product_code ID_OCR;
        }

        location = /idv/down/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_pass /_idv_down;
        }

        location = /_idv_down {
            internal;
            proxy_pass https://127.0.0.1:%%PORT2%%/;
            proxy_connect_timeout 1s;
        }

        location = /idv/wrongkey/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_access_key_id nosuchkey;
            idv_access_key_secret testsecret;
        }

        location = /idv/wrongsecret/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_access_key_id testid;
            idv_access_key_secret not-the-secret;
        }
END
$t->start_nginx;

my $OCR = '/idv/ocr/initialize';
my %ok = (MerchantBizId => 'err0001', MerchantUserId => 'u-1',
          DocType => '01000000', MetaInfo => '{}');


sub gateway_error {
    my ($r, $status, $code, $name, $msg) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    is($r->{status}, $status, "$name: HTTP $status") or diag $r->{body};
    is($r->{json}{Code}, $code, "$name: Code $code");
    like($r->{json}{Message}, $msg, "$name: the message explains")
        if $msg;
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON body");
    ok(exists $r->{json}{Gateway}, "$name: Gateway object");
    like($r->{json}{RequestId} // '', qr/^[\w-]{16,}/, "$name: a RequestId");
}


# local checks: nothing reaches upstream

$t->mock_reset;

gateway_error($t->post($OCR, '{"MerchantBizId": "x",', 'Content-Type' =>
                       'application/json'),
              400, 'InvalidParameter', 'malformed JSON', qr/not valid JSON/);

gateway_error($t->post($OCR, '["MerchantBizId"]', 'Content-Type' =>
                       'application/json'),
              400, 'InvalidParameter', 'JSON that is not an object',
              qr/must be a JSON object/);

gateway_error($t->post($OCR, { %ok, DocType => 1560000 }),
              400, 'InvalidParameter', 'a number for a string parameter',
              qr/Parameter DocType must be a string/);

gateway_error($t->post($OCR, { %ok, Ocr => JSON::PP::true }),
              400, 'InvalidParameter', 'a boolean for a string parameter',
              qr/Parameter Ocr must be a string/);

gateway_error($t->post($OCR, { %ok, SceneCode => undef }),
              400, 'InvalidParameter', 'null', qr/Parameter SceneCode/);

gateway_error($t->post($OCR, { %ok, Nonsense => 'x' }),
              400, 'InvalidParameter', 'unknown parameter',
              qr/Parameter Nonsense is not accepted/);

gateway_error($t->post($OCR, '{"MerchantBizId":"a","MerchantBizId":"b",'
                             . '"DocType":"01000000","MetaInfo":"{}"}',
                       'Content-Type' => 'application/json'),
              400, 'InvalidParameter', 'a parameter given twice',
              qr/MerchantBizId is given more than once/);

gateway_error($t->post($OCR, { %ok, ProductCode => 'eKYC' }),
              400, 'InvalidParameter', 'a ProductCode other than the '
              . "location's", qr/ProductCode is set by the gateway/);

my %missing = %ok;
delete $missing{MerchantBizId};
gateway_error($t->post($OCR, \%missing),
              400, 'MissingParameter', 'missing MerchantBizId',
              qr/Missing parameter MerchantBizId/);

my %no_user = %ok;
delete $no_user{MerchantUserId};
gateway_error($t->post('/idv/ekyc/initialize', \%no_user),
              400, 'MissingParameter', 'eKYC requires MerchantUserId',
              qr/Missing parameter MerchantUserId/);

gateway_error($t->post($OCR, \%no_user),
              400, 'MissingParameter', 'ID_OCR requires MerchantUserId '
              . '(seed 002: Required Yes)',
              qr/Missing parameter MerchantUserId/);

gateway_error($t->post('/idv/result', {}),
              400, 'MissingParameter', 'an empty body is an empty object',
              qr/Missing parameter/);

gateway_error($t->post($OCR, 'MerchantBizId=%zz&DocType=1',
                       'Content-Type' => 'application/x-www-form-urlencoded'),
              400, 'InvalidParameter', 'bad percent-encoding in a form',
              qr/not valid urlencoded/);

gateway_error($t->post($OCR, 'MerchantBizId', 'Content-Type' =>
                       'application/x-www-form-urlencoded'),
              400, 'InvalidParameter', 'a form field without a value',
              qr/has no value/);

gateway_error($t->post($OCR, '<xml/>', 'Content-Type' => 'text/xml'),
              415, 'Gateway.UnsupportedMediaType', 'an XML body');

gateway_error($t->post($OCR, { %ok, MerchantBizId => "a\n[alert] forged" }),
              400, 'InvalidParameter', 'a MerchantBizId that would forge a log '
              . 'line', qr/MerchantBizId must be 1 to 64 visible ASCII/);

gateway_error($t->post($OCR, { %ok, MerchantBizId => 'x' x 65 }),
              400, 'InvalidParameter', 'a MerchantBizId over 64 bytes');

gateway_error($t->post($OCR, { %ok, ReturnUrl => 'javascript:alert(1)' }),
              400, 'InvalidParameter', 'a URL that is not http(s)',
              qr/ReturnUrl must be an http\(s\) URL/);

my $r = $t->get($OCR);
gateway_error($r, 405, 'Gateway.MethodNotAllowed', 'GET');
is($r->{headers}{allow}, 'POST', 'GET: Allow: POST');

gateway_error($t->request('PUT', $OCR, '{}'), 405,
              'Gateway.MethodNotAllowed', 'PUT');

gateway_error($t->post('/idv/small', { %ok, MetaInfo => 'x' x 2048 }),
              413, 'Gateway.BodyTooLarge', 'body over client_max_body_size',
              qr/client_max_body_size/);

# the same with a chunked body: refused while reading
my $raw = $t->raw("POST /idv/small HTTP/1.1\r\nHost: x\r\n"
                  . "Content-Type: application/json\r\n"
                  . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  . "800\r\n" . ('x' x 2048) . "\r\n0\r\n\r\n");
like($raw, qr{^HTTP/1\.1 413}, 'chunked body over the limit: 413');
like($raw, qr/"Code":"Gateway.BodyTooLarge"/, 'chunked body: JSON');

is($t->mock_stats->{calls}, 0, 'no rejected request reached upstream');


# upstream failures

sub with_fault {
    my ($fault, $status, $code, $name, %o) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    $t->mock_reset;
    $t->mock_fault(%$fault) if $fault;
    my $r = $t->post($o{path} // $OCR, \%ok);
    gateway_error($r, $status, $code, $name, $o{msg});
    is($t->mock_stats->{calls}, $o{calls} // 1,
       "$name: " . ($o{calls} // 1) . " upstream call(s)");
    return $r;
}

$r = with_fault({ mode => 'code', code => 'OcrFail' }, 400, 'OcrFail',
                'HTTP 200 with a Code other than Success');
is($r->{json}{Gateway}{upstreamStatus}, 200,
   'HTTP 200 with an error Code: upstream status shown');

with_fault({ mode => 'code', code => 'Forbidden.ExceptionRepeatedInvoke' },
           403, 'Forbidden.ExceptionRepeatedInvoke',
           'HTTP 200 with a Forbidden Code');

$r = with_fault({ mode => 'status', status => 400,
                  code => 'InvalidParameter' },
                400, 'InvalidParameter', 'upstream 400 keeps its code');
ok(length $r->{json}{Message}, 'upstream 400 keeps its message');
like($r->{json}{Recommend} // '', qr/troubleshoot/,
     'upstream 400: the envelope is passed on unchanged');

with_fault({ mode => 'status', status => 503, code => 'ServiceUnavailable' },
           503, 'ServiceUnavailable', 'upstream 503 keeps its status');

$r = with_fault({ mode => 'throttle' }, 429, 'Throttling.Api',
                'upstream throttling of a billable call: 429, not retried');
is($r->{headers}{'retry-after'}, '1', 'upstream throttling: Retry-After');

with_fault({ mode => 'timeout', delay_ms => 6000 }, 504,
           'Gateway.UpstreamTimeout', 'upstream timeout',
           msg => qr/did not answer in time/);

with_fault({ mode => 'garbage' }, 502, 'Gateway.UpstreamError',
           'upstream garbage', msg => qr/not its JSON envelope/);

with_fault({ mode => 'truncated' }, 502, 'Gateway.UpstreamError',
           'truncated upstream JSON');

with_fault({ mode => 'reset' }, 502, 'Gateway.UpstreamError',
           'connection reset before an answer');

with_fault({ mode => 'reset_mid' }, 502, 'Gateway.UpstreamError',
           'connection reset in the middle of the answer');

with_fault(undef, 502, 'Gateway.UpstreamError', 'upstream refuses '
           . 'connections', path => '/idv/down/initialize', calls => 0);

with_fault(undef, 404, 'InvalidAccessKeyId.NotFound', 'an unknown key: the '
           . "service's answer", path => '/idv/wrongkey/initialize');

$r = with_fault(undef, 400, 'SignatureDoesNotMatch', 'a wrong secret: the '
                . "service's answer", path => '/idv/wrongsecret/initialize');

$t->ignore_log(qr/upstream timed out|upstream prematurely closed|
                 Connection refused|connect\(\) failed|
                 upstream sent invalid/x);

$t->stop;

my $log = $t->error_log;
like($log, qr/idv: Initialize failed: HTTP 200, code "OcrFail", RequestId "[\w-]+", TransactionId "[^"]*", MerchantBizId "err0001"/,
     'error.log: one line per failed call with code and RequestId');
unlike($log, qr/testsecret|not-the-secret/, 'error.log: no secret');

done_testing;
