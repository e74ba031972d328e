# The gateway's promises, tried as an attacker would (issue 14): a tenant
# never reads or receives another tenant's transaction, not even when
# their MerchantBizIds collide; reads by MerchantBizId alone and empty
# TransactionIds do not get around that; refused calls evict nothing
# that a guarantee rests on; nothing is charged or sent before every
# local check passed; no value sent is echoed into an error or breaks
# the JSON of one.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;

use JSON::PP;


my ($ID, $SECRET) = ('LTAIiso00001', 'ISO-s3cret-0123456789abcdef0123');

my $HTTP = <<'END';
    idv_callback_zone zone=iso_cb:1m;
    idv_tenancy_zone zone=iso_owners:1m;
    idv_cache_zone zone=iso_tx:1m;
    idv_limit_zone zone=iso_limit:1m;
    idv_sdk_zone zone=iso_nonces:1m;
    idv_tenant_keys %%TESTDIR%%/tenant.keys;
END
$HTTP .= IdvTest->backend_http;

my $SERVER = IdvTest->callback_locations . <<'END';
        idv_tenant $http_x_tenant;
        idv_callback_url https://gateway.example/idv/callback;
        idv_cache iso_tx;


        location = /idv/verifylog {
            idv_action CheckVerifyLog;
        }

        location = /idv/strict/verifylog {
            idv_action CheckVerifyLog;
            idv_tenancy_strict on;
        }

        location = /idv/strict/result {
            idv_action CheckResult;
            idv_tenancy_strict on;
        }

        location = /idv/any/initialize {
            idv_action Initialize;
        }

        location = /idv/limited/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_limit zone=iso_limit rate=1r/m nodelay;
        }

        location = / {
            idv_sdk_gateway;
        }

        location = /ocr-only {
            idv_sdk_gateway;
            idv_product_code ID_OCR;
        }
END


sub init { my ($t, @a) = @_; $t->ocr_initialize(@a) }

sub fire {
    my ($t, $tx, $token) = @_;

    return $t->mock_complete(transactionId => $tx, passed => 'Y',
                             subCode => '200',
                             url => 'http://127.0.0.1:' . $t->port
                                    . '/idv/callback',
                             callbackToken => $token);
}



sub calls { $_[0]->mock_stats->{calls} }

# an SDK request signed like the V1 SDKs sign it
sub sdk {
    my ($t, $nonce, %p) = @_;

    return $t->sdk_v1($ID, $SECRET, SignatureNonce => $nonce, %p);
}


my $t = IdvTest->new;

open my $fh, '>', $t->testdir . '/tenant.keys' or die;
print $fh "acme $ID $SECRET\n";
close $fh;
chmod 0600, $t->testdir . '/tenant.keys';

$t->start_mock;
$t->write_config($t->standard_http(extra_http => $HTTP,
                                   extra_server => $SERVER),
                 worker_processes => 2);
$t->start_nginx;


# --- colliding MerchantBizIds: a callback for another tenant ---------------

my $ra = init($t, 'acme', 'order1');
my $up_a = $t->mock_stats->{requests}[-1];
my $rb = init($t, 'globex', 'order1');
my $up_b = $t->mock_stats->{requests}[-1];
my ($txa, $txb) = ($ra->{json}{Result}{TransactionId},
                   $rb->{json}{Result}{TransactionId});
ok($txa && $txb && $txa ne $txb,
   'two tenants, one MerchantBizId: two transactions');

my $calls = calls($t);
my $f = fire($t, $txb, $up_a->{query}{CallbackToken});
is($f->{status}, 403, "acme's token with globex's TransactionId: 403");
is(scalar($t->delivered), 0, 'nothing delivered');
is(calls($t), $calls, 'refused before CheckResult: no upstream call');

$f = fire($t, $txb, $up_b->{query}{CallbackToken});
is($f->{status}, 200, "globex's own callback is delivered afterwards");
my @d = $t->delivered_wait(1);
is(scalar(@d), 1, 'once');
is($d[0]{Tenant}, 'globex', 'labelled with its own tenant');
is($d[0]{TransactionId}, $txb, 'its own transaction');


# --- reads of another tenant's transaction ------------------------------------

$calls = calls($t);
my $r = $t->post('/idv/result', { MerchantBizId => 'order1',
                                  TransactionId => $txb },
                 'X-Tenant' => 'acme');
is($r->{status}, 403, "CheckResult of globex's transaction by acme: 403");
is($r->{json}{Code}, 'Forbidden.Tenant', 'Forbidden.Tenant');

$r = $t->post('/idv/result', { MerchantBizId => 'other1',
                               TransactionId => $txa },
              'X-Tenant' => 'acme');
is($r->{status}, 403,
   'the owner with a MerchantBizId of another transaction: 403');
is(calls($t), $calls, 'the gateway refused both itself');

$r = $t->post('/idv/result', { MerchantBizId => 'order1',
                               TransactionId => '' },
              'X-Tenant' => 'acme');
is($r->{status}, 400, 'an empty TransactionId: 400');
is($r->{json}{Code}, 'InvalidParameter', 'an empty TransactionId: named');
like($r->{json}{Message}, qr/TransactionId is empty/,
     'an empty TransactionId: the Message says so');
is(calls($t), $calls, 'an empty TransactionId is not forwarded');

$r = $t->post('/idv/strict/result', { MerchantBizId => 'order1',
                                      TransactionId => '' },
              'X-Tenant' => 'acme');
is($r->{status}, 400, 'strict: an empty TransactionId is not a way round');


# --- reads by MerchantBizId alone -------------------------------------------

init($t, 'globex', 'globexonly');
$calls = calls($t);

$r = $t->post('/idv/verifylog', { MerchantBizId => 'globexonly' },
              'X-Tenant' => 'acme');
is($r->{status}, 403, "CheckVerifyLog by another tenant's MerchantBizId: 403");
is($r->{json}{Code}, 'Forbidden.Tenant', 'by MerchantBizId: Forbidden.Tenant');

$r = $t->post('/idv/verifylog', { MerchantBizId => 'order1' },
              'X-Tenant' => 'acme');
is($r->{status}, 403,
   'a MerchantBizId two tenants used: neither reads by it alone');
is(calls($t), $calls, 'refused without an upstream call');

$r = $t->post('/idv/strict/verifylog', { MerchantBizId => 'neverused' },
              'X-Tenant' => 'acme');
is($r->{status}, 403, 'strict: an unknown MerchantBizId is refused');

$r = $t->post('/idv/verifylog', { MerchantBizId => 'globexonly' },
              'X-Tenant' => 'globex');
is($r->{status}, 200, 'its owner reads by its MerchantBizId');


# --- refused calls evict nothing a guarantee rests on -------------------------

my $own = init($t, 'acme', 'keep1');
my $own_tx = $own->{json}{Result}{TransactionId};

$t->mock_fault(mode => 'code', code => 'InvalidParameter', status => 400,
               action => 'Initialize', count => 150);
my @refused = map { init($t, 'noisy', "refused$_") } 1 .. 150;
is(scalar(grep { $_->{status} == 400 } @refused), 150,
   '150 refused Initialize calls of another tenant');

$calls = calls($t);
$r = init($t, 'acme', 'keep1');
is($r->{json}{Result}{TransactionId}, $own_tx,
   'the owner\'s retry still gets its transaction');
ok($r->{json}{Gateway}{cached}, 'from the cache');
is(calls($t), $calls, 'no second bill');
$r = $t->post('/idv/strict/result', { MerchantBizId => 'keep1',
                                      TransactionId => $own_tx },
              'X-Tenant' => 'acme');
is($r->{status}, 200, 'strict: its owner still reads it');


# --- nothing charged or sent before every local check ------------------------

$calls = calls($t);
$r = $t->post('/idv/limited/initialize',
              { MerchantBizId => 'lim1', MerchantUserId => 'u1',
                DocType => '01000000', MetaInfo => '{}' },
              'X-Tenant' => 'x' x 7000);
is($r->{status}, 400, 'a 7000-byte tenant: 400');
is($r->{json}{Code}, 'Gateway.TenantInvalid', 'Gateway.TenantInvalid');
unlike($r->{body}, qr/x{300}/, 'the tenant is not echoed');

$r = $t->post('/idv/limited/initialize',
              { MerchantBizId => 'lim2', MerchantUserId => 'u1',
                DocType => '01000000', MetaInfo => '{}' },
              'X-Tenant' => 'limited');
is($r->{status}, 200, 'the refused request spent none of the limit');

for my $code (qw(X1 eKYC-ish)) {
    $r = $t->post('/idv/any/initialize',
                  { MerchantBizId => "pc$code", ProductCode => $code,
                    DocType => '01000000', MetaInfo => '{}' },
                  'X-Tenant' => 'acme');
    is($r->{status}, 400, "ProductCode $code the action does not know: 400");
}
is(calls($t), $calls + 1, 'unknown product codes are not sent');


# --- no value sent comes back --------------------------------------------------

$r = $t->request('POST', '/idv/id2meta',
                 '{"ParamType":"normal","IdentifyNum":"110101199003070011",'
                 . '"UserName":"Zhang San"}',
                 'Content-Type' => 'application/x-www-form-urlencoded',
                 'X-Tenant' => 'acme');
is($r->{status}, 400, 'a JSON body sent as a form: 400');
unlike($r->{body}, qr/1101|Zhang|normal/,
       'the error names the problem, not the body');
like($r->{json}{Message} // '', qr/not shown|not accepted/,
     'and says what is wrong');

my $inject = 'X","injected":true,"a":"';
$r = $t->post('/idv/any/initialize',
              { MerchantBizId => 'inj1', ProductCode => $inject,
                DocType => '01000000', MetaInfo => '{}' },
              'X-Tenant' => 'acme');
ok($r->{json}, 'an injected ProductCode: the answer is JSON');
ok(!exists $r->{json}{injected} && !exists $r->{json}{Gateway}{injected},
   'and nothing was injected into it');

$r = sdk($t, 'n-inj', Action => 'Initialize', ProductCode => $inject,
         MerchantBizId => 'inj2', MetaInfo => '{}', DocType => '01000000');
is($r->{status}, 400, 'SDK: an injected ProductCode is refused');
ok($r->{json} && !exists $r->{json}{injected},
   'SDK: the refusal is JSON, with nothing injected');


# --- SDK nonces: only a request that passed every check uses one up --------

$r = sdk($t, 'n-version', Action => 'CheckResult', Version => '2019-03-07',
         MerchantBizId => 'order1', TransactionId => $txa);
is($r->{json}{Code}, 'InvalidVersion', 'SDK: an old Version is refused');
$r = sdk($t, 'n-version', Action => 'CheckResult', Version => '2019-03-07',
         MerchantBizId => 'order1', TransactionId => $txa);
is($r->{json}{Code}, 'InvalidVersion',
   'SDK: its nonce was not used up (no flood of refused requests fills '
   . 'the zone)');

$r = sdk($t, 'n-ok', Action => 'CheckResult', MerchantBizId => 'order1',
         TransactionId => $txa);
is($r->{status}, 200, 'SDK: a good request');
$r = sdk($t, 'n-ok', Action => 'CheckResult', MerchantBizId => 'order1',
         TransactionId => $txa);
is($r->{json}{Code}, 'SignatureNonceUsed', 'SDK: its replay is refused');

$r = sdk($t, 'n-other', Action => 'CheckResult', MerchantBizId => 'order1',
         TransactionId => $txb);
is($r->{status}, 403, "SDK: acme reads globex's transaction: 403");

# --- the SDK endpoint: idv_product_code holds there too (issue 16) -------

$calls = calls($t);
$r = sdk($t, 'n-pc1', _path => '/ocr-only', Action => 'Initialize',
         ProductCode => 'eKYC', MerchantBizId => 'sdkpc1', MetaInfo => '{}',
         DocType => '01000000', MerchantUserId => 'u1');
is($r->{status}, 400, 'SDK, idv_product_code ID_OCR: eKYC is refused');
like($r->{json}{Message} // '', qr/ProductCode is set by the gateway/,
     'SDK, idv_product_code: the Message says why');
$r = sdk($t, 'n-pc2', _path => '/ocr-only', Action => 'Initialize',
         MerchantBizId => 'sdkpc2', MetaInfo => '{}', DocType => '01000000',
         MerchantUserId => 'u1');
is($r->{status}, 200, 'SDK, idv_product_code: a request without one gets it');
is($t->mock_stats->{requests}[-1]{query}{ProductCode}, 'ID_OCR',
   'SDK, idv_product_code: the call carries the location\'s code');
$r = sdk($t, 'n-pc3', _path => '/ocr-only', Action => 'CheckResult',
         MerchantBizId => 'order1', TransactionId => $txa);
is($r->{status}, 200, 'SDK, idv_product_code: actions without one pass');
is(calls($t), $calls + 2, 'SDK, idv_product_code: the refused one was not sent');

$r = sdk($t, 'n-new', Action => 'NoSuchActionIntl',
         MerchantBizId => 'x1');
is($r->{json}{Code}, 'InvalidAction.NotFound',
   'SDK: an action the gateway does not know');
like($r->{json}{Message} // '', qr/gateway does not know this action/,
     'SDK: the Message says the gateway does not know it');

unlike($t->error_log, qr/110101199003070011|Zhang San/,
       'no identity data in the error log');

$t->stop;

done_testing;
