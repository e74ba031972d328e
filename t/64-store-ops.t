# The store's operations, one batch per request through a test module
# (t/store/, built by ./build.sh next to the module): what each
# operation does and reports, batches that see their own writes, atomic
# batches, leaky buckets, expiry, entries that are kept against entries
# that may be evicted, and a full zone that applies nothing of a batch.

use strict;
use warnings;

use File::Spec;
use Test::More;
use lib 't/lib';
use IdvTest;
use Time::HiRes qw(sleep);


my $probe = File::Spec->rel2abs($ENV{IDV_STORE_PROBE}
                                // 'build/ngx_http_idv_store_probe_module.so',
                                IdvTest->root);

plan skip_all => "no $probe (./build.sh builds it)" unless -f $probe;


my $t = IdvTest->new;
$t->write_config(<<'END', main => "load_module $probe;", worker_processes => 2);
    idv_store_probe_zone zone=a:256k;
    idv_store_probe_zone zone=b:32k;
    idv_store_probe_zone zone=c:32k;
    large_client_header_buffers 4 64k;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /store { idv_store_probe; }
        location = /metrics { idv_metrics; }
    }
END
$t->start_nginx;


# batch(op, ...) -> [outcome, {rc, value, number, age}, ...]

sub batch {
    my $r = $t->get('/store?' . join('&', @_));
    die "probe: HTTP $r->{status}" unless $r->{status} == 200;

    my ($outcome, @ops) = split /\n/, $r->{body};
    $outcome =~ s/^batch //;

    return [$outcome, map {
        /^(\S+) value=(.*) number=(-?\d+) age=(\d+)$/s
            or die "probe: $_";
        { rc => $1, value => $2, number => $3, age => $4 }
    } @ops];
}

sub rcs { join ' ', map { $_->{rc} } @{$_[0]}[1 .. $#{$_[0]}] }


# --- each operation --------------------------------------------------------

my $b = batch('op=get~a~k1', 'op=set~a~k1~v=one~ttl=60000', 'op=get~a~k1');
is($b->[0], 'OK', 'a batch runs');
is(rcs($b), 'DECLINED OK OK', 'GET of nothing declines; SET, then GET');
is($b->[3]{value}, 'one', 'GET: the value');

sleep 0.2;
$b = batch('op=get~a~k1');
cmp_ok($b->[1]{age}, '>=', 150, 'GET: the age since the write');

$b = batch('op=add~a~k1~v=two', 'op=add~a~k2~v=new~keep');
is(rcs($b), 'DECLINED OK', 'ADD declines a live entry, creates another');
is($b->[1]{value}, 'one', 'a declined ADD reports the current value');
cmp_ok($b->[1]{age}, '>=', 150, 'and its age');

$b = batch('op=cas~a~k1~expect=two~v=three', 'op=cas~a~k1~expect=one~v=four',
           'op=cas~a~nothing~expect=one~v=five', 'op=get~a~k1');
is(rcs($b), 'DECLINED OK DECLINED OK',
   'CAS replaces only the expected value, and nothing absent');
is($b->[1]{value}, 'one', 'a declined CAS reports the current value');
is($b->[4]{value}, 'four', 'the replaced value');

$b = batch('op=delete~a~k1~expect=one', 'op=delete~a~k1~expect=four',
           'op=delete~a~k1', 'op=get~a~k1');
is(rcs($b), 'DECLINED OK DECLINED DECLINED',
   'DELETE with expect: only that value; then nothing to delete');

$b = batch('op=incr~a~n~delta=5~ttl=60000', 'op=incr~a~n~delta=-7',
           'op=incr~a~k2~delta=1');
is(rcs($b), 'OK OK DECLINED', 'INCR creates, adds; declines a non-counter');
is($b->[1]{number}, 5, 'INCR: a new counter holds its delta');
is($b->[2]{number}, -2, 'INCR: the counter after the increment');

$b = batch('op=add~a~once~v=1', 'op=add~a~once~v=2', 'op=get~a~once');
is(rcs($b), 'OK DECLINED OK', 'a batch sees its own writes, in order');
is($b->[3]{value}, '1', 'the first write stands');


# --- atomic batches ----------------------------------------------------------

$b = batch('atomic', 'op=set~a~x~v=1', 'op=add~c~y~v=2', 'op=add~a~k2~v=3');
is(rcs($b), 'OK OK DECLINED',
   'atomic: the others report what they would have done');
is(rcs(batch('op=get~a~x', 'op=get~c~y')), 'DECLINED DECLINED',
   'atomic: a declined ADD leaves every zone of the batch as it was');

batch('op=set~a~x~v=1', 'op=add~c~y~v=2', 'op=add~a~k2~v=3');
is(rcs(batch('op=get~a~x', 'op=get~c~y')), 'OK OK',
   'not atomic: the other writes apply');


# --- expiry ------------------------------------------------------------------

batch('op=set~a~short~v=1~ttl=100', 'op=set~a~forever~v=1');
sleep 0.3;
$b = batch('op=get~a~short', 'op=add~a~short~v=2~ttl=60000',
           'op=get~a~forever');
is(rcs($b), 'DECLINED OK OK',
   'an expired entry is gone (ADD creates it again); ttl 0 does not expire');


# --- leaky buckets -----------------------------------------------------------

# 60 milli-requests a minute: one milli-request a second, nothing drains
# while the test runs
my $bk = 'op=bucket~a~t~rate=60~burst=2000';

my @n = map { batch("$bk~cost=1000")->[1] } 1 .. 3;
is(join(' ', map { "$_->{rc}:$_->{number}" } @n),
   'OK:1000 OK:2000 DECLINED:3000',
   'BUCKET: admits up to burst, reports the level with the request');

$b = batch("$bk~cost=0");
is("$b->[1]{rc}:$b->[1]{number}", 'OK:2000',
   'BUCKET cost=0 looks without charging');

$b = batch("op=bucket~a~u~rate=60~burst=0~cost=5000~fill",
           "op=bucket~a~u~rate=60~burst=9000~cost=0",
           "op=bucket~a~u~rate=60~burst=0~cost=1000~fill");
is(join(' ', map { "$_->{rc}:$_->{number}" } @{$b}[1 .. 3]),
   'OK:5000 OK:5000 OK:5000',
   'BUCKET fill raises the level to at least cost, refusing nothing');

# 6,000,000 a minute: 100 milli-requests a millisecond
$b = batch('op=bucket~a~fast~rate=6000000~burst=1000~cost=1000');
is($b->[1]{rc}, 'OK', 'a fast bucket admits');
sleep 0.2;
is(rcs(batch('op=get~a~fast')), 'DECLINED',
   'a drained bucket is gone: it lived as long as it took to drain');

$b = batch('atomic', 'op=bucket~a~r1~rate=60~burst=1000~cost=1000',
           'op=bucket~a~r2~rate=60~burst=0~cost=1000');
is(rcs($b), 'OK DECLINED', 'two rules, one refuses');
is(batch('op=bucket~a~r1~rate=60~burst=1000~cost=0')->[1]{number}, 0,
   'atomic: the refused request charged no bucket');


# --- one store for every worker ----------------------------------------------

my $ok = grep { batch('op=add~a~race~v=1')->[1]{rc} eq 'OK' } 1 .. 20;
is($ok, 1, 'twenty ADDs over fresh connections (two workers): one creates');


# --- entries that are kept, entries that may be evicted ----------------------

$t->keep_alive(1);

my $v = 'x' x 200;
my @full = grep { batch("op=set~b~c$_~v=$v")->[0] ne 'OK' } 1 .. 300;
is(scalar @full, 0, 'a zone makes room for new entries by evicting old ones');

my $kept = 0;
for my $i (1 .. 300) {
    last if batch("op=add~b~k$i~v=$v~keep")->[0] ne 'OK';
    $kept++;
}

cmp_ok($kept, '>', 20, "kept entries fill the zone ($kept)");
cmp_ok($kept, '<', 300, 'then the zone is full');

my $lost = grep { batch("op=get~b~k$_")->[1]{rc} ne 'OK' } 1 .. $kept;
is($lost, 0, 'no kept entry was evicted');

$b = batch("op=set~a~cross~v=1", "op=set~b~c1~v=$v");
is($b->[0], 'FULL', 'a full zone fails the batch');
is(rcs(batch('op=get~a~cross')), 'DECLINED',
   'a failed batch applied nothing, in no zone');

is(batch("op=add~b~k1~v=$v~keep")->[1]{rc}, 'DECLINED',
   'a full zone still answers for the entries it keeps');

batch('op=set~c~small~v=1');
is(batch('op=set~c~big~v=' . ('y' x 40000))->[0], 'FULL',
   'a value larger than the zone fails');
is(rcs(batch('op=get~c~small')), 'OK', 'without evicting anything for it');

$t->keep_alive(0);

like($t->error_log,
     qr/\[error\] .*idv probe zone "b" is full: the entries it must keep leave no room/,
     'the full zone is logged, by name and kind');
like($t->error_log,
     qr/\[warn\] .*idv probe zone "b" is full: \d+ entries that need not be kept were evicted/,
     'so are evictions');
$t->ignore_log(qr/zone "[bc]" is full/);

my $m = $t->get('/metrics')->{body};
like($m, qr/^idv_store_full_total\{zone="b",kind="probe"\} [1-9]\d*$/m,
     'metrics: the full zone counted');
like($m, qr/^idv_store_evictions_total\{zone="b",kind="probe"\} [1-9]\d*$/m,
     'metrics: evictions counted');
like($m, qr/^idv_zone_used_ratio\{zone="b",kind="probe"\} (0\.9\d+|1\.0000)$/m,
     'metrics: the zone is nearly all used');
like($m, qr/^idv_zone_used_ratio\{zone="idv_metrics",kind="metrics"\} \d\.\d{4}$/m,
     'metrics: the metrics zone itself is reported');


# --- reload --------------------------------------------------------------------

ok($t->reload, 'reload');
is(batch('op=get~a~forever')->[1]{rc}, 'OK',
   'after a reload: the entries are found (the hash key lives in the zone)');
is(batch('op=incr~a~n~delta=1')->[1]{number}, -1,
   'after a reload: counters go on');

$t->stop;

done_testing;
