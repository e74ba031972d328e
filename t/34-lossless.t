# Lossless JSON: numbers keep their text.  The Ext* members idv_expand_json
# turns into objects carry the service's digits, and array or object
# parameters reach the API as the backend wrote them, not re-serialised
# (an integer above 2^53 would become 1.2345678901234567e+19, 1e400 null).

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(extra_server => <<'END'));
        location = /idv/result-expanded {
            idv_action CheckResult;
            idv_expand_json on;
        }

        location = /idv/face-groups {
            idv_action QueryFaceGroup;
        }
END
$t->start_nginx;

my %q = (MerchantBizId => 'll0001', TransactionId => 'a' x 32);
my $ext = '{"big":12345678901234567890,"huge":1e400,'
        . '"list":[-0.0,1E+2, 3.141592653589793238462643383279],'
        . '"nested":{"n":9007199254740993}}';


# answers: the expanded Ext* members keep the service's text

$t->mock_reset;
$t->mock_fault(mode => 'result', action => 'CheckResult',
               result => { Passed => 'Y', SubCode => '200',
                           ExtBasicInfo => $ext, ExtInfo => 'not json',
                           ExtIdInfo => '{"a":1} trailing',
                           ExtRiskInfo => qq({"a":"x\x01"}) });
my $r = $t->post('/idv/result-expanded', \%q);
is($r->{status}, 200, 'expanded answer: 200') or diag $r->{body};
like($r->{body}, qr/"ExtBasicInfo":\Q$ext\E[,}]/,
     'expanded Ext*: the member is the service\'s text, digit for digit');
is(ref $r->{json}{Result}{ExtBasicInfo}, 'HASH',
   'expanded Ext*: an object');
is($r->{json}{Result}{ExtInfo}, 'not json',
   'an Ext* member that is not JSON stays a string');
is($r->{json}{Result}{ExtIdInfo}, '{"a":1} trailing',
   'an Ext* member with text after its JSON stays a string');
is($r->{json}{Result}{ExtRiskInfo}, qq({"a":"x\x01"}),
   'an Ext* member with a raw control byte in a string stays a string');

$t->mock_reset;
$t->mock_fault(mode => 'result', action => 'CheckResult',
               result => { Passed => 'Y', ExtBasicInfo => $ext });
$r = $t->post('/idv/result', \%q);
is($r->{json}{Result}{ExtBasicInfo}, $ext,
   'without idv_expand_json: the string as it came');


# requests: array and object parameters as the backend wrote them

my $arr = '[1e400, 12345678901234567890, "back"]';

$t->mock_reset;
$r = $t->post('/idv/ekyc/initialize',
              '{"MerchantBizId":"ll0002","MerchantUserId":"u",'
              . '"DocType":"01000000","MetaInfo":"{}",'
              . qq{"DocPageConfig":$arr\}},
              'Content-Type' => 'application/json');
is($r->{status}, 200, 'array parameter with big numbers: 200')
    or diag $r->{body};
my $up = $t->mock_stats->{requests}[-1];
is($up->{query}{DocPageConfig}, $arr,
   'array parameter: reaches the API byte for byte');

$r = $t->post('/idv/ekyc/initialize',
              '{"MerchantBizId":"ll0003","MerchantUserId":"u",'
              . '"DocType":"01000000","MetaInfo":"{}",'
              . '"DocPageConfig":[1e400,}',
              'Content-Type' => 'application/json');
is($r->{status}, 400, 'an array that does not parse: 400');


# integer parameters: the backend's digits, not a double's

$t->mock_reset;
$r = $t->post('/idv/face-groups',
              '{"CurrentPage":9007199254740993,"PageSize":-9223372036854775808,'
              . '"MaxResults":9223372036854775807}',
              'Content-Type' => 'application/json');
is($r->{status}, 200, 'integers beyond 2^53: 200') or diag $r->{body};
$up = $t->mock_stats->{requests}[-1];
is($up->{query}{CurrentPage}, '9007199254740993',
   'an integer above 2^53 reaches the API digit for digit');
is($up->{query}{PageSize}, '-9223372036854775808',
   'the least 64-bit integer as written');
is($up->{query}{MaxResults}, '9223372036854775807',
   'the greatest 64-bit integer as written');

# an integer written with a fraction or an exponent: its digits, decided
# on the text (a double would give ...992 for the first, 5 for 4.9999...)

for my $case (['9007199254740993.0', '9007199254740993'], ['5.0', '5'],
              ['1e2', '100'], ['0.5e1', '5'], ['-1200E-2', '-12'],
              ['-0', '0'], ['0.0e-7', '0'], ['12.300e1', '123'],
              ['9.223372036854775807e18', '9223372036854775807']) {
    my ($text, $want) = @$case;

    $t->mock_reset;
    $r = $t->post('/idv/face-groups', qq({"CurrentPage":$text,"PageSize":1}),
                  'Content-Type' => 'application/json');
    is($r->{status}, 200, "CurrentPage $text: 200") or diag $r->{body};
    is($t->mock_stats->{requests}[-1]{query}{CurrentPage}, $want,
       "CurrentPage $text: sent as $want");
}

for my $bad ('9223372036854775808', '-9223372036854775809',
             '12345678901234567890', '1e19', '1.5', '4503599627370497.3',
             '4.99999999999999999999', '1.0000000000000000001', '1e-1',
             '1e999999999', '-1e999999999', '-1250E-2') {
    $t->mock_reset;
    $r = $t->post('/idv/face-groups',
                  qq({"CurrentPage":$bad,"PageSize":10}),
                  'Content-Type' => 'application/json');
    is($r->{status}, 400, "CurrentPage $bad: 400");
    is($r->{json}{Message}, 'Parameter CurrentPage has a wrong type',
       "CurrentPage $bad: named, the value not echoed");
    is($t->mock_stats->{calls}, 0, "CurrentPage $bad: nothing sent");
}

$t->stop;

unlike($t->error_log, qr/\[(alert|emerg)\]/, 'no alert or emerg');

done_testing;
