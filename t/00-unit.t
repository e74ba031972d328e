#!/usr/bin/perl

# The C unit tests of the pure core (t/unit/test_*.c, built into
# build/unit/ by ./build.sh unit): each binary is one test here, passing
# when it exits 0, prints a plan and reports no "not ok".

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(basename dirname);
use Test::More;

my $root = abs_path($ENV{IDV_ROOT} // dirname(abs_path($0)) . '/..');
chdir $root or die "$root: $!";

# the data each binary reads, relative to the repository root
my %args = (
    test_sign => ['t/data'],
    test_ops  => ['ngx_http_idv_module/data/actions.json',
                  'ngx_http_idv_module/data/ops-overlay.json'],
);

my @bins = grep { -f && -x && !/\.[a-z]+$/ } glob('build/unit/test_*');

ok(scalar @bins, 'there are unit test binaries (./build.sh unit)')
    or diag('no unit test binaries in build/unit: run ./build.sh unit');

for my $bin (@bins) {
    my $name = basename($bin);
    my @cmd = ($bin, @{$args{$name} // []});

    my $pid = open(my $fh, '-|') // die "fork: $!";
    unless ($pid) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd or do { print "exec $bin: $!\n"; exit 127 };
    }
    my @out = <$fh>;
    close $fh;
    my $status = $?;

    my $plan = grep { /^1\.\.(\d+)/ } @out;
    my ($n) = map { /^1\.\.(\d+)/ ? $1 : () } @out;
    $n //= 0;
    my $oks = grep { /^ok \d+/ } @out;
    my $not = grep { /^not ok \d+/ } @out;

    my $pass = $status == 0 && $plan == 1 && !$not && $n == $oks && $n > 0;

    ok($pass, "$name: $n cases pass")
        or diag(sprintf "%s exited with status %d, plan %s, %d ok, %d not ok"
                        . "\n%s", "@cmd", $status >> 8,
                        $plan ? "1..$n" : 'missing', $oks, $not,
                        join '', @out);
}

done_testing;
