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
use IdvStoreContract;
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



sub batch { IdvStoreContract::batch_on($t, @_) }
sub rcs { IdvStoreContract::rcs(@_) }


# --- what every backend does ------------------------------------------------

IdvStoreContract::run($t);


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
