#!/usr/bin/perl

# capture.pl -- record one upstream request exactly as the gateway sends it.
#
#   capture.pl PORTFILE OUTFILE
#
# Listens on a free loopback port (written to PORTFILE), accepts one
# connection, saves the first HTTP request on it (request line, headers,
# Content-Length body: the bytes as received) to OUTFILE, answers with a
# canned Initialize envelope and "Connection: close", and exits.  Gives
# up after 30 s.  bench/run.sh replays OUTFILE through a plain proxy_pass:
# the floor request, signed like the gateway's own.

use strict;
use warnings;

use IO::Socket::IP;


my ($portfile, $out) = @ARGV;
die "usage: capture.pl PORTFILE OUTFILE\n" unless defined $out;

$SIG{QUIT} = $SIG{TERM} = sub { exit 1 };

my $l = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                            Listen => 1, ReuseAddr => 1)
    or die "capture.pl: listen: $@\n";

open my $pf, '>', "$portfile.tmp" or die "capture.pl: $portfile: $!\n";
print $pf $l->sockport, "\n";
close $pf;
rename "$portfile.tmp", $portfile or die "capture.pl: $portfile: $!\n";

local $SIG{ALRM} = sub { die "capture.pl: no request within 30 s\n" };
alarm 30;

my $c = $l->accept or die "capture.pl: accept: $!\n";
my $buf = '';
my $end;

until (($end = index($buf, "\r\n\r\n")) >= 0) {
    sysread($c, $buf, 65536, length $buf) or die "capture.pl: read: $!\n";
}

my ($len) = substr($buf, 0, $end) =~ /^content-length:\s*(\d+)\r?$/mi;
$len //= 0;

while (length($buf) < $end + 4 + $len) {
    sysread($c, $buf, 65536, length $buf) or die "capture.pl: read: $!\n";
}

open my $fh, '>:raw', $out or die "capture.pl: $out: $!\n";
print $fh substr($buf, 0, $end + 4 + $len);
close $fh;

my $body = '{"RequestId":"00000000000000000000000000000000","Code":"Success",'
           . '"Message":"success","Result":{"TransactionId":'
           . '"hksb7ba1b28130d24e015d694361bee4"}}';

print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
         . "Content-Length: " . length($body) . "\r\nConnection: close\r\n"
         . "\r\n$body";
close $c;
