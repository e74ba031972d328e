# Limits: leaky buckets in the keyed store per tenant (idv_limit
# key=tenant) and per product for the whole account (key=product).  Exact
# under concurrency from several workers; a refused request gets 429
# Gateway.Throttled with Retry-After and RateLimit-* headers and never
# reaches the upstream; counters survive a reload; a bucket is never
# evicted, and a zone without room for a new one refuses the request (503
# Gateway.StateFull); upstream throttling makes the account back off.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use POSIX ();
use Time::HiRes qw(sleep time);


my %Q = (MerchantBizId => 'lim0001', TransactionId => 'tx-limits');
my %INIT = (MerchantBizId => 'lim0002', MerchantUserId => 'u1',
            DocType => '01000000', MetaInfo => '{}');

my $HTTP = <<'END';
    idv_limit_zone zone=tenants:1m;
    idv_limit_zone zone=ceiling:1m;
    idv_limit_zone zone=backoff:1m;
    idv_limit_zone zone=kept:64k;
    idv_limit_zone zone=tiny:32k;

    map $idv_tenant $tenant_rate {
        default  1r/m;
        vip      1000r/s;
        exempt   "";
        typo     fast;
    }

    log_format limits '$idv_tenant $status $idv_limit_status $msec '
                      '$request_time';
END

my $SERVER = <<'END';
        idv_tenant $http_x_tenant;
        access_log %%TESTDIR%%/limits.log limits;

        location = /_idv_fast {
            internal;
            return 200 '{"RequestId":"fast","Code":"Success","Result":{}}';
        }

        location = /acc/result {
            idv_action CheckResult;
            idv_limit zone=tenants rate=10r/s burst=5 nodelay;
        }

        location = /map/result {
            idv_action CheckResult;
            idv_pass /_idv_fast;
            idv_limit zone=tenants rate=$tenant_rate burst=1 nodelay;
        }

        location = /ceiling/ocr {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_limit zone=tenants rate=1r/m nodelay;
            idv_limit zone=ceiling rate=1r/m burst=2 nodelay key=product;
        }

        location = /tenant-only/ocr {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_limit zone=tenants rate=1r/m nodelay;
        }

        location = /headers/result {
            idv_action CheckResult;
            idv_limit zone=tenants rate=1r/m burst=2 nodelay;
            idv_limit_headers on;
        }

        location = /dry/result {
            idv_action CheckResult;
            idv_limit zone=tenants rate=1r/m nodelay;
            idv_limit_dry_run on;
        }

        location = /dry-check/result {
            idv_action CheckResult;
            idv_limit zone=tenants rate=1r/m burst=1 nodelay;
        }

        location = /delay/result {
            idv_action CheckResult;
            idv_pass /_idv_fast;
            idv_limit zone=tenants rate=5r/s burst=2;
        }

        location = /backoff/ocr {
            idv_action Initialize;
            idv_product_code ID_OCR;
            idv_limit zone=backoff rate=10r/s burst=5 nodelay key=product;
        }

        location = /kept/result {
            idv_action CheckResult;
            idv_limit zone=kept rate=1r/m burst=1 nodelay;
        }

        location = /tiny/result {
            idv_action CheckResult;
            idv_pass /_idv_fast;
            idv_limit zone=tiny rate=1r/m nodelay;
            idv_limit_log_level info;
        }
END


# --- nginx -t: every mistake is an [emerg] that says what to do -----------

{
    my $c = IdvTest->new;

    my $conf = sub {
        my ($http, $server) = @_;
        $c->write_config($c->standard_http(extra_http => $http,
                                           extra_server => $server));
        return $c->nginx_t;
    };

    my @bad = (
        [ 'undeclared zone', '',
          'location /x { idv_limit zone=nowhere rate=1r/s; }',
          qr/zone "nowhere", which is not declared: add "idv_limit_zone/ ],
        [ 'bad rate', 'idv_limit_zone zone=z:1m;',
          'idv_limit zone=z rate=fast;', qr/invalid rate "rate=fast"/ ],
        [ 'rate too high', 'idv_limit_zone zone=z:1m;',
          'idv_limit zone=z rate=50001r/s;', qr/at most 50000r\/s/ ],
        [ 'no rate', 'idv_limit_zone zone=z:1m;',
          'idv_limit zone=z burst=5;', qr/needs "rate="/ ],
        [ 'bad key', 'idv_limit_zone zone=z:1m;',
          'idv_limit zone=z rate=1r/s key=ip;', qr/invalid key "key=ip"/ ],
        [ 'bad burst', 'idv_limit_zone zone=z:1m;',
          'idv_limit zone=z rate=1r/s burst=-1;', qr/invalid burst/ ],
        [ 'duplicate rule', 'idv_limit_zone zone=z:1m;',
          "idv_limit zone=z rate=1r/s;\nidv_limit zone=z rate=2r/s;",
          qr/same key is duplicate/ ],
        [ 'zone below 8 pages', 'idv_limit_zone zone=z:16k;', '',
          qr/is too small, the minimum is 32k/ ],
        [ 'zone without size', 'idv_limit_zone zone=z;', '',
          qr/expected "zone=NAME:SIZE"/ ],
        [ 'zone twice', "idv_limit_zone zone=z:1m;\nidv_limit_zone zone=z:1m;",
          '', qr/zone "z" is already declared \(as an idv limit zone\)/ ],
        [ 'zone in a server', '', 'idv_limit_zone zone=z:1m;',
          qr/"idv_limit_zone" directive is not allowed here/ ],
    );

    for my $case (@bad) {
        my ($name, $http, $server, $re) = @$case;
        my ($rc, $out) = $conf->($http, $server);
        isnt($rc, 0, "nginx -t refuses: $name");
        like($out, qr/\[emerg\].*$re/, "the [emerg] says why: $name");
    }

    my ($rc, $out) = $conf->('idv_limit_zone zone=z:1m; '
                             . 'idv_limit_zone zone=a:32k;',
                             'idv_limit zone=z rate=$arg_r burst=3; '
                             . 'idv_limit zone=z rate=600r/m key=product; '
                             . 'idv_limit zone=a rate=50r/s key=account '
                             . 'nodelay;');
    is($rc, 0, 'nginx -t accepts variable rates, r/m, and several keys')
        or diag $out;
}


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(extra_http => $HTTP,
                                   extra_server => $SERVER),
                 worker_processes => 2);
$t->start_nginx;

sub limits_log { IdvTest::_slurp($t->testdir . '/limits.log') // '' }

# the access log lines of a tenant; nginx writes a line after the answer
# has gone, so wait for the $n expected
sub lines_of {
    my ($tenant, $n) = @_;
    my @lines;
    for (1 .. 100) {
        @lines = grep { /^\Q$tenant\E / } split /\n/, limits_log();
        last if @lines >= $n;
        sleep 0.02;
    }
    return @lines;
}


# --- accuracy under concurrency -------------------------------------------

# $clients forked clients per tenant share a schedule of $per_sec requests
# a second for each tenant during $secs; returns, per tenant, the statuses
# and the span between the first and the last request sent
sub offer {
    my ($path, $per_sec, $secs, $clients, @tenants) = @_;

    my $n = int($per_sec * $secs);
    my $t0 = time + 0.3;
    my @kids;

    for my $tenant (@tenants) {
        for my $c (0 .. $clients - 1) {
            pipe(my $rd, my $wr) or die "pipe: $!";
            my $pid = fork // die "fork: $!";

            unless ($pid) {
                close $rd;
                $t->keep_alive(0);
                my @out;
                for (my $j = $c; $j < $n; $j += $clients) {
                    my $at = $t0 + $j / $per_sec;
                    my $wait = $at - time;
                    sleep($wait) if $wait > 0;
                    my $sent = time;
                    my $r = $t->post($path, \%Q, 'X-Tenant' => $tenant);
                    push @out, "$r->{status} $sent";
                }
                print $wr map { "$_\n" } @out;
                close $wr;
                POSIX::_exit(0);
            }

            close $wr;
            push @kids, [$pid, $rd, $tenant];
        }
    }

    my %res;

    for my $k (@kids) {
        my ($pid, $rd, $tenant) = @$k;
        my $res = $res{$tenant} //= { status => {}, first => 9e9, last => 0 };
        while (my $line = <$rd>) {
            my ($status, $sent) = split ' ', $line;
            $res->{status}{$status}++;
            $res->{first} = $sent if $sent < $res->{first};
            $res->{last} = $sent if $sent > $res->{last};
        }
        close $rd;
        waitpid($pid, 0);
    }

    return \%res;
}

{
    $t->mock_reset;

    # rate=10r/s burst=5 nodelay, 4 clients offering 50 r/s per tenant for
    # 5 s: an empty bucket admits burst + 1, then 10 a second

    my $res = offer('/acc/result', 50, 5, 2, 'acc-a', 'acc-b');

    my $passed = 0;

    for my $tenant ('acc-a', 'acc-b') {
        my $r = $res->{$tenant};
        my $pass = $r->{status}{200} // 0;
        my $refused = $r->{status}{429} // 0;
        # the window the limiter saw: from the first request's arrival
        # at nginx to the last one's ($msec - $request_time in the access
        # log), not the client's send times, which a loaded machine
        # delays by different amounts
        my @start = sort { $a <=> $b }
                    map { my @f = split; $f[3] - $f[4] }
                    lines_of($tenant, 250);
        is(scalar @start, 250, "$tenant: every request in the access log");
        my $span = $start[-1] - $start[0];
        my $expect = 6 + 10 * $span;

        $passed += $pass;

        # under the sanitizers nginx is several times slower
        my $tol = $ENV{ASAN_OPTIONS} ? 4 : 2;

        cmp_ok(abs($pass - $expect), '<=', $tol,
               "$tenant: 10r/s burst=5 admits 6 + 10/s over the "
               . "window (55 ± $tol over 5 s)")
            or diag sprintf('passed %d, expected %.1f over %.3f s',
                            $pass, $expect, $span);
        diag sprintf('%s: %d passed, %d refused, window %.3f s '
                     . '(client: %.3f s)', $tenant, $pass, $refused, $span,
                     $r->{last} - $r->{first})
            if $ENV{TEST_VERBOSE};

        is($pass + $refused, 250,
           "$tenant: every request is either passed or refused with 429");
    }

    is($t->mock_stats->{calls}, $passed,
       'the upstream got exactly the passed calls, from both workers');

    my %pids = map { $_ => 1 }
               $t->error_log =~ /\[error\] (\d+)#\d+: .*idv_limit: limiting/g;
    diag('refusals came from ' . scalar(keys %pids) . ' worker(s)')
        if $ENV{TEST_VERBOSE};
}


# --- two tenants are isolated ---------------------------------------------

{
    my $r;

    $r = $t->post('/tenant-only/ocr', \%INIT, 'X-Tenant' => 'iso-a');
    is($r->{status}, 200, 'isolation: tenant A passes');
    $r = $t->post('/tenant-only/ocr', \%INIT, 'X-Tenant' => 'iso-a');
    is($r->{status}, 429, 'isolation: tenant A is then over its limit');
    $r = $t->post('/tenant-only/ocr', \%INIT, 'X-Tenant' => 'iso-b');
    is($r->{status}, 200, 'isolation: tenant B still passes');
}


# --- per-tenant rates from a map ------------------------------------------

{
    my @s = map { $t->post('/map/result', \%Q, 'X-Tenant' => 'basic')
                    ->{status} } 1 .. 3;
    is("@s", '200 200 429', 'map: the default 1r/m burst=1 admits two');

    # 20 ms apart, 1000r/s drains the bucket between any two requests

    @s = map { sleep 0.02;
               $t->post('/map/result', \%Q, 'X-Tenant' => 'vip')->{status} }
         1 .. 5;
    is("@s", join(' ', (200) x 5), 'map: vip gets its own rate, 1000r/s');

    @s = map { $t->post('/map/result', \%Q, 'X-Tenant' => 'exempt')
                 ->{status} } 1 .. 10;
    is("@s", join(' ', (200) x 10), 'map: an empty rate exempts the tenant');
    is(join(',', map { (split)[2] } lines_of('exempt', 10)),
       join(',', ('-') x 10), 'map: $idv_limit_status is empty when exempt');

    @s = map { $t->post('/map/result', \%Q, 'X-Tenant' => 'typo')->{status} }
         1 .. 10;
    is("@s", join(' ', (200) x 10),
       'map: an invalid rate does not lock the tenant out');
    my @inv = $t->error_log =~ /idv_limit: invalid rate "fast" from "\$tenant_rate"/g;
    is(scalar @inv, 1, 'map: an invalid rate is logged once');
}


# --- the account-wide ceiling per product ---------------------------------

{
    my @s = map {
        $t->post('/ceiling/ocr', \%INIT, 'X-Tenant' => "ceil-$_")->{status}
    } 1 .. 3;
    is("@s", '200 200 200', 'ceiling: three tenants fill burst=2 of ID_OCR');

    $t->mock_reset;

    my $r = $t->post('/ceiling/ocr', \%INIT, 'X-Tenant' => 'ceil-4');
    is($r->{status}, 429, 'ceiling: a fourth tenant is over the ceiling');
    like($r->{json}{Message}, qr/this product across all tenants/,
         'ceiling: the message names the product ceiling');
    is($t->mock_stats->{calls}, 0, 'ceiling: nothing reached the upstream');

    $r = $t->post('/tenant-only/ocr', \%INIT, 'X-Tenant' => 'ceil-4');
    is($r->{status}, 200,
       'ceiling: the refused request took nothing from the tenant bucket');
    $r = $t->post('/tenant-only/ocr', \%INIT, 'X-Tenant' => 'ceil-4');
    is($r->{status}, 429, 'ceiling: ... which the next request spends');
    like($r->{json}{Message}, qr/for this tenant/,
         'ceiling: the message names the tenant limit');
}


# --- the 429: body and headers; headers on successes ----------------------

{
    $t->mock_reset;

    my @r = map { $t->post('/headers/result', \%Q, 'X-Tenant' => 'hdr') }
            1 .. 4;

    is(join(' ', map { $_->{status} } @r), '200 200 200 429',
       'headers: 1r/m burst=2 admits three');

    is($r[0]{headers}{'ratelimit-limit'}, 3,
       'headers: RateLimit-Limit is burst + 1');
    is(join(' ', map { $_->{headers}{'ratelimit-remaining'} } @r),
       '2 1 0 0', 'headers: RateLimit-Remaining counts down');
    is(join(' ', map { $_->{headers}{'ratelimit-reset'} } @r),
       '60 120 180 180', 'headers: RateLimit-Reset: seconds to drain');
    ok(!exists $r[0]{headers}{'retry-after'},
       'headers: no Retry-After on a success');

    my $x = $r[3];
    is($x->{headers}{'retry-after'}, 60, '429: Retry-After is 60 s at 1r/m');
    is($x->{headers}{'ratelimit-limit'}, 3, '429: RateLimit-Limit');
    is($x->{json}{Code}, 'Gateway.Throttled', '429: Code Gateway.Throttled');
    like($x->{json}{RequestId}, qr/^[0-9a-f]{32}$/, '429: a RequestId');
    is($x->{json}{Gateway}{action}, 'CheckResult', '429: Gateway.action');
    is($x->{json}{Gateway}{tenant}, 'hdr', '429: Gateway.tenant');
    is($x->{json}{Gateway}{attempts}, 0, '429: no upstream attempt');
    like($x->{headers}{'content-type'}, qr{^application/json},
         '429: JSON');
    is($t->mock_stats->{calls}, 3, '429: the refused call never went out');
    # (at 1r/m a bucket drains a thousandth of a request each 60 ms: a
    # slow run shows 2.99x)
    like($t->error_log, qr/\[error\] .*idv_limit: limiting requests, excess: (?:3\.000|2\.9\d\d) by zone "tenants", key=tenant, tenant "hdr", product "CheckResult"/,
         '429: logged at the default level, error');

    # without idv_limit_headers, only refusals carry them

    my $r = $t->post('/acc/result', \%Q, 'X-Tenant' => 'plain');
    is($r->{status}, 200, 'headers off: a success');
    ok(!exists $r->{headers}{'ratelimit-limit'},
       'headers off: no RateLimit headers on a success');
    $r = $t->post('/tenant-only/ocr', \%INIT, 'X-Tenant' => 'iso-a');
    is($r->{status}, 429, 'headers off: a refusal');
    ok(exists $r->{headers}{'ratelimit-remaining'}
       && $r->{headers}{'retry-after'} >= 1,
       'headers off: a refusal has Retry-After and RateLimit headers');

    is_deeply([map { (split)[2] } lines_of('hdr', 4)],
              [qw(PASSED PASSED PASSED REJECTED)],
              '$idv_limit_status: PASSED, then REJECTED');
}


# --- dry run ---------------------------------------------------------------

{
    $t->mock_reset;

    my @s = map { $t->post('/dry/result', \%Q, 'X-Tenant' => 'dry')
                    ->{status} } 1 .. 3;
    is("@s", '200 200 200', 'dry run: nothing is refused');
    is($t->mock_stats->{calls}, 3, 'dry run: every call went out');
    is_deeply([map { (split)[2] } lines_of('dry', 3)],
              [qw(PASSED REJECTED_DRY_RUN REJECTED_DRY_RUN)],
              'dry run: $idv_limit_status tells what would have happened');
    like($t->error_log, qr/idv_limit: limiting requests, dry run, .*tenant "dry"/,
         'dry run: the would-be refusal is logged');

    # the same bucket (zone, key, product) with room for one more: what
    # the dry run would have refused was not counted

    is($t->post('/dry-check/result', \%Q, 'X-Tenant' => 'dry')->{status},
       200, 'dry run: requests it would have refused were not counted');
    is($t->post('/dry-check/result', \%Q, 'X-Tenant' => 'dry')->{status},
       429, 'dry run: ... what passed was');
}


# --- burst without nodelay: delayed, not refused --------------------------

{
    my $r1 = $t->post('/delay/result', \%Q, 'X-Tenant' => 'slow');
    my $start = time;
    my $r2 = $t->post('/delay/result', \%Q, 'X-Tenant' => 'slow');
    my $took = time - $start;

    is("$r1->{status} $r2->{status}", '200 200',
       'delay: both requests pass');
    cmp_ok($took, '>=', 0.15,
           'delay: the second waits about 1/rate (200 ms at 5r/s)');
    is_deeply([map { (split)[2] } lines_of('slow', 2)], [qw(PASSED DELAYED)],
              'delay: $idv_limit_status is DELAYED');
    like($t->error_log, qr/\[warn\] .*idv_limit: delaying request, excess: (?:0\.9\d\d|1\.000) by zone "tenants"/,
         'delay: logged one level below refusals');
}


# --- no tenant, no request -------------------------------------------------

{
    my $r = $t->post('/acc/result', \%Q);
    is($r->{status}, 400, 'idv_tenant set but empty: 400');
    is($r->{json}{Code}, 'Gateway.TenantRequired',
       'idv_tenant set but empty: Gateway.TenantRequired');
}


# --- upstream throttling: the product bucket backs off ---------------------

{
    $t->mock_reset;
    $t->mock_fault(mode => 'throttle', action => 'Initialize');

    my $r = $t->post('/backoff/ocr', \%INIT, 'X-Tenant' => 'bo');
    is($r->{status}, 429, 'backoff: the upstream throttles');
    is($r->{json}{Code}, 'Throttling.Api', 'backoff: with its own code');

    $r = $t->post('/backoff/ocr', \%INIT, 'X-Tenant' => 'bo-other');
    is($r->{status}, 429, 'backoff: the gateway now refuses the product');
    is($r->{json}{Code}, 'Gateway.Throttled',
       'backoff: refused by the gateway');
    is($r->{headers}{'retry-after'}, 1, 'backoff: for one second');
    is($t->mock_stats->{calls}, 1, 'backoff: nothing more went upstream');

    sleep 1.3;

    $r = $t->post('/backoff/ocr', \%INIT, 'X-Tenant' => 'bo');
    is($r->{status}, 200, 'backoff: the product resumes after a second')
        or diag $r->{body};

    like($t->error_log, qr/idv_limit: upstream throttling, backing off, .*zone "backoff", key=product/,
         'backoff: logged');
}


# --- a full zone refuses with 503 and never evicts a bucket ----------------

{
    my $r = $t->post('/tiny/result', \%Q, 'X-Tenant' => 'many-0000');
    is($r->{status}, 200, 'tiny zone: the first tenant passes');

    # at 1r/m every bucket is kept for a minute, until it has drained:
    # other tenants fill the zone until it has no room for a new one

    my ($passed, $full) = (1, undef);

    for my $i (1 .. 999) {
        $r = $t->post('/tiny/result', \%Q,
                      'X-Tenant' => sprintf('many-%04d', $i));
        if ($r->{status} != 200) {
            $full = $r;
            last;
        }
        $passed++;
    }

    ok($full, 'tiny zone: a new tenant is refused once the zone is full');
    cmp_ok($passed, '>=', 50, 'tiny zone: 32k holds at least 50 buckets')
        or diag "$passed passed";
    is($full->{status}, 503, 'tiny zone: refused with 503');
    is($full->{json}{Code}, 'Gateway.StateFull',
       'tiny zone: Code Gateway.StateFull');
    is($full->{headers}{'retry-after'}, 1, 'tiny zone: Retry-After: 1');
    like($t->error_log, qr/\[error\] .*idv limit zone "tiny" is full: the entries it must keep leave no room/,
         'tiny zone: an [error] names the zone');
    my @f = split ' ', (lines_of(sprintf('many-%04d', $passed), 1))[0] // '';
    is("@f[0 .. 2]", sprintf('many-%04d 503 -', $passed),
       'tiny zone: $idv_limit_status is empty for the refused request');

    is($t->post('/tiny/result', \%Q, 'X-Tenant' => 'many-0000')->{status},
       429, 'tiny zone: the first tenant is still limited (never evicted)');
    is($t->post('/tiny/result', \%Q, 'X-Tenant' => 'many-0001')->{status},
       429, 'tiny zone: and so is the second');
    is($t->post('/tiny/result', \%Q, 'X-Tenant' => 'many-new')->{status},
       503, 'tiny zone: a new tenant is still refused');
    unlike($t->error_log, qr/evicted/, 'tiny zone: nothing was evicted');
}


# --- reload keeps the counters; a resized zone is refused ------------------

{
    my @s = map { $t->post('/kept/result', \%Q, 'X-Tenant' => 'k1')
                    ->{status} } 1 .. 3;
    is("@s", '200 200 429', 'reload: 1r/m burst=1 admits two');

    ok($t->reload, 'reload: the same configuration');

    is($t->post('/kept/result', \%Q, 'X-Tenant' => 'k1')->{status}, 429,
       'reload: the counters survive');
    is($t->post('/kept/result', \%Q, 'X-Tenant' => 'k2')->{status}, 200,
       'reload: another tenant still passes');

    (my $server = $SERVER) =~ s/zone=kept:64k/zone=kept:128k/;
    (my $http = $HTTP) =~ s/zone=kept:64k/zone=kept:128k/;
    $t->write_config($t->standard_http(extra_http => $http,
                                       extra_server => $server),
                     worker_processes => 2);

    ok(!$t->reload, 'resize: the reload is refused');
    like($t->error_log,
         qr/\[emerg\] .*idv limit zone "kept" cannot change its size from 65536 to 131072 bytes on reload: its entries would be lost; keep the old size, or restart nginx/,
         'resize: a clear [emerg]');
    $t->ignore_log(qr/idv limit zone "kept" cannot change its size/);

    is($t->post('/kept/result', \%Q, 'X-Tenant' => 'k1')->{status}, 429,
       'resize: the running configuration and its counters stay');
}

$t->stop;

done_testing;
