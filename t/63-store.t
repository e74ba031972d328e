# The zones of the keyed store as an operator meets them: a zone keeps
# its entries across a reload; a reload that would resize a zone is
# refused, for every kind of zone, with one message naming it, while the
# running configuration and its entries go on; a zone full of entries
# that must be kept (SDK nonces) refuses new requests with 503
# Gateway.StateFull instead of forgetting a nonce, and says so in the
# error log and in the metrics.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;



my ($ID, $SECRET) = ('LTAIstore0001', 'STORE-s3cret-0123456789abcdef');

# nonces of 32 KB of SDK requests: the smallest zone there is
my $HTTP = <<'END';
    idv_sdk_zone zone=nonces:%%SDK%%;
    idv_callback_zone zone=callbacks:%%CB%% ttl=1d;
    idv_tenant_keys %%TESTDIR%%/tenant.keys;
    idv_metrics_zone %%M%%;
    idv_limit_zone zone=sdk_limit:1m;
END

my $SERVER = <<'END';
        location = / {
            idv_sdk_gateway;
            idv_limit zone=sdk_limit rate=1r/m nodelay;
        }
        location = /metrics { idv_metrics; }
END


sub config {
    my ($t, %size) = @_;

    my $http = $HTTP;
    $http =~ s{%%SDK%%}{$size{sdk} // '32k'}e;
    $http =~ s{%%CB%%}{$size{cb} // '1m'}e;
    $http =~ s{%%M%%}{$size{metrics} // '256k'}e;

    $t->write_config($t->standard_http(extra_http => $http,
                                       extra_server => $SERVER),
                     worker_processes => 2);
}

# an SDK request signed like the V1 SDKs sign it; the nonce is used up
# once every check passed, then the tenant's limit (one a minute) refuses
# it before any upstream call
sub sdk {
    my ($t, $nonce) = @_;

    return $t->sdk_v1($ID, $SECRET, Action => 'CheckResult',
                      MerchantBizId => 'store01',
                      TransactionId => 'a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5',
                      SignatureNonce => $nonce);
}

sub metric {
    my ($t, $name, $zone) = @_;
    my ($v) = $t->get('/metrics')->{body}
              =~ /^\Q$name\E\{zone="\Q$zone\E",kind="[^"]+"\} (\S+)$/m;
    return $v;
}


my $t = IdvTest->new;

open my $fh, '>', $t->testdir . '/tenant.keys' or die;
print $fh "acme $ID $SECRET\n";
close $fh;
chmod 0600, $t->testdir . '/tenant.keys';

$t->start_mock;
config($t);
$t->start_nginx;
$t->keep_alive(1);


# --- a zone full of nonces -------------------------------------------------

my $r = sdk($t, 'nonce-0');
isnt($r->{status}, 503, 'a verified request uses up its nonce');
$r = sdk($t, 'nonce-00');
is($r->{json}{Code}, 'Gateway.Throttled',
   'the next one too, and its tenant\'s limit refuses it after that');

my ($used, $full) = (2, undef);

for my $i (1 .. 2000) {
    $r = sdk($t, "nonce-$i");

    if ($r->{status} == 503) {
        $full = $r;
        last;
    }

    $used++;
}

ok($full, "the zone is full after $used nonces");
is($full->{status}, 503, 'a full zone: 503');
is($full->{json}{Code}, 'Gateway.StateFull', 'a full zone: Gateway.StateFull');
like($full->{json}{Message} // '', qr/no room/, 'a full zone: a Message');
unlike($full->{json}{Message} // '', qr/nonce-/,
       'the Message does not echo the request');

$r = sdk($t, 'nonce-0');
is($r->{json}{Code}, 'SignatureNonceUsed',
   'the first nonce is still remembered: a nonce is never evicted');
$r = sdk($t, 'nonce-' . ($used - 2));
is($r->{json}{Code}, 'SignatureNonceUsed', 'and so is the last one');

like($t->error_log,
     qr/\[error\] .*idv sdk_nonce zone "nonces" is full: the entries it must keep leave no room/,
     'the [error] names the zone and its kind');
unlike($t->error_log, qr/nonce-\d+ /, 'the log does not show nonces');

cmp_ok(metric($t, 'idv_zone_used_ratio', 'nonces'), '>', 0.8,
       'metrics: the zone is nearly all used');
cmp_ok(metric($t, 'idv_store_full_total', 'nonces'), '>=', 1,
       'metrics: the full zone is counted');
is(metric($t, 'idv_store_evictions_total', 'nonces'), 0,
   'metrics: nothing was evicted');
ok(defined metric($t, 'idv_zone_used_ratio', 'callbacks'),
   'metrics: the callback zone is reported too');


# --- reload ----------------------------------------------------------------

ok($t->reload, 'a reload with the same sizes');

$r = sdk($t, 'nonce-0');
is($r->{json}{Code}, 'SignatureNonceUsed', 'after a reload: nonces remembered');
$r = sdk($t, 'nonce-fresh');
is($r->{json}{Code}, 'Gateway.StateFull', 'after a reload: still full');


# a resize is refused, for a callback zone, a nonce zone and the metrics
# zone alike;
# neither "nginx -t" nor "nginx -s reload" (which only sends the signal)
# can tell: the refusal is in error.log only

for my $case ([ 'callbacks', 'callback', cb => '2m', 1048576, 2097152 ],
              [ 'nonces', 'sdk_nonce', sdk => '64k', 32768, 65536 ],
              [ 'idv_metrics', 'metrics', metrics => '512k', 262144, 524288 ])
{
    my ($zone, $kind, $which, $size, $from, $to) = @$case;

    config($t, $which => $size);

    my ($rc) = $t->nginx_t;
    is($rc, 0, "$zone resized: nginx -t passes (it knows no running zone)");

    my $before = length $t->error_log;

    # nginx's own signal process leaves its first pool to exit(): not a
    # leak of the module's to report
    local $ENV{ASAN_OPTIONS} = ($ENV{ASAN_OPTIONS} // '') . ':detect_leaks=0';

    my $out = IdvTest::_capture($t->nginx_binary, '-p', $t->testdir . '/',
                                '-c', $t->testdir . '/nginx.conf',
                                '-e', $t->testdir . '/error.log',
                                '-s', 'reload');
    is($? >> 8, 0, "$zone resized: nginx -s reload exits 0");
    is($out, '', "$zone resized: nginx -s reload prints nothing");

    my $why = qr/\[emerg\] .*idv \Q$kind\E zone "\Q$zone\E" cannot change its size from $from to $to bytes on reload: its entries would be lost/;
    my $log = '';

    for (1 .. 100) {
        $log = substr($t->error_log, $before);
        last if $log =~ $why;
        select undef, undef, undef, 0.05;
    }

    like($log, $why, "$zone resized: error.log says why, naming the zone");
    unlike($log, qr/start worker process/,
           "$zone resized: the running configuration stays");

    $r = sdk($t, 'nonce-0');
    is($r->{json}{Code}, 'SignatureNonceUsed',
       "$zone resized: the old zones still serve");
}

$t->ignore_log(qr/cannot change its size/, qr/zone "nonces" is full/);

$t->keep_alive(0);
$t->stop;


# --- configuration ---------------------------------------------------------

my $c = IdvTest->new;

for my $case (
    [ 'a name used by two kinds of zone',
      "idv_callback_zone zone=one:1m;\n    idv_sdk_zone zone=one:1m;",
      qr/zone "one" is already declared \(as an idv callback zone\)/ ],
    [ 'no zone=', 'idv_callback_zone ttl=1d;',
      qr/"idv_callback_zone" must have the "zone=NAME:SIZE" parameter/ ],
    [ 'a zone too small', 'idv_sdk_zone zone=small:16k;',
      qr/zone "small" of "idv_sdk_zone" is too small, the minimum is 32k/ ],
    [ 'a malformed zone', 'idv_sdk_zone zone=nosize;',
      qr/invalid "zone=nosize" in "idv_sdk_zone", expected "zone=NAME:SIZE"/ ],
)
{
    my ($name, $text, $re) = @$case;

    $c->write_config($c->standard_http(extra_http => $text));
    my ($rc, $out) = $c->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr/\[emerg\] $re/, "$name: the [emerg] says why");
}

done_testing;
