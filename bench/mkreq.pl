#!/usr/bin/perl

# mkreq.pl -- the requests bench/run.sh sends, as raw HTTP/1.1 files for
# client.pl and wrk.
#
#   mkreq.pl KIND PATH [HEADER]... > FILE
#
# KIND:
#   init          Initialize, MerchantBizId benchinit0001
#   init-vary     Initialize, MerchantBizId bench{seq:08} (one per request)
#   ekyc          EkycVerify with two 700,000-character base64 images: a
#                 720x1280 JPEG face and a 1920x1080 PNG document, built
#                 like t/lib/IdvImages.pm but padded with pseudo-random
#                 bytes, so the base64 has a real image's share of '+' and
#                 '/' (the characters form encoding escapes)
#   checkresult   CheckResult of a TransactionId
#
# HEADER: extra "Name: value" lines (e.g. "X-Idv-Tenant: acme").

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use IdvImages qw(jpeg png b64);
use JSON::PP;


my ($kind, $path, @headers) = @ARGV;

die "usage: mkreq.pl init|init-vary|ekyc|checkresult PATH [HEADER]...\n"
    unless defined $path;

my $META = '{"apdidToken":"","appName":"com.example.app",'
           . '"bioMetaInfo":"4.1.0:1150000,0","deviceType":"ios"}';

# 700,000 base64 characters = 525,000 bytes
my $IMAGE_BYTES = 525_000;

my %params;

if ($kind eq 'init' || $kind eq 'init-vary') {
    %params = (MerchantBizId => $kind eq 'init' ? 'benchinit0001'
                                                : 'bench{seq:08}',
               MerchantUserId => 'user-0001', DocType => '01000000',
               MetaInfo => $META);

} elsif ($kind eq 'ekyc') {
    %params = (MerchantBizId => 'benchekyc0001',
               MerchantUserId => 'user-0001', DocType => '00000001',
               FacePictureBase64 => b64(noisy(jpeg(720, 1280, $IMAGE_BYTES))),
               IdOcrPictureBase64 => b64(noisy(png(1920, 1080,
                                                   $IMAGE_BYTES))));

} elsif ($kind eq 'checkresult') {
    %params = (MerchantBizId => 'benchinit0001',
               TransactionId => 'hksb7ba1b28130d24e015d694361bee4');

} else {
    die "mkreq.pl: unknown kind '$kind'\n";
}

my $body = JSON::PP->new->canonical->encode(\%params);

binmode STDOUT;

print "POST $path HTTP/1.1\r\n",
      "Host: 127.0.0.1\r\n",
      "Content-Type: application/json\r\n",
      "Content-Length: ", length($body), "\r\n",
      map({ "$_\r\n" } @headers),
      "\r\n",
      $body;


# the images' padding (runs of one byte value) becomes pseudo-random bytes
sub noisy {
    my ($img) = @_;

    srand(20240520);

    $img =~ s{(E{64,}|\x55{64,}|\x00{64,})}{
        pack('C*', map { int rand 256 } 1 .. length $1)
    }ge;

    return $img;
}
