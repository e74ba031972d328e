# Id2MetaVerifyIntl (ID_2META): name and Chinese ID number, BizCode back.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use utf8;


for my $sig ('v3', 'v1') {
    my $t = IdvTest->new;
    $t->start_mock;
    $t->write_config($t->standard_http(signature => $sig));
    $t->start_nginx;

    for my $case (['110101199001011234', '1', 'consistent'],
                  ['110101199001010000', '2', 'inconsistent'],
                  ['110101199001019999', '3', 'no record'])
    {
        my ($num, $code, $name) = @$case;

        $t->mock_reset;
        my $r = $t->post('/idv/id2meta', { ParamType => 'normal',
                                           IdentifyNum => $num,
                                           UserName => '张三丰' });
        is($r->{status}, 200, "$sig $name: 200") or diag $r->{body};
        is($r->{json}{Result}{BizCode}, $code, "$sig $name: BizCode $code");

        my $up = $t->mock_stats->{requests}[-1];
        is($up->{sig}, $sig, "$sig $name: verified upstream");
        is($up->{query}{UserName}, '张三丰', "$sig $name: Chinese name intact");
        is($up->{query}{ProductCode}, 'ID_2META', "$sig $name: ProductCode");
    }

    $t->mock_reset;
    my $r = $t->post('/idv/id2meta', { ParamType => 'normal',
                                       UserName => '张三丰' });
    is($r->{json}{Code}, 'MissingParameter', "$sig no IdentifyNum");
    is($t->mock_stats->{calls}, 0, "$sig no IdentifyNum: nothing sent");
    unlike($r->{body}, qr/张三丰/, "$sig no IdentifyNum: name not echoed");

    $t->stop;
}

done_testing;
