# One status per code: the status a backend gets for an API code is the
# same whether the service sent the code with an HTTP status or inside an
# HTTP 200 (docs/backend-api.md, "HTTP status"); codes that mean the
# operator's configuration is wrong reach the log at [error], once per
# cause and minute.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http);
$t->start_nginx;

my $OCR = '/idv/ocr/initialize';
my $n = 0;

sub call {
    my (%fault) = @_;

    $t->mock_reset;
    $t->mock_fault(%fault, action => 'Initialize');
    $n++;
    return $t->post($OCR, { MerchantBizId => "st$n", MerchantUserId => 'u',
                            DocType => '01000000', MetaInfo => '{}' });
}


# a wrong secret, several times: one [error] line within the minute

for (1 .. 4) {
    my $r = call(mode => 'status', status => 400,
                 code => 'SignatureDoesNotMatch');
    is($r->{status}, 400, "SignatureDoesNotMatch #$_: 400");
}

my @err = grep { /\[error\].*code "SignatureDoesNotMatch"/ }
          split /\n/, $t->error_log;
is(scalar @err, 1, 'SignatureDoesNotMatch 4 times: one [error] line')
    or diag explain \@err;
like($err[0] // '', qr/check idv_access_key_id/,
     'the [error] line says what to check');
unlike($err[0] // '', qr/MerchantBizId|st\d|testsecret|string to sign/i,
       'the [error] line: no parameters, no secret, no message');

# another cause has a line of its own; its repeats are counted

call(mode => 'code', code => 'InvalidAccessKeyId.NotFound');
call(mode => 'status', status => 404, code => 'InvalidAccessKeyId.Inactive');
call(mode => 'code', code => 'Forbidden.RAMUserAccessDenied');
call(mode => 'status', status => 400, code => 'InvalidTimeStamp.Expired');

my $log = $t->error_log;
is(scalar(() = $log =~ /\[error\].*code "InvalidAccessKeyId\./g), 1,
   'InvalidAccessKeyId.*: one [error] line for the cause');
like($log, qr/\[error\].*code "Forbidden\.RAMUserAccessDenied"/,
     'Forbidden.RAMUserAccessDenied: [error]');
like($log, qr/\[error\].*code "InvalidTimeStamp\.Expired"/,
     'InvalidTimeStamp.Expired: [error]');


# the table: each code, both ways, one status

my @table = (
    # code, the status the documents give it, the backend's
    [ 'MissingParameter', 400, 400 ],
    [ 'InvalidParameter', 401, 400 ],
    [ 'OcrFail', 401, 400 ],
    [ 'UnqualifiedPhoto', 401, 400 ],
    [ 'NoFaceDetected', 401, 400 ],
    [ 'ToolargeImage', 401, 400 ],
    [ 'DownloadTimeout', 401, 400 ],
    [ 'DataDuplication', 401, 400 ],
    [ 'HighRisk', 403, 403 ],
    [ 'HighRisk', 400, 403 ],
    [ 'Forbidden.RAMUserAccessDenied', 403, 403 ],
    [ 'Forbidden.AccountAccessDenied', 403, 403 ],
    [ 'Forbidden.ExceptionRepeatedInvoke', 400, 403 ],
    [ 'Forbidden.ExceptionDataSource', 500, 500 ],
    [ 'Forbidden.ExceptionDataSource', 403, 500 ],
    [ 'InternalError', 500, 500 ],
    [ 'ServiceUnavailable', 503, 503 ],
    [ 'Throttling.Api', 403, 429 ],
    [ 'Throttling.User', 400, 429 ],
    [ 'SignatureDoesNotMatch', 400, 400 ],
    [ 'IncompleteSignature', 400, 400 ],
    [ 'SignatureNonceUsed', 400, 400 ],
    [ 'InvalidTimeStamp.Expired', 400, 400 ],
    [ 'IllegalTimestamp', 400, 400 ],
    [ 'MissingSignature', 400, 400 ],
    [ 'MissingTimestamp', 400, 400 ],
    [ 'MissingAccessKeyId', 400, 400 ],
    [ 'InvalidAccessKeyId.NotFound', 404, 404 ],
    [ 'PathNotFound', 404, 404 ],
);

for my $row (@table) {
    my ($code, $documented, $want) = @$row;

    my $r = call(mode => 'status', status => $documented, code => $code);
    is($r->{status}, $want, "$code with HTTP $documented: $want")
        or diag $r->{body};
    is($r->{json}{Code}, $code, "$code with HTTP $documented: its code");
    is($r->{json}{Gateway}{upstreamStatus}, $documented,
       "$code with HTTP $documented: upstreamStatus shows the service's");

    $r = call(mode => 'code', code => $code);
    is($r->{status}, $want, "$code inside a 200: $want") or diag $r->{body};
    is($r->{json}{Code}, $code, "$code inside a 200: its code");

    is($r->{headers}{'retry-after'}, '1', "$code: Retry-After")
        if $want == 429;
}

# codes no document lists: the service's error status, else 403 for a
# Forbidden.* refusal, else 400

my $r = call(mode => 'status', status => 409, code => 'Mock.Unknown');
is($r->{status}, 409, 'an unknown code with HTTP 409: 409');
$r = call(mode => 'code', code => 'Mock.Unknown');
is($r->{status}, 400, 'an unknown code inside a 200: 400');
$r = call(mode => 'code', code => 'Forbidden.Mock');
is($r->{status}, 403, 'an unknown Forbidden code inside a 200: 403');

# the table's signing and endpoint codes said what to fix at [error]; its
# business outcomes, the person's or the request's, did not

$log = $t->error_log;
like($log, qr/\[error\].*code "IncompleteSignature"/,
     'IncompleteSignature: [error]');
like($log, qr/\[error\].*code "PathNotFound"/, 'PathNotFound: [error]');
unlike($log, qr/\[error\].*code "(?:OcrFail|InvalidParameter|HighRisk|UnqualifiedPhoto|NoFaceDetected|MissingParameter|Throttling[.\w]*)"/,
       'business outcomes and throttling are not [error]');

# the code's table, this test's and docs/backend-api.md's agree

my %c_table;
{
    open(my $fh, '<', IdvTest->root
                      . '/ngx_http_idv_module/ngx_http_idv_handler.c')
        or die "handler.c: $!";
    my $src = do { local $/; <$fh> };
    my ($body) = $src =~ /ngx_http_idv_code_statuses\[\] = \{(.*?)\n\};/s
        or die 'no ngx_http_idv_code_statuses in handler.c';
    my %http = (BAD_REQUEST => 400, FORBIDDEN => 403, NOT_FOUND => 404,
                INTERNAL_SERVER_ERROR => 500, SERVICE_UNAVAILABLE => 503);
    while ($body =~ /ngx_string\("([^"]+)"\),\s*NGX_HTTP_(\w+)/g) {
        $c_table{$1} = $http{$2} // die "unknown NGX_HTTP_$2";
    }
}

my %doc_table;
{
    open(my $fh, '<', IdvTest->root . '/docs/backend-api.md')
        or die "backend-api.md: $!";
    while (my $line = <$fh>) {
        next unless $line =~ /^\| (`[A-Za-z.]+`(?:, `[A-Za-z.]+`)*) \| [^|]+ \| `(\d{3})` \|/;
        my $status = $2;
        $doc_table{$_} = $status for $1 =~ /`([^`]+)`/g;
    }
}

my %test_table = map { $_->[0] => $_->[2] } @table;

ok(scalar(keys %c_table) >= 20, 'handler.c: the code table was read');
is(delete $doc_table{'Throttling.Api'}, 429,
   'docs/backend-api.md: Throttling.Api is 429 (any Throttling code)');
is_deeply(\%doc_table, \%c_table,
          'docs/backend-api.md lists every code of the table, with its status');
is_deeply({ map { $_ => $test_table{$_} } grep { !/^Throttling/ }
            keys %test_table }, \%c_table,
          'this test sends every code of the table');

# the repeats of the table did not log again within the minute

@err = grep { /\[error\].*code "SignatureDoesNotMatch"/ }
       split /\n/, $t->error_log;
is(scalar @err, 1, 'SignatureDoesNotMatch: still one [error] line');

$t->stop;

done_testing;
