# CheckResult: the outcome of a transaction, with or without images; an
# answer larger than the internal location's subrequest buffer becomes a
# clear 502 JSON error, never an empty reply.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use JSON::PP;


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(extra_server => <<'END'));
        location = /idv/result-expanded {
            idv_action CheckResult;
            idv_expand_json on;
        }
END
$t->start_nginx;

# a transaction the mock knows (a reset forgets transactions)

$t->mock_reset;
my $init = $t->post('/idv/ocr/initialize', { MerchantBizId => 'cr0001',
                    MerchantUserId => 'u1', DocType => '01000000',
                    MetaInfo => '{}' });
my $tx = $init->{json}{Result}{TransactionId};
ok($tx, 'a transaction to check');

$t->mock_complete(transactionId => $tx, passed => 'N', subCode => '205');

my $r = $t->post('/idv/result', { MerchantBizId => 'cr0001',
                                  TransactionId => $tx });
is($r->{status}, 200, 'CheckResult: 200') or diag $r->{body};
is($r->{json}{Result}{Passed}, 'N', 'CheckResult: Passed from upstream');
is($r->{json}{Result}{SubCode}, '205', 'CheckResult: SubCode');
is($r->{json}{Gateway}{passed}, JSON::PP::false, 'CheckResult: Gateway.passed');
is($r->{json}{Gateway}{action}, 'CheckResult', 'CheckResult: Gateway.action');
ok(!exists $r->{json}{Gateway}{productCode}, 'CheckResult: no product code');

my $up = $t->mock_stats->{requests}[-1];
is($t->mock_stats->{by_action}{CheckResult}, 1, 'CheckResult: one call');
is($up->{code}, 'Success', 'CheckResult: verified upstream');
is($up->{query}{TransactionId}, $tx, 'CheckResult: TransactionId sent');
is($up->{content_type}, undef, 'CheckResult: no form body, no content type');
ok(!exists $up->{query}{ProductCode}, 'CheckResult: no ProductCode');

$r = $t->post('/idv/result', { MerchantBizId => 'cr0001',
                               TransactionId => $tx, IsReturnImage => 'Y',
                               ExtraImageControlList => '[]',
                               ReturnFiveCategorySpoofResult => 'Y' });
is($r->{status}, 200, 'CheckResult with images: 200') or diag $r->{body};
ok(length($r->{json}{Result}{ExtImageInfo} // '') > 1000,
   'CheckResult with images: the image data arrives');
$up = $t->mock_stats->{requests}[-1];
is($up->{query}{$_->[0]}, $_->[1], "CheckResult: $_->[0] sent")
    for [IsReturnImage => 'Y'], [ExtraImageControlList => '[]'],
        [ReturnFiveCategorySpoofResult => 'Y'];

$r = $t->post('/idv/result-expanded', { MerchantBizId => 'cr0001',
                                        TransactionId => $tx });
is(ref $r->{json}{Result}{ExtBasicInfo}, 'HASH',
   'idv_expand_json: ExtBasicInfo is an object');

# the mock refuses a MerchantBizId that does not own the transaction
$r = $t->post('/idv/result', { MerchantBizId => 'other', TransactionId => $tx });
is($r->{status}, 400, 'foreign MerchantBizId: the service says 400');
is($r->{json}{Code}, 'InvalidParameter', 'foreign MerchantBizId: its code');

my $calls = $t->mock_stats->{calls};
$r = $t->post('/idv/result', { MerchantBizId => 'cr0001' });
is($r->{status}, 400, 'no TransactionId: 400');
is($r->{json}{Code}, 'MissingParameter', 'no TransactionId: MissingParameter');
is($t->mock_stats->{calls}, $calls, 'no TransactionId: nothing sent');

# larger than subrequest_output_buffer_size (256k in the test snippet)

$t->mock_fault(mode => 'big', bytes => 400_000);
$r = $t->post('/idv/result', { MerchantBizId => 'cr0001',
                               TransactionId => $tx });
is($r->{status}, 502, 'answer over the buffer: 502, not an empty reply');
is($r->{json}{Code}, 'Gateway.UpstreamError', 'answer over the buffer: code');
like($r->{json}{Message}, qr/too large/, 'answer over the buffer: says why');

$t->mock_fault(mode => 'big', bytes => 200_000);
$r = $t->post('/idv/result', { MerchantBizId => 'cr0001',
                               TransactionId => $tx });
is($r->{status}, 200, 'answer under the buffer: 200');

# the connection still works after the oversized answer
$r = $t->post('/idv/result', { MerchantBizId => 'cr0001',
                               TransactionId => $tx });
is($r->{status}, 200, 'next call after an oversized answer: 200');

$t->stop;

done_testing;
