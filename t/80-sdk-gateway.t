# The SDK-compatible endpoint: requests signed the way the official SDKs
# sign them (V3 ACS3-HMAC-SHA256 or ACS3-HMAC-SM3, V1 HMAC-SHA1) with a tenant key from
# idv_tenant_keys are verified like the service verifies them, run through
# the gateway as that tenant, re-signed with the master key and answered
# with the service's bytes.  Requests crafted here pin every refusal; the
# official Node SDK core (t/sdk, installed by npm ci) proves that
# unchanged SDK code works by changing only its endpoint and key.

use strict;
use warnings;
use utf8;

use Test::More;
use lib 't/lib';
use IdvTest;
use IdvImages qw(jpeg b64);

use Digest::SHA qw(sha256_hex hmac_sha256_hex hmac_sha1);
use Fcntl qw(:flock);
use IPC::Open2 qw(open2);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(strftime);


my $JSON = JSON::PP->new->utf8->canonical;

# tenant => [AccessKeyId, AccessKeySecret]; secrets with the characters
# a signer could get wrong
my %KEY = (
    acme    => ['LTAIacme0001', 'ACME+s3cret/0123456789=abcdef'],
    beta    => ['LTAIbeta0001', 'BETA-s3cret-0123456789abcdef'],
    limited => ['LTAIlim00001', 'LIM~s3cret.0123456789abcdefg'],
);

my $KEYS = <<"END";
# tenant   AccessKeyId       AccessKeySecret                  actions
acme       $KEY{acme}[0]     $KEY{acme}[1]
beta       $KEY{beta}[0]     $KEY{beta}[1]      # all actions

limited    $KEY{limited}[0]  $KEY{limited}[1]  CheckResult,Id2MetaVerifyIntl
END

my $META = '{"apdidToken":"","appName":"com.example.app",'
           . '"bioMetaInfo":"4.1.0:1150000,0","deviceType":"ios"}';
my $FACE = b64(jpeg(800, 600, 30_000));
my $IDOCR = b64(jpeg(1280, 960, 12_000));


# --- a small signer of our own, independent of the module's -------------

sub enc {
    my ($s) = @_;
    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub form {
    my ($h) = @_;
    return join '&', map { enc($_) . '=' . enc($h->{$_}) } sort keys %$h;
}

sub iso_time { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + ($_[0] // 0))) }

my $NONCE = 0;
sub nonce { sha256_hex($$ . time . ++$NONCE . rand) }

# SM3 and HMAC-SM3 in lower hex, by the openssl command (no Perl module
# has SM3), independent of the module's libcrypto calls
sub openssl_sm3 {
    my ($data, $key) = @_;

    my @cmd = ('openssl', 'dgst', '-sm3', '-r');
    push @cmd, '-mac', 'HMAC', '-macopt', 'hexkey:' . unpack('H*', $key)
        if defined $key;

    my $pid = open2(my $out, my $in, @cmd);
    binmode $in;
    print $in $data;
    close $in;
    my $line = <$out> // '';
    waitpid($pid, 0);

    $line =~ /^([0-9a-f]{64}) / or die "@cmd: $line";
    return $1;
}

sub sm3_hex { openssl_sm3($_[0]) }
sub hmac_sm3_hex { openssl_sm3($_[0], $_[1]) }

# sign(%o) -> {query, body, headers}: o = v (v3, sm3: V3 with
# ACS3-HMAC-SM3, v1), tenant (or id and
# secret), action, query, body (hash or undef: no form body), host, time
# offset, nonce, version, unsigned => [header names left out of
# SignedHeaders]
sub sign {
    my (%o) = @_;

    my ($id, $secret) = $o{tenant} ? @{$KEY{$o{tenant}}}
                                   : ($o{id}, $o{secret});
    my $date = $o{date} // iso_time($o{offset});
    my $nonce = $o{nonce} // nonce();
    my $version = $o{version} // '2022-08-09';
    my $body = defined $o{body} ? form($o{body}) : '';
    my %headers;

    $headers{'content-type'} = 'application/x-www-form-urlencoded'
        if defined $o{body};

    if (($o{v} // 'v3') eq 'v1') {
        my %q = (%{$o{query} // {}}, Action => $o{action},
                 Version => $version, Format => 'json', Timestamp => $date,
                 SignatureNonce => $nonce, SignatureMethod => 'HMAC-SHA1',
                 SignatureVersion => '1.0', AccessKeyId => $id);
        my $cq = form({%q, %{$o{body} // {}}});
        $q{Signature} = encode_base64(hmac_sha1('POST&%2F&' . enc($cq),
                                                "$secret&"), '');

        return { query => form(\%q), body => $body, headers => \%headers,
                 nonce => $nonce };
    }

    # SM3 hashes the body into x-acs-content-sha256 too, as the SDKs do
    my ($alg, $hash, $hmac) = ($o{v} // 'v3') eq 'sm3'
        ? ('ACS3-HMAC-SM3', \&sm3_hex, \&hmac_sm3_hex)
        : ('ACS3-HMAC-SHA256', \&sha256_hex, \&hmac_sha256_hex);

    my %h = (%headers,
             host => $o{host}, 'x-acs-action' => $o{action},
             'x-acs-version' => $version, 'x-acs-date' => $date,
             'x-acs-signature-nonce' => $nonce,
             'x-acs-content-sha256' => $hash->($body));

    my %skip = map { $_ => 1 } @{$o{unsigned} // []};
    my @names = grep { !$skip{$_} } sort keys %h;
    my $query = form($o{query} // {});

    my $cr = join "\n", 'POST', '/', $query,
                        join('', map { "$_:$h{$_}\n" } @names),
                        join(';', @names), $hash->($body);
    my $sig = $hmac->("$alg\n" . $hash->($cr), $secret);

    delete $h{host};            # HTTP::Tiny sends the one signed
    $h{authorization} = "$alg Credential=$id,SignedHeaders="
                        . join(';', @names) . ",Signature=$sig";

    return { query => $query, body => $body, headers => \%h,
             nonce => $nonce };
}

sub send_signed {
    my ($t, $s, %o) = @_;
    return $t->request('POST', ($o{path} // '/') . '?' . $s->{query},
                       $s->{body}, %{$s->{headers}});
}

sub call {
    my ($t, %o) = @_;
    my $s = sign(host => '127.0.0.1:' . $t->port, %o);
    return send_signed($t, $s, %o);
}

sub refused {
    my ($r, $status, $code, $name) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    is($r->{status}, $status, "$name: HTTP $status") or diag $r->{body};
    is($r->{json}{Code}, $code, "$name: $code");
    like($r->{json}{RequestId} // '', qr/^[0-9a-f]{32}$/,
         "$name: a RequestId");
    ok(length($r->{json}{Message} // ''), "$name: a Message");
}

sub write_keys {
    my ($t, $text, $mode) = @_;
    my $file = $t->testdir . '/tenant.keys';
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    chmod $mode // 0600, $file;
    return $file;
}

my %CHECK = (MerchantBizId => 'sdk0001', IsReturnImage => 'N',
             TransactionId => '08573be80f944d95ac812e019e3655a8');

my %INIT = (ProductCode => 'eKYC', MerchantBizId => 'sdk0002',
            MerchantUserId => 'user-1', DocType => '01000000',
            MetaInfo => $META);

my %EKYC = (ProductCode => 'eKYC_MIN', MerchantBizId => 'sdk0003',
            MerchantUserId => 'user-2', DocType => '00000001');

my %ID2 = (ProductCode => 'ID_2META', ParamType => 'normal',
           IdentifyNum => '42900119900101821X', UserName => '张三丰');


my $HTTP = <<'END';
    idv_sdk_zone zone=idv_sdk:1m;
    idv_tenant_keys %%TESTDIR%%/tenant.keys;
    log_format sdk '$idv_tenant|$idv_action|$idv_code|$status';

    # the Authorization a request came with (no secret in it), to see
    # which algorithm the SDK signed with (no regex map: under LSan
    # nginx 1.22 reports its PCRE2 contexts as leaked)
    log_format alg '$http_authorization|$idv_code';
END

my $SERVER = <<'END';
        location = / {
            idv_sdk_gateway;
            idv_allow_param FutureField body;
            access_log %%TESTDIR%%/sdk.log sdk;
            access_log %%TESTDIR%%/alg.log alg;
            client_max_body_size 8m;
            client_body_buffer_size 16k;
        }

        location = /small {
            idv_sdk_gateway;
            client_max_body_size 64;
        }

        location = /gone {
            error_page 404 = /_down;
            return 404;
        }

        location = /_down {
            internal;
            proxy_pass http://127.0.0.1:1;
        }
END


my $t = IdvTest->new;
$t->start_mock;
write_keys($t, $KEYS);
$t->write_config($t->standard_http(extra_http => $HTTP,
                                   extra_server => $SERVER),
                 log_level => 'debug');
$t->start_nginx;


# --- accepted: the service's answer, unchanged ----------------------------

for my $v ('v3', 'sm3', 'v1') {
    $t->mock_reset;

    my $r = call($t, v => $v, tenant => 'acme', action => 'CheckResult',
                 query => \%CHECK);
    is($r->{status}, 200, "$v CheckResult: 200") or diag $r->{body};
    is($r->{json}{Code}, 'Success', "$v CheckResult: Success");
    like($r->{json}{RequestId}, qr/^[0-9A-F-]{36}$/,
         "$v CheckResult: the service's RequestId");
    ok(!exists $r->{json}{Gateway},
       "$v CheckResult: the answer has no member of the gateway's");
    is($r->{headers}{'content-type'}, 'application/json;charset=utf-8',
       "$v CheckResult: the service's content type");

    my $up = $t->mock_stats->{requests}[-1];
    is($up->{action}, 'CheckResult', "$v CheckResult: sent upstream");
    is($up->{query}{$_}, $CHECK{$_}, "$v CheckResult: $_ as signed")
        for sort keys %CHECK;
    like($up->{headers}{authorization} // '', qr/Credential=testid,/,
         "$v CheckResult: re-signed with the master key");

    $r = call($t, v => $v, tenant => 'acme', action => 'Id2MetaVerifyIntl',
              query => \%ID2);
    is($r->{status}, 200, "$v Id2MetaVerifyIntl: 200") or diag $r->{body};
    is($r->{json}{Result}{BizCode}, '1', "$v Id2MetaVerifyIntl: BizCode");
    is($t->mock_stats->{requests}[-1]{query}{UserName}, '张三丰',
       "$v Id2MetaVerifyIntl: a UTF-8 value arrives unchanged");

    # images in the form body (bigger than client_body_buffer_size: the
    # body is read back from a temporary file)

    $r = call($t, v => $v, tenant => 'acme', action => 'EkycVerify',
              query => \%EKYC,
              body => { FacePictureBase64 => $FACE,
                        IdOcrPictureBase64 => $IDOCR });
    is($r->{status}, 200, "$v EkycVerify: 200") or diag $r->{body};
    is($r->{json}{Result}{Passed}, 'Y', "$v EkycVerify: Passed");
    my $img = $t->mock_stats->{last_images};
    ok($img->{FacePictureBase64}{in_body}
       && $img->{FacePictureBase64}{encoded_chars} == length $FACE,
       "$v EkycVerify: the face image arrives whole, in the body");

    $r = call($t, v => $v, tenant => 'acme', action => 'Initialize',
              query => \%INIT, body => {});
    is($r->{status}, 200, "$v Initialize: 200") or diag $r->{body};
    like($r->{json}{Result}{TransactionId} // '', qr/^[0-9a-f]{32}$/,
         "$v Initialize: a TransactionId");
}


# a chunked body, as the Node SDK streams it

{
    my $s = sign(host => '127.0.0.1:' . $t->port, tenant => 'beta',
                 action => 'EkycVerify', query => \%EKYC,
                 body => { FacePictureBase64 => $FACE,
                           IdOcrPictureBase64 => $IDOCR });

    my $req = "POST /?$s->{query} HTTP/1.1\r\nHost: 127.0.0.1:"
              . $t->port . "\r\n";
    $req .= "$_: $s->{headers}{$_}\r\n" for sort keys %{$s->{headers}};
    $req .= "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

    for (my $i = 0; $i < length $s->{body}; $i += 5000) {
        my $chunk = substr($s->{body}, $i, 5000);
        $req .= sprintf("%x\r\n%s\r\n", length $chunk, $chunk);
    }

    $req .= "0\r\n\r\n";

    my $reply = $t->raw($req);
    like($reply, qr{^HTTP/1\.1 200 }, 'a chunked body: 200')
        or diag substr($reply, 0, 500);
    like($reply, qr/"Code":"Success"/, 'a chunked body: Success');
}


# --- refused, with the service's codes and statuses -----------------------

$t->mock_reset;

for my $v ('v3', 'sm3', 'v1') {

    # one byte of the query changed after signing
    my $s = sign(v => $v, host => '127.0.0.1:' . $t->port, tenant => 'acme',
                 action => 'CheckResult', query => \%CHECK);
    $s->{query} =~ s/sdk0001/sdk0002/ or die;
    my $r = send_signed($t, $s);
    refused($r, 400, 'SignatureDoesNotMatch', "$v tampered query");

    if ($v eq 'v3') {
        like($r->{json}{Message},
             qr/^Specified signature does not match our calculation\. server StringToSign is \[ACS3-HMAC-SHA256\n[0-9a-f]{64}\]$/,
             'v3 tampered query: the service\'s text, with its digest');
    } elsif ($v eq 'sm3') {
        like($r->{json}{Message},
             qr/^Specified signature does not match our calculation\. server StringToSign is \[ACS3-HMAC-SM3\n[0-9a-f]{64}\]$/,
             'sm3 tampered query: the string to sign names SM3');
    } else {
        is($r->{json}{Message},
           'Specified signature is not matched with our calculation.',
           'v1 tampered query: the service\'s text, no parameters echoed');
    }

    # one byte of the body changed after signing
    $s = sign(v => $v, host => '127.0.0.1:' . $t->port, tenant => 'acme',
              action => 'EkycVerify', query => \%EKYC,
              body => { FacePictureBase64 => $FACE });
    substr($s->{body}, 3000, 1) =~ tr/A-Za-z/B-ZAb-za/;
    refused(send_signed($t, $s), 400, 'SignatureDoesNotMatch',
            "$v tampered body");

    # a parameter added after signing
    $s = sign(v => $v, host => '127.0.0.1:' . $t->port, tenant => 'acme',
              action => 'CheckResult', query => \%CHECK);
    $s->{query} .= '&IsReturnImage=Y';
    refused(send_signed($t, $s), 400, 'InvalidParameter',
            "$v parameter added twice");

    refused(call($t, v => $v, id => $KEY{acme}[0], secret => $KEY{beta}[1],
                 action => 'CheckResult', query => \%CHECK),
            400, 'SignatureDoesNotMatch', "$v wrong secret");

    $r = call($t, v => $v, id => 'LTAIunknown01', secret => $KEY{acme}[1],
              action => 'CheckResult', query => \%CHECK);
    refused($r, 404, 'InvalidAccessKeyId.NotFound', "$v unknown key");
    is($r->{json}{Message}, 'Specified access key is not found.',
       "$v unknown key: the service's text");

    # the same request twice
    $s = sign(v => $v, host => '127.0.0.1:' . $t->port, tenant => 'acme',
              action => 'CheckResult', query => \%CHECK);
    $r = send_signed($t, $s);
    is($r->{status}, 200, "$v replay: the first one passes");
    $r = send_signed($t, $s);
    refused($r, 400, 'SignatureNonceUsed', "$v replayed nonce");
    is($r->{json}{Message}, 'Specified signature nonce was used already.',
       "$v replayed nonce: the service's text");

    # the nonce belongs to its key: another tenant may use the same one
    $r = call($t, v => $v, tenant => 'beta', nonce => $s->{nonce},
              action => 'CheckResult', query => \%CHECK);
    is($r->{status}, 200, "$v another key's nonce is not this key's");

    # a nonce of a refused signature is not used up
    my $n = nonce();
    call($t, v => $v, id => $KEY{acme}[0], secret => 'wrong-secret-000000',
         nonce => $n, action => 'CheckResult', query => \%CHECK);
    $r = call($t, v => $v, tenant => 'acme', nonce => $n,
              action => 'CheckResult', query => \%CHECK);
    is($r->{status}, 200, "$v a forged request does not burn the nonce");

    for my $off (-20 * 60, 20 * 60) {
        $r = call($t, v => $v, tenant => 'acme', offset => $off,
                  action => 'CheckResult', query => \%CHECK);
        refused($r, 400, 'InvalidTimeStamp.Expired',
                "$v timestamp ${off}s off");
    }

    $r = call($t, v => $v, tenant => 'acme', offset => -14 * 60,
              action => 'CheckResult', query => \%CHECK);
    is($r->{status}, 200, "$v a timestamp 14 minutes old passes");

    refused(call($t, v => $v, tenant => 'acme', date => '20/05/2024 08:30',
                 action => 'CheckResult', query => \%CHECK),
            400, 'InvalidTimeStamp.Format', "$v malformed timestamp");

    $r = call($t, v => $v, tenant => 'limited', action => 'Initialize',
              query => \%INIT, body => {});
    refused($r, 403, 'Forbidden.Action', "$v action outside the key's list");

    $r = call($t, v => $v, tenant => 'limited', action => 'CheckResult',
              query => \%CHECK);
    is($r->{status}, 200, "$v an action on the key's list passes");

    $r = call($t, v => $v, tenant => 'acme', action => 'DescribeRegions',
              query => {});
    refused($r, 404, 'InvalidAction.NotFound', "$v unknown action");
    like($r->{json}{Message} // '',
         qr/^The gateway does not know this action: it may be newer than the gateway's operations table/,
         "$v unknown action: the gateway says it does not know it yet");

    refused(call($t, v => $v, tenant => 'acme', action => 'CheckResult',
                 version => '2019-03-07', query => \%CHECK),
            400, 'InvalidVersion', "$v another API version");

    # the gateway's own checks, in its envelope
    $r = call($t, v => $v, tenant => 'acme', action => 'CheckResult',
              query => { %CHECK, Foo => 'bar' });
    refused($r, 400, 'InvalidParameter', "$v unknown parameter");
    is($r->{json}{Gateway}{tenant}, 'acme',
       "$v unknown parameter: the gateway's envelope, for the tenant");

    # a value that is not UTF-8, signed by the client: refused here, not
    # re-signed and sent for the API to answer SignatureDoesNotMatch
    my $calls = $t->mock_stats->{calls};
    $r = call($t, v => $v, tenant => 'acme', action => 'Initialize',
              query => { %INIT, MetaInfo => "{\"a\":\"\xff\xfe\"}" },
              body => {});
    refused($r, 400, 'InvalidParameter', "$v a value that is not UTF-8");
    is($r->{json}{Message}, 'Parameter MetaInfo is not valid UTF-8',
       "$v a value that is not UTF-8: named");
    is($t->mock_stats->{calls}, $calls,
       "$v a value that is not UTF-8: not sent");

    my %no_biz = %INIT;
    delete $no_biz{MerchantBizId};
    $r = call($t, v => $v, tenant => 'acme', action => 'Initialize',
              query => \%no_biz, body => {});
    refused($r, 400, 'MissingParameter', "$v missing parameter");
}

# SM3 is one algorithm throughout: the name, both hashes and the HMAC

{
    my $calls = $t->mock_stats->{calls};

    # an SM3 signature presented as SHA-256, and the reverse
    my $s = sign(v => 'sm3', host => '127.0.0.1:' . $t->port,
                 tenant => 'acme', action => 'CheckResult', query => \%CHECK);
    $s->{headers}{authorization} =~ s/^ACS3-HMAC-SM3 /ACS3-HMAC-SHA256 / or die;
    refused(send_signed($t, $s), 400, 'SignatureDoesNotMatch',
            'an SM3 signature under the SHA-256 name');

    $s = sign(host => '127.0.0.1:' . $t->port, tenant => 'acme',
              action => 'CheckResult', query => \%CHECK);
    $s->{headers}{authorization} =~ s/^ACS3-HMAC-SHA256 /ACS3-HMAC-SM3 / or die;
    refused(send_signed($t, $s), 400, 'SignatureDoesNotMatch',
            'a SHA-256 signature under the SM3 name');

    # the body's SHA-256 in x-acs-content-sha256 of an SM3 request, signed
    # as such: the header must hold the SM3 of the body
    $s = sign(v => 'sm3', host => '127.0.0.1:' . $t->port, tenant => 'acme',
              action => 'EkycVerify', query => \%EKYC,
              body => { FacePictureBase64 => $FACE });
    my $body = $s->{body};
    is($s->{headers}{'x-acs-content-sha256'}, sm3_hex($body),
       'sm3: the signer put the SM3 of the body in x-acs-content-sha256');
    isnt(sm3_hex($body), sha256_hex($body), 'sm3: SM3 is not SHA-256');
    $s->{headers}{'x-acs-content-sha256'} = sha256_hex($body);
    refused(send_signed($t, $s), 400, 'SignatureDoesNotMatch',
            'sm3 with the SHA-256 of the body');

    is($t->mock_stats->{calls}, $calls, 'sm3: no refused request was sent');
}

# idv_allow_param in the SDK location: a field newer than the table is
# taken for every action, sent where the directive says (the SDK put it
# in the query), signed again with the master key

{
    my $r = call($t, tenant => 'acme', action => 'CheckResult',
                 query => { %CHECK, FutureField => 'f1' });
    is($r->{status}, 200, 'idv_allow_param: an SDK request with the field')
        or diag $r->{body};

    my $up = $t->mock_stats->{requests}[-1];
    is($up->{body}{FutureField}, 'f1',
       'idv_allow_param: sent in the body, as the directive says');
    ok(!exists $up->{query}{FutureField}, 'idv_allow_param: not in the query');

    refused(call($t, tenant => 'acme', action => 'CheckResult',
                 query => { %CHECK, OtherField => 'f1' }),
            400, 'InvalidParameter', 'a field not allowed');
}

# a V3 request has no system parameters in its query: a Timestamp there
# is the action's (IdnAuthorityVerifyIntl)

{
    my %idn = (ProductCode => 'IDN_META', MerchantBizId => 'idn01',
               MerchantUserId => 'u-1', BirthDate => '1990-01-01',
               Email => 'e@example.com', FullName => 'Budi',
               IdNumber => '3171234567890001', Mobile => '+6281293671234',
               Timestamp => '1716190000');

    my $r = call($t, tenant => 'acme', action => 'IdnAuthorityVerifyIntl',
                 query => \%idn);
    is($r->{status}, 200, 'v3 IdnAuthorityVerifyIntl: 200') or diag $r->{body};
    is($t->mock_stats->{requests}[-1]{query}{Timestamp}, '1716190000',
       'v3 IdnAuthorityVerifyIntl: its Timestamp passed on');
}

refused(call($t, tenant => 'acme', action => 'CheckResult', query => \%CHECK,
             unsigned => ['host']),
        400, 'IncompleteSignature', 'v3 host not signed');

refused(call($t, tenant => 'acme', action => 'EkycVerify', query => \%EKYC,
             body => { FacePictureBase64 => $FACE },
             unsigned => ['content-type']),
        400, 'IncompleteSignature', 'v3 content-type sent, not signed');

refused($t->post('/?' . form(\%CHECK), ''), 400, 'MissingSignature',
        'no signature at all');

refused($t->post('/?' . form(\%CHECK), '{"a":1}',
                 'Content-Type' => 'application/json'),
        400, 'InvalidParameter', 'a body that is not a form');

refused($t->request('PUT', '/', 'x'), 405, 'UnsupportedHTTPMethod',
        'PUT');

my $r = $t->post('/small?' . form(\%CHECK), 'x' x 1000,
                 'Content-Type' => 'application/x-www-form-urlencoded');
refused($r, 413, 'Gateway.BodyTooLarge',
        "a body over client_max_body_size");

# per version (v3, sm3, v1): the first of a replay, another key's nonce,
# the nonce of a forged request, 14 minutes old, an allowed action
# (and one with idv_allow_param's field, one IdnAuthorityVerifyIntl)
# an error_page redirect clears the modules' contexts: the masked error
# lines still work
$r = $t->get('/gone?UserName=' . enc('李四'));
is($r->{status}, 502, 'an error_page redirect in the SDK server');
like($t->error_log, qr/connect\(\) failed .*request: "GET \/gone"/,
     'its error line shows the request line without the query string');

is($t->mock_stats->{calls}, 3 * 5 + 2,
   'refused requests never reach the service');


# --- the service saw the master key only ----------------------------------

sub master_only {
    my ($t, $name) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $stats = $t->mock_stats;
    my @bad = grep {
        !(($_->{sig} // '') eq 'v3'
          && ($_->{headers}{authorization} // '') =~ /Credential=testid,/)
        && !(($_->{sig} // '') eq 'v1'
             && ($_->{query}{AccessKeyId} // '') eq 'testid')
    } @{$stats->{requests}};

    ok(@{$stats->{requests}} && !@bad,
       "$name: every call upstream is signed with the master key")
        or diag explain \@bad;
    unlike($JSON->encode($stats), qr/LTAI/,
           "$name: no tenant key reaches the service");
    is($stats->{rejected}, 0, "$name: the service accepted every call");
}

master_only($t, 'crafted requests');


# --- logs: the tenant, the action and the code; never a secret ------------

my $sdk_log = IdvTest::_slurp($t->testdir . '/sdk.log') // '';
like($sdk_log, qr/^acme\|CheckResult\|Success\|200$/m,
     'access log: tenant, action and code of a verified request');
like($sdk_log, qr/^-\|CheckResult\|SignatureDoesNotMatch\|400$/m,
     'access log: a refused request has no tenant');
like($sdk_log, qr/^limited\|Initialize\|Forbidden\.Action\|403$/m,
     'access log: a forbidden action');

like($t->error_log, qr/SDK request refused: SignatureNonceUsed, AccessKeyId "LTAIacme0001"/,
     'error log: refusals name the code and the AccessKeyId');
# (at debug level nginx itself logs the request line: see the docs)
unlike(join('', grep { !/^\S+ \S+ \[debug\]/ }
                split /^(?=\d{4}\/\d\d\/\d\d )/m, $t->error_log),
       qr/sdk000[12]|MerchantBizId=|UserName=/,
       'error log: no request parameters in its lines');


# --- a reload reads the key file again ------------------------------------

write_keys($t, "acme $KEY{acme}[0] $KEY{acme}[1]\n"
               . "delta LTAIdelta001 DELTA-s3cret-0123456789abcdef\n");
ok($t->reload, 'reload with a new key file');

$r = call($t, id => 'LTAIdelta001', secret => 'DELTA-s3cret-0123456789abcdef',
          action => 'CheckResult', query => \%CHECK);
is($r->{status}, 200, 'reload: a new key works') or diag $r->{body};
refused(call($t, tenant => 'beta', action => 'CheckResult',
             query => \%CHECK),
        404, 'InvalidAccessKeyId.NotFound', 'reload: a removed key');

write_keys($t, "acme $KEY{acme}[0]\n");
$t->ignore_log(qr/idv_tenant_keys/);
ok(!$t->reload, 'reload with a broken key file is refused');
is(call($t, tenant => 'acme', action => 'CheckResult',
        query => \%CHECK)->{status},
   200, 'the keys in force stay in force');

write_keys($t, $KEYS);
ok($t->reload, 'reload with the first key file');


# --- the official SDK -----------------------------------------------------

sub sdk_setup {
    my $dir = IdvTest->root . '/t/sdk';
    my $probe = "cd '$dir' && node -e "
                . "\"require('\@alicloud/openapi-core');"
                . "require('\@darabonba/typescript')\" >/dev/null 2>&1";

    return 1 if system($probe) == 0;

    return (0, 'npm is not installed')
        if system('command -v npm >/dev/null 2>&1') != 0;

    # one installer at a time, for parallel test runs in this tree
    open my $lock, '>', IdvTest->root . '/t/tmp/sdk-npm.lock' or die;
    flock($lock, LOCK_EX) or die;

    return 1 if system($probe) == 0;

    my $out = IdvTest::_capture('sh', '-c',
        "cd '$dir' && timeout 300 npm ci --ignore-scripts --no-audit "
        . "--no-fund --loglevel=error --fetch-retries=1 "
        . "--fetch-timeout=30000");

    return 1 if $? == 0 && system($probe) == 0;

    my @why = grep { /error (code|FetchError|network)/ } split /\n/, $out;
    @why = (split /\n/, $out)[-2, -1] unless @why;

    return (0, 'npm ci in t/sdk failed (is the npm registry reachable?): '
               . join(' / ', grep { defined } @why[0 .. 1]));
}

sub sdk {
    my ($t, %job) = @_;

    my $file = $t->testdir . '/sdk-job.json';
    open my $fh, '>', $file or die;
    print $fh $JSON->encode(\%job);
    close $fh;

    local $ENV{NODE_EXTRA_CA_CERTS} = IdvTest->certs_dir . '/ca.pem';

    my $out = IdvTest::_capture('node', IdvTest->root . '/t/sdk/client.js',
                                $file);
    my $res = eval { $JSON->decode($out) };

    ok($res, 'the SDK client ran') or diag $out;

    return $res // [];
}

# the parts of an answer that differ from call to call
sub normal {
    my ($body) = @_;

    my %b = %{$body // {}};
    delete $b{RequestId};

    if (ref $b{Result} eq 'HASH') {
        my %res = %{$b{Result}};
        exists $res{$_} and $res{$_} = '*'
            for qw(TransactionId TransactionUrl Protocol);
        $res{ExtBasicInfo} =~ s/"transactionId":"[^"]*"/"transactionId":"*"/
            if defined $res{ExtBasicInfo};
        $b{Result} = \%res;
    }

    return \%b;
}

my ($ready, $why) = sdk_setup();

SKIP: {
    skip "the official SDK is not available: $why", 1 unless $ready;

    my @calls = (
        { action => 'Initialize', query => \%INIT, body => {} },
        { action => 'EkycVerify', query => \%EKYC,
          body => { FacePictureBase64 => $FACE,
                    IdOcrPictureBase64 => $IDOCR } },
        { action => 'CheckResult', query => \%CHECK },
        { action => 'Id2MetaVerifyIntl', query => \%ID2 },
    );

    # sm3: Config.signatureAlgorithm ACS3-HMAC-SM3, compared with a
    # direct V3 call (the mock, like the gateway upstream, speaks SHA-256)

    my $sm3_calls = sub {
        my $alg = IdvTest::_slurp($t->testdir . '/alg.log') // '';
        return scalar(() = $alg =~ /^ACS3-HMAC-SM3 [^|\n]*\|Success$/mg);
    };

    for my $v ('v3', 'sm3', 'v1') {
        $t->mock_reset;

        my $sm3_before = $sm3_calls->();

        my $via = sdk($t, endpoint => '127.0.0.1:' . $t->port,
                      protocol => 'HTTP', signature => $v,
                      accessKeyId => $KEY{acme}[0],
                      accessKeySecret => $KEY{acme}[1], calls => \@calls);

        master_only($t, "SDK $v");

        is($sm3_calls->() - $sm3_before, $v eq 'sm3' ? scalar @calls : 0,
           "SDK $v: " . ($v eq 'sm3' ? 'each call' : 'no call')
           . ' signed with ACS3-HMAC-SM3');

        my $direct = sdk($t, endpoint => 'localhost:' . $t->mock_port,
                         protocol => 'HTTPS',
                         signature => $v eq 'sm3' ? 'v3' : $v,
                         accessKeyId => 'testid',
                         accessKeySecret => 'testsecret', calls => \@calls);

        for my $i (0 .. $#calls) {
            my $name = "SDK $v $calls[$i]{action}";

            ok($via->[$i]{ok}, "$name through the gateway")
                or diag explain $via->[$i];
            is($via->[$i]{statusCode}, 200, "$name: 200");
            is($via->[$i]{body}{Code}, 'Success', "$name: Success");
            ok($direct->[$i]{ok}, "$name: direct call")
                or diag explain $direct->[$i];
            is_deeply(normal($via->[$i]{body}), normal($direct->[$i]{body}),
                      "$name: the same envelope as a direct call");
        }

        # the SDK's own error handling sees the service's codes

        my $err = sdk($t, endpoint => '127.0.0.1:' . $t->port,
                      signature => $v, accessKeyId => $KEY{acme}[0],
                      accessKeySecret => $KEY{beta}[1],
                      calls => [ $calls[2] ]);
        is($err->[0]{name}, 'ClientError', "SDK $v wrong secret: ClientError");
        is($err->[0]{code}, 'SignatureDoesNotMatch',
           "SDK $v wrong secret: SignatureDoesNotMatch");
        is($err->[0]{statusCode}, 400, "SDK $v wrong secret: 400");

        $err = sdk($t, endpoint => '127.0.0.1:' . $t->port,
                   signature => $v, accessKeyId => 'LTAInobody001',
                   accessKeySecret => $KEY{beta}[1], calls => [ $calls[2] ]);
        is($err->[0]{code}, 'InvalidAccessKeyId.NotFound',
           "SDK $v unknown key: InvalidAccessKeyId.NotFound");
        is($err->[0]{statusCode}, 404, "SDK $v unknown key: 404");

        $err = sdk($t, endpoint => '127.0.0.1:' . $t->port,
                   signature => $v, accessKeyId => $KEY{limited}[0],
                   accessKeySecret => $KEY{limited}[1],
                   calls => [ $calls[0], $calls[2] ]);
        is($err->[0]{code}, 'Forbidden.Action',
           "SDK $v forbidden action: Forbidden.Action");
        is($err->[0]{statusCode}, 403, "SDK $v forbidden action: 403");
        ok($err->[1]{ok}, "SDK $v allowed action: accepted");

        # the service's own errors pass through as the service sent them

        $t->mock_fault(mode => 'status', status => 400,
                       code => 'InvalidParameter', action => 'Initialize');
        $err = sdk($t, endpoint => '127.0.0.1:' . $t->port,
                   signature => $v, accessKeyId => $KEY{acme}[0],
                   accessKeySecret => $KEY{acme}[1],
                   calls => [ $calls[0] ]);
        is($err->[0]{code}, 'InvalidParameter',
           "SDK $v service error: the service's code");
        is($err->[0]{statusCode}, 400, "SDK $v service error: its status");
        like($err->[0]{data}{Recommend} // '', qr/^https:/,
             "SDK $v service error: the service's envelope, unchanged");

        $t->mock_fault(mode => 'throttle', action => 'Initialize');
        $err = sdk($t, endpoint => '127.0.0.1:' . $t->port,
                   signature => $v, accessKeyId => $KEY{acme}[0],
                   accessKeySecret => $KEY{acme}[1],
                   calls => [ $calls[0] ]);
        is($err->[0]{name}, 'ThrottlingError',
           "SDK $v throttled by the service: ThrottlingError");
    }
}


# --- no secret in any log -------------------------------------------------

$t->stop;

for my $file (qw(error.log access.log sdk.log nginx.stderr)) {
    my $text = IdvTest::_slurp($t->testdir . "/$file") // '';
    my @leaks = grep { index($text, $_) >= 0 }
                map { $_->[1] } values %KEY;
    push @leaks, 'DELTA-s3cret' if index($text, 'DELTA-s3cret') >= 0;
    push @leaks, 'testsecret' if index($text, 'testsecret') >= 0;
    ok(!@leaks, "$file: no secret (debug level)") or diag "@leaks";
}


# --- the rest of the gateway applies: limits, cache, callbacks, metrics ----

$t = IdvTest->new;
$t->start_mock;
write_keys($t, $KEYS);
$t->write_config($t->standard_http(
    extra_http => $HTTP . <<'END',
    idv_limit_zone zone=sdk_tenants:1m;
    idv_cache_zone zone=sdk_tx:1m;
    idv_tenancy_zone zone=sdk_owners:1m;
    idv_metrics_zone 256k;
END
    extra_server => <<'END'));
        idv_callback_url https://gateway.example/idv/callback;

        location = / {
            idv_sdk_gateway;
            idv_limit zone=sdk_tenants rate=1r/m nodelay;
            idv_cache sdk_tx;
        }

        location = /metrics { idv_metrics; }
END
$t->start_nginx;

my %INIT_B = (%INIT, MerchantBizId => 'sdkB1');

$r = call($t, tenant => 'acme', action => 'Initialize', query => \%INIT_B,
          body => {});
is($r->{status}, 200, 'an SDK Initialize') or diag $r->{body};
my $tx = $r->{json}{Result}{TransactionId};

my $up = $t->mock_stats->{requests}[-1];
is($up->{query}{CallbackUrl}, 'https://gateway.example/idv/callback',
   'callbacks: the gateway adds its CallbackUrl to an SDK Initialize');
like($up->{query}{CallbackToken} // '', qr/^[A-Za-z0-9_-]{40,}$/,
     'callbacks: and a CallbackToken it can verify');

$r = call($t, tenant => 'acme', action => 'Initialize', query => \%INIT_B,
          body => {});
is($r->{status}, 200, 'cache: the SDK retries Initialize (a new nonce)');
is($r->{json}{Result}{TransactionId}, $tx, 'cache: the same transaction');
ok($r->{json}{Gateway}{cached}, 'cache: answered from the cache');
is($t->mock_stats->{calls}, 1, 'cache: no second billable call');

$r = call($t, tenant => 'acme', action => 'Initialize',
          query => { %INIT, MerchantBizId => 'sdkB2' }, body => {});
is($r->{status}, 429, "limits: the tenant's next call is throttled");
is($r->{json}{Code}, 'Gateway.Throttled', 'limits: Gateway.Throttled');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'limits: Retry-After');

$r = call($t, tenant => 'beta', action => 'CheckResult',
          query => { MerchantBizId => 'sdkB1', TransactionId => $tx });
refused($r, 403, 'Forbidden.Tenant',
        "ownership: another tenant cannot read acme's transaction");

$r = call($t, tenant => 'beta', action => 'Initialize',
          query => { %INIT, CallbackUrl => 'https://evil.example/' },
          body => {});
refused($r, 400, 'InvalidParameter',
        'callbacks: a CallbackUrl of the client is refused');

$r = call($t, id => $KEY{beta}[0], secret => 'x' x 20,
          action => 'CheckResult', query => \%CHECK);
is($r->{status}, 400, 'a refused SDK request');

$r = $t->get('/metrics');
like($r->{body},
     qr/^idv_requests_total\{[^}]*action="Initialize"[^}]*code="Success"[^}]*\} 2$/m,
     'metrics: the SDK calls are counted');
like($r->{body},
     qr/^idv_requests_total\{[^}]*action="CheckResult"[^}]*code="SignatureDoesNotMatch"[^}]*\} 1$/m,
     'metrics: and so are the refused ones');

$t->stop;


# --- configuration --------------------------------------------------------

sub conf_error {
    my ($keys, $mode, $extra_http, $server, $re, $name, %o) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $t = IdvTest->new;
    my $file = defined $keys ? write_keys($t, $keys, $mode) : undef;

    $t->write_config($t->standard_http(
        extra_http => $extra_http // $HTTP,
        extra_server => $server // 'location = / { idv_sdk_gateway; }'));

    my ($rc, $out) = $t->nginx_t;

    if ($o{ok}) {
        is($rc, 0, "$name: nginx -t passes") or diag $out;
    } else {
        isnt($rc, 0, "$name: nginx -t fails");
    }

    like($out, $re, "$name: the message") or diag $out;

    my @leaks = grep { index($out, $_) >= 0 } map { $_->[1] } values %KEY;
    ok(!@leaks, "$name: no secret in the message") or diag $out;
}

# whole-file problems name "FILE", a line's FILE:LINE
my $F = qr{"[^"]*/tenant\.keys"};
my $L = qr{/\S*/tenant\.keys};

conf_error("acme $KEY{acme}[0] $KEY{acme}[1]\nbeta $KEY{beta}[0]\n", 0600,
           undef, undef,
           qr/\[emerg\] idv_tenant_keys: $L:2: expected "tenant access_key_id access_key_secret \[Action,...\]"/,
           'a line with two fields');

conf_error("acme $KEY{acme}[0] $KEY{acme}[1] CheckResult extra\n", 0600,
           undef, undef, qr/\[emerg\] idv_tenant_keys: $L:1: expected/,
           'a line with five fields');

conf_error("acme $KEY{acme}[0] $KEY{acme}[1]\n#\n"
           . "beta $KEY{acme}[0] $KEY{beta}[1]\n", 0600, undef, undef,
           qr/\[emerg\] idv_tenant_keys: $L:3: duplicate AccessKeyId "LTAIacme0001" \(first on line 1\)/,
           'a duplicate AccessKeyId');

conf_error("acme $KEY{acme}[0] $KEY{acme}[1] CheckResult,Initialise\n",
           0600, undef, undef,
           qr/\[emerg\] idv_tenant_keys: $L:1: unknown action "Initialise"/,
           'an unknown action');

conf_error("acme $KEY{acme}[0] short-secret\n", 0600, undef, undef,
           qr/\[emerg\] idv_tenant_keys: $L:1: the secret of "LTAIacme0001" is shorter than 16/,
           'a short secret');

conf_error("ac/me $KEY{acme}[0] $KEY{acme}[1]\n", 0600, undef, undef,
           qr/\[emerg\] idv_tenant_keys: $L:1: the tenant may hold only/,
           'a tenant name with a slash');

conf_error("; written on Windows\r\n\r\n"
           . "  acme $KEY{acme}[0] $KEY{acme}[1] CheckResult # inline\r\n",
           0600, undef, undef, qr/test is successful/,
           'CRLF line ends, ";" and "#" comments', ok => 1);

conf_error("# nothing\n", 0600, undef, undef,
           qr/\[emerg\] idv_tenant_keys: $F holds no key/, 'no key');

conf_error(undef, undef, undef, undef,
           qr/\[emerg\] idv_tenant_keys: cannot open/, 'no key file');

conf_error($KEYS, 0644, undef, undef,
           qr/\[warn\] idv_tenant_keys: $F is readable by other users/,
           'a key file readable by others', ok => 1);

conf_error($KEYS, 0600, "idv_tenant_keys %%TESTDIR%%/tenant.keys;",
           undef, qr/"idv_sdk_gateway" needs "idv_sdk_zone/,
           'no nonce zone');

conf_error($KEYS, 0600, "idv_sdk_zone zone=idv_sdk:1m;", undef,
           qr/"idv_sdk_gateway" needs "idv_tenant_keys"/, 'no key file set');

conf_error($KEYS, 0600, undef,
           "location = / { idv_sdk_gateway; idv_action CheckResult; }",
           qr/"idv_sdk_gateway" cannot be combined with "idv_action"/,
           'with idv_action');


done_testing;
