# The operations table follows the official TypeScript client
# (data/actions.json, written by gen_actions.pl): actions and fields the
# client has are accepted and sent where the client sends them, signed so
# that the mock verifies the signature.  The mock reads the placements
# from data/actions.json itself and refuses a parameter sent in the other
# place, which the last part proves.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use IdvImages qw(jpeg b64);
use JSON::PP;


my $ROOT = IdvTest->root;

open(my $fh, '<:raw', "$ROOT/ngx_http_idv_module/data/actions.json")
    or die "actions.json: $!";
my $META = JSON::PP->new->utf8->decode(do { local $/; <$fh> });
close $fh;

# action -> { parameter -> 'query' | 'body' }, as the client places them
my %PLACE;

for my $action (keys %{ $META->{actions} }) {
    $PLACE{$action}{ $_->{name} } = $_->{in} eq 'formData' ? 'body' : 'query'
        for @{ $META->{actions}{$action}{params} };
}


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(extra_server => <<'END'));
        location = /idv/initialize-v2 {
            idv_action InitializeV2;
            idv_product_code eKYC;
        }

        location = /idv/initialize-v2-v1 {
            idv_action InitializeV2;
            idv_product_code eKYC;
            idv_signature v1;
        }

        location = /idv/face-verify {
            idv_action FaceVerifyIntl;
            idv_product_code FACE_VERIFY_MIN;
        }

        # its Timestamp is the action's, not V1's
        location = /idv/idn {
            idv_action IdnAuthorityVerifyIntl;
            idv_product_code IDN_META;
        }

        # client 3.22.0's two actions (gen_actions.pl --only)
        location = /idv/credential-recognition-v2 {
            idv_action CredentialRecognitionIntlV2;
            idv_product_code CREDENTIAL_RECOGNITION;
        }

        location = /idv/credential-submit-v2 {
            idv_action CredentialSubmitIntlV2;
            idv_product_code CREDENTIAL_RECOGNITION;
        }

        location = /idv/credential-submit-v2-v1 {
            idv_action CredentialSubmitIntlV2;
            idv_product_code CREDENTIAL_RECOGNITION;
            idv_signature v1;
        }

        # actions the table had, with client 3.22.0's new fields
        location = /idv/credential-recognition {
            idv_action CredentialRecognitionIntl;
            idv_product_code CREDENTIAL_RECOGNITION;
        }

        location = /idv/credential-submit {
            idv_action CredentialSubmitIntl;
            idv_product_code CREDENTIAL_RECOGNITION;
        }

        location = /idv/credential-submit-v1 {
            idv_action CredentialSubmitIntl;
            idv_product_code CREDENTIAL_RECOGNITION;
            idv_signature v1;
        }

        location = /idv/ekyc-verify-v2 {
            idv_action EkycVerifyV2;
            idv_product_code eKYC_MIN;
        }

        # straight to the mock, for requests signed here
        location = /direct {
            proxy_pass https://idv_mock/;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name localhost;
        }
END
$t->start_nginx;


# the call reached the mock once, was accepted (signature verified), and
# every parameter of it sits where the client puts it

sub sent_as_client {
    my ($name, $action, $r, $sig, @names) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    is($r->{status}, 200, "$name: 200") or diag $r->{body};
    is($r->{json}{Code}, 'Success', "$name: Success");

    my $stats = $t->mock_stats;
    my $up = $stats->{requests}[-1];

    is($stats->{by_action}{$action}, 1, "$name: one call upstream");
    is($up->{action}, $action, "$name: as $action");
    is($up->{sig}, $sig, "$name: signed $sig, the mock verified it");
    is($up->{code}, 'Success', "$name: the mock accepted it");

    for my $p (@names) {
        my $want = $PLACE{$action}{$p} // 'none';
        my $other = $want eq 'body' ? 'query' : 'body';

        ok(exists $up->{$want}{$p} && !exists $up->{$other}{$p},
           "$name: $p in the $want, as the client sends it");
    }
}


my %V2 = (MerchantBizId => 'v2biz0001', MerchantUserId => 'u-1',
          MetaInfo => '{"deviceType":"h5"}', Email => 'a@example.com',
          Mobile => '+6281293671234', TemplateType => '1',
          OcrValueStandard => '1', FacePictureBase64 => b64(jpeg(640, 480,
                                                               3000)));

for my $sig ('v3', 'v1') {
    my $path = $sig eq 'v3' ? '/idv/initialize-v2' : '/idv/initialize-v2-v1';

    $t->mock_reset;
    my $r = $t->post($path, \%V2);

    sent_as_client("InitializeV2 $sig", 'InitializeV2', $r, $sig,
                   sort(keys %V2), 'ProductCode');
    is($r->{json}{Result}{Action}, 'InitializeV2',
       "InitializeV2 $sig: the mock's Result comes back")
        or diag $r->{body};
}

# a new field of an action the gateway knew: Initialize's Email, Mobile,
# OcrValueStandard and TemplateType

$t->mock_reset;
my $r = $t->post('/idv/ekyc/initialize',
                 { MerchantBizId => 'email0001', MerchantUserId => 'u-2',
                   DocType => '01000000', MetaInfo => '{}',
                   Email => 'b@example.com', Mobile => '13800000000',
                   OcrValueStandard => '1', TemplateType => '1' });
sent_as_client('Initialize Email', 'Initialize', $r, 'v3',
               qw(Email Mobile OcrValueStandard TemplateType MerchantBizId));

# FaceVerifyIntl: an image in the body, a URL in the query

$t->mock_reset;
$r = $t->post('/idv/face-verify',
              { MerchantBizId => 'fv0001', MerchantUserId => 'u-3',
                SourceFacePicture => b64(jpeg(640, 480, 2000)),
                TargetFacePictureUrl => 'https://x.example/t.jpg',
                FaceQualityCheck => 'Y' });
sent_as_client('FaceVerifyIntl', 'FaceVerifyIntl', $r, 'v3',
               qw(SourceFacePicture TargetFacePictureUrl FaceQualityCheck
                  MerchantBizId ProductCode));

# IdnAuthorityVerifyIntl has a parameter named Timestamp, V1's name too:
# under V3 it is the action's, in the query

$t->mock_reset;
$r = $t->post('/idv/idn',
              { MerchantBizId => 'idn0001', MerchantUserId => 'u-4',
                BirthDate => '1990-01-01', Email => 'd@example.com',
                FullName => 'Budi', IdNumber => '3171234567890001',
                Mobile => '+6281293671234', Timestamp => '1716190000' });
sent_as_client('IdnAuthorityVerifyIntl', 'IdnAuthorityVerifyIntl', $r,
               'v3', qw(Timestamp IdNumber BirthDate ProductCode));
is($t->mock_stats->{requests}[-1]{query}{Timestamp}, '1716190000',
   'IdnAuthorityVerifyIntl: its Timestamp as sent');

# CredentialRecognitionIntlV2 and CredentialSubmitIntlV2, from client
# 3.22.0 alone: every field of theirs, each where that client puts it

my %CRED = (DocType => '01', FraudCheck => 'false', OcrArea => '0101',
            FileInputType => 'IMAGE', IdQuality => 'Y',
            OcrTranslation => '1', OcrValueStandard => '0',
            CheckRuleConfig => '{"name_rule":"Includes Name Wibowo*"}',
            CredentialOcrPictureBase64 => b64(jpeg(640, 480, 1000)),
            CredentialOcrPictureUrl => 'https://x.example/bill-9a1.jpg',
            CredentialOcrPictureFile => 'https://b.oss.example/up-7c3.jpg');

$t->mock_reset;
$r = $t->post('/idv/credential-recognition-v2', \%CRED);
sent_as_client('CredentialRecognitionIntlV2', 'CredentialRecognitionIntlV2',
               $r, 'v3', sort(keys %CRED), 'ProductCode');
is($t->mock_stats->{requests}[-1]{query}{ProductCode},
   'CREDENTIAL_RECOGNITION',
   'CredentialRecognitionIntlV2: the location\'s ProductCode');

my %SUBMIT = (%CRED, MerchantBizId => 'credv20001', SceneCode => 'scene_01');

for my $sig ('v3', 'v1') {
    my $path = '/idv/credential-submit-v2' . ($sig eq 'v1' ? '-v1' : '');

    $t->mock_reset;
    $r = $t->post($path, \%SUBMIT);
    sent_as_client("CredentialSubmitIntlV2 $sig", 'CredentialSubmitIntlV2',
                   $r, $sig, sort(keys %SUBMIT), 'ProductCode');
    is($r->{json}{Result}{Action}, 'CredentialSubmitIntlV2',
       "CredentialSubmitIntlV2 $sig: the mock's Result comes back")
        or diag $r->{body};
}

# what client 3.22.0 adds to actions the table had.  Where 3.22.0's
# client.ts puts each (query['X'] / body['X'] in the action's
# xxxWithOptions), written down here rather than read from the table:
# CredentialRecognitionIntl's come from its 3.22.0 model (gen_actions.pl
# --only), the others from the overlay's "documented" list (their 3.22.0
# models are not available), which the mock does not know

my %NEW_322 = (FileInputType => 'query', IdQuality => 'query',
               OcrTranslation => 'query', OcrValueStandard => 'query',
               CheckRuleConfig => 'body');
my %PLACE_322 = (%NEW_322, IdSpoof => 'query');

# the last request the mock got carries each of @names, as sent in
# %$sent, where 3.22.0 puts it
sub placed_as_322 {
    my ($name, $sent, @names) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $up = $t->mock_stats->{requests}[-1];

    for my $p (@names) {
        my $want = $PLACE_322{$p};
        my $other = $want eq 'body' ? 'query' : 'body';

        ok(exists $up->{$want}{$p} && !exists $up->{$other}{$p},
           "$name: $p in the $want, where client 3.22.0 puts it");
        is($up->{$want}{$p}, $sent->{$p}, "$name: $p as sent");
    }
}

my %CRED_V1 = map { $_ => $CRED{$_} }
              qw(DocType FraudCheck OcrArea CredentialOcrPictureBase64),
              keys %NEW_322;

$t->mock_reset;
$r = $t->post('/idv/credential-recognition', \%CRED_V1);
sent_as_client('CredentialRecognitionIntl 3.22.0 fields',
               'CredentialRecognitionIntl', $r, 'v3',
               sort(keys %CRED_V1), 'ProductCode');
placed_as_322('CredentialRecognitionIntl', \%CRED_V1, sort keys %NEW_322);

for my $sig ('v3', 'v1') {
    my $path = '/idv/credential-submit' . ($sig eq 'v1' ? '-v1' : '');

    $t->mock_reset;
    $r = $t->post($path, { %CRED_V1, MerchantBizId => "credv1$sig",
                           SceneCode => 'scene_02' });
    sent_as_client("CredentialSubmitIntl 3.22.0 fields $sig",
                   'CredentialSubmitIntl', $r, $sig,
                   qw(DocType MerchantBizId SceneCode ProductCode));
    placed_as_322("CredentialSubmitIntl $sig", \%CRED_V1,
                  sort keys %NEW_322);
}

my %EKYC = (MerchantBizId => 'ekycspoof01', MerchantUserId => 'u-5',
            DocType => '00000001', IdSpoof => 'Y',
            FacePictureBase64 => b64(jpeg(640, 480, 2000)),
            IdOcrPictureBase64 => b64(jpeg(640, 480, 2100)));

for my $v ('EkycVerify', 'EkycVerifyV2') {
    my $path = $v eq 'EkycVerify' ? '/idv/ekyc/verify' : '/idv/ekyc-verify-v2';

    $t->mock_reset;
    $r = $t->post($path, \%EKYC);
    sent_as_client("$v IdSpoof", $v, $r, 'v3',
                   qw(MerchantBizId DocType FacePictureBase64
                      IdOcrPictureBase64 ProductCode));
    placed_as_322($v, \%EKYC, 'IdSpoof');
}

# their required fields, from the models' 'This parameter is required'

$t->mock_reset;
$r = $t->post('/idv/credential-recognition-v2',
              without(\%CRED, 'OcrArea'));
is($r->{status}, 400, 'CredentialRecognitionIntlV2 without OcrArea: 400');
like($r->{json}{Message} // '', qr/OcrArea/,
     'CredentialRecognitionIntlV2 without OcrArea: named');
$r = $t->post('/idv/credential-submit-v2', without(\%SUBMIT, 'SceneCode'));
is($r->{status}, 400, 'CredentialSubmitIntlV2 without SceneCode: 400');
like($r->{json}{Message} // '', qr/SceneCode/,
     'CredentialSubmitIntlV2 without SceneCode: named');
$r = $t->post('/idv/credential-submit-v2',
              { %SUBMIT, CredentialOcrPictureFile => 'ftp://b.example/x' });
is($r->{status}, 400, 'CredentialSubmitIntlV2: a file that is no URL: 400');
is($t->mock_stats->{calls}, 0, 'CredentialIntlV2: refused locally');

# the table's own checks hold for a new action: an image that is not one

$t->mock_reset;
$r = $t->post('/idv/face-verify',
              { MerchantBizId => 'fv0002',
                SourceFacePicture => 'bm90IGEgcGljdHVyZQ==' });
is($r->{status}, 400, 'FaceVerifyIntl: a picture that is no image: 400');
is($t->mock_stats->{calls}, 0, 'FaceVerifyIntl: refused locally');

# a field the client does not have is still refused

$r = $t->post('/idv/initialize-v2', { %V2, NoSuchField => 'x' });
is($r->{status}, 400, 'InitializeV2: a field of no client: 400');
like($r->{json}{Message} // '', qr/NoSuchField is not accepted/,
     'InitializeV2: a field of no client: named');


# --- the mock's placement check, against requests signed here ------------

# V1 puts every parameter in the query: Mobile2MetaVerifyIntl's belong in
# the body

$t->mock_reset;
$r = $t->sdk_v1('testid', 'testsecret', _path => '/direct',
                SignatureNonce => "n1-$$-" . time,
                Action => 'Mobile2MetaVerifyIntl',
                ProductCode => 'MOBILE_2META',
                ParamType => 'normal', UserName => 'x',
                Mobile => '13800000000');
is($r->{status}, 400, 'mock: body parameters in the query: 400')
    or diag $r->{body};
is($r->{json}{Code}, 'InvalidParameter',
   'mock: body parameters in the query: InvalidParameter');
my $up = $t->mock_stats->{requests}[-1];
is_deeply([sort @{ $up->{misplaced} // [] }],
          [qw(Mobile ParamType ProductCode UserName)],
          'mock: it names each misplaced parameter');

# the same path with the client's placement (CheckResult: all query)

$t->mock_reset;
$r = $t->sdk_v1('testid', 'testsecret', _path => '/direct',
                SignatureNonce => "n2-$$-" . time,
                Action => 'CheckResult', MerchantBizId => 'x',
                TransactionId => '08573be80f944d95ac812e019e3655a8');
isnt($r->{json}{Code} // '', 'InvalidParameter',
     'mock: query parameters in the query pass its check')
    or diag $r->{body};
ok(!exists $t->mock_stats->{requests}[-1]{misplaced},
   'mock: nothing misplaced');

$t->stop;

unlike($t->error_log, qr/\[(alert|emerg)\]/, 'no alert or emerg');
unlike($t->error_log, qr/3171234567890001/, 'no IdNumber in the error log');
unlike($t->error_log, qr/Wibowo|bill-9a1|up-7c3/,
       'no CheckRuleConfig or picture URL in the error log');

# V1 would send that Timestamp twice: nginx -t refuses the pair

$t->write_config($t->standard_http(signature => 'v1', extra_server => <<'END'));
        location = /idv/idn {
            idv_action IdnAuthorityVerifyIntl;
        }
END
my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'IdnAuthorityVerifyIntl with idv_signature v1: nginx -t fails');
like($out, qr/\[emerg\] location = "\/idv\/idn" .*action IdnAuthorityVerifyIntl takes a parameter Timestamp, which "idv_signature v1" sets as its own: use "idv_signature v3"/,
     'IdnAuthorityVerifyIntl with idv_signature v1: the [emerg] says why');
unlike($t->error_log, qr/a\@example\.com|b\@example\.com|6281293671234/,
       'no Email or Mobile in the error log');

done_testing;


# a copy of the request without one field

sub without {
    my ($req, $name) = @_;

    my %copy = %$req;

    delete $copy{$name};

    return \%copy;
}
