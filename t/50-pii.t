# Secrets and PII: the AccessKey secret and the values of PII parameters
# (DocNo, DocName, IdentifyNum, UserName, MerchantUserId, MetaInfo, images)
# never reach error.log (info and above), the access log variables, or any
# response the backend sees; at debug level the module's own lines mask
# them too.  What nginx core prints at debug is documented in
# docs/deployment.md.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use IdvImages qw(jpeg png b64);
use utf8;


my $SECRET = 'Sup3rS3cretValue-do-not-log';

my %pii = (
    DocNo          => 'PIIDOCNO1101011990',
    DocName        => 'PIIDocName张三',
    IdentifyNum    => 'PIIIDENTIFY110101',
    UserName       => 'PIIUserName李四',
    MerchantUserId => 'PIIMerchantUser42',
    MetaInfo       => '{"PIIMetaInfo":"device-fingerprint"}',
);

my $FACE = b64(jpeg(720, 1280, 20_000));
my $ID = b64(png(1024, 768, 20_000));

for my $level ('info', 'debug') {

    my $t = IdvTest->new;
    $t->start_mock(keys => "testid:$SECRET");
    $t->write_config($t->standard_http(
        credentials => "idv_access_key_id testid;\n"
                       . "    idv_access_key_secret $SECRET;",
        extra_http => 'log_format idv "$idv_action $idv_code '
                      . '$idv_transaction_id $idv_merchant_biz_id '
                      . '$idv_upstream_time $idv_attempts $status";'
                      . "\n    access_log %%TESTDIR%%/idv.log idv;",
        extra_server => <<'END'),
        location = /idv/down/id2meta {
            idv_action Id2MetaVerifyIntl;
            idv_product_code ID_2META;
            idv_pass /_idv_down;
        }

        location = /_idv_down {
            internal;
            proxy_pass https://127.0.0.1:%%PORT2%%/;
        }
END
                     log_level => $level);
    $t->start_nginx;

    my @bodies;

    # every operation, successes and failures

    push @bodies, $t->post('/idv/ekyc/initialize', {
        MerchantBizId => 'pii01', MerchantUserId => $pii{MerchantUserId},
        DocType => '01000000', MetaInfo => $pii{MetaInfo},
        DocName => $pii{DocName}, DocNo => $pii{DocNo} });

    push @bodies, $t->post('/idv/ekyc/verify', {
        MerchantBizId => 'pii02', MerchantUserId => $pii{MerchantUserId},
        DocType => '00000001', FacePictureBase64 => $FACE,
        IdOcrPictureBase64 => $ID, DocName => $pii{DocName},
        DocNo => $pii{DocNo} });

    push @bodies, $t->post('/idv/id2meta', { ParamType => 'normal',
        IdentifyNum => $pii{IdentifyNum}, UserName => $pii{UserName} });

    push @bodies, $t->post('/idv/result', { MerchantBizId => 'pii03',
                                            TransactionId => 'abc' });

    # local rejections name parameters, never values
    push @bodies, $t->post('/idv/id2meta', { ParamType => 'normal',
        IdentifyNum => $pii{IdentifyNum}, UserName => $pii{UserName},
        DocNo => $pii{DocNo} });
    push @bodies, $t->post('/idv/id2meta', { ParamType => 'normal',
        IdentifyNum => [ $pii{IdentifyNum} ], UserName => $pii{UserName} });
    push @bodies, $t->post('/idv/ekyc/verify', {
        MerchantBizId => 'pii04', MerchantUserId => $pii{MerchantUserId},
        DocType => '00000001', FacePictureBase64 => $FACE . 'x',
        IdOcrPictureBase64 => $ID });
    push @bodies, $t->post('/idv/ekyc/initialize',
                           '{"MerchantUserId":"' . $pii{MerchantUserId} . '",');

    # upstream failures are logged: still no values
    $t->mock_fault(mode => 'status', status => 400,
                   code => 'InvalidParameter');
    push @bodies, $t->post('/idv/id2meta', { ParamType => 'normal',
        IdentifyNum => $pii{IdentifyNum}, UserName => $pii{UserName} });
    $t->mock_fault(mode => 'garbage');
    push @bodies, $t->post('/idv/id2meta', { ParamType => 'normal',
        IdentifyNum => $pii{IdentifyNum}, UserName => $pii{UserName} });

    # nginx's own [error] lines about the upstream call show its URL
    push @bodies, $t->post('/idv/down/id2meta', { ParamType => 'normal',
        IdentifyNum => $pii{IdentifyNum}, UserName => $pii{UserName} });
    $t->mock_fault(mode => 'timeout', delay_ms => 5000);
    push @bodies, $t->post('/idv/id2meta', { ParamType => 'normal',
        IdentifyNum => $pii{IdentifyNum}, UserName => $pii{UserName} });

    cmp_ok(scalar(grep { $_->{status} == 200 } @bodies), '>=', 4,
           "$level: the operations went through");

    $t->ignore_log(qr/connect\(\) failed|upstream timed out/);
    $t->stop;

    like($t->error_log, qr/upstream timed out.*upstream: "https:\/\/[^"?]+\/"/,
         "$level: upstream errors still name the upstream, without query");

    my %logs = ('error.log' => $t->error_log, 'access log' => $t->access_log,
                'idv access log' => IdvTest::_slurp($t->testdir . '/idv.log'),
                'responses' => join("\n", map { $_->{body} } @bodies));

    like($logs{'idv access log'}, qr/^Initialize Success [0-9a-f]{32} pii01 /m,
         "$level: the access log variables are filled");

    for my $where (sort keys %logs) {
        my $text = $logs{$where} // '';
        utf8::decode($text) unless utf8::is_utf8($text);

        unlike($text, qr/\Q$SECRET\E/, "$level $where: no AccessKey secret");
        unlike($text, qr/\Q@{[substr($FACE, 100, 40)]}\E/,
               "$level $where: no image bytes");

        for my $name (sort keys %pii) {

            # at debug level nginx core itself prints the upstream request
            # line, whose query string carries what the API puts there
            next if $level eq 'debug' && $where eq 'error.log';

            unlike($text, qr/\Q$pii{$name}\E/, "$level $where: no $name");
        }
    }

    if ($level eq 'debug') {
        my @idv = grep { /\bidv[: ]/ } split /\n/, $logs{'error.log'};
        ok(@idv, 'debug: the module logs at debug level');
        for my $name (sort keys %pii) {
            ok(!grep({ /\Q$pii{$name}\E/ } @idv),
               "debug: the module's own lines do not show $name");
        }
    }
}

done_testing;
