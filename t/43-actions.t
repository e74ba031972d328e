# Every action of the API is a table row: any of them is reachable with
# idv_action NAME, with placement, types and serialisation from the table.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use JSON::PP;
use IdvImages qw(jpeg b64);


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(extra_server => <<'END'));
        location = /idv/keepalive { idv_action KeepaliveIntl; }
        location = /idv/face-compare { idv_action FaceCompare; }
        location = /idv/face-group { idv_action QueryFaceGroup; }
        location = /idv/mobile2 {
            idv_action Mobile2MetaVerifyIntl;
            idv_product_code MOBILE_2META;
        }
END
$t->start_nginx;

$t->mock_reset;
my $r = $t->post('/idv/keepalive', {});
is($r->{status}, 200, 'KeepaliveIntl: an action without parameters');
is($t->mock_stats->{by_action}{KeepaliveIntl}, 1, 'KeepaliveIntl: sent');

$r = $t->post('/idv/face-compare', { MerchantBizId => 'fc1',
              SourceFacePicture => b64(jpeg(640, 480, 2000)),
              TargetFacePictureUrl =>
              'https://x.example/t.jpg' });
is($r->{status}, 200, 'FaceCompare: 200') or diag $r->{body};
my $up = $t->mock_stats->{requests}[-1];
ok(exists $up->{body}{SourceFacePicture}, 'FaceCompare: picture in the body');
is($up->{query}{TargetFacePictureUrl}, 'https://x.example/t.jpg',
   'FaceCompare: URL in the query');

$r = $t->post('/idv/face-group', { CurrentPage => 2, PageSize => 50 });
is($r->{status}, 200, 'QueryFaceGroup: integers accepted as numbers')
    or diag $r->{body};
$up = $t->mock_stats->{requests}[-1];
is($up->{query}{CurrentPage}, '2', 'QueryFaceGroup: integer sent as text');

$r = $t->post('/idv/face-group', { CurrentPage => 2.5 });
is($r->{status}, 400, 'QueryFaceGroup: a fraction is not an integer');

$r = $t->post('/idv/mobile2', { ParamType => 'normal', UserName => 'x',
                                Mobile => '13800000000' });
is($r->{status}, 200, 'Mobile2MetaVerifyIntl: form-body parameters')
    or diag $r->{body};
$up = $t->mock_stats->{requests}[-1];
ok(exists $up->{body}{Mobile}, 'Mobile2MetaVerifyIntl: Mobile in the body');
ok(!exists $up->{query}{Mobile}, 'Mobile2MetaVerifyIntl: not in the query');
is($up->{body}{ProductCode}, 'MOBILE_2META',
   'Mobile2MetaVerifyIntl: the gateway puts ProductCode where the API says');

# arrays are serialised the way the SDK does: compact JSON in the query

$r = $t->post('/idv/ekyc/initialize', { MerchantBizId => 'arr1',
              MerchantUserId => 'u', DocType => '01000000', MetaInfo => '{}',
              DocPageConfig => ['01000000', 'back'] });
is($r->{status}, 200, 'DocPageConfig array: 200') or diag $r->{body};
$up = $t->mock_stats->{requests}[-1];
is($up->{query}{DocPageConfig}, '["01000000","back"]',
   'DocPageConfig array: sent as compact JSON');

$r = $t->post('/idv/ekyc/initialize', { MerchantBizId => 'arr2',
              MerchantUserId => 'u', DocType => '01000000', MetaInfo => '{}',
              DocPageConfig => '["01000000"]' });
is($r->{status}, 200, 'DocPageConfig given as a JSON string: accepted');

$r = $t->post('/idv/ekyc/initialize', { MerchantBizId => 'arr3',
              MerchantUserId => 'u', DocType => '01000000', MetaInfo => '{}',
              DocPageConfig => { a => 1 } });
is($r->{status}, 400, 'DocPageConfig as an object: 400');
like($r->{json}{Message}, qr/DocPageConfig has a wrong type/,
     'DocPageConfig as an object: names the parameter');

$t->stop;

done_testing;
