# Metrics under abuse: clients choose the ProductCode (SDK requests, or a
# backend's body where the location sets none) and, through idv_tenant,
# the tenant; the service and the gateway choose the result code.  None
# of them can add a series of its own: products are the codes the
# operations table documents for the action or "other", codes are short
# visible ASCII or "other", tenants are sanitised, capped and bounded by
# tenants=.  A series once counted is never displaced; when the series
# table is full, new label sets count in the action's overflow series
# (product="other", code="other") and nothing is dropped.  The page
# stays valid UTF-8 and parses strictly throughout.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;

use Compress::Zlib qw(crc32);
use Digest::SHA qw(hmac_sha1);
use Encode qw(decode);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(strftime);


my $JSON = JSON::PP->new->canonical;


# a strict reader of the text exposition format 0.0.4 (as t/70-metrics.t)

sub parse_prometheus {
    my ($text) = @_;

    my (%type, @samples, @errors);
    my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
    my $type_re = qr/counter|gauge|histogram|summary|untyped/;
    my $label_re = qr/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/;
    my $number_re = qr/[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?
                       |[+-]Inf|NaN/x;
    my $n = 0;

    push @errors, 'does not end with a newline' unless $text =~ /\n\z/;

    for my $line (split /\n/, $text) {
        $n++;

        next if $line =~ /^# HELP $name_re .+$/;

        if ($line =~ /^# TYPE ($name_re) ($type_re)$/) {
            push @errors, "line $n: second TYPE for $1" if $type{$1};
            $type{$1} = $2;
            next;
        }

        if ($line =~ /^#/) {
            push @errors, "line $n: malformed comment: $line";
            next;
        }

        unless ($line =~ /^($name_re)(?:\{(.*)\})? (\S+)$/) {
            push @errors, "line $n: malformed sample: $line";
            next;
        }

        my ($name, $labels, $value) = ($1, $2 // '', $3);
        my %l;

        while (length $labels) {
            unless ($labels =~ s/^$label_re(,|$)//) {
                push @errors, "line $n: malformed labels: $labels";
                last;
            }
            push @errors, "line $n: duplicate label $1" if exists $l{$1};
            $l{$1} = $2;
        }

        push @errors, "line $n: value $value is not a number"
            unless $value =~ /^(?:$number_re)$/;

        (my $family = $name) =~ s/_(?:bucket|sum|count)$//;
        $family = $name unless $type{$family};

        push @errors, "line $n: sample of $family without TYPE"
            unless $type{$family};

        push @samples, { name => $name, labels => \%l, value => $value };
    }

    # one sample per label set: Prometheus refuses a page with duplicates

    my %seen;
    for my $s (@samples) {
        my $key = join ',', $s->{name},
                  map { "$_=$s->{labels}{$_}" } sort keys %{$s->{labels}};
        push @errors, "duplicate series $key" if $seen{$key}++;
    }

    return (\@samples, \@errors);
}

sub value {
    my ($samples, $name, %l) = @_;

    for my $s (@$samples) {
        next unless $s->{name} eq $name;
        next if grep { ($s->{labels}{$_} // "\0") ne $l{$_} } keys %l;
        return $s->{value};
    }

    return undef;
}

sub series {
    my ($samples, $name) = @_;
    return grep { $_->{name} eq $name } @$samples;
}

sub total {
    my ($samples, $name, %l) = @_;
    my $sum = 0;

    for my $s (series($samples, $name)) {
        next if grep { ($s->{labels}{$_} // "\0") ne $l{$_} } keys %l;
        $sum += $s->{value};
    }

    return $sum;
}


# --- SDK requests, signed V1 (HMAC-SHA1) as in t/80-sdk-gateway.t -------

my ($KEY_ID, $SECRET) = ('LTAIacme0001', 'ACME+s3cret/0123456789=abcdef');

sub enc {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub form {
    my ($h) = @_;
    return join '&', map { enc($_) . '=' . enc($h->{$_}) } sort keys %$h;
}

my $NONCE = 0;

sub sdk_call {
    my ($t, $action, %params) = @_;

    my %q = (%params, Action => $action, Version => '2022-08-09',
             Format => 'json',
             Timestamp => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime),
             SignatureNonce => "n$$-" . ++$NONCE . '-' . time,
             SignatureMethod => 'HMAC-SHA1', SignatureVersion => '1.0',
             AccessKeyId => $KEY_ID);

    $q{Signature} = encode_base64(hmac_sha1('POST&%2F&' . enc(form(\%q)),
                                            "$SECRET&"), '');

    return $t->request('POST', '/?' . form(\%q), '');
}


# --- backend requests with any bytes in X-Tenant ------------------------

sub raw_post {
    my ($t, $path, $body, $tenant) = @_;

    $body = $JSON->encode($body) if ref $body;

    my $reply = $t->raw("POST $path HTTP/1.0\r\nHost: localhost\r\n"
                        . "Content-Type: application/json\r\n"
                        . 'Content-Length: ' . length($body) . "\r\n"
                        . "X-Tenant: $tenant\r\n\r\n$body");

    return $reply =~ m{^HTTP/1\.\d (\d{3})} ? $1 : 0;
}


my $t = IdvTest->new;

open my $fh, '>', $t->testdir . '/tenant.keys' or die $!;
print $fh "acme $KEY_ID $SECRET\n";
close $fh;
chmod 0600, $t->testdir . '/tenant.keys';

$t->start_mock;
$t->write_config($t->standard_http(
    extra_http => <<'END',
    idv_metrics_zone 256k tenants=5;
    idv_sdk_zone zone=idv_sdk:1m;
    idv_tenant_keys %%TESTDIR%%/tenant.keys;
END
    extra_server => <<'END'), worker_processes => 2);
        location = /metrics { idv_metrics; access_log off; }

        location = / { idv_sdk_gateway; access_log off; }

        # the client's ProductCode, from the body
        location = /any/initialize {
            idv_action Initialize;
            idv_tenant $http_x_tenant;
            access_log off;
        }

        location = /any/cardocr {
            idv_action CardOcr;
            idv_tenant $http_x_tenant;
            access_log off;
        }

        # CardOcr documents no product codes: the operator's own is kept
        location = /own/cardocr {
            idv_action CardOcr;
            idv_product_code CARD_OWN;
            idv_tenant $http_x_tenant;
            access_log off;
        }

        location = /ekyc/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
            idv_tenant $http_x_tenant;
            access_log off;
        }
END
$t->start_nginx;


my $overlay = decode_json(IdvTest::_slurp(
    $t->root . '/ngx_http_idv_module/data/ops-overlay.json'));
my %KNOWN = map { $_ => { map { $_ => 1 } @{$overlay->{actions}{$_}{products}
                                            // []} } }
            keys %{$overlay->{actions}};

my %EKYC = (MerchantBizId => 'm0001', MerchantUserId => 'u1',
            DocType => '01000000', MetaInfo => '{}');

my $TENANT_RE = qr/^[A-Za-z0-9._:\@-]{1,64}$/;
my $CODE_RE = qr/^[A-Za-z0-9._-]{1,64}$/;


# scrape($phase, $requests): the page once all the requests are counted
# and it is still (a worker counts a request in its log phase, which may
# end after the client has read the answer)

sub scrape {
    my ($phase, $requests) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my ($r, $last);

    for (1 .. 50) {
        $r = $t->get('/metrics');
        my ($samples) = parse_prometheus($r->{body});
        last if total($samples, 'idv_requests_total') >= $requests
                && defined $last && $last eq $r->{body};
        $last = $r->{body};
        select undef, undef, undef, 0.05;
    }

    is($r->{status}, 200, "$phase: scrape 200");

    my $text = $r->{body};

    ok(defined eval { decode('UTF-8', my $copy = $text, Encode::FB_CROAK) },
       "$phase: the page is well-formed UTF-8");
    unlike($text, qr/[\x00-\x09\x0b-\x1f\x7f]/,
           "$phase: no control byte on the page");

    my ($samples, $errors) = parse_prometheus($text);
    is_deeply($errors, [], "$phase: the exposition parses strictly")
        or diag substr($text, 0, 4000);

    my @bad;

    for my $s (series($samples, 'idv_requests_total')) {
        my ($a, $p, $c) = @{$s->{labels}}{qw(action product code)};
        push @bad, "product \"$p\" of $a"
            unless $p eq '' || $p eq 'other' || $KNOWN{$a}{$p}
                   || ($a eq 'CardOcr' && $p eq 'CARD_OWN');
        push @bad, "code \"$c\"" unless $c =~ $CODE_RE;
    }

    for my $s (series($samples, 'idv_tenant_requests_total'),
               series($samples, 'idv_tenant_throttled_total'))
    {
        push @bad, "tenant \"$s->{labels}{tenant}\""
            unless $s->{labels}{tenant} =~ $TENANT_RE;
    }

    is_deeply(\@bad, [], "$phase: every label is a documented product, "
                         . "a sane code or a sanitised tenant")
        or diag explain \@bad;

    return $samples;
}


# --- before: valid traffic claims its series ----------------------------

is(raw_post($t, '/ekyc/initialize', \%EKYC, 'acme'), 200,
   'a valid request before the flood');


# --- the flood: 600 SDK requests with junk product codes, 300 backend
# requests with junk product codes and tenants ---------------------------

my ($N_SDK, $N_BACKEND) = (600, 300);

my @junk_products = ("\e[31mRED\e[0m", "\xff\xfe\xfd", "\xed\xa0\x80",
                     "a\"b\\c\nd", 'X' x 7000, 'eKYC ', ' eKYC',
                     'eKYC IDR_GLOBAL', 'KYC', 'ekyc', 'other', 'eKYC%00',
                     "Soci\xc3\xa9t\xc3\xa9", 'ID_2META');

my @junk_tenants = ("\e[2J\e[H", "\xff\xfe", "t\"q\\b",
                    "Soci\xc3\xa9t\xc3\xa9", 'x' x 255, 'x' x 254 . 'y',
                    'other', "\xc0\xaf", "ok\x7f", "\xed\xa0\x80");

my ($n, $statuses) = (0, {});

for my $i (1 .. $N_BACKEND) {
    my $product = $i <= @junk_products ? $junk_products[$i - 1]
                                       : "JUNK-$i";
    my $tenant = $i <= @junk_tenants ? $junk_tenants[$i - 1]
                                     : "tenant-$i" . ($i % 2 ? "\e" : '');

    # half go to the service, half are refused here (no MetaInfo); and
    # CardOcr, which documents no product codes
    my $path = $i % 5 == 0 ? '/any/cardocr' : '/any/initialize';
    my %body = (MerchantBizId => "j$i", ProductCode => $product);
    $body{MetaInfo} = '{}' if $i % 2 && $path eq '/any/initialize';

    $statuses->{raw_post($t, $path, \%body, $tenant)}++;
    $n++;
}

for my $i (1 .. $N_SDK) {
    my $product = $i <= @junk_products
                  ? substr($junk_products[$i - 1], 0, 2000)
                  : "SDK-JUNK-$i";
    my %p = (ProductCode => $product, MerchantBizId => "s$i");
    $p{MetaInfo} = '{}' if $i % 2;

    my $r = sdk_call($t, 'Initialize', %p);
    $statuses->{$r->{status}}++;
    $n++;
}

is($n, 900, '900 requests with junk product codes and tenants');
is(sdk_call($t, 'Initialize', ProductCode => 'KYC_GLOBAL',
            MerchantBizId => 's0')->{status}, 400,
   'an SDK request with a documented code, refused here');
ok(!$statuses->{0} && !$statuses->{599}, 'each was answered')
    or diag explain $statuses;


# --- after: valid traffic counts under its own labels -------------------

is(raw_post($t, '/ekyc/initialize', \%EKYC, 'acme'), 200,
   'a valid request after the flood');
is($t->post('/idv/result', { MerchantBizId => 'm0005',
                             TransactionId => 'tx5' })->{status}, 200,
   'a valid request of a new series after the flood');
is(raw_post($t, '/own/cardocr', { DocType => '00000001' }, 'acme') > 0, 1,
   'CardOcr with the location\'s own product code');
is(raw_post($t, '/any/initialize', { %EKYC, ProductCode => 'ID_OCR' },
            'acme'), 200,
   'a documented ProductCode from the backend');

my $s = scrape('after the flood', 1 + $n + 1 + 4);

is(value($s, 'idv_requests_total', action => 'Initialize', product => 'eKYC',
         code => 'Success'), 2,
   'the series counted before the flood still counts');
is(value($s, 'idv_requests_total', action => 'CheckResult',
         product => '', code => 'Success'), 1,
   'a new valid series after the flood has its own labels');
is(value($s, 'idv_requests_total', action => 'Initialize',
         product => 'ID_OCR', code => 'Success'), 1,
   'a documented code a backend sent is its label');
ok(defined value($s, 'idv_requests_total', action => 'CardOcr',
                 product => 'CARD_OWN'),
   'an action without documented codes: the location\'s own code');
is(total($s, 'idv_requests_total', product => 'other'), $n,
   'every junk product code counts as "other", also ID_2META, which is '
   . 'not Initialize\'s')
    or diag explain [grep { $_->{labels}{product} ne 'other' }
                     series($s, 'idv_requests_total')];
is(value($s, 'idv_requests_total', action => 'Initialize',
         product => 'KYC_GLOBAL', code => 'MissingParameter'), 1,
   'a documented code an SDK client sent is its label');
ok(value($s, 'idv_requests_total', action => 'Initialize',
         product => 'other', code => 'InvalidParameter'),
   'junk product codes, refused here as not the action\'s, count as '
   . '"other" too');
is(total($s, 'idv_requests_total'), 1 + $n + 1 + 4,
   'every request is counted, none dropped');

my $n_series = () = series($s, 'idv_requests_total');
ok($n_series <= 20, "the flood added few series ($n_series)");

my %tenants = map { ($_->{labels}{tenant} => $_->{value}) }
              series($s, 'idv_tenant_requests_total');

# (the gateway refuses tenants over 255 bytes before anything else)
my $long = 'x' x 55 . sprintf('-%08x', crc32('x' x 255));
my $long2 = 'x' x 55 . sprintf('-%08x', crc32('x' x 254 . 'y'));

is_deeply([sort keys %tenants],
          [sort 'acme', 't_q_b', 'Soci__t__', $long, $long2, 'other'],
          'tenants: sanitised, long names capped apart, junk as other')
    or diag explain \%tenants;
is($tenants{acme}, 1 + $N_SDK + 1 + 3,
   'tenant acme keeps its slot (the SDK requests are its key\'s)');
is($tenants{'t_q_b'}, 1, 'quote and backslash replaced');
is($tenants{other}, $N_BACKEND - 4,
   'control bytes, invalid UTF-8, the name "other" and tenants beyond '
   . 'tenants= count as other');


# --- result codes: the service's junk ones are "other" ------------------

my @codes = ("Bad\e[31mCode", "Quote\"Back\\slash", "New\nLine",
             "\x{dc}n\x{ef}code", 'C' x 65, 'Space Code', 'C' x 64,
             'Fine.Code-1');

my $sum_before = total($s, 'idv_requests_total');

$t->mock('POST', '/__mock/fault',
         [ map { { mode => 'code', code => $_ } } @codes ]);

for my $c (@codes) {
    raw_post($t, '/ekyc/initialize', \%EKYC, 'acme');
}

$s = scrape('junk codes', $sum_before + @codes);

is(value($s, 'idv_requests_total', action => 'Initialize', product => 'eKYC',
         code => 'other'), 6,
   'codes that are not short visible ASCII count as "other"');
is(value($s, 'idv_requests_total', action => 'Initialize', product => 'eKYC',
         code => 'C' x 64), 1, 'a code of 64 bytes is its own label');
is(value($s, 'idv_requests_total', action => 'Initialize', product => 'eKYC',
         code => 'Fine.Code-1'), 1, 'a sane code is its own label');


# --- a full series table: the overflow series, nothing dropped ----------

my @before = series($s, 'idv_requests_total');
my $in_table = grep { !($_->{labels}{product} eq 'other'
                        && $_->{labels}{code} eq 'other') } @before;
my $fill = 520;

$sum_before = total($s, 'idv_requests_total');

$t->mock('POST', '/__mock/fault',
         [ map { { mode => 'code', code => "Fill.$_",
                   action => 'Initialize' } } 1 .. $fill ]);

for my $i (1 .. $fill) {
    raw_post($t, '/ekyc/initialize', { %EKYC, MerchantBizId => "f$i" },
             'acme');
}

is(raw_post($t, '/ekyc/initialize', \%EKYC, 'acme'), 200,
   'a valid request once the table is full');
is(raw_post($t, '/any/initialize', { %EKYC, ProductCode => 'KYC_GLOBAL' },
            'acme') > 0, 1,
   'a request of a new label set once the table is full');

$s = scrape('table full', $sum_before + $fill + 2);

my @after = series($s, 'idv_requests_total');
my $table = grep { !($_->{labels}{product} eq 'other'
                     && $_->{labels}{code} eq 'other') } @after;

is($table, 512, 'the series table is full, and no larger');
is(total($s, 'idv_requests_total'), $sum_before + $fill + 2,
   'every request of a full table is counted');
is(value($s, 'idv_requests_total', action => 'Initialize', product => 'eKYC',
         code => 'Success'), 3,
   'a series already counted is never displaced');
my $over = value($s, 'idv_requests_total', action => 'Initialize',
                 product => 'other', code => 'other') // 0;
my $over_before = value(\@before, 'idv_requests_total',
                        action => 'Initialize', product => 'other',
                        code => 'other') // 0;

is($over - $over_before, $fill - (512 - $in_table) + 1,
   'label sets beyond the table count in the action\'s overflow series');
ok(!defined value($s, 'idv_requests_total', action => 'Initialize',
                  product => 'KYC_GLOBAL', code => 'Success'),
   'a new label set of a full table is not in the table');

$t->stop;

done_testing;
