# idv_allow_param NAME query|body: a field newer than the operations table
# is accepted for the location's action and sent, signed, in the given
# place, with the checks every string gets; nginx -t refuses a bad
# placement, an implausible name, a duplicate, and a name the action
# already takes in the other place.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;


my $t = IdvTest->new;
$t->start_mock;

my $INIT = <<'END';
            idv_action Initialize;
            idv_product_code eKYC;
            idv_allow_param FutureQueryField query;
            idv_allow_param FutureBodyField body;
            idv_allow_param Email query;
END

$t->write_config($t->standard_http(
    extra_http => '    idv_allow_param HttpLevelField body;',
    extra_server => <<"END"));
        location = /idv/allow {
$INIT
        }

        location = /idv/allow-v1 {
$INIT
            idv_signature v1;
        }
END
$t->start_nginx;

my %BASE = (MerchantBizId => 'allow0001', MerchantUserId => 'u-1',
            DocType => '01000000', MetaInfo => '{}');
my $SECRET_VALUE = 'future-value-7f3a9c';

for my $sig ('v3', 'v1') {
    my $path = $sig eq 'v3' ? '/idv/allow' : '/idv/allow-v1';

    $t->mock_reset;
    my $r = $t->post($path, { %BASE, FutureQueryField => $SECRET_VALUE,
                              FutureBodyField => 'ünïcode 文字',
                              Email => 'c@example.com' });
    is($r->{status}, 200, "$sig: allowed fields accepted") or diag $r->{body};
    is($r->{json}{Code}, 'Success', "$sig: the mock verified the signature");

    my $stats = $t->mock_stats;
    my $up = $stats->{requests}[-1];

    is($stats->{calls}, 1, "$sig: one call upstream");
    is($up->{sig}, $sig, "$sig: signed $sig");
    is($up->{query}{FutureQueryField}, $SECRET_VALUE,
       "$sig: FutureQueryField in the query, unchanged");
    ok(!exists $up->{body}{FutureQueryField}, "$sig: not in the body");
    ok(exists $up->{body}{FutureBodyField}, "$sig: FutureBodyField in the body");
    ok(!exists $up->{query}{FutureBodyField}, "$sig: not in the query");
    is($up->{query}{Email}, 'c@example.com',
       "$sig: Email, allowed in the table's place, stays the table's");
}

# a location's list replaces the one around it: HttpLevelField is not
# allowed where the location has its own

$t->mock_reset;
my $r = $t->post('/idv/allow', { %BASE, HttpLevelField => 'x' });
is($r->{status}, 400, 'a location\'s own list replaces the http level\'s');
like($r->{json}{Message} // '', qr/HttpLevelField is not accepted/,
     'the field is named as not accepted');

# ... and is allowed where the location has none

$r = $t->post('/idv/ekyc/initialize', { %BASE, HttpLevelField => 'x' });
is($r->{status}, 200, 'the http level\'s list holds below it')
    or diag $r->{body};
ok(exists $t->mock_stats->{requests}[-1]{body}{HttpLevelField},
   'HttpLevelField in the body');

$r = $t->post('/idv/ekyc/initialize', { %BASE, FutureQueryField => 'x' });
is($r->{status}, 400, 'another location\'s field is not allowed here');

# the checks every string gets: invalid UTF-8, sent as a form body

$t->mock_reset;
$r = $t->post('/idv/allow',
              'MerchantBizId=allow0002&MerchantUserId=u&DocType=01000000'
              . '&MetaInfo=%7B%7D&FutureBodyField=%C3%28',
              'Content-Type' => 'application/x-www-form-urlencoded');
is($r->{status}, 400, 'invalid UTF-8 in an allowed field: 400')
    or diag $r->{body};
like($r->{json}{Message} // '', qr/FutureBodyField is not valid UTF-8/,
     'invalid UTF-8: the field is named');
is($t->mock_stats->{calls}, 0, 'invalid UTF-8: nothing sent');

# a field given twice is refused like any other

$r = $t->post('/idv/allow',
              'MerchantBizId=allow0003&MerchantUserId=u&DocType=01000000'
              . '&MetaInfo=%7B%7D&FutureBodyField=a&FutureBodyField=b',
              'Content-Type' => 'application/x-www-form-urlencoded');
is($r->{status}, 400, 'an allowed field given twice: 400');

$t->stop;

unlike($t->error_log, qr/\Q$SECRET_VALUE\E/,
       'an allowed field\'s value is not in the error log');
unlike($t->error_log, qr/\[(alert|emerg)\]/, 'no alert or emerg');


# --- nginx -t --------------------------------------------------------------

sub conf_fails {
    my ($name, $http, $server, $re) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    $t->write_config($t->standard_http(extra_http => $http,
                                       extra_server => $server));
    my ($rc, $out) = $t->nginx_t;

    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr/\[emerg\].*$re/, "$name: the [emerg] says why");
}

my $LOC = "location = /x { idv_action Initialize; %s }";

conf_fails('a bad placement', '',
           sprintf($LOC, 'idv_allow_param Foo header;'),
           qr/"idv_allow_param Foo": invalid placement "header", it must be "query" or "body"/);

conf_fails('a name that starts with a digit', '',
           sprintf($LOC, 'idv_allow_param 1Foo query;'),
           qr/"1Foo" is not a plausible parameter name/);

conf_fails('a name with a dash', '',
           sprintf($LOC, 'idv_allow_param Foo-Bar query;'),
           qr/"Foo-Bar" is not a plausible parameter name/);

conf_fails('a name of the signature\'s', '',
           sprintf($LOC, 'idv_allow_param Signature query;'),
           qr/"Signature" is not a plausible parameter name/);

conf_fails('a name too long', '',
           sprintf($LOC, 'idv_allow_param ' . ('A' x 65) . ' query;'),
           qr/is not a plausible parameter name.*at most 64/);

conf_fails('a duplicate', '',
           sprintf($LOC, 'idv_allow_param Foo query; '
                         . 'idv_allow_param Foo body;'),
           qr/"idv_allow_param Foo" is duplicate/);

conf_fails('a table field in the other place', '',
           sprintf($LOC, 'idv_allow_param FacePictureBase64 query;'),
           qr/location = "\/x" \(\S*nginx\.conf:\d+, "idv_action Initialize"\): "idv_allow_param FacePictureBase64 query" in \S*nginx\.conf:\d+: action Initialize takes FacePictureBase64 in the body/);

conf_fails('an http-level field one action takes in the other place',
           '    idv_allow_param Mobile query;',
           'location = /m { idv_action Mobile2MetaVerifyIntl; }',
           qr/location = "\/m" .*"idv_allow_param Mobile query" in \S*nginx\.conf:\d+: action Mobile2MetaVerifyIntl takes Mobile in the body/);

# the same field in the table's place, and at every level, passes

$t->write_config($t->standard_http(
    extra_http => '    idv_allow_param Mobile body;',
    extra_server => 'idv_allow_param Foo query; '
                    . 'location = /m { idv_action Mobile2MetaVerifyIntl; '
                    . 'idv_allow_param Mobile body; }'));
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'the table\'s own placement, http, server and location: '
           . 'nginx -t passes') or diag $out;

done_testing;
