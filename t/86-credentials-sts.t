# Temporary credentials from STS: AssumeRoleWithOIDC (RRSA on ACK: the
# token file re-read for each exchange, the official chain's environment
# variables honoured) and AssumeRole (signed with V1 by the level's
# long-lived key, verified by the mock's own signer); the SDK-compatible
# endpoint re-signs with them; nginx -t checks every source's parameters.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(hmac_sha1 sha256_hex);
use MIME::Base64 qw(encode_base64);
use POSIX qw(strftime);
use lib 't/lib';
use IdvTest;


my $ROLE = 'acs:ram::1234567890123456:role/idv-gateway';
my $PROVIDER = 'acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1';

my $STS = <<'END';
        location = /_idv_sts {
            internal;
            proxy_pass https://idv_mock/;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name localhost;
            proxy_connect_timeout 2s;
            proxy_read_timeout 3s;
        }
END

# a tenant's key for the SDK endpoint
my @TENANT = ('LTAIsts000001', 'STS-tenant-s3cret-0123456789');

sub write_file {
    my ($file, $text, $mode) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    chmod $mode // 0644, $file;
}



# --- nginx -t checks each source's parameters ----------------------------

{
    my $t = IdvTest->new;
    my $dir = $t->testdir;
    write_file("$dir/token", "eyJ.token\n");

    my @bad = (
        ['idv_credentials_source ecs_ram_role;',
         qr/needs "pass=URI"/, 'no pass'],
        ['idv_credentials_source ecs_ram_role pass=x;',
         qr/"pass=" takes the URI of an internal location/, 'pass not a URI'],
        ['idv_credentials_source metadata pass=/x;',
         qr/unknown source "metadata"/, 'unknown source'],
        ['idv_credentials_source ecs_ram_role pass=/x role_arn=a;',
         qr/invalid parameter "role_arn=a"/, 'a parameter of another source'],
        ['idv_credentials_source ecs_ram_role pass=/x role=a/b;',
         qr/"role=" .* is not a RAM role name/, 'bad role name'],
        ['idv_credentials_source assume_role pass=/x;',
         qr/needs "role_arn=ARN"/, 'assume_role without role_arn'],
        ['idv_credentials_source assume_role pass=/x role_arn=arn:aws:iam::1:role/x;',
         qr/"role_arn=" is not shaped like a role's ARN/, 'an ARN of another cloud'],
        ['idv_credentials_source assume_role pass=/x role_arn=acs:ram::12:user/x;',
         qr/"role_arn=" is not shaped like a role's ARN/, 'a user ARN'],
        ["idv_credentials_source assume_role pass=/x role_arn=$ROLE duration=5m;",
         qr/"duration=" takes a time from 15m to 12h/, 'duration too short'],
        ["idv_credentials_source assume_role pass=/x role_arn=$ROLE session=a;",
         qr/"session=" takes 2 to 64/, 'session too short'],
        ["idv_credentials_source oidc pass=/x role_arn=$ROLE token_file=$dir/token;",
         qr/needs "provider_arn=ARN" and "token_file=FILE"/, 'oidc without provider'],
        ["idv_credentials_source oidc pass=/x role_arn=$ROLE provider_arn=$ROLE token_file=$dir/token;",
         qr/"provider_arn=" is not shaped like an OIDC provider's ARN/,
         'a role ARN as provider'],
        ["idv_credentials_source oidc pass=/x role_arn=$ROLE provider_arn=$PROVIDER token_file=$dir/none;",
         qr/"token_file=\S+none" cannot be read/, 'token file missing'],
        ["idv_credentials_source ecs_ram_role pass=/x;\n"
         . "    idv_access_key_id a;\n    idv_access_key_secret b;",
         qr/"idv_access_key_id" directive conflicts with "idv_credentials_source"/,
         'a long-lived key beside ecs_ram_role'],
        ["idv_credentials_source assume_role pass=/x role_arn=$ROLE;",
         qr/"idv_credentials_source assume_role" \(\S+\) signs its STS call with a long-lived key/,
         'assume_role without a key'],
        ["idv_credentials_source ecs_ram_role pass=/x;\n"
         . "    idv_credentials_source ecs_ram_role pass=/y;",
         qr/"idv_credentials_source" directive is duplicate/, 'duplicate'],
    );

    for my $b (@bad) {
        my ($cred, $re, $name) = @$b;
        $t->write_config($t->standard_http(credentials => $cred));
        my ($rc, $out) = $t->nginx_t;
        isnt($rc, 0, "nginx -t: $name: refused");
        like($out, $re, "nginx -t: $name: says why");
    }

    $t->write_config($t->standard_http(
        credentials => "idv_credentials_source oidc pass=/x;"));
    my ($rc, $out) = $t->nginx_t(env => {
        ALIBABA_CLOUD_ROLE_ARN => $ROLE,
        ALIBABA_CLOUD_OIDC_PROVIDER_ARN => $PROVIDER,
        ALIBABA_CLOUD_OIDC_TOKEN_FILE => "$dir/token" });
    is($rc, 0, 'nginx -t: oidc from the environment variables') or diag $out;

    ($rc, $out) = $t->nginx_t(env => {
        ALIBABA_CLOUD_ROLE_ARN => 'acs:ram::1:role',
        ALIBABA_CLOUD_OIDC_PROVIDER_ARN => $PROVIDER,
        ALIBABA_CLOUD_OIDC_TOKEN_FILE => "$dir/token" });
    like($out, qr/"role_arn=" is not shaped like/,
         'nginx -t: the environment\'s ARN is checked too');

    $t->write_config($t->standard_http(credentials => ''));
    ($rc, $out) = $t->nginx_t(env => { ALIBABA_CLOUD_ROLE_ARN => $ROLE });
    isnt($rc, 0, 'nginx -t: a role in the environment, no source: refused');
    like($out, qr/declare "idv_credentials_source/,
         'nginx -t: a role in the environment: names the directive');

    $t->write_config($t->standard_http(
        credentials => "idv_credentials_source ecs_ram_role pass=/x;"));
    ($rc, $out) = $t->nginx_t(env => { ALIBABA_CLOUD_ECS_METADATA => 'r1' });
    is($rc, 0, 'nginx -t: the role from ALIBABA_CLOUD_ECS_METADATA')
        or diag $out;
}


# --- AssumeRoleWithOIDC, configured by the environment -------------------

my $t = IdvTest->new;
my $dir = $t->testdir;
my $TOKEN = "$dir/oidc-token";
write_file($TOKEN, "eyJ.first-token\n");
write_file("$dir/tenant.keys", "sts-tenant $TENANT[0] $TENANT[1]\n", 0600);

$t->start_mock;
$t->write_config($t->standard_http(
    credentials => 'idv_credentials_source oidc pass=/_idv_sts;',
    extra_http => <<'END',
    idv_sdk_zone zone=idv_sdk:1m;
    idv_tenant_keys %%TESTDIR%%/tenant.keys;
END
    extra_server => $STS . <<"END"));
        location = / {
            idv_sdk_gateway;
        }

        location = /idv/assume/result {
            idv_action CheckResult;
            idv_access_key_id testid;
            idv_access_key_secret testsecret;
            idv_credentials_source assume_role pass=/_idv_sts
                                   role_arn=$ROLE session=idv-test
                                   duration=20m;
        }

        location = /idv/assume-v1/result {
            idv_action CheckResult;
            idv_signature v1;
            idv_access_key_id testid;
            idv_access_key_secret testsecret;
            idv_credentials_source assume_role pass=/_idv_sts
                                   role_arn=$ROLE session=idv-test
                                   duration=20m;
        }

        location = /idv/assume-bad/result {
            idv_action CheckResult;
            idv_access_key_id testid;
            idv_access_key_secret wrongsecret;
            idv_credentials_source assume_role pass=/_idv_sts
                                   role_arn=$ROLE;
        }
END

sub sts { $t->mock('POST', '/__mock/sts', {@_}) }
sub ststats { $t->mock_stats->{sts} }
sub last_id {
    my $q = $t->mock_stats->{requests}[-1] or return '';
    return (($q->{headers}{authorization} // '') =~ /Credential=([^,]+)/)
           ? $1 : ($q->{query}{AccessKeyId} // '');
}

sts(oidc_token => 'eyJ.first-token', lifetime => 302);

$t->start_nginx(env => {
    ALIBABA_CLOUD_ROLE_ARN => $ROLE,
    ALIBABA_CLOUD_OIDC_PROVIDER_ARN => $PROVIDER,
    ALIBABA_CLOUD_OIDC_TOKEN_FILE => $TOKEN,
    ALIBABA_CLOUD_ROLE_SESSION_NAME => 'rrsa-gateway' });

my %Q = (MerchantBizId => 'sts0001', TransactionId => 'tx-sts-0001');

my $r = $t->post('/idv/result', \%Q);
is($r->{status}, 200, 'oidc: answered') or diag $r->{body};
my $s = ststats();
is($s->{counts}{AssumeRoleWithOIDC}, 1, 'oidc: one AssumeRoleWithOIDC');
is($s->{last}{role_arn}, $ROLE, 'oidc: RoleArn from ALIBABA_CLOUD_ROLE_ARN');
is($s->{last}{provider_arn}, $PROVIDER,
   'oidc: OIDCProviderArn from ALIBABA_CLOUD_OIDC_PROVIDER_ARN');
is($s->{last}{session}, 'rrsa-gateway',
   'oidc: RoleSessionName from ALIBABA_CLOUD_ROLE_SESSION_NAME');
is($s->{last}{duration}, 3600, 'oidc: DurationSeconds 3600 by default');
is($s->{oidc_tokens}[-1], 'eyJ.first-token', 'oidc: the token file\'s token');
is($t->mock_stats->{requests}[-1]{code}, 'Success',
   'oidc: the service accepted the temporary key');
is(last_id(), $s->{issued}[-1], 'oidc: signed with the key STS issued');

# Kubernetes rotates the token: the next exchange reads the new one

write_file($TOKEN, "eyJ.second-token\n");
sts(oidc_token => 'eyJ.second-token');

$r = IdvTest::poll(30, sub {
    my $r = $t->post('/idv/result', \%Q);
    return undef unless $r->{status} == 200;
    return ststats()->{counts}{AssumeRoleWithOIDC} >= 2 ? $r : undef;
});
ok($r, 'oidc: refreshed before expiry');
is(ststats()->{oidc_tokens}[-1], 'eyJ.second-token',
   'oidc: the token file is read again for each exchange');
is(last_id(), ststats()->{issued}[-1], 'oidc: now signed with the new key');


# --- the SDK endpoint re-signs with the temporary credentials ------------

sub enc {
    my ($v) = @_;
    $v =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
    return $v;
}

sub sdk_v1 {
    my (%p) = @_;
    my %q = (%p, Action => 'CheckResult', Version => '2022-08-09',
             Format => 'json', SignatureMethod => 'HMAC-SHA1',
             SignatureVersion => '1.0', AccessKeyId => $TENANT[0],
             SignatureNonce => sha256_hex(rand . time),
             Timestamp => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime));
    my $cq = join '&', map { enc($_) . '=' . enc($q{$_}) } sort keys %q;
    $q{Signature} = encode_base64(hmac_sha1('POST&%2F&' . enc($cq),
                                            "$TENANT[1]&"), '');
    return '/?' . join '&', map { enc($_) . '=' . enc($q{$_}) } keys %q;
}

sts(lifetime => 3600);

$r = $t->request('POST', sdk_v1(%Q), '');
is($r->{status}, 200, 'SDK endpoint: answered') or diag $r->{body};
is($r->{json}{Code}, 'Success', 'SDK endpoint: the service\'s answer');
my $q = $t->mock_stats->{requests}[-1];
like(($q->{headers}{authorization} // '') =~ /Credential=([^,]+)/ ? $1 : '',
     qr/^STS\./, 'SDK endpoint: re-signed with the temporary key');
ok(length($q->{headers}{'x-acs-security-token'} // ''),
   'SDK endpoint: with its token');


# --- AssumeRole: signed with the level's long-lived key ------------------

$r = $t->post('/idv/assume/result', \%Q);
is($r->{status}, 200, 'assume_role: answered') or diag $r->{body};
$s = ststats();
is($s->{counts}{AssumeRole}, 1, 'assume_role: one AssumeRole');
is($s->{last}{access_key_id}, 'testid',
   'assume_role: signed by the long-lived key (the mock verified V1)');
is($s->{last}{role_arn}, $ROLE, 'assume_role: RoleArn');
is($s->{last}{session}, 'idv-test', 'assume_role: session=');
is($s->{last}{duration}, 1200, 'assume_role: duration=20m');
is(last_id(), $s->{issued}[-1], 'assume_role: the call used the STS key');
isnt(last_id(), 'testid', 'assume_role: not the long-lived key');

$r = $t->post('/idv/assume-v1/result', \%Q);
is($r->{status}, 200, 'assume_role, V1: answered') or diag $r->{body};
$q = $t->mock_stats->{requests}[-1];
is($q->{sig}, 'v1', 'assume_role, V1: a V1 call');
is($q->{code}, 'Success', 'assume_role, V1: SecurityToken signed');
is(ststats()->{counts}{AssumeRole}, 1,
   'assume_role, V1: the same source shares its zone');

my $before = $t->mock_stats->{calls};
$r = $t->post('/idv/assume-bad/result', \%Q);
is($r->{status}, 503, 'assume_role, wrong key: 503');
is($r->{json}{Code}, 'Gateway.CredentialsUnavailable',
   'assume_role, wrong key: Gateway.CredentialsUnavailable');
is($t->mock_stats->{calls}, $before, 'assume_role, wrong key: nothing sent');
like($t->error_log, qr/STS answered code "SignatureDoesNotMatch"/,
     'assume_role, wrong key: STS\'s code is logged');
unlike($t->error_log, qr/wrongsecret|testsecret|second-token/,
       'no secret or OIDC token in error.log');

$t->ignore_log(qr/temporary credentials from .* could not be fetched/);

$t->stop;

done_testing;
