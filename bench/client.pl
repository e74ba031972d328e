#!/usr/bin/perl

# client.pl -- the light client of bench/run.sh: a fixed number of requests,
# one after another on one keep-alive connection, each checked.
#
#   client.pl PORT REQUEST N [FIRST]
#
# REQUEST is a file holding one complete HTTP/1.1 request, bytes as sent.
# Every "{seq:08}" in it becomes the request's sequence number (FIRST, the
# default 0, then FIRST+1, ...), zero-padded to 8 digits so that lengths do
# not change: distinct MerchantBizIds or tenants from one file.
#
# An answer must be HTTP 200 with a Content-Length and "Code":"Success" in
# its body; anything else stops the run with exit status 1 and the answer
# on stderr.  Prints "N requests in S s".

use strict;
use warnings;

use IO::Socket::IP;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time);


@ARGV >= 3 or die "usage: client.pl PORT REQUEST N [FIRST]\n";

my ($port, $file, $n, $first) = @ARGV;
$first //= 0;

open my $fh, '<:raw', $file or die "client.pl: $file: $!\n";
my $template = do { local $/; <$fh> };
close $fh;

my $vary = $template =~ /\{seq:08\}/;

my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
                            Proto => 'tcp')
    or die "client.pl: connect to 127.0.0.1:$port: $@\n";
$s->setsockopt(IPPROTO_TCP, TCP_NODELAY, 1);

my $start = time;
my $buf = '';

for my $i (0 .. $n - 1) {
    my $req = $template;

    if ($vary) {
        my $seq = sprintf '%08d', $first + $i;
        $req =~ s/\{seq:08\}/$seq/g;
    }

    my $off = 0;
    while ($off < length $req) {
        my $w = syswrite($s, $req, length($req) - $off, $off);
        die "client.pl: write: $!\n" unless defined $w;
        $off += $w;
    }

    my ($status, $body) = read_response($s, \$buf);

    if ($status != 200 || $body !~ /"Code":"Success"/) {
        die "client.pl: request $i ($file): HTTP $status\n"
            . substr($body, 0, 2000) . "\n";
    }
}

printf "%d requests in %.3f s\n", $n, time - $start;

close $s;


sub read_response {
    my ($s, $buf) = @_;

    my $end;

    until (($end = index($$buf, "\r\n\r\n")) >= 0) {
        fill($s, $buf);
    }

    my $head = substr($$buf, 0, $end + 4, '');

    my ($status) = $head =~ m{^HTTP/1\.[01] (\d{3})}
        or die "client.pl: not an HTTP answer: " . substr($head, 0, 200)
               . "\n";

    my ($len) = $head =~ /^content-length:\s*(\d+)\r$/mi;
    die "client.pl: an answer without Content-Length:\n$head"
        unless defined $len;

    fill($s, $buf) while length($$buf) < $len;

    my $body = substr($$buf, 0, $len, '');

    die "client.pl: the server closed the connection\n"
        if $head =~ /^connection:\s*close\r$/mi;

    return ($status, $body);
}


sub fill {
    my ($s, $buf) = @_;

    my $r = sysread($s, $$buf, 262144, length $$buf);
    die "client.pl: read: $!\n" unless defined $r;
    die "client.pl: the server closed the connection\n" if $r == 0;
}
