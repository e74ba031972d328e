# Retries: only where a repeat cannot bill twice (reads such as
# CheckResult), after throttling, a transient service error or a transport
# failure; each attempt freshly signed; bounded by idv_retries and
# idv_retry_budget.  Billable calls are never repeated.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(extra_server => <<'END'));
        location = /idv/result-once {
            idv_action CheckResult;
            idv_retries 0;
        }

        location = /idv/down/result {
            idv_action CheckResult;
            idv_pass /_idv_down;
        }

        location = /_idv_down {
            internal;
            proxy_pass https://127.0.0.1:%%PORT2%%/;
        }
END
$t->start_nginx;

my %q = (MerchantBizId => 'rt0001', TransactionId => 'tx-retry');

$t->mock_reset;
$t->mock_fault(mode => 'throttle', action => 'CheckResult');
my $r = $t->post('/idv/result', \%q);
is($r->{status}, 200, 'throttled CheckResult: retried to success')
    or diag $r->{body};
is($r->{json}{Gateway}{attempts}, 2, 'throttled CheckResult: 2 attempts');
my $s = $t->mock_stats;
is($s->{calls}, 2, 'throttled CheckResult: 2 upstream calls');
my @n = map { $_->{headers}{'x-acs-signature-nonce'} } @{$s->{requests}};
isnt($n[0], $n[1], 'each attempt has a fresh nonce');
like($_, qr/^[0-9a-f]{32}\z/, 'a nonce is 32 lower-case hex digits') for @n;
is(substr($n[0], 0, 24), substr($n[1], 0, 24),
   'nonces of one process share their seed and pid');
is(hex(substr($n[1], 24)), hex(substr($n[0], 24)) + 1,
   'then a counter, one more per call');
my @d = map { $_->{headers}{'x-acs-date'} } @{$s->{requests}};
like($_, qr/^20\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ\z/,
     'x-acs-date is YYYY-MM-DDTHH:MM:SSZ') for @d;
is($s->{requests}[-1]{code}, 'Success', 'the retry is signed correctly');

$t->mock_reset;
$t->mock_fault(mode => 'status', status => 503, code => 'ServiceUnavailable',
               count => 5);
$r = $t->post('/idv/result', \%q);
is($r->{status}, 503, 'ServiceUnavailable thrice: gives up');
is($r->{json}{Code}, 'ServiceUnavailable', 'gives up with the last answer');
is($r->{json}{Gateway}{attempts}, 3, 'idv_retries 2: 3 attempts');
is($t->mock_stats->{calls}, 3, '3 upstream calls');

$t->mock_reset;
$t->mock_fault(mode => 'status', status => 500, code => 'InternalError');
$r = $t->post('/idv/result-once', \%q);
is($r->{status}, 500, 'idv_retries 0: no retry');
is($t->mock_stats->{calls}, 1, 'idv_retries 0: one call');

$t->mock_reset;
$t->mock_fault(mode => 'status', status => 400, code => 'InvalidParameter');
$r = $t->post('/idv/result', \%q);
is($r->{status}, 400, 'a client error is not retried');
is($t->mock_stats->{calls}, 1, 'a client error: one call');

$r = $t->post('/idv/down/result', \%q);
is($r->{status}, 502, 'unreachable upstream: 502 after retries');
is($r->{json}{Gateway}{attempts}, 3, 'unreachable upstream: 3 attempts');

# billable: never repeated

$t->mock_reset;
$t->mock_fault(mode => 'throttle', action => 'Initialize');
$r = $t->post('/idv/ocr/initialize', { MerchantBizId => 'rt2',
              MerchantUserId => 'u1', DocType => '01000000',
              MetaInfo => '{}' });
is($r->{status}, 429, 'throttled Initialize: 429 to the backend');
is($r->{headers}{'retry-after'}, '1', 'throttled Initialize: Retry-After');
is($r->{json}{Code}, 'Throttling.Api', 'throttled Initialize: the code');
is($t->mock_stats->{calls}, 1, 'throttled Initialize: not repeated');

$t->mock_reset;
$t->mock_fault(mode => 'reset_mid', action => 'Initialize');
$r = $t->post('/idv/ocr/initialize', { MerchantBizId => 'rt3',
              MerchantUserId => 'u1', DocType => '01000000',
              MetaInfo => '{}' });
is($r->{status}, 502, 'Initialize cut mid-answer: 502');
is($t->mock_stats->{calls}, 1, 'Initialize cut mid-answer: not repeated');

$t->ignore_log(qr/connect\(\) failed|upstream prematurely closed/);
$t->stop;

like($t->error_log, qr/idv: CheckResult attempt 1 failed .* retrying in \d+ms/,
     'retries are logged');

done_testing;
