# The TransactionId cache: Initialize is idempotent per (tenant,
# ProductCode, MerchantBizId) within ttl, concurrent duplicates make one
# upstream call, other parameters under the same key are a conflict, a
# failed call is never kept, and a TransactionId can be read only by the
# tenant that started it.  Entries survive a reload; a full zone evicts
# and says so once, it never fails a request.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);


my $META = '{"deviceType":"h5","ua":"Mozilla/5.0"}';

my $UPSTREAM = <<'END';
            internal;
            proxy_pass https://idv_mock/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $idv_host;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name localhost;
            subrequest_output_buffer_size 256k;
            proxy_read_timeout 3s;
END

sub http_conf {
    my ($t, %o) = @_;

    my $size = $o{size} // '1m';

    return $t->standard_http(extra_http => <<"END", extra_server => <<"END");
    idv_cache_zone zone=idv_tx:$size;
    idv_cache_zone zone=idv_short:1m ttl=2s;
    idv_cache_zone zone=idv_tiny:32k;
    idv_tenancy_zone zone=idv_owners:1m;

    log_format idv_cache '\$idv_cache_status \$idv_merchant_biz_id \$status';
END
        idv_tenant \$http_x_tenant;
        idv_cache idv_tx;
        idv_cache_results 1m;

        access_log %%TESTDIR%%/cache.log idv_cache;

        location = /idv/short/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            idv_cache idv_short;
        }

        location = /idv/short/result {
            idv_action CheckResult;
            idv_cache idv_short;
            idv_cache_strict on;
        }

        location = /idv/tiny/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            idv_cache idv_tiny;
        }

        location = /idv/impatient/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            idv_cache_wait 300ms;
        }

        location = /idv/fragile/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            idv_pass /_idv_fragile;
        }

        location = /idv/uncached/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            idv_cache off;
        }

        location = /idv/strict/result {
            idv_action CheckResult;
            idv_cache_strict on;
        }

        location = /idv/fresh/result {
            idv_action CheckResult;
            idv_cache_results off;
        }

        location = /_idv_fragile {
$UPSTREAM
            proxy_next_upstream off;
        }
END
}


# an Initialize as tenant $tenant
sub init {
    my ($t, $tenant, $biz, %o) = @_;

    my $path = delete $o{path} // '/idv/ekyc/initialize';

    return $t->post($path, { MerchantBizId => $biz, MerchantUserId => 'u-1',
                             DocType => '01000000', MetaInfo => $META, %o },
                    'X-Tenant' => $tenant);
}


sub result {
    my ($t, $tenant, $biz, $txid, %o) = @_;

    my $path = delete $o{path} // '/idv/result';

    return $t->post($path, { MerchantBizId => $biz, TransactionId => $txid,
                             %o },
                    'X-Tenant' => $tenant);
}


# run $code in $n processes at once; their answers, as JSON
sub concurrently {
    my ($n, $code, %o) = @_;

    my @kids;

    for my $i (1 .. $n) {
        pipe(my $rd, my $wr) or die "pipe: $!";

        my $pid = fork // die "fork: $!";

        unless ($pid) {
            close $rd;
            sleep($o{stagger} * $i) if $o{stagger};
            my $r = eval { $code->($i) };
            my $out = $r ? { status => $r->{status}, json => $r->{json},
                             retry_after => $r->{headers}{'retry-after'} }
                         : { status => 0, error => "$@" };
            print $wr encode_json($out);
            close $wr;
            POSIX::_exit(0);
        }

        close $wr;
        push @kids, [$pid, $rd];
    }

    my @out;

    for my $k (@kids) {
        my ($pid, $rd) = @$k;
        local $/;
        my $text = <$rd>;
        close $rd;
        waitpid($pid, 0);
        push @out, decode_json($text || '{"status":0}');
    }

    return @out;
}


sub cache_log {
    my ($t, $biz) = @_;
    my $text = IdvTest::_slurp($t->testdir . '/cache.log') // '';
    return map { (split / /)[0] } grep { / \Q$biz\E / } split /\n/, $text;
}


sub count { my ($v, @l) = @_; return scalar grep { $_ eq $v } @l }


# nginx's worker processes
sub workers {
    my ($t) = @_;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        my ($pid, $ppid) = $line =~ /^(\d+) \(.*\) \S (\d+)/ or next;
        push @pids, $pid if $ppid == $t->nginx_pid;
    }
    return @pids;
}


my $t = IdvTest->new;
$t->start_mock;
$t->write_config(http_conf($t), worker_processes => 2);
$t->start_nginx;


# --- idempotency ---------------------------------------------------------

$t->mock_reset;
my $r1 = init($t, 'acme', 'retry01');
my $r2 = init($t, 'acme', 'retry01');

is($r1->{status}, 200, 'first Initialize: 200') or diag $r1->{body};
is($r2->{status}, 200, 'retried Initialize: 200') or diag $r2->{body};
is($t->mock_stats->{calls}, 1, 'a retried Initialize makes no upstream call');
is($r2->{json}{Result}{TransactionId}, $r1->{json}{Result}{TransactionId},
   'a retry gets the same TransactionId');
is($r2->{json}{Result}{$_}, $r1->{json}{Result}{$_}, "a retry gets the same $_")
    for qw(TransactionUrl Protocol ClientCfg);
is($r2->{json}{RequestId}, $r1->{json}{RequestId},
   'a retry gets the original upstream RequestId');
is($r2->{json}{Code}, 'Success', 'a retry: Code Success');
ok(!$r1->{json}{Gateway}{cached}, 'the first answer: Gateway.cached false');
ok($r2->{json}{Gateway}{cached}, 'the retry: Gateway.cached true');
is($r2->{json}{Gateway}{attempts}, 0, 'the retry: no attempt upstream');
like($r2->{headers}{age} // '', qr/^\d+$/, 'the retry carries Age');

my @s = cache_log($t, 'retry01');
is_deeply(\@s, ['MISS', 'HIT'], '$idv_cache_status: MISS, then HIT');

$t->mock_reset;
my $other = init($t, 'globex', 'retry01');
is($other->{status}, 200, 'same MerchantBizId, other tenant: 200');
isnt($other->{json}{Result}{TransactionId}, $r1->{json}{Result}{TransactionId},
     'same MerchantBizId, other tenant: its own transaction');
my $ocr = init($t, 'acme', 'retry01', path => '/idv/ocr/initialize');
isnt($ocr->{json}{Result}{TransactionId}, $r1->{json}{Result}{TransactionId},
     'same MerchantBizId, other ProductCode: its own transaction');
is($t->mock_stats->{calls}, 2, 'other tenant and other product: upstream');

$t->mock_reset;
my $c = init($t, 'acme', 'retry01', MerchantUserId => 'u-2');
is($c->{status}, 409, 'other parameters under the same key: 409');
is($c->{json}{Code}, 'Gateway.IdempotencyConflict',
   'other parameters: Gateway.IdempotencyConflict');
is($t->mock_stats->{calls}, 0, 'a conflict makes no upstream call');
$c = init($t, 'acme', 'retry01');
is($c->{json}{Result}{TransactionId}, $r1->{json}{Result}{TransactionId},
   'after a conflict, the original parameters still get their transaction');

$t->mock_reset;
my $u1 = init($t, 'acme', 'nocache01', path => '/idv/uncached/initialize');
my $u2 = init($t, 'acme', 'nocache01', path => '/idv/uncached/initialize');
is($t->mock_stats->{calls}, 2, 'idv_cache off: every Initialize goes upstream');


# --- ttl ----------------------------------------------------------------

$t->mock_reset;
my $e1 = init($t, 'acme', 'ttl01', path => '/idv/short/initialize');
my $e2 = init($t, 'acme', 'ttl01', path => '/idv/short/initialize');
is($e2->{json}{Result}{TransactionId}, $e1->{json}{Result}{TransactionId},
   'ttl=2s: the same transaction within ttl');
result($t, 'acme', 'ttl01', $e1->{json}{Result}{TransactionId},
       path => '/idv/short/result');
sleep 2.3;
my $e3 = init($t, 'acme', 'ttl01', path => '/idv/short/initialize');
is($e3->{status}, 200, 'after ttl: 200');
isnt($e3->{json}{Result}{TransactionId}, $e1->{json}{Result}{TransactionId},
     'after ttl: a new transaction');
is($t->mock_stats->{calls}, 3,
   'after ttl: a new upstream call (and the CheckResult)');
my $e4 = result($t, 'acme', 'ttl01', $e1->{json}{Result}{TransactionId},
                path => '/idv/short/result');
is($e4->{status}, 200, 'after ttl the owner is still known (strict mode)')
    or diag $e4->{body};
ok($e4->{json}{Gateway}{cached},
   'after ttl a final result kept before is still there');
is(result($t, 'globex', 'ttl01', $e1->{json}{Result}{TransactionId},
          path => '/idv/short/result')->{status},
   403, 'after ttl another tenant is still refused');


# --- single flight --------------------------------------------------------

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 800, action => 'Initialize');

my @all = concurrently(20, sub { init($t, 'acme', 'flight01') });

is(scalar(grep { $_->{status} == 200 } @all), 20,
   '20 concurrent duplicates: all 200')
    or diag explain [map { $_->{status} } @all];
my %tx = map { ($_->{json}{Result}{TransactionId} // 'none') => 1 } @all;
is(scalar(keys %tx), 1, '20 concurrent duplicates: one TransactionId');
is($t->mock_stats->{calls}, 1, '20 concurrent duplicates: one upstream call');
is(scalar(grep { $_->{json}{Gateway}{cached} } @all), 19,
   '19 of them: Gateway.cached true');

@s = cache_log($t, 'flight01');
is(count('MISS', @s), 1, 'one MISS: the flight');
is(count('SHARED', @s) + count('HIT', @s), 19,
   'the others SHARED (waited) or HIT');
ok(count('SHARED', @s) >= 1, 'some waited for the flight');

# the wait is bounded

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 1200, action => 'Initialize');

my @busy = concurrently(2, sub {
    init($t, 'acme', 'busy01', path => '/idv/impatient/initialize')
}, stagger => 0.2);

my ($ok) = grep { $_->{status} == 200 } @busy;
my ($late) = grep { $_->{status} != 200 } @busy;
ok($ok, 'the flight answers 200');
is($late->{status}, 409, 'past idv_cache_wait: 409');
is($late->{json}{Code}, 'Gateway.IdempotencyInProgress',
   'past idv_cache_wait: Gateway.IdempotencyInProgress');
is($late->{retry_after}, 1, 'past idv_cache_wait: Retry-After');
my $b3 = init($t, 'acme', 'busy01', path => '/idv/impatient/initialize');
is($b3->{json}{Result}{TransactionId}, $ok->{json}{Result}{TransactionId},
   'the retry after 409 gets the flight\'s transaction');
is($t->mock_stats->{calls}, 1, 'one upstream call in all');
is_deeply([cache_log($t, 'busy01')], ['BUSY', 'MISS', 'HIT'],
          '$idv_cache_status: BUSY for the one that gave up');


# --- failures are not kept ----------------------------------------------

$t->mock_reset;
$t->mock_fault(mode => 'status', status => 500, code => 'InternalError',
               action => 'Initialize');
my $f1 = init($t, 'acme', 'fail01');
is($f1->{status}, 500, 'upstream error: passed on');
my $f2 = init($t, 'acme', 'fail01');
is($f2->{status}, 200, 'after an upstream error: the next call succeeds');
ok(!$f2->{json}{Gateway}{cached}, 'after an upstream error: not cached');
is($t->mock_stats->{calls}, 2, 'an upstream error is not cached');

# waiters of a failed flight get its error; no call of their own

$t->mock_reset;
$t->mock_fault(mode => 'timeout', delay_ms => 700, action => 'Initialize');

my @failed = concurrently(5, sub {
    init($t, 'acme', 'fail02', path => '/idv/fragile/initialize')
}, stagger => 0.05);

is(scalar(grep { $_->{status} == 502 } @failed), 5,
   'a failed flight: all its waiters get 502')
    or diag explain [map { $_->{status} } @failed];
is(scalar(grep { ($_->{json}{Code} // '') eq 'Gateway.UpstreamError' }
           @failed), 5, 'a failed flight: the same code for all');
is($t->mock_stats->{calls}, 1, 'a failed flight: one upstream call');
@s = cache_log($t, 'fail02');
is(count('MISS', @s), 1, 'a failed flight: one MISS');
is(count('SHARED', @s), 4, 'a failed flight: four SHARED');

my $f3 = init($t, 'acme', 'fail02', path => '/idv/fragile/initialize');
is($f3->{status}, 200, 'after a failed flight a new request goes upstream');
is($t->mock_stats->{calls}, 2, 'after a failed flight: a second call');

# a client that goes away releases its flight

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 600, action => 'Initialize');
{
    my $body = encode_json({ MerchantBizId => 'gone01',
                             MerchantUserId => 'u-1', DocType => '01000000',
                             MetaInfo => $META });
    my $gone = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                   PeerPort => $t->port, Proto => 'tcp')
        or die "connect: $@";
    print $gone "POST /idv/ekyc/initialize HTTP/1.1\r\nHost: x\r\n"
                . "X-Tenant: acme\r\nContent-Type: application/json\r\n"
                . "Content-Length: " . length($body) . "\r\n\r\n$body";
    sleep 0.2;
    close $gone;
}
sleep 0.8;
my $g = init($t, 'acme', 'gone01');
is($g->{status}, 200, 'after the client of a flight went away: 200');

# a worker that dies with a flight: the next request takes it over at once

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 1500, action => 'Initialize');
my ($victim) = concurrently(1, sub {
    my $pid = fork // die;
    unless ($pid) { init($t, 'acme', 'crash01'); POSIX::_exit(0) }
    sleep 0.4;
    kill 'KILL', workers($t);
    waitpid($pid, 0);
    return { status => 1 };
});
sleep 0.3;
my $t0 = time;
my $k = init($t, 'acme', 'crash01');
is($k->{status}, 200, 'a flight whose worker died: taken over');
ok(time - $t0 < 5, 'a flight whose worker died: no wait for it');
is($t->mock_stats->{calls}, 2, 'a flight whose worker died: a new call');
$t->ignore_log(qr/exited on signal 9/);


# --- ownership ----------------------------------------------------------

$t->mock_reset;
my $own = init($t, 'acme', 'own01');
my $txid = $own->{json}{Result}{TransactionId};

$t->mock_reset;
my $x = result($t, 'globex', 'own01', $txid);
is($x->{status}, 403, 'CheckResult by another tenant: 403');
is($x->{json}{Code}, 'Forbidden.Tenant', 'another tenant: Forbidden.Tenant');
is($t->mock_stats->{calls}, 0, 'another tenant: no upstream call');
is_deeply([grep { $_ ne '-' } cache_log($t, 'own01')], ['MISS'],
          'refused by tenancy before the cache looked: no cache status');

my $y = result($t, 'acme', 'own01', $txid);
is($y->{status}, 200, 'CheckResult by the owner: 200') or diag $y->{body};
is($t->mock_stats->{calls}, 1, 'the owner: upstream');

$t->mock_reset;
my $unknown = 'f' x 32;
my $n1 = result($t, 'globex', 'x01', $unknown);
is($n1->{status}, 200, 'an unknown TransactionId: upstream (not strict)');
my $n2 = result($t, 'globex', 'x01', $unknown, path => '/idv/strict/result');
is($n2->{status}, 403, 'idv_cache_strict: an unknown TransactionId, 403');
is($n2->{json}{Code}, 'Forbidden.Tenant',
   'idv_cache_strict: the same code as for another tenant\'s');
my $n3 = result($t, 'globex', 'own01', $txid, path => '/idv/strict/result');
is($n3->{status}, 403, 'idv_cache_strict: another tenant\'s, 403');
my $n4 = result($t, 'acme', 'own01', $txid, path => '/idv/strict/result');
is($n4->{status}, 200, 'idv_cache_strict: the owner, 200');
ok($n4->{json}{Gateway}{cached},
   'idv_cache_strict: the owner gets the final result kept before');
is($t->mock_stats->{calls}, 1, 'idv_cache_strict: refusals make no call');

# an EkycVerify TransactionId is owned too

$t->mock_reset;
my $ev = $t->post('/idv/ekyc/verify', {
    MerchantBizId => 'ev01', MerchantUserId => 'u-1', DocType => '00000001',
    FacePictureUrl => 'https://img.example/face.jpg',
    IdOcrPictureUrl => 'https://img.example/id.jpg' }, 'X-Tenant' => 'acme');
is($ev->{status}, 200, 'EkycVerify: 200') or diag $ev->{body};
my $evtx = $ev->{json}{Result}{TransactionId};
is(result($t, 'globex', 'ev01', $evtx)->{status}, 403,
   'an EkycVerify TransactionId: refused to another tenant');
is(result($t, 'acme', 'ev01', $evtx, path => '/idv/strict/result')->{status},
   200, 'an EkycVerify TransactionId: its owner passes strict mode');


# --- final CheckResult answers -------------------------------------------

$t->mock_reset;
my $fin = init($t, 'acme', 'res01');
my $ftx = $fin->{json}{Result}{TransactionId};

$t->mock_complete(transactionId => $ftx, passed => 'P');
my $p1 = result($t, 'acme', 'res01', $ftx);
my $p2 = result($t, 'acme', 'res01', $ftx);
is($p1->{json}{Result}{Passed}, 'P', 'a pending result');
ok(!$p2->{json}{Gateway}{cached}, 'a pending result is not cached');

$t->mock_complete(transactionId => $ftx, passed => 'Y');
my $q1 = result($t, 'acme', 'res01', $ftx);
my $q2 = result($t, 'acme', 'res01', $ftx);
is($q2->{status}, 200, 'a final result again: 200');
ok($q2->{json}{Gateway}{cached}, 'a final result: cached');
ok($q2->{json}{Gateway}{passed}, 'a cached result: Gateway.passed');
is($q2->{json}{Result}{Passed}, 'Y', 'a cached result: Passed');
is($q2->{json}{RequestId}, $q1->{json}{RequestId},
   'a cached result: the upstream envelope as it was');
is($t->mock_stats->{calls}, 4, 'a final result: no second call');

my $img = result($t, 'acme', 'res01', $ftx, IsReturnImage => 'Y');
ok(!$img->{json}{Gateway}{cached}, 'IsReturnImage=Y: never from the cache');
my $fr = result($t, 'acme', 'res01', $ftx, path => '/idv/fresh/result');
ok(!$fr->{json}{Gateway}{cached}, 'idv_cache_results off: upstream');
is(result($t, 'globex', 'res01', $ftx)->{status}, 403,
   'a cached result is not given to another tenant');


# --- a full zone ----------------------------------------------------------

$t->mock_reset;
my @tiny = map { init($t, 'acme', sprintf('tiny%03d', $_),
                      path => '/idv/tiny/initialize') } 1 .. 120;
is(scalar(grep { $_->{status} == 200 } @tiny), 120,
   'a full zone: every Initialize still answers 200');
my $log = $t->error_log;
my $reports = () = $log =~ /idv cache zone "idv_tiny" is full/g;
is($reports, 1, 'a full zone: eviction is reported once a minute');

$t->mock_reset;
my $old = init($t, 'acme', 'tiny001', path => '/idv/tiny/initialize');
isnt($old->{json}{Result}{TransactionId}, $tiny[0]{json}{Result}{TransactionId},
     'a full zone: the oldest entry was evicted');
my $new = init($t, 'acme', 'tiny120', path => '/idv/tiny/initialize');
is($new->{json}{Result}{TransactionId}, $tiny[-1]{json}{Result}{TransactionId},
   'a full zone: the newest entry is kept');
is($t->mock_stats->{calls}, 1, 'a full zone: one call for the evicted one');


# --- reload ---------------------------------------------------------------

$t->mock_reset;
my $before = init($t, 'acme', 'reload01');
my $rtx = $before->{json}{Result}{TransactionId};
ok($t->reload, 'reload');
my $after = init($t, 'acme', 'reload01');
is($after->{json}{Result}{TransactionId}, $rtx,
   'after a reload: the same transaction');
ok($after->{json}{Gateway}{cached}, 'after a reload: cached');
is(result($t, 'globex', 'reload01', $rtx)->{status}, 403,
   'after a reload: ownership is remembered');
is($t->mock_stats->{calls}, 1, 'after a reload: no second call');

$t->write_config(http_conf($t, size => '2m'), worker_processes => 2);
ok(!$t->reload, 'a reload that resizes the zone is refused');
$t->ignore_log(qr/idv cache zone "idv_tx" cannot change its size/);
my $why = 'idv cache zone "idv_tx" cannot change its size from 1048576 '
          . 'to 2097152 bytes on reload';
like($t->error_log, qr/\[emerg\].*\Q$why\E/, 'the [emerg] says why');
$after = init($t, 'acme', 'reload01');
is($after->{json}{Result}{TransactionId}, $rtx,
   'after a refused reload: the entries are still there');

$t->ignore_log(qr/upstream prematurely closed/);
$t->stop;


# --- configuration --------------------------------------------------------

my $c2 = IdvTest->new;

for my $case (
    [ 'idv_cache names an undeclared zone', 'idv_cache nozone;',
      qr/"idv_cache nozone" names no zone/ ],
    [ 'idv_cache_strict (idv_tenancy_strict) without idv_tenancy_zone',
      'idv_cache_strict on;',
      qr/"idv_tenancy_strict" needs "idv_tenancy_zone zone=NAME:SIZE"/ ],
    [ 'ownership= is now idv_tenancy_zone\'s',
      'idv_cache_zone zone=z:1m ttl=1h ownership=10m;',
      qr/"ownership=" is gone from "idv_cache_zone".*"idv_tenancy_zone/,
      'http' ],
    [ 'a zone too small', 'idv_cache_zone zone=z:8k;', qr/too small/, 'http' ],
    [ 'a bad ttl', 'idv_cache_zone zone=z:1m ttl=fast;', qr/invalid "ttl=fast"/,
      'http' ],
)
{
    my ($name, $text, $re, $where) = @$case;

    $c2->write_config($c2->standard_http(
        ($where // '') eq 'http' ? (extra_http => $text)
                                 : (extra_server => $text)));
    my ($rc, $out) = $c2->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr/\[emerg\].*$re/, "$name: the [emerg] says why");
}

done_testing;
