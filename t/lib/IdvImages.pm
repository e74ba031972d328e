package IdvImages;

# Synthetic JPEG and PNG files for the local image checks: real headers
# (the gateway reads the pixel size from them), padded to any byte size
# with segments the checks must skip.

use strict;
use warnings;

use Exporter 'import';
use MIME::Base64 qw(encode_base64);

our @EXPORT_OK = qw(jpeg png b64);


# jpeg($width, $height, $bytes): SOI, JFIF, padding APP segments, SOF0,
# SOS, filler, EOI
sub jpeg {
    my ($w, $h, $bytes) = @_;

    my $img = "\xFF\xD8"
              . "\xFF\xE0" . pack('n', 16) . "JFIF\0\x01\x01\0\0\x01\0\x01\0\0";

    my $tail_len = 19 + 14 + 2;
    my $pad = ($bytes // 0) - length($img) - $tail_len;

    while ($pad > 4) {
        my $seg = $pad - 4 > 65533 ? 65533 : $pad - 4;
        $img .= "\xFF\xE1" . pack('n', $seg + 2) . ('E' x $seg);
        $pad -= $seg + 4;
    }

    $img .= "\xFF\xC0" . pack('n', 17) . "\x08" . pack('nn', $h, $w)
            . "\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01";
    $img .= "\xFF\xDA" . pack('n', 12) . "\x03\x01\x00\x02\x11\x03\x11\x00\x3F\x00";
    $img .= "\x00" x ($pad > 0 ? $pad : 0);
    $img .= "\xFF\xD9";

    return $img;
}


# png($width, $height, $bytes): signature, IHDR, a padding IDAT, IEND
sub png {
    my ($w, $h, $bytes) = @_;

    my $img = "\x89PNG\r\n\x1a\n"
              . pack('N', 13) . 'IHDR' . pack('NNCCCCC', $w, $h, 8, 2, 0, 0, 0)
              . "\0\0\0\0";

    my $pad = ($bytes // 0) - length($img) - 12 - 12;
    $pad = 0 if $pad < 0;

    $img .= pack('N', $pad) . 'IDAT' . ("\x55" x $pad) . "\0\0\0\0";
    $img .= pack('N', 0) . 'IEND' . "\xAE\x42\x60\x82";

    return $img;
}


sub b64 { encode_base64($_[0], '') }


1;
