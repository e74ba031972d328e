# Temporary credentials from the ECS instance's RAM role: the metadata
# service in hardened mode (a session token, then the role, then its
# credentials), fetched once and shared, signed with their SecurityToken
# (V3 header, V1 parameter), refreshed when less than five minutes
# remain, never used once expired (503 Gateway.CredentialsUnavailable,
# nothing sent), recovered by themselves, kept across a reload, counted
# in the metrics, and never logged.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use IdvTest;


my $MD = <<'END';
            internal;
            proxy_pass https://idv_mock/;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name localhost;
            proxy_connect_timeout 2s;
            proxy_read_timeout 3s;
END

my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(
    credentials => "idv_credentials_source ecs_ram_role "
                   . "pass=/_idv_metadata/;\n"
                   . "    idv_metrics_zone 256k;",
    extra_server => <<"END"), worker_processes => 2);
        location /_idv_metadata/ {
$MD
        }

        location /_idv_md_rot/ {
$MD
        }

        location /_idv_md_down/ {
$MD
        }

        location /_idv_md_cold/ {
$MD
        }

        location = /idv/v1/result {
            idv_action CheckResult;
            idv_signature v1;
        }

        location = /idv/role/result {
            idv_action CheckResult;
            idv_credentials_source ecs_ram_role pass=/_idv_metadata/
                                   role=idv-gateway-role;
        }

        location = /idv/rot/result {
            idv_action CheckResult;
            idv_credentials_source ecs_ram_role pass=/_idv_md_rot/;
        }

        location = /idv/down/result {
            idv_action CheckResult;
            idv_credentials_source ecs_ram_role pass=/_idv_md_down/;
        }

        location = /idv/cold/result {
            idv_action CheckResult;
            idv_credentials_source ecs_ram_role pass=/_idv_md_cold/;
        }

        location = /metrics { idv_metrics; }
END
$t->start_nginx;

my %Q = (MerchantBizId => 'cred0001', TransactionId => 'tx-cred-0001');

sub sts { $t->mock('POST', '/__mock/sts', {@_}) }
sub counts { $t->mock_stats->{sts}{counts} }

# the key and token the service saw in its last call
sub last_call {
    my $s = $t->mock_stats;
    my $q = $s->{requests}[-1] or return {};
    my %c = (code => $q->{code}, calls => $s->{calls});

    if (($q->{headers}{authorization} // '') =~ /Credential=([^,]+)/) {
        $c{id} = $1;
        $c{token} = $q->{headers}{'x-acs-security-token'};
        ($c{signed}) = $q->{headers}{authorization} =~ /SignedHeaders=([^,]+)/;

    } else {
        $c{id} = $q->{query}{AccessKeyId};
        $c{token} = $q->{query}{SecurityToken};
    }

    return \%c;
}


my %tokens;


# --- the first request fetches, the next ones share ----------------------

my $r = $t->post('/idv/result', \%Q);
is($r->{status}, 200, 'ecs_ram_role: the first request is answered')
    or diag $r->{body};

my $c = counts();
is($c->{'metadata:token'}, 1, 'one metadata session token (PUT)');
is($c->{'metadata:role'}, 1, 'the role was discovered');
is($c->{'metadata:credentials'}, 1, 'one read of the credentials');

my $call = last_call();
is($call->{code}, 'Success', 'the service accepted the temporary key');
like($call->{id} // '', qr/^STS\./, 'signed with the temporary AccessKeyId');
like($call->{signed} // '', qr/(^|;)x-acs-security-token(;|$)/,
     'V3: x-acs-security-token is among the signed headers');
is($call->{id}, $t->mock_stats->{sts}{issued}[-1], 'the key just issued');
$tokens{$call->{token}} = 1;
my $first = $call->{id};

for my $i (1 .. 4) {
    $r = $t->post('/idv/result', \%Q);
    is($r->{status}, 200, "request $i more: answered");
}

is(counts()->{'metadata:credentials'}, 1,
   'the other requests (both workers) used the shared credentials');
is(last_call()->{id}, $first, 'with the same key');


# --- V1: SecurityToken among the signed parameters -----------------------

$r = $t->post('/idv/v1/result', \%Q);
is($r->{status}, 200, 'V1 with the temporary key: answered')
    or diag $r->{body};
$call = last_call();
is($call->{code}, 'Success', 'V1: the mock verified the signature');
is($call->{id}, $first, 'V1: same temporary key');
ok(length($call->{token} // ''), 'V1: SecurityToken sent as a parameter');


# --- role= skips the discovery ------------------------------------------

$r = $t->post('/idv/role/result', \%Q);
is($r->{status}, 200, 'role=NAME: answered') or diag $r->{body};
$c = counts();
is($c->{'metadata:role'}, 1, 'role=NAME: no discovery');
is($c->{'metadata:credentials'}, 2, 'role=NAME: its own zone, its own read');


# --- a reload keeps valid credentials ------------------------------------

ok($t->reload, 'reload');
$r = $t->post('/idv/result', \%Q);
is($r->{status}, 200, 'after the reload: answered');
is(counts()->{'metadata:credentials'}, 2,
   'after the reload: no new fetch');
is(last_call()->{id}, $first, 'after the reload: the same key');


# --- rotation before expiry ----------------------------------------------

# credentials valid for 302 s are due for a refresh within seconds; the
# requests meanwhile go on with the current ones

sts(lifetime => 302);

$r = $t->post('/idv/rot/result', \%Q);
is($r->{status}, 200, 'rotation: first credentials') or diag $r->{body};
my $old = last_call()->{id};
my @status;

my $new = IdvTest::poll(30, sub {
    my $r = $t->post('/idv/rot/result', \%Q);
    push @status, $r->{status};
    my $id = last_call()->{id};
    $tokens{last_call()->{token} // ''} = 1;
    return ($id ne $old) ? $id : undef;
});

ok($new, 'rotation: a new key before the old one expired');
is_deeply([grep { $_ != 200 } @status], [], 'rotation: no request failed');
is(last_call()->{code}, 'Success', 'rotation: the new key is accepted');


# --- the source fails after the first fetch ------------------------------

sts(lifetime => 12, fail => 0);

$r = $t->post('/idv/down/result', \%Q);
is($r->{status}, 200, 'failing source: first credentials (12 s)')
    or diag $r->{body};
my $short = last_call()->{id};

sts(fail => -1);

my @ok;

$r = IdvTest::poll(40, sub {
    my $before = $t->mock_stats->{calls};
    my $r = $t->post('/idv/down/result', \%Q);

    if ($r->{status} == 200) {
        push @ok, last_call()->{id};
        return undef;
    }

    $r->{calls} = $t->mock_stats->{calls} - $before;
    return $r;
});

ok($r, 'failing source: the credentials ran out');
is($r->{status}, 503, 'failing source: then 503') or diag $r->{body};
is($r->{json}{Code}, 'Gateway.CredentialsUnavailable',
   'failing source: Gateway.CredentialsUnavailable');
is($r->{headers}{'retry-after'}, '1', 'failing source: Retry-After');
is($r->{calls}, 0, 'failing source: nothing was sent to the service');
is_deeply([grep { $_ ne $short } @ok], [],
          'failing source: until then the current credentials served');
ok($t->mock_stats->{sts}{failed} > 0, 'failing source: fetches were tried');

sts(fail => 0, lifetime => 3600);

$r = IdvTest::poll(20, sub {
    my $r = $t->post('/idv/down/result', \%Q);
    return $r->{status} == 200 ? $r : undef;
});
ok($r, 'failing source: recovered by itself');
isnt(last_call()->{id}, $short, 'failing source: with new credentials');


# --- the source fails before the first fetch -----------------------------

sts(fail => -1);

my $before = $t->mock_stats->{calls};
$r = $t->post('/idv/cold/result', \%Q);
is($r->{status}, 503, 'no credentials yet, source down: 503');
is($r->{json}{Code}, 'Gateway.CredentialsUnavailable',
   'no credentials yet: Gateway.CredentialsUnavailable');
is($t->mock_stats->{calls}, $before, 'no credentials yet: nothing sent');

sts(fail => 0);

$r = IdvTest::poll(20, sub {
    my $r = $t->post('/idv/cold/result', \%Q);
    return $r->{status} == 200 ? $r : undef;
});
ok($r, 'no credentials yet: recovered once the source answers');


# --- metrics -------------------------------------------------------------

$r = $t->get('/metrics');
is($r->{status}, 200, 'metrics');
like($r->{body},
     qr/^idv_credentials_refreshes_total\{source="ecs_ram_role",zone="[^"]+"\} [1-9]/m,
     'metrics: refreshes counted');
like($r->{body},
     qr/^idv_credentials_failures_total\{source="ecs_ram_role",zone="[^"]+"\} [1-9]/m,
     'metrics: failures counted');
like($r->{body},
     qr/^idv_credentials_expiry_seconds\{source="ecs_ram_role",zone="[^"]+"\} [1-9]\d*$/m,
     'metrics: seconds until expiry');


# --- never logged --------------------------------------------------------

$tokens{$_->{headers}{'x-acs-security-token'} // ''} = 1
    for @{$t->mock_stats->{requests}};
delete $tokens{''};

my $logs = $t->error_log . $t->access_log;
ok(keys %tokens >= 2, 'tokens to look for');
is(scalar(grep { index($logs, $_) >= 0 } keys %tokens), 0,
   'no SecurityToken in error.log or access.log');
like($t->error_log, qr/\[error\].*temporary credentials from ecs_ram_role .* could not be fetched/,
     'a failed fetch is logged at [error]');

$t->ignore_log(qr/temporary credentials from .* could not be fetched/,
               qr/upstream (prematurely closed|sent|timed out)/);

$t->stop;

done_testing;
