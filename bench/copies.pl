#!/usr/bin/perl

# copies.pl -- how many times a request body was copied, from a DHAT heap
# profile (valgrind --tool=dhat) of nginx serving R identical requests.
#
#   copies.pl DHAT.json MAPS BODY_BYTES R
#
# DHAT counts the bytes the program wrote into every heap block, grouped by
# allocation stack.  A block of at least 4 KiB that received at least a
# quarter of BODY_BYTES per request is a copy of the body (or of its
# encoded form); bytes written / BODY_BYTES says how many.  The kernel's
# recv() into nginx's client body buffer is not a program write, so the
# read itself does not count.
#
# The allocation stack names the owner: the first frame that is not an
# allocator.  Frames in the module or in libcjson belong to the gateway;
# nginx and OpenSSL frames to the TLS proxy path that the floor pays as
# well.  nginx unloads the module before DHAT writes its profile, so
# module frames come as bare addresses: MAPS (a copy of /proc/PID/maps
# taken while nginx ran) and addr2line name them.
#
# Prints one line per copy site, then
#   GATEWAY_COPIES <n> <per-site summary>
# where n counts each gateway site once per whole body it wrote.

use strict;
use warnings;
no warnings 'portable';      # 64-bit addresses

use JSON::PP;


my ($json, $maps, $body, $r) = @ARGV;
die "usage: copies.pl DHAT.json MAPS BODY_BYTES R\n" unless $r;

my $d = do {
    open my $fh, '<', $json or die "copies.pl: $json: $!\n";
    local $/;
    decode_json(<$fh>);
};

my @maps;

if (open my $fh, '<', $maps) {
    while (<$fh>) {
        my ($lo, $hi, $off, $path) =
            m{^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(/\S+)}
            or next;
        push @maps, [hex $lo, hex $hi, hex $off, $path];
    }
}

my $ALLOC = qr/^(?:malloc|calloc|realloc|CRYPTO_[mz]alloc|CRYPTO_realloc
                 |ngx_alloc|ngx_calloc|ngx_palloc|ngx_pnalloc|ngx_pcalloc
                 |ngx_pmemalign|ngx_create_temp_buf
                 |ngx_http_idv_alloc|ngx_http_idv_palloc)$/x;

my %sym;

my (@sites, @gateway);

for my $pp (@{$d->{pps}}) {
    next unless $pp->{tbk} && $pp->{tb} / $pp->{tbk} >= 4096;

    my $per = $pp->{wb} / $r;
    next if $per < $body / 4;

    my ($owner, $func) = owner(map { $d->{ftbl}[$_] } @{$pp->{fs}});

    push @sites, [$owner, $func, $per];
}

# sites that differ only deeper in the stack are one site
my %sum;
$sum{"$_->[0]\0$_->[1]"} += $_->[2] for @sites;

my $n = 0;

for my $k (sort { $sum{$b} <=> $sum{$a} } keys %sum) {
    my ($owner, $func) = split /\0/, $k;
    my $x = $sum{$k} / $body;

    # the kernel's recv() is counted at the size nginx asked for
    my $note = $func eq 'ngx_http_read_client_request_body'
               ? ' (recv() into the client body buffer: not a copy)' : '';

    printf "%-8s %-40s %9.0f B written per request = %.2f x body%s\n",
           $owner, $func, $sum{$k}, $x, $note;

    if ($owner eq 'gateway') {
        $n += int($x + 0.5);
        push @gateway, sprintf('%s %.2f', $func, $x);
    }
}

print "GATEWAY_COPIES $n ", join(', ', @gateway), "\n";


# the first frame that is not an allocator: (gateway|nginx|openssl, name);
# cJSON is named with the module function that called it, OpenSSL with
# its first exported function
sub owner {
    my (@frames) = @_;

    my @f;

    for my $f (@frames) {
        my ($addr, $name, $obj) =
            $f =~ /^0x([0-9A-Fa-f]+): (\S+)(?: \(in (\S+)\))?/ or next;

        ($obj, $name) = resolve(hex $addr) if $name eq '???' && !defined $obj;
        push @f, [$name, $obj // ''];
    }

    my $i = 0;

    # allocators, and nginx's static helpers (ngx_palloc_large, ...)
    $i++ while $i < @f && ($f[$i][0] =~ $ALLOC
                           || ($f[$i][0] eq '???' && $f[$i][1] =~ m{/nginx$}));

    return ('other', '?') if $i == @f;

    my ($name, $obj) = @{$f[$i]};

    if ($obj =~ /cjson/i) {
        my ($caller) = grep { $_->[1] =~ /idv/ } @f[$i .. $#f];
        return ('gateway', 'cJSON' . ($caller ? " in $caller->[0]" : ''));
    }

    return ('gateway', $name) if $obj =~ /idv/;

    if ($obj =~ /libssl|libcrypto/) {
        my ($named) = grep { $_->[0] ne '???' } @f[$i .. $#f];
        return ('openssl', $named ? $named->[0] : $name);
    }

    return ('nginx', $name) if $obj =~ m{/nginx$};
    return ('other', "$name ($obj)");
}


# an address in an object nginx unloaded: its object and function
sub resolve {
    my ($addr) = @_;

    for my $m (@maps) {
        next unless $addr >= $m->[0] && $addr < $m->[1];

        my $rel = sprintf "0x%x", $addr - $m->[0] + $m->[2];
        my $name = $sym{"$m->[3]$rel"} //= do {
            my $out = `addr2line -f -e '$m->[3]' $rel 2>/dev/null`;
            my ($fn) = split /\n/, $out // '';
            ($fn && $fn ne '??') ? $fn : $m->[3] =~ /cjson/i ? 'cJSON' : '?';
        };

        return ($m->[3], $name);
    }

    return (undef, '???');
}
