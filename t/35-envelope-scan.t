# The service's answer is read by a validating scan, without a JSON tree:
# what it accepts is exactly one RFC 8259 object with a string Code, and
# the answer goes back to the backend byte for byte with "Gateway" spliced
# in; Code, RequestId, Result.TransactionId and Result.Passed are the
# first members of their names, escapes decoded.  Anything else is the
# 502 "not its JSON envelope", after one call.

use strict;
use warnings;

use MIME::Base64 qw(encode_base64);
use Test::More;
use lib 't/lib';
use IdvTest;


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(
    extra_http => <<'END',
    log_format idv_scan '$idv_code|$idv_transaction_id|$status';
END
    extra_server => <<'END'));
        location = /idv/scan/result {
            idv_action CheckResult;
            access_log %%TESTDIR%%/scan.log idv_scan;
        }
END
$t->start_nginx;

my %q = (MerchantBizId => 'scan0001', TransactionId => 'a' x 32);
my $n = 0;


sub answer {
    my ($raw) = @_;

    $t->mock_reset;
    $t->mock_fault(mode => 'raw', action => 'CheckResult',
                   body_b64 => encode_base64($raw, ''));
    my $r = $t->post('/idv/scan/result', \%q);
    is($t->mock_stats->{calls}, 1, "one upstream call");
    $n++;
    return $r;
}

sub last_line {
    my @l = split /\n/, IdvTest::_slurp($t->testdir . '/scan.log') // '';
    is(scalar @l, $n, 'one access log line per request');
    return $l[-1] // '';
}

sub relayed {
    my ($raw, $name) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $r = answer($raw);
    (my $body = $raw) =~ s/\}\s*\z//;
    is($r->{status}, 200, "$name: 200") or diag $r->{body};
    is(substr($r->{body}, 0, length $body), $body,
       "$name: the service's bytes, unchanged");
    like(substr($r->{body}, length $body), qr/^,"Gateway":\{[^{}]*\}\}\z/,
         "$name: then the Gateway member and the closing brace");
    return $r;
}

sub refused {
    my ($raw, $name) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $r = answer($raw);
    is($r->{status}, 502, "$name: 502") or diag $r->{body};
    is($r->{json}{Code}, 'Gateway.UpstreamError', "$name: UpstreamError");
    like($r->{json}{Message} // '', qr/not its JSON envelope/,
         "$name: the message says why");
    unlike($r->{body}, qr/SECRETVALUE/, "$name: nothing of the answer echoed");
    return $r;
}


my $tid = 'b' x 32;
my $r;

# escapes are decoded where the gateway reads a member, and kept as
# written in what it relays

$r = relayed(qq({"RequestId":"R-1","Code":"\\u0053ucc\\u0065ss",)
             . qq("Result":{"TransactionId":"\\u0062$tid","Passed":"\\u0059",)
             . qq("SubCode":"200","ExtInfo":"{\\"k\\":\\"\\u00e9\\\\/\\"}"}}),
             'escaped members');
is($r->{json}{Gateway}{passed}, JSON::PP::true(),
   'escaped members: Passed "\u0059" is Y');
is(last_line(), "Success|b$tid|200",
   'escaped members: $idv_code and $idv_transaction_id decoded');

# the first member of a name counts, as for every JSON reader the SDKs use

$r = relayed(qq({"Code":"Success","Code":"Throttling",)
             . qq("Result":{"Passed":"N","Passed":"Y"},"Result":{"Passed":"Y"}}),
             'repeated members');
is($r->{json}{Gateway}{passed}, JSON::PP::false(),
   'repeated members: the first Passed, in the first Result');
like(last_line(), qr/^Success\|/, 'repeated members: the first Code');

# members with the names, deeper down, are not the envelope's

$r = relayed(qq({"Code":"Success","Data":{"Code":"X","Result":)
             . qq({"Passed":"N","TransactionId":"c$tid"}},)
             . qq("Result":{"Inner":{"Passed":"N"}}}),
             'nested look-alikes');
ok(!exists $r->{json}{Gateway}{passed}, 'nested look-alikes: no Passed');
is(last_line(), 'Success|' . ('a' x 32) . '|200',
   'nested look-alikes: no TransactionId from the answer (the request\'s)');

# white space around the object, numbers and literals of every form

relayed(qq( \r\n\t{ "Code" : "Success" , "N" : [ -0.5e+3 , 0 , 1E9 , true ,)
        . qq( false , null , { } , [ ] ] } \n),
        'white space, numbers, literals');

relayed('{"Code":"Success","Deep":' . ('[' x 400) . (']' x 400) . '}',
        '400 levels of nesting');

# what is not exactly one JSON object with a string Code

my @bad = (
    [ "\xef\xbb\xbf{\"Code\":\"Success\"}", 'a byte-order mark' ],
    [ qq({"Code":"Success","N":01}), 'a number with a leading zero' ],
    [ qq({"Code":"Success","N":1.}), 'a number without fraction digits' ],
    [ qq({"Code":"Success","N":-.5}), 'a number without integer digits' ],
    [ qq({"Code":"Success","N":+1}), 'a number with a plus sign' ],
    [ qq({"Code":"Succ\x01ess"}), 'a raw control byte in a string' ],
    [ qq({"Code":"Success",\x0b"N":1}), 'a control byte as white space' ],
    [ qq({"Code":"Success"} SECRETVALUE}), 'text after the object' ],
    [ qq({"Code":"Success"}{"Code":"Success"}), 'two objects' ],
    [ qq({"Code":"Success","N":"\\ud800"}), 'a lone surrogate' ],
    [ qq({"Code":"Success","N":"\\x41"}), 'an unknown escape' ],
    [ qq({"Code":"Success","N":[1,]}), 'a trailing comma' ],
    [ qq({"Code":"Success","N":tru}), 'a cut literal' ],
    [ qq({"Code":"Success","N":[}]}), 'crossed brackets' ],
    [ qq({"Code":1,"Code":"Success"}), 'the first Code is not a string' ],
    [ qq({"RequestId":"R-2"}), 'no Code' ],
    [ qq(["Code","Success"]), 'an array' ],
    [ qq({"Code":"Success","Deep":) . ('[' x 600) . (']' x 600) . '}',
      'nesting past 512 levels' ],
    [ '', 'an empty answer' ],
);

refused(@$_) for @bad;

$t->stop;

my $log = $t->error_log;
is(() = $log =~ /with an answer that is not an API envelope/g, scalar @bad,
   'error.log: one line per refused answer');
unlike($log, qr/SECRETVALUE|Succ\x01/, 'error.log: nothing of the answers');

done_testing;
