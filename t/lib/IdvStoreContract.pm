package IdvStoreContract;

# What every backend of the keyed store must do, checked through the test
# module of t/store/ (idv_store_probe): each operation and what it
# reports, batches that see their own writes, atomic batches, groups,
# expiry, leaky buckets.  t/64-store-ops.t runs it on shared memory,
# t/66-redis-store.t on Redis.
#
#   IdvStoreContract::run($t);      # zones "a" and "c", empty
#
# batch_on($t, op, ...) -> [outcome, {rc, value, number, age}, ...] runs
# one batch; group_on($t, op, ..., 'then', op, ...) runs a group and
# returns one such list per batch.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep);

my $node;

sub group_on {
    my ($t, @ops) = @_;

    my $r = $t->get('/store?' . join('&', @ops));
    die "probe: HTTP $r->{status}" unless $r->{status} == 200;

    my @batches;

    for my $line (split /\n/, $r->{body}) {
        if ($line =~ /^batch (\S+)$/) {
            push @batches, [$1];
            next;
        }

        $line =~ /^(\S+) value=(.*) number=(-?\d+) age=(\d+)$/s
            or die "probe: $line";
        push @{$batches[-1]}, { rc => $1, value => $2, number => $3,
                                age => $4 };
    }

    return @batches;
}

sub batch_on { (group_on(@_))[0] }

sub batch { batch_on($node, @_) }
sub group { group_on($node, @_) }

sub rcs { join ' ', map { $_->{rc} } @{$_[0]}[1 .. $#{$_[0]}] }

sub run {
    ($node) = @_;
    my $b;

    # --- each operation --------------------------------------------------------

    $b = batch('op=get~a~k1', 'op=set~a~k1~v=one~ttl=60000', 'op=get~a~k1');
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

    # --- CHECK ---------------------------------------------------------------

    batch('op=set~a~owner~v=t1:biz1~ttl=60000');
    $b = batch('op=check~a~owner~expect=t1:', 'op=check~a~owner~expect=t1:biz1',
               'op=check~a~owner~expect=t2:', 'op=check~a~none~expect=t1:',
               'op=check~a~none~expect=t1:~present');
    is(rcs($b), 'OK OK DECLINED OK DECLINED',
       'CHECK: the value begins with expect; absent passes unless present');
    is($b->[3]{value}, 't1:biz1', 'a declined CHECK reports the value');

    # --- groups ----------------------------------------------------------------

    my @g = group('op=add~a~g1~v=1', 'then', 'atomic', 'op=add~a~g2~v=1',
                  'op=bucket~a~gb~rate=60~burst=0~cost=1000', 'then',
                  'op=set~a~g3~v=1');
    is(join(' ', map { $_->[0] } @g), 'OK OK SKIPPED',
       'a group stops after the batch with a declined operation');
    is(rcs($g[1]), 'OK DECLINED', 'whose operations report');
    is(rcs(batch('op=get~a~g1', 'op=get~a~g2', 'op=get~a~g3')),
       'OK DECLINED DECLINED',
       'the batches before it applied; it (atomic) and those after did not');

    @g = group('op=check~a~owner~expect=t2:', 'then', 'op=set~a~g4~v=1');
    is(join(' ', map { $_->[0] } @g), 'OK SKIPPED',
       'a declined CHECK stops a group');
    is(batch('op=get~a~g4')->[1]{rc}, 'DECLINED', 'nothing after it ran');

    @g = group('op=get~a~g1', 'then', 'op=add~a~g5~v=1', 'then',
               'op=get~a~g5');
    is(join(' ', map { $_->[0] } @g), 'OK OK OK',
       'a group without declines runs whole');
    is($g[2][1]{value}, '1', 'each batch sees the writes of those before it');
}

1;
