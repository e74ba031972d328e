#!/usr/bin/perl

# The test harness itself, without the module: the mock upstream starts,
# answers its control API over verified TLS and stops; nginx starts in a
# test prefix, answers, reloads and stops cleanly.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IdvTest;

plan skip_all => 't/mock/mock-aliyun.js is not there yet'
    unless -f "$IdvTest::ROOT/t/mock/mock-aliyun.js";
plan skip_all => 't/lib/mkcerts.sh is not there yet'
    unless -f "$IdvTest::ROOT/t/lib/mkcerts.sh";

my $t = IdvTest->new;

# the mock

my $port = $t->start_mock;
like($port, qr/^\d+$/, 'the mock reports its port');

my $stats = $t->mock_stats;
is(ref $stats, 'HASH', 'the mock answers /__mock/stats with JSON');
is($stats->{calls}, 0, 'a fresh mock has seen no calls');

$t->stop_mock;
ok(!defined $t->mock_port, 'the mock stops');

# nginx, without the module

$t->write_config(<<'END', module => 0);
    server {
        listen 127.0.0.1:%%PORT%%;

        location = /echo {
            return 200 "method=$request_method length=$content_length\n";
        }
    }
END

my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts the harness configuration') or diag($out);

$t->start_nginx;

my $r = $t->post('/echo', { a => 1 });
is($r->{status}, 200, 'POST answers 200');
is($r->{body}, "method=POST length=7\n", 'POST sends a JSON body');

$r = $t->get('/nowhere');
is($r->{status}, 404, 'GET of an unknown path answers 404');

my $reply = $t->raw("GARBAGE\r\n\r\n");
like($reply, qr{^HTTP/1\.1 400 }, 'raw bytes reach nginx as they are');

ok($t->reload, 'nginx reloads');
is($t->get('/echo')->{status}, 200, 'nginx answers after a reload');

$t->stop;

done_testing;
