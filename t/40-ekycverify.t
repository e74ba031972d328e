# EkycVerify (eKYC_MIN): images as base64 (form body upstream) or URL
# (query), checked locally before anything billable is sent; Passed Y/T and
# N/F understood; Ext* JSON strings intact, or expanded on request.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use IdvImages qw(jpeg png b64);
use JSON::PP;


my $FACE = b64(jpeg(720, 1280, 60_000));
my $ID = b64(png(1024, 768, 40_000));

my %base = (MerchantBizId => 'min0001', MerchantUserId => 'u-7d3e1a',
            DocType => '00000001');

for my $sig ('v3', 'v1') {

    my $t = IdvTest->new;
    $t->start_mock;
    $t->write_config($t->standard_http(signature => $sig,
                                       extra_server => <<'END'));
        client_max_body_size 4m;
        client_body_buffer_size 4m;

        location = /idv/ekyc/verify-expanded {
            idv_action EkycVerify;
            idv_product_code eKYC_MIN;
            idv_expand_json on;
        }

        location = /idv/ekyc/verify-small {
            idv_action EkycVerify;
            idv_product_code eKYC_MIN;
            client_max_body_size 1m;
        }
END
    $t->start_nginx;

    sub rejected {
        my ($t, $params, $code, $msg, $name) = @_;

        local $Test::Builder::Level = $Test::Builder::Level + 1;

        $t->mock_reset;
        my $r = $t->post('/idv/ekyc/verify', $params);
        is($r->{status}, 400, "$name: 400") or diag $r->{body};
        is($r->{json}{Code}, $code, "$name: $code");
        like($r->{json}{Message}, $msg, "$name: message") if $msg;
        is($t->mock_stats->{calls}, 0, "$name: nothing sent upstream");
        unlike($r->{body}, qr/\Q@{[substr($FACE, 0, 40)]}\E/,
               "$name: the image is not echoed");
    }

    # the happy paths

    $t->mock_reset;
    my $r = $t->post('/idv/ekyc/verify', { %base, FacePictureBase64 => $FACE,
                                           IdOcrPictureBase64 => $ID });
    is($r->{status}, 200, "$sig base64 images: 200") or diag $r->{body};
    is($r->{json}{Result}{Passed}, 'Y', "$sig base64 images: Passed");
    is($r->{json}{Gateway}{passed}, JSON::PP::true,
       "$sig base64 images: Gateway.passed true");
    my $s = $t->mock_stats;
    is($s->{accepted}, 1, "$sig base64 images: signature verified upstream");
    my $up = $s->{requests}[-1];
    ok(!exists $up->{query}{FacePictureBase64},
       "$sig base64 images: not in the query");
    is($up->{body}{FacePictureBase64}, '<' . length($FACE) . ' bytes>',
       "$sig base64 images: face in the form body")
        or diag explain $up->{body};
    is($up->{images}{FacePictureBase64}{decoded_bytes}, 60_000,
       "$sig base64 images: face arrives intact")
        or diag explain $up->{images};
    is($up->{images}{IdOcrPictureBase64}{decoded_bytes}, 40_000,
       "$sig base64 images: ID picture arrives intact");
    is($up->{query}{ProductCode}, 'eKYC_MIN', "$sig: ProductCode eKYC_MIN");

    my $ext = eval { decode_json($r->{json}{Result}{ExtFaceInfo}) };
    ok($ext && exists $ext->{faceComparisonScore},
       "$sig: ExtFaceInfo reaches the backend as a JSON string");

    $r = $t->post('/idv/ekyc/verify-expanded', { %base,
                  FacePictureBase64 => $FACE, IdOcrPictureBase64 => $ID });
    is(ref $r->{json}{Result}{ExtFaceInfo}, 'HASH',
       "$sig idv_expand_json: ExtFaceInfo is an object");
    is(ref $r->{json}{Result}{ExtIdInfo}, 'HASH',
       "$sig idv_expand_json: ExtIdInfo is an object");
    is($r->{json}{Result}{Passed}, 'Y', "$sig idv_expand_json: rest intact");
    is($r->{json}{Gateway}{action}, 'EkycVerify',
       "$sig idv_expand_json: Gateway object kept");

    $t->mock_reset;
    $r = $t->post('/idv/ekyc/verify', { %base,
                  FacePictureUrl => 'https://cdn.example/face.jpg?sig=a+b',
                  IdOcrPictureUrl => 'http://cdn.example/id.png' });
    is($r->{status}, 200, "$sig image URLs: 200") or diag $r->{body};
    $up = $t->mock_stats->{requests}[-1];
    is($up->{query}{FacePictureUrl}, 'https://cdn.example/face.jpg?sig=a+b',
       "$sig image URLs: in the query, unchanged");

    $r = $t->post('/idv/ekyc/verify', { %base, FacePictureBase64 => $FACE,
                  Authorize => 'T', DocName => '张三',
                  DocNo => '110101199001011234' });
    is($r->{status}, 200,
       "$sig Authorize=T with DocName and DocNo needs no ID picture")
        or diag $r->{body};

    $r = $t->post('/idv/ekyc/verify', { %base, MerchantBizId => 'passT01',
                  FacePictureBase64 => $FACE, IdOcrPictureBase64 => $ID });
    is($r->{json}{Result}{Passed}, 'T', "$sig Passed T reaches the backend");
    is($r->{json}{Gateway}{passed}, JSON::PP::true, "$sig Passed T is a pass");

    $r = $t->post('/idv/ekyc/verify', { %base, MerchantBizId => 'fail01',
                  FacePictureBase64 => $FACE, IdOcrPictureBase64 => $ID });
    is($r->{status}, 200, "$sig a failed verification is a successful call");
    is($r->{json}{Result}{Passed}, 'N', "$sig Passed N reaches the backend");
    is($r->{json}{Gateway}{passed}, JSON::PP::false, "$sig Passed N: fail");

    # two ~0.7 MB images, as JSON and as a form

    my $big_face = b64(jpeg(1080, 1920, 700_000));
    my $big_id = b64(png(1920, 1080, 700_000));

    $t->mock_reset;
    $r = $t->post('/idv/ekyc/verify', { %base, FacePictureBase64 => $big_face,
                                        IdOcrPictureBase64 => $big_id });
    is($r->{status}, 200, "$sig two 0.7 MB images as JSON: 200")
        or diag $r->{body};
    $up = $t->mock_stats->{requests}[-1];
    is($up->{images}{FacePictureBase64}{decoded_bytes}, 700_000,
       "$sig two 0.7 MB images as JSON: face intact");

    my $form = join '&', map {
        my $v = $_->[1];
        $v =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
        "$_->[0]=$v";
    } ([MerchantBizId => 'form01'], [MerchantUserId => 'u1'],
       [DocType => '00000001'], [FacePictureBase64 => $big_face],
       [IdOcrPictureBase64 => $big_id]);

    $t->mock_reset;
    $r = $t->post('/idv/ekyc/verify', $form,
                  'Content-Type' => 'application/x-www-form-urlencoded');
    is($r->{status}, 200, "$sig two 0.7 MB images as a form: 200")
        or diag $r->{body};
    $up = $t->mock_stats->{requests}[-1];
    is($up->{images}{IdOcrPictureBase64}{decoded_bytes}, 700_000,
       "$sig two 0.7 MB images as a form: ID picture intact");

    $t->mock_reset;
    $r = $t->post('/idv/ekyc/verify-small', { %base,
                  FacePictureBase64 => $big_face,
                  IdOcrPictureBase64 => $big_id });
    is($r->{status}, 413, "$sig over client_max_body_size: 413");
    is($r->{json}{Code}, 'Gateway.BodyTooLarge', "$sig 413 in JSON");
    is($t->mock_stats->{calls}, 0, "$sig 413: nothing sent upstream");

    # local checks

    rejected($t, { %base, FacePictureBase64 => $FACE,
                   FacePictureUrl => 'https://x.example/f.jpg',
                   IdOcrPictureBase64 => $ID },
             'DataDuplication', qr/FacePictureBase64/,
             "$sig face as base64 and URL");

    rejected($t, { %base, IdOcrPictureBase64 => $ID },
             'MissingParameter', qr/FacePictureBase64/, "$sig no face");

    rejected($t, { %base, FacePictureBase64 => $FACE },
             'MissingParameter', qr/IdOcrPictureBase64/, "$sig no ID picture");

    rejected($t, { %base, FacePictureBase64 => $FACE, Authorize => 'T',
                   DocName => '张三' },
             'MissingParameter', qr/IdOcrPictureBase64/,
             "$sig Authorize=T without DocNo still needs the picture");

    rejected($t, { %base, FacePictureBase64 => '!!not base64!!',
                   IdOcrPictureBase64 => $ID },
             'InvalidParameter', qr/FacePictureBase64 is not valid base64/,
             "$sig base64 that does not decode");

    rejected($t, { %base, FacePictureBase64 => substr($FACE, 0, -1),
                   IdOcrPictureBase64 => $ID },
             'InvalidParameter', qr/not valid base64/,
             "$sig truncated base64");

    # one byte outside the alphabet, where the check takes 32 bytes at a
    # time and in the bytes left at the end: the neighbours of A-Z a-z
    # 0-9 + / in ASCII, and a letter that is not ASCII

    for my $bad ('-', '_', '.', '@', '[', '`', '{', ':', '*', ',', '=',
                 ' ', "\x{e9}") {
        for my $at (40, length($FACE) - 6) {
            my $img = $FACE;
            substr($img, $at, 1) = $bad;
            rejected($t, { %base, FacePictureBase64 => $img,
                           IdOcrPictureBase64 => $ID },
                     'InvalidParameter', qr/FacePictureBase64 is not valid base64/,
                     sprintf("$sig U+%04X at %s: not base64", ord $bad,
                             $at == 40 ? 'the start' : 'the end'));
        }
    }

    rejected($t, { %base, FacePictureBase64 => b64("GIF89a" . "\0" x 600),
                   IdOcrPictureBase64 => $ID },
             'InvalidParameter', qr/not a JPEG or PNG/, "$sig a GIF");

    rejected($t, { %base, FacePictureBase64 => b64("\xFF\xD8\xFF\xE0\0\x10"),
                   IdOcrPictureBase64 => $ID },
             'InvalidParameter', qr/not a JPEG or PNG/,
             "$sig a JPEG cut before its frame header");

    rejected($t, { %base, FacePictureBase64 => b64(jpeg(1280, 720,
                                                        1024 * 1024 + 1)),
                   IdOcrPictureBase64 => $ID },
             'ToolargeImage', qr/larger than 1 MB/, "$sig an image over 1 MB");

    rejected($t, { %base, FacePictureBase64 => b64(jpeg(320, 240, 5000)),
                   IdOcrPictureBase64 => $ID },
             'UnqualifiedPhoto', qr/640x480/, "$sig a 320x240 JPEG");

    rejected($t, { %base, FacePictureBase64 => $FACE,
                   IdOcrPictureBase64 => b64(png(2560, 1440, 5000)) },
             'UnqualifiedPhoto', qr/IdOcrPictureBase64/, "$sig a 2560x1440 PNG");

    rejected($t, { %base, FacePictureUrl => 'ftp://x.example/f.jpg',
                   IdOcrPictureBase64 => $ID },
             'InvalidParameter', qr/FacePictureUrl must be an http\(s\) URL/,
             "$sig an ftp URL");

    rejected($t, { %base, FacePictureUrl => 'https:///nohost',
                   IdOcrPictureBase64 => $ID },
             'InvalidParameter', qr/FacePictureUrl/, "$sig a URL without host");

    ok(defined png(640, 480) && defined jpeg(1920, 1080), 'image builders');

    $r = $t->post('/idv/ekyc/verify', { %base,
                  FacePictureBase64 => b64(jpeg(480, 640, 3000)),
                  IdOcrPictureBase64 => b64(png(1920, 1080, 3000)) });
    is($r->{status}, 200, "$sig the exact bounds are accepted")
        or diag $r->{body};

    $t->stop;
}

done_testing;
