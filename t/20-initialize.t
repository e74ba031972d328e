# Initialize end to end: the backend's plain JSON (or form) becomes a
# signed call that the HTTPS mock verifies with its own implementation,
# and the upstream envelope comes back with a Gateway object.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use JSON::PP;
use utf8;


my $META = '{"apdidToken":"","appName":"com.example.app",'
           . '"bioMetaInfo":"4.1.0:1150000,0","deviceType":"ios"}';

for my $sig ('v3', 'v1') {

    my $t = IdvTest->new;
    $t->start_mock;
    $t->write_config($t->standard_http(signature => $sig));
    $t->start_nginx;

    my %seeds = (
        '/idv/idr/initialize' => [ 'IDR_GLOBAL', {
            MerchantBizId => 'e0c34a77f5ac40a5aa5e6ed20c353888',
            MerchantUserId => 'user-0001', DocType => '01560000',
            DocScanMode => 'auto', MetaInfo => $META } ],
        '/idv/ekyc/initialize' => [ 'eKYC', {
            MerchantBizId => 'ekyc0001', MerchantUserId => 'user-0002',
            DocType => '01000000', MetaInfo => $META,
            CallbackUrl => 'https://merchant.example/cb?x=1',
            CallbackToken => 'tok-1' } ],
        '/idv/ocr/initialize' => [ 'ID_OCR', {
            MerchantBizId => 'ocr0001', MerchantUserId => 'user-0003',
            DocType => '01000000',
            MetaInfo => $META, ReturnUrl => 'https://merchant.example/done',
            Ocr => 'T' } ],
    );

    for my $path (sort keys %seeds) {
        my ($product, $params) = @{$seeds{$path}};

        $t->mock_reset;
        my $r = $t->post($path, $params,
                         Cookie => 'session=backend-cookie',
                         'X-Backend-Secret' => 'do-not-forward');

        is($r->{status}, 200, "$sig $product: 200") or diag $r->{body};
        is($r->{json}{Code}, 'Success', "$sig $product: upstream Code");
        like($r->{json}{Result}{TransactionId}, qr/^[0-9a-f]{32}$/,
             "$sig $product: TransactionId reaches the backend");
        like($r->{json}{Result}{TransactionUrl}, qr/^https:/,
             "$sig $product: TransactionUrl reaches the backend");
        ok(length $r->{json}{Result}{Protocol},
           "$sig $product: Protocol reaches the backend");
        like($r->{json}{RequestId}, qr/^[0-9A-F-]{36}$/,
             "$sig $product: upstream RequestId unchanged");

        my $g = $r->{json}{Gateway};
        is($g->{action}, 'Initialize', "$sig $product: Gateway.action");
        is($g->{productCode}, $product, "$sig $product: Gateway.productCode");
        ok(!$g->{cached}, "$sig $product: Gateway.cached is false");
        is($g->{attempts}, 1, "$sig $product: one attempt");
        is($g->{upstreamStatus}, 200, "$sig $product: upstream status");
        like($r->{headers}{'content-type'}, qr{^application/json},
             "$sig $product: JSON content type");

        my $s = $t->mock_stats;
        is($s->{calls}, 1, "$sig $product: exactly one upstream call");
        is($s->{accepted}, 1, "$sig $product: the mock verified the signature");

        my $up = $s->{requests}[-1];
        is($up->{sig}, $sig, "$sig $product: signed with $sig");
        is($up->{method}, 'POST', "$sig $product: POST upstream");
        is($up->{path}, '/', "$sig $product: path /");
        is($up->{query}{ProductCode}, $product,
           "$sig $product: ProductCode added by the gateway");
        is($up->{query}{$_}, $params->{$_},
           "$sig $product: $_ sent as given")
            for sort keys %$params;
        is($up->{host}, '127.0.0.1:' . $t->mock_port,
           "$sig $product: signed Host is the Host sent (non-default port)");
        ok(!exists $up->{headers}{cookie},
           "$sig $product: no backend cookie upstream");
        ok(!exists $up->{headers}{'x-backend-secret'},
           "$sig $product: no backend header upstream");
        unlike($up->{headers}{'user-agent'} // '', qr/IdvTest/,
               "$sig $product: no backend User-Agent upstream");
        is($up->{content_type}, 'application/x-www-form-urlencoded',
           "$sig $product: Initialize carries a (signed) form body");
    }

    # the same through a form body

    $t->mock_reset;
    my $r = $t->post('/idv/ocr/initialize',
                     'MerchantBizId=form0001&MerchantUserId=u1'
                     . '&DocType=01000000'
                     . '&MetaInfo=%7B%22a%22%3A1%7D&ReturnUrl=https%3A%2F%2F'
                     . 'x.example%2F%3Fa%3D1%26b%3D2',
                     'Content-Type' => 'application/x-www-form-urlencoded');
    is($r->{status}, 200, "$sig form body: 200") or diag $r->{body};
    my $up = $t->mock_stats->{requests}[-1];
    is($up->{query}{MetaInfo}, '{"a":1}', "$sig form body: decoded value");
    is($up->{query}{ReturnUrl}, 'https://x.example/?a=1&b=2',
       "$sig form body: reserved characters survive");

    # UTF-8 and the characters that break naive encoders

    for my $value ('张三 Zhang San', 'é ✓ ümlaut', 'a+b/c=d&e*f~g h',
                   "quote' paren() bang! percent% colon:",
                   '{"nested":"json","n":[1,2]}')
    {
        $t->mock_reset;
        my $r = $t->post('/idv/ekyc/initialize', {
            MerchantBizId => 'utf8', MerchantUserId => $value,
            DocType => '01000000', MetaInfo => $value,
        });
        is($r->{status}, 200, "$sig value '$value': signature accepted")
            or diag $r->{body};
        my $up = $t->mock_stats->{requests}[-1];
        is($up->{query}{MetaInfo}, $value,
           "$sig value '$value': arrives unchanged");
    }

    # Protocol and Result are the upstream's bytes: nothing re-encoded

    $t->mock_reset;
    $r = $t->post('/idv/ekyc/initialize', {
        MerchantBizId => 'bytes01', MerchantUserId => 'u',
        DocType => '01000000', MetaInfo => $META });
    my $body = $r->{body};
    $body =~ s/,"Gateway":\{[^{}]*\}\}$/}/;
    ok(eval { decode_json($body) }, "$sig: envelope without Gateway is JSON");

    $t->stop;
}

done_testing;
