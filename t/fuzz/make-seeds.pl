#!/usr/bin/perl

# Writes the seed corpora t/fuzz/corpus/<target>/seed-* from the
# signature vectors (t/data/signature-vectors.json), bodies like the ones
# the tests send, synthetic JPEG/PNG headers (t/lib/IdvImages.pm) and
# upstream envelopes like the mock's.  Run from the repository root after
# changing it:
#
#     perl t/fuzz/make-seeds.pl
#
# Regression inputs (regress-*, one per bug the fuzzers found) are kept
# by hand and never touched here.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";

use Digest::SHA qw(sha256 hmac_sha256);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use IdvImages qw(jpeg png);

my $root = "$FindBin::Bin/../..";
my $out = "$FindBin::Bin/corpus";
my $json = JSON::PP->new->canonical;

my %seeds;

sub seed {
    my ($target, $name, $bytes) = @_;
    $seeds{$target}{"seed-$name"} = $bytes;
}

sub form {
    my ($h) = @_;
    return join '&', map {
        my ($k, $v) = ($_, $h->{$_});
        for ($k, $v) {
            utf8::encode($_) if utf8::is_utf8($_);
            s/([^A-Za-z0-9\-_.~ ])/sprintf('%%%02X', ord $1)/ge;
            tr/ /+/;
        }
        "$k=$v";
    } sort keys %$h;
}


my $vectors = do {
    open my $fh, '<', "$root/t/data/signature-vectors.json" or die $!;
    local $/;
    JSON::PP->new->decode(<$fh>);
};

# images the gateway accepts (640x480 .. 1920x1080) and some it refuses

my $face = png(1280, 720, 600);
my $doc = jpeg(1280, 800, 900);

for my $v (@{$vectors->{vectors}}) {
    my $in = $v->{inputs};
    my $id = $v->{id};
    my %q = %{$in->{query_params} // {}};
    my %b = %{$in->{body_params} // {}};

    # the signer, exactly the vector's inputs

    my $s = ($v->{signature_version} eq 'v1' ? 'V1' : 'V3')
            . (%b ? 'F' : '') . "\n"
            . join("\n", map { $in->{$_} // '' }
                   qw(access_key_id access_key_secret host action version
                      timestamp nonce));
    $s .= "\n$_\t$q{$_}" for sort keys %q;
    $s .= "\n+$_\t$b{$_}" for sort keys %b;
    utf8::encode($s);
    seed('sign', $id, $s);

    # the request as the SDK sent it, for the verifier

    if (my $w = $v->{wire}) {
        my $req = "$w->{method} $w->{request_target} HTTP/1.1\r\n"
                  . join('', map { "$_->[0]: $_->[1]\r\n" }
                                 grep { $_->[0] !~ /^(?:connection|transfer-encoding)$/i }
                                 @{$w->{headers_in_order}})
                  . "\r\n" . ($w->{body} // '');
        utf8::encode($req) if utf8::is_utf8($req);
        seed('verify', $id, $req);
    }

    next unless $v->{signature_version} eq 'v3';

    # the backend's body for the same call

    my %all = (%q, %b);
    if ($in->{action} eq 'EkycVerify') {
        $all{FacePictureBase64} = encode_base64($face, '');
        $all{IdOcrPictureBase64} = encode_base64($doc, '');
    }

    my $body = $json->encode(\%all);
    utf8::encode($body);
    seed('json_body', $id, "$in->{action}\n$body");
    seed('form_body', $id, "$in->{action}\n" . form(\%all));

    for my $val (values %all) {
        my $b = $val;
        utf8::encode($b) if utf8::is_utf8($b);
        $seeds{canonical}{"seed-$id-" . length $b} //= $b
            if length $b < 300 && $id =~ /reserved|callback/;
    }
}

# bodies like the tests send, with the location's product code

my %init = (MerchantBizId => 'demo0001', MerchantUserId => 'user-1',
            DocType => '01000000',
            MetaInfo => '{"deviceType":"h5","ua":"Mozilla/5.0"}');

seed('json_body', 'initialize-ekyc', "Initialize eKYC\n" . $json->encode(\%init));
seed('json_body', 'initialize-docpageconfig',
     "Initialize\n" . $json->encode({ %init, ProductCode => 'ID_OCR',
                                      DocPageConfig => ['01', '02'] }));
seed('json_body', 'queryfacerecord',
     "QueryFaceRecord\n" . '{"FaceGroupCode":"g1","PageSize":10,"CurrentPage":1}');
seed('json_body', 'queryfacerecord-exp',
     "QueryFaceRecord\n" . '{"PageSize":1.25e2,"CurrentPage":-0.0E3,'
     . '"MaxResults":9223372036854775807.000e-0}');
seed('json_body', 'ekycverify-url',
     "EkycVerify eKYC_MIN\n" . $json->encode({
         MerchantBizId => 'b1', MerchantUserId => 'u1', DocType => '00000001',
         FacePictureUrl => 'https://oss.example.com/face.jpg',
         IdOcrPictureUrl => 'https://oss.example.com/id.jpg',
         Authorize => 'F', Crop => 'T' }));
seed('json_body', 'empty', "CheckResult\n");
seed('form_body', 'initialize-ekyc', "Initialize eKYC\n" . form(\%init));
seed('form_body', 'empty-pairs', "CheckResult\n&&MerchantBizId=a+b%2Bc&&");

# percent-encoding: every reserved kind

seed('canonical', 'reserved', "a b&c=d+e/f?g#h%i*j'k(l)m!n~o_p.q-r:s;t,u\@v\$w");
seed('canonical', 'utf8', "\xe6\xb5\x8b\xe8\xaf\x95 \xe2\x9c\x93 caf\xc3\xa9");
seed('canonical', 'keys', "Version\nAction\nAction\naction\nA\n\nZ\nVersion");

# base64

seed('base64', 'padded', encode_base64("hello, world", ''));
seed('base64', 'unpadded', "aGVsbG8");
seed('base64', 'bytes', "\x00\xff\xfe\x80\x7f=");

# the image checks: mode byte 0 = image bytes, 1 = base64 text

seed('image', 'png-ok', "\0" . $face);
seed('image', 'jpeg-ok', "\0" . $doc);
seed('image', 'png-small', "\0" . png(320, 240, 100));
seed('image', 'jpeg-large', "\0" . jpeg(4000, 3000, 200));
seed('image', 'png-b64', "\x01" . encode_base64($face, ''));
seed('image', 'jpeg-b64', "\x01" . encode_base64($doc, ''));

# upstream envelopes, as the mock (and the API) answer

my $rid = '99426CE3-09FE-464F-B7E0-130BBFA5F2AA';
seed('envelope', 'initialize', $json->encode({
    RequestId => $rid, Code => 'Success', Message => 'success',
    Result => { TransactionId => '7e2d9d5bc615990e1ae53bbd8a1ab2ec',
                TransactionUrl => 'https://mock.idv.test/h5/x' } }));
seed('envelope', 'checkresult', $json->encode({
    RequestId => $rid, Code => 'Success', Message => 'success',
    Result => { Passed => 'Y', SubCode => '200',
                ExtBasicInfo => '{"transactionId":"t1","certName":"***"}',
                ExtFaceInfo => '{"faceComparisonScore":95.5,"facePassed":"Y"}',
                ExtIdInfo => '{"ocrIdInfo":{"idNumber":"***"},"ocrIdPassed":"Y"}' } }));
seed('envelope', 'error', qq({"RequestId":"$rid","Code":"InvalidParameter","Message":"Specified parameter MerchantBizId is not valid.","HostId":"cloudauth-intl.cn-hongkong.aliyuncs.com"}\n));
seed('envelope', 'throttling', qq({"RequestId":"$rid","Code":"Throttling.User","Message":"Request was denied due to user flow control."}));
seed('envelope', 'passed-n', qq( {"Code":"Success","Result":{"Passed":"N","SubCode":"205","ExtFaceInfo":"[1,2]"}} ));
# what the scan decodes and where it looks: escapes in names and values,
# repeated and nested look-alikes, every kind of value
seed('envelope', 'escapes', qq({"\\u0043ode":"\\u0053uccess","Code":"X","Result":{"Passed":"\\u0059","TransactionId":"a\\ud83d\\ude00\\/\\u0000b"},"Result":{"Passed":"N"},"N":[-0.5e+3,0,1E9,true,false,null,{},[]]}));

# callback tokens (ngx_http_idv_token.h), signed with the target's key

sub token {
    my ($key, $expire, $tenant, $product, $biz) = @_;
    my $raw = pack('C', 1) . substr(sha256($key), 0, 4) . pack('N', $expire)
              . join('', map { pack('C', length) . $_ } $tenant, $product,
                                                          $biz);
    $raw .= substr(hmac_sha256($raw, $key), 0, 16);
    (my $t = encode_base64($raw, '')) =~ tr{+/}{-_};
    $t =~ s/=+$//;
    return $t;
}

my $key = 'fuzz-callback-key';
seed('token', 'acme-ekyc', token($key, 1779000000, 'acme', 'eKYC', 'cb001'));
seed('token', 'no-tenant', token($key, 1779000000, '', 'ID_OCR', 'bizEkyc2024'));
seed('token', 'empty', token($key, 0, '', '', ''));
seed('token', 'long', token($key, 4294967295, 't' x 255, 'p' x 255, 'b' x 255));
seed('token', 'other-key', token('another key', 1779000000, 'acme', 'eKYC', 'cb001'));


for my $target (sort keys %seeds) {
    my $dir = "$out/$target";
    mkdir $out;
    mkdir $dir;
    unlink glob("$dir/seed-*");
    for my $name (sort keys %{$seeds{$target}}) {
        (my $file = $name) =~ s/[^A-Za-z0-9._-]/_/g;
        open my $fh, '>:raw', "$dir/$file" or die "$dir/$file: $!";
        print $fh $seeds{$target}{$name};
        close $fh;
    }
    printf "%-10s %d seeds\n", $target, scalar keys %{$seeds{$target}};
}
