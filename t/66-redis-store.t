# The store on Redis, through the test module of t/store/: the same
# contract as shared memory (IdvStoreContract), entries shared by two
# nginx instances, nothing of a key in clear on the server, the hash key
# the namespace keeps, and what each zone's on_error policy does when
# Redis is stopped, paused past the timeout, or restarted empty.

use strict;
use warnings;

use File::Spec;
use Test::More;
use lib 't/lib';
use IdvTest;
use IdvStoreContract;
use Time::HiRes qw(sleep time);


my $probe = File::Spec->rel2abs($ENV{IDV_STORE_PROBE}
                                // 'build/ngx_http_idv_store_probe_module.so',
                                IdvTest->root);

plan skip_all => "no $probe (./build.sh builds it)" unless -f $probe;
plan skip_all => 'no redis-server (./build.sh test installs it)'
    unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};


my $t = IdvTest->new;
$t->start_redis;

my $conf = <<'END';
    idv_redis name=r server=127.0.0.1:%%REDIS_PORT%% timeout=300ms;

    idv_store_probe_zone zone=a:256k store=redis:r;
    idv_store_probe_zone zone=c:32k store=redis:r;
    idv_store_probe_zone zone=open:32k store=redis:r on_error=open;
    idv_store_probe_zone zone=local:32k store=redis:r on_error=local;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /store { idv_store_probe; }
        location = /metrics { idv_metrics; }
    }
END

$t->write_config($conf, main => "load_module $probe;", worker_processes => 2);
$t->start_nginx;


# a second node: its own nginx, the same Redis
my $t2 = IdvTest->new;
$t2->{redis_port} = $t->redis_port;
$t2->write_config($conf, main => "load_module $probe;", worker_processes => 2);
$t2->start_nginx;


sub batch_on { IdvStoreContract::batch_on(@_) }
sub batch { batch_on($t, @_) }
sub rcs { IdvStoreContract::rcs(@_) }


# --- the contract --------------------------------------------------------------

IdvStoreContract::run($t);


# --- two nodes, one store -------------------------------------------------------

my @won = grep { batch_on($_ % 2 ? $t : $t2, 'op=add~a~race~v=1')->[1]{rc} eq 'OK' }
          1 .. 20;
is(scalar @won, 1, 'twenty ADDs over two nodes (two workers each): one creates');

batch_on($t, 'op=set~a~shared~v=from-a~ttl=60000');
is(batch_on($t2, 'op=get~a~shared')->[1]{value}, 'from-a',
   'node B reads what node A wrote');

my $bk = 'op=bucket~a~tenant~rate=60~burst=2000~cost=1000';
my @lv = map { batch_on($_ % 2 ? $t : $t2, $bk)->[1]{rc} } 1 .. 4;
is("@lv", 'OK OK DECLINED DECLINED',
   'a bucket filled through both nodes refuses on both');


# --- on the server: hashes, one slot ---------------------------------------------

my @keys = split /\n/, $t->redis('KEYS', '*');
ok(@keys > 5, 'entries are in Redis (' . scalar(@keys) . ' keys)');
is(scalar(grep { !/^\{idv\}:/ } @keys), 0,
   'every key carries the hash tag {idv}');
is(scalar(grep { /race|shared|tenant/ } @keys), 0,
   'no key shows the caller\'s key in clear');
ok((grep { /^\{idv\}:a:[0-9a-f]{32}$/ } @keys), 'keys are ZONE:HASH');
is(length($t->redis('GET', '{idv}:key') // ''), 17,
   'the namespace keeps its 16-byte hash key');


# --- fire and forget -------------------------------------------------------------

is(batch('forget', 'op=set~a~ff~v=1~ttl=60000')->[0], 'OK',
   'a batch without a handler reports at once');
my $ff;
for (1 .. 50) { $ff = batch('op=get~a~ff')->[1]{rc}; last if $ff eq 'OK'; sleep 0.05 }
is($ff, 'OK', 'and is applied');


# --- Redis stopped -----------------------------------------------------------------

batch('op=set~local~l1~v=before~ttl=60000');
$t->stop_redis;

is(batch('op=get~a~shared')->[0], 'ERROR',
   'closed (the default): a batch fails when Redis is down');
is(batch('op=add~a~shared~v=x')->[0], 'ERROR', 'again, while backing off');

my $o = batch('op=get~open~x', 'op=add~open~y~v=1', 'op=bucket~open~z~rate=60~burst=0~cost=1000');
is($o->[0], 'OK', 'open: the batch succeeds');
is(rcs($o), 'DECLINED OK OK', 'open: nothing found, everything admitted');

my $l = batch('op=add~local~n1~v=1~ttl=60000', 'op=add~local~n1~v=2');
is(rcs($l), 'OK DECLINED', 'local: the zone\'s own memory serves');

is(batch('op=get~a~x', 'op=get~open~x')->[0], 'ERROR',
   'a batch with a closed zone fails whatever the other zones say');

like($t->error_log, qr/\[error\] .*idv redis "r": .*127\.0\.0\.1:\d+ .*on_error policy/,
     'the failure is logged at [error], naming the server');
my $lines = () = $t->error_log =~ /idv redis "r"/g;
cmp_ok($lines, '<=', 4, "rate-limited ($lines lines for many failures)");

my $m = $t->get('/metrics')->{body};
like($m, qr/^idv_store_unavailable_total\{zone="a",kind="probe"\} [1-9]\d*$/m,
     'metrics: the batches Redis could not serve, per zone');


# --- Redis back, empty --------------------------------------------------------------

$t->start_redis;

ok(IdvTest::poll(10, sub { batch('op=get~a~shared')->[0] eq 'OK' }),
   'Redis back (restarted empty): service resumes by itself');
is(batch('op=get~a~shared')->[1]{rc}, 'DECLINED', 'its entries are gone');
is(batch_on($t2, 'op=add~a~again~v=b')->[1]{rc}, 'OK', 'node B writes');
is(batch_on($t, 'op=get~a~again')->[1]{value}, 'b',
   'node A reads it: both nodes use the namespace\'s new hash key');
like($t->error_log, qr/\[notice\] .*idv redis "r" \(127\.0\.0\.1:\d+\): connected again/,
     'the recovery is logged');

# the script flushed: sent again with EVAL
$t->redis('SCRIPT', 'FLUSH');
is(batch('op=get~a~again')->[1]{value}, 'b', 'NOSCRIPT: the script is sent again');


# --- Redis paused past the timeout --------------------------------------------------

$t->pause_redis;
my $t0 = time;
my $p = batch('op=get~a~again');
my $waited = time - $t0;
is($p->[0], 'ERROR', 'Redis paused: the batch fails after the timeout');
cmp_ok($waited, '<', 5, 'and does not hang');
$t->resume_redis;

ok(IdvTest::poll(10, sub { batch('op=get~a~again')->[0] eq 'OK' }),
   'Redis resumed: service resumes');


# --- out of memory -------------------------------------------------------------------

$t->redis('CONFIG', 'SET', 'maxmemory', '1');
is(batch('op=set~a~big~v=' . ('x' x 1000))->[0], 'FULL',
   'Redis out of memory (maxmemory, noeviction): the batch fails as a full zone');
$t->redis('CONFIG', 'SET', 'maxmemory', '0');
like($t->error_log, qr/\[error\] .*idv probe zone "a" is full: redis "r" is out of memory/,
     'logged by zone and server');


$t->ignore_log(qr/idv redis "r"|idv probe zone "a" is full/);
$t2->ignore_log(qr/idv redis "r"/);
$t->stop;
$t2->stop;

done_testing;
