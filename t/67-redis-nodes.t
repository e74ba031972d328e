# Several gateway nodes behave as one (issue 15): two nginx instances
# share a real redis-server for every state zone.  A tenant's limit holds
# across both, the same Initialize sent to both at once bills once, a
# callback delivered through one node is not delivered again through the
# other, an SDK request replayed on the other node is refused, another
# tenant reads no transaction on either node.  Each request costs one
# round trip to Redis before the call and one after it.  When Redis
# stops, each zone follows its on_error policy, and nothing is billed
# twice where the policy is closed; service resumes by itself.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;

use JSON::PP;
use Time::HiRes qw(sleep time);

plan skip_all => 'no redis-server (./build.sh test installs it)'
    unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};


my ($ID, $SECRET) = ('LTAInodes0001', 'NODES-s3cret-0123456789abcdef012');

my $HTTP = <<'END';
    idv_redis name=shared server=127.0.0.1:%%REDIS_PORT%% timeout=500ms;

    idv_callback_zone zone=n_cb:1m store=redis:shared;
    idv_tenancy_zone zone=n_owners:1m store=redis:shared;
    idv_cache_zone zone=n_tx:1m store=redis:shared;
    idv_limit_zone zone=n_limit:1m store=redis:shared;
    idv_sdk_zone zone=n_nonces:1m store=redis:shared;
    idv_limit_zone zone=n_node:1m;
    idv_tenant_keys %%TESTDIR%%/tenant.keys;
END
$HTTP .= IdvTest->backend_http;

my $SERVER = IdvTest->callback_locations . <<'END';
        idv_tenant $http_x_tenant;
        idv_callback_url https://gateway.example/idv/callback;
        idv_cache n_tx;


        location = /idv/limited/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_limit zone=n_limit key=tenant rate=6r/m burst=4 nodelay;
        }

        location = /idv/node/id2meta {
            idv_action Id2MetaVerifyIntl;
            idv_product_code ID_2META;
            idv_limit zone=n_node key=tenant rate=6r/m burst=1 nodelay;
        }

        location = /idv/limited/id2meta {
            idv_action Id2MetaVerifyIntl;
            idv_product_code ID_2META;
            idv_limit zone=n_limit key=tenant rate=6r/m burst=1 nodelay;
        }

        location = / {
            idv_sdk_gateway;
        }
END


sub node {
    my ($mock) = @_;

    my $t = IdvTest->new;

    open my $fh, '>', $t->testdir . '/tenant.keys' or die;
    print $fh "acme $ID $SECRET\n";
    close $fh;
    chmod 0600, $t->testdir . '/tenant.keys';

    return $t;
}

my $a = node();
$a->start_mock;
$a->start_redis;

my $b = node();
$b->{mock_port} = $a->mock_port;
$b->{redis_port} = $a->redis_port;

for my $t ($a, $b) {
    $t->write_config($t->standard_http(extra_http => $HTTP,
                                       extra_server => $SERVER),
                     worker_processes => 2);
    $t->start_nginx;
}

sub calls { $a->mock_stats->{calls} }

sub init { my ($t, @a) = @_; $t->ocr_initialize(@a) }

sub evals {
    my $info = $a->redis('INFO', 'commandstats') // '';
    my $n = 0;
    $n += $1 while $info =~ /^cmdstat_eval(?:sha)?:calls=(\d+)/mg;
    return $n;
}


# --- a tenant's limit, across both nodes -----------------------------------------

my @status = map { init($_ % 2 ? $a : $b, 'acme', "lim$_",
                        path => '/idv/limited/initialize')->{status} } 1 .. 12;
my $admitted = grep { $_ == 200 } @status;
my $refused = grep { $_ == 429 } @status;
is($admitted, 5, 'burst 4 + 1 admitted over two nodes, as on one (@status)');
is($admitted + $refused, 12, 'the others refused with 429');


# --- the same Initialize on both nodes at once: one call ---------------------------

$a->mock_reset;
$a->mock_fault(mode => 'slow', delay_ms => 800, count => 1);

my @pids;
my $dir = $a->testdir;

for my $t ($a, $b) {
    my $pid = fork // die "fork: $!";

    if ($pid == 0) {
        my $r = init($t, 'acme', 'both1');
        open my $fh, '>', "$dir/both-" . $t->port or die;
        print $fh encode_json([$r->{status}, $r->{json}]);
        close $fh;
        POSIX::_exit(0);
    }

    push @pids, $pid;
    sleep 0.1;
}

waitpid $_, 0 for @pids;

my @both = map {
    open my $fh, '<', "$dir/both-" . $_->port or die; local $/; decode_json(<$fh>)
} ($a, $b);

is(join(' ', map { $_->[0] } @both), '200 200', 'both nodes answer 200');
my $tx = $both[0][1]{Result}{TransactionId};
ok($tx, 'with a TransactionId');
is($both[1][1]{Result}{TransactionId}, $tx, 'the same one on both nodes');
is(calls(), 1, 'one upstream call for the two');

my $r = init($b, 'acme', 'both1');
is($r->{json}{Result}{TransactionId}, $tx, 'a retry on node B: the same');
is(calls(), 1, 'and no call');


# --- another tenant, on the other node -----------------------------------------------

$r = $b->post('/idv/result', { MerchantBizId => 'both1', TransactionId => $tx },
              'X-Tenant' => 'globex');
is($r->{status}, 403, "globex reads acme's transaction on node B: 403");
is($r->{json}{Code}, 'Forbidden.Tenant', 'Forbidden.Tenant');
is(calls(), 1, 'refused by the gateway');

$r = $b->post('/idv/result', { MerchantBizId => 'both1', TransactionId => $tx },
              'X-Tenant' => 'acme');
is($r->{status}, 200, 'acme reads it on node B');


# --- a zone of one node beside the shared ones ---------------------------------------

$a->mock_reset;
my @node = map {
    $a->post('/idv/node/id2meta', { ParamType => 'normal',
                                    IdentifyNum => '110101199001011234',
                                    UserName => 'Zhang San' },
             'X-Tenant' => 'hooli')->{status}
} 1 .. 3;
is("@node", '200 200 429',
   'a limit zone in shared memory (no store=) still counts on its node');
is(calls(), 2, 'the admitted ones were sent, once each');


# --- round trips --------------------------------------------------------------------

$a->redis('CONFIG', 'RESETSTAT');
$r = init($a, 'initech', 'rt1', path => '/idv/limited/initialize');
is($r->{status}, 200, 'Initialize for another tenant');
is(evals(), 2, 'Initialize with limit, cache and tenancy: one round trip '
               . 'before the call, one after');

$a->redis('CONFIG', 'RESETSTAT');
$r = init($b, 'initech', 'rt1', path => '/idv/limited/initialize');
is($r->{status}, 200, 'the same again, on node B');
is(evals(), 1, 'answered from the cache: one round trip');

$a->redis('CONFIG', 'RESETSTAT');
$r = $a->post('/idv/result', { MerchantBizId => 'both1', TransactionId => $tx },
              'X-Tenant' => 'acme');
is($r->{status}, 200, 'CheckResult');
is(evals(), 1, 'CheckResult with tenancy: one round trip');


# --- a callback through A, again through B -------------------------------------------

sub fire {
    my ($t, $tx, $token) = @_;

    return $a->mock_complete(transactionId => $tx, passed => 'Y',
                             subCode => '200',
                             url => 'http://127.0.0.1:' . $t->port
                                    . '/idv/callback',
                             callbackToken => $token);
}

# what the backends of both nodes got
sub delivered { scalar($a->delivered) + scalar($b->delivered) }

$a->mock_reset;
$r = init($a, 'acme', 'cb1');
my $cbtx = $r->{json}{Result}{TransactionId};
my $token = $a->mock_stats->{requests}[-1]{query}{CallbackToken};
ok($token, 'the Initialize carried a callback token');

my $f = fire($a, $cbtx, $token);
is($f->{status}, 200, 'the callback through node A: 200');

my $deadline = time + 5;
sleep 0.05 while delivered() < 1 && time < $deadline;
is(delivered(), 1, 'delivered to the backend');

$f = fire($b, $cbtx, $token);
is($f->{status}, 200, 'the same callback through node B: acknowledged');
sleep 0.3;
is(delivered(), 1, 'not delivered again');


# --- an SDK request replayed on the other node ----------------------------------------

my %sdk = (Action => 'Initialize', ProductCode => 'ID_OCR',
           MerchantBizId => 'sdk1', MerchantUserId => 'u1',
           DocType => '01000000', MetaInfo => '{}',
           SignatureNonce => 'nonce-nodes-1');

$r = $a->sdk_v1($ID, $SECRET, %sdk);
is($r->{status}, 200, 'an SDK request on node A');
$r = $b->sdk_v1($ID, $SECRET, %sdk);
is($r->{status}, 400, 'the same nonce on node B: refused');
is($r->{json}{Code}, 'SignatureNonceUsed', 'SignatureNonceUsed');


# --- Redis paused past the timeout: refused, not hung ----------------------------------

$a->mock_reset;
$a->pause_redis;
my $t0 = time;
$r = init($a, 'acme', 'pause1');
my $waited = time - $t0;
$a->resume_redis;

is($r->{status}, 503, 'Redis paused: Initialize refused');
is($r->{json}{Code}, 'Gateway.StateUnavailable', 'Gateway.StateUnavailable');
cmp_ok($waited, '<', 5, 'after the timeout (500ms), not hung');
is(calls(), 0, 'nothing was sent upstream');

ok(IdvTest::poll(10, sub { init($a, 'acme', 'pause2')->{status} == 200 }),
   'Redis resumed: service resumes by itself');
is(calls(), 1, 'one call for it');

# the script that timed out ran once Redis went on: the flight it started
# for pause1 has no leader; until it is abandoned (2 minutes) a retry
# waits or is refused, and bills nothing
$r = init($b, 'acme', 'pause1');
isnt($r->{status}, 200, 'the timed-out Initialize, retried at once: no answer yet');
is(calls(), 1, 'and no upstream call: nothing is billed twice');


# --- Redis stopped: closed zones refuse, limits run per node ----------------------------

$a->mock_reset;
$a->stop_redis;

$r = init($a, 'acme', 'down1');
is($r->{status}, 503, 'Redis down: Initialize refused (cache and tenancy closed)');
is($r->{json}{Code}, 'Gateway.StateUnavailable', 'Gateway.StateUnavailable');
is($r->{headers}{'retry-after'}, '1', 'with Retry-After');
is(calls(), 0, 'nothing was sent upstream');

$r = $b->sdk_v1($ID, $SECRET, %sdk, SignatureNonce => 'nonce-nodes-2');
is($r->{status}, 503, 'an SDK request: refused (nonces closed)');
is(calls(), 0, 'nothing was sent upstream');


# a limit zone runs in each node's memory meanwhile: the rate per node
sub meta {
    my ($t) = @_;
    return $t->post('/idv/limited/id2meta', { ParamType => 'normal',
                                              IdentifyNum => '110101199001011234',
                                              UserName => 'Zhang San' },
                    'X-Tenant' => 'umbrella')->{status};
}

my @local = map { meta($_ % 2 ? $a : $b) } 1 .. 8;
is(scalar(grep { $_ == 200 } @local), 4,
   'limits on_error=local (the default): each node admits burst + 1 (@local)');
is(scalar(grep { $_ == 429 } @local), 4, 'the others 429');
$a->mock_reset;


# --- Redis back, empty ---------------------------------------------------------------

$a->start_redis;

ok(IdvTest::poll(10, sub { init($a, 'acme', 'back1')->{status} == 200 }),
   'Redis back: service resumes by itself');
is(calls(), 1, 'one call for it');

ok(IdvTest::poll(10, sub { init($b, 'acme', 'back1')->{status} == 200 }),
   'node B too');
is(calls(), 1, 'node B answers the retry from the shared cache');

for my $t ($a, $b) {
    $t->ignore_log(qr/idv redis "shared"|idv_tenancy_zone|idv_cache_zone|unavailable/);
    $t->stop;
}

done_testing;
