# Result callbacks: Initialize carries a CallbackToken the gateway issues;
# the callback is accepted only with a valid, unexpired token for its
# transaction, the result comes from CheckResult (never from the URL), and
# the backend receives it exactly once.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use JSON::PP;
use File::Temp ();


my $CB = <<'END';
    idv_callback_zone zone=idv_cb:1m;
    idv_tenancy_zone zone=idv_owners:1m;
END
$CB .= IdvTest->backend_http;

my $LOCATIONS = <<'END';
        idv_tenant $http_x_tenant;
        idv_callback_url https://gateway.example/idv/callback;

        location = /idv/callback {
            idv_callback;
            idv_callback_pass /app/result;
        }

        location = /idv/callback-down {
            idv_callback;
            idv_callback_pass /app/result-down;
        }

        location = /idv/callback-keep {
            idv_callback;
        }

        location = /idv/short/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_callback_ttl 1s;
        }

        location = /app/result {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/ok;
        }

        location = /app/result-down {
            internal;
            proxy_pass http://127.0.0.1:1/;
        }
END

sub gateway {
    my (%o) = @_;

    my $t = IdvTest->new;
    $t->start_mock if $o{mock};
    $t->{mock_port} = $o{mock_port} if $o{mock_port};

    my $key = $o{key} ? "idv_callback_key $o{key};" : '';

    $t->write_config($t->standard_http(extra_http => $CB,
                                       extra_server => "$key\n$LOCATIONS"), log_level => ($ENV{IDV_DEBUG} ? "debug" : "info"));
    $t->start_nginx;

    return $t;
}

sub initialize {
    my ($t, $biz, %o) = @_;

    my $r = $t->post($o{path} // '/idv/ocr/initialize',
                     { MerchantBizId => $biz, MerchantUserId => 'u1',
                       DocType => '01000000', MetaInfo => '{}' },
                     'X-Tenant' => $o{tenant} // 'acme');
    my $up = $t->mock_stats->{requests}[-1];

    return ($r->{json}{Result}{TransactionId}, $up->{query}{CallbackToken},
            $up->{query}{CallbackUrl});
}

sub fire {
    my ($t, $tx, %o) = @_;

    return $t->mock_complete(transactionId => $tx,
                             passed => $o{passed} // 'Y',
                             subCode => $o{subCode} // '200',
                             url => 'http://127.0.0.1:' . $t->port
                                    . ($o{path} // '/idv/callback'),
                             (exists $o{token}
                              ? (callbackToken => $o{token}) : ()),
                             ($o{fire_passed}
                              ? (fire_passed => $o{fire_passed}) : ()));
}




my $dir = File::Temp::tempdir(CLEANUP => 1);
for my $name ('new.key', 'old.key') {
    open my $fh, '>', "$dir/$name" or die;
    print $fh ($name eq 'new.key' ? 'n' : 'o') x 48, "\n";
    close $fh;
    chmod 0600, "$dir/$name";
}

my $t = gateway(mock => 1, key => "$dir/new.key $dir/old.key");


# the full flow: tampered passed=Y in the URL, the real result is N

my ($tx, $token, $url) = initialize($t, 'cb001');
ok($tx, 'Initialize: a transaction');
is($url, 'https://gateway.example/idv/callback',
   'Initialize: CallbackUrl added by the gateway');
like($token, qr/^[A-Za-z0-9_-]{40,}$/, 'Initialize: a URL-safe CallbackToken');

my $f = fire($t, $tx, passed => 'N', subCode => '205', fire_passed => 'Y');
is($f->{status}, 200, 'callback: answered 200 once delivered')
    or diag explain $f;

my @got = $t->delivered_wait(1);
is(scalar @got, 1, 'the backend received the result once');
is($got[0]{Passed}, 'N', 'the backend got the real result, not the URL');
is($got[0]{SubCode}, '205', 'SubCode from CheckResult');
is($got[0]{Tenant}, 'acme', 'the tenant bound in the token');
is($got[0]{MerchantBizId}, 'cb001', 'the MerchantBizId bound in the token');
is($got[0]{TransactionId}, $tx, 'the TransactionId');
ok(exists $got[0]{ExtBasicInfo}, 'the Ext* fields');

my $cr = $t->mock_stats->{requests}[-1];
is($cr->{action}, 'CheckResult', 'the result was confirmed with CheckResult');
is($cr->{query}{MerchantBizId}, 'cb001', 'CheckResult with the bound id');

# a duplicate is acknowledged, not delivered again
$f = fire($t, $tx, passed => 'N', subCode => '205');
is($f->{status}, 200, 'duplicate callback: 200');
is(scalar($t->delivered), 1, 'duplicate callback: not forwarded again');


# a forwarded result is not kept: CheckResult asks upstream, valid JSON
my $calls0 = $t->mock_stats->{calls};
my $cr0 = $t->post('/idv/result', { MerchantBizId => 'cb001',
                   TransactionId => $tx }, 'X-Tenant' => 'acme');
is($cr0->{status}, 200, 'CheckResult after a forwarded callback: 200');
ok(defined $cr0->{json}, 'CheckResult after a forwarded callback: JSON');
is($t->mock_stats->{calls}, $calls0 + 1,
   'CheckResult after a forwarded callback: asks upstream');

# forged, tampered, foreign and expired tokens

my $r = $t->get("/idv/callback?callbackToken=AAAA&transactionId=$tx");
is($r->{status}, 403, 'a forged token: 403');
is($r->{json}{Code}, 'Callback.InvalidToken', 'a forged token: the code');

my ($tx2, $token2) = initialize($t, 'cb002');
my $bad = $token2;
substr($bad, 20, 1) = substr($bad, 20, 1) eq 'A' ? 'B' : 'A';
$r = $t->get("/idv/callback?callbackToken=$bad&transactionId=$tx2&passed=Y");
is($r->{status}, 403, 'a token with one character changed: 403');

$r = $t->get("/idv/callback?transactionId=$tx2&passed=Y");
is($r->{status}, 403, 'no token: 403');

# cb001's valid token replayed for cb002's transaction
my $calls = $t->mock_stats->{calls};
$f = fire($t, $tx2, token => $token);
is($f->{status}, 403, "another transaction's token: 403");
is(scalar($t->delivered), 1, "another transaction's token: nothing sent on");

my ($tx3) = initialize($t, 'cb003', path => '/idv/short/initialize');
sleep 2;
$f = fire($t, $tx3);
is($f->{status}, 403, 'an expired token: 403');

$r = $t->post('/idv/ocr/initialize', { MerchantBizId => 'cb009',
              MerchantUserId => 'u1', DocType => '01000000', MetaInfo => '{}',
              CallbackUrl => 'https://evil.example/' }, 'X-Tenant' => 'acme');
is($r->{status}, 400, 'a backend-supplied CallbackUrl is refused');


# the backend down: 5xx, and the retry delivers

my ($tx4) = initialize($t, 'cb004');
$f = fire($t, $tx4, path => '/idv/callback-down');
is($f->{status}, 502, 'backend down: 502 so the caller retries');
is(scalar($t->delivered), 1, 'backend down: nothing delivered');
$f = fire($t, $tx4);
is($f->{status}, 200, 'backend back: the retry is delivered');
is(($t->delivered_wait(2))[-1]{TransactionId}, $tx4,
   'backend back: the result');


# without idv_callback_pass the result is kept for CheckResult

my ($tx5) = initialize($t, 'cb005');
$f = fire($t, $tx5, path => '/idv/callback-keep', passed => 'N',
          subCode => '206');
is($f->{status}, 200, 'no idv_callback_pass: acknowledged');
$calls = $t->mock_stats->{calls};
$r = $t->post('/idv/result', { MerchantBizId => 'cb005',
              TransactionId => $tx5 }, 'X-Tenant' => 'acme');
is($r->{status}, 200, 'CheckResult after a kept callback: 200');
is($r->{json}{Result}{Passed}, 'N', 'CheckResult answers the kept result');
is($r->{json}{Result}{SubCode}, '206', 'CheckResult: kept SubCode');
ok($r->{json}{Gateway}{cached}, 'CheckResult: marked cached');
is($t->mock_stats->{calls}, $calls, 'CheckResult: no upstream call');
$r = $t->post('/idv/result', { MerchantBizId => 'cb005',
              TransactionId => $tx5 }, 'X-Tenant' => 'other');
is($r->{status}, 403, "another tenant does not get the kept result: 403");
is($r->{json}{Code}, 'Forbidden.Tenant',
   "another tenant: Forbidden.Tenant, refused by the owner record");
is($t->mock_stats->{calls}, $calls, "another tenant: no upstream call");


# stateless: a second gateway holding the same key verifies the token;
# rotation: the old key still verifies while listed second

my ($tx6, $token6) = initialize($t, 'cb006');

my $t2 = gateway(mock_port => $t->mock_port, key => "$dir/old.key");
my ($tx7, $token7) = initialize($t2, 'cb007');
$t2->stop;

my $t3 = gateway(mock_port => $t->mock_port, key => "$dir/new.key $dir/old.key");
$f = fire($t3, $tx6);
is($f->{status}, 200, 'a second gateway with the same key verifies');
$f = fire($t3, $tx7);
is($f->{status}, 200, 'a token of the rotated-out key still verifies');
$t3->stop;

my $t4 = gateway(mock_port => $t->mock_port, key => "$dir/new.key");
$r = $t4->get("/idv/callback?callbackToken=$token7&transactionId=$tx7");
is($r->{status}, 403, 'once the old key is gone, its tokens are refused');
$t4->stop;

# TransactionIds whose CRC32 collide are still told apart by the guard
my (undef, $tokc) = initialize($t, 'cbcol');
my $before = scalar($t->delivered);
for my $id ('3aa9ef9a346718b265cf3bd508c02723',
            '0b29827805dde8fd5e233bb34be8240e',
            'ffffffffffffffffffffffffffffffff',
            '3aa9ef9a346718b265cf3bd508c02723')
{
    fire($t, $id, token => $tokc);
}
is(scalar($t->delivered_wait($before + 3)) - $before, 3,
   'colliding TransactionIds: each delivered once');


$t->ignore_log(qr/connect\(\) failed/);
$t->stop;

unlike($t->error_log, qr/\Q$token\E|\Q$token2\E/,
       'error.log never shows a token');
like($t->error_log, qr/callback rejected: forged token/,
     'rejections are logged with their reason');

done_testing;
