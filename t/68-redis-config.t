# idv_redis as an operator meets it: nginx -t refuses an unknown server
# name, an unreadable password file, a bad address, a bad parameter; a
# password (and an ACL user) are used and never shown, by nginx -T or a
# log line; a wrong password is an [error] and the zone's policy, not a
# crash.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;

plan skip_all => 'no redis-server (./build.sh test installs it)'
    unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};


my $PASSWORD = 'rEd1s-pa55word-xyz';

my $t = IdvTest->new;
my $dir = $t->testdir;

sub file {
    my ($name, $text, $mode) = @_;
    open my $fh, '>', "$dir/$name" or die;
    print $fh $text;
    close $fh;
    chmod $mode // 0600, "$dir/$name";
}

file('redis.pass', "$PASSWORD\n");
file('acl.pass', "acl-pa55-word\n");
file('two.pass', "one\ntwo\n");

sub conf {
    my ($redis, $zone) = @_;

    $t->write_config($t->standard_http(extra_http => <<"END",
    $redis
    idv_cache_zone zone=c:1m $zone;
END
                                       extra_server => 'idv_cache c;'));
}

sub refused {
    my ($redis, $zone, $re, $name) = @_;

    conf($redis, $zone);
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "nginx -t refuses $name");
    like($out, $re, "$name: the message says why") or diag $out;
    unlike($out, qr/\Q$PASSWORD\E/, "$name: no password in the message");
}

my $ok = 'idv_redis name=r server=127.0.0.1:6399;';

refused($ok, 'store=redis:nope',
        qr/\[emerg\] idv cache zone "c": "store=redis:nope" names no "idv_redis name=nope"/,
        'an unknown server name');
refused('idv_redis name=r server=127.0.0.1:6399 password_file=%%TESTDIR%%/missing;',
        'store=redis:r', qr/\[emerg\] idv_redis: cannot open ".*missing"/,
        'a missing password file');
refused('idv_redis name=r server=127.0.0.1:6399 password_file=%%TESTDIR%%/two.pass;',
        'store=redis:r', qr/\[emerg\] idv_redis: .*two\.pass:2: more than the password/,
        'a password file of two lines');
refused('idv_redis name=r server=127.0.0.1;', 'store=redis:r',
        qr/\[emerg\] invalid "server=127\.0\.0\.1", expected HOST:PORT|\[emerg\] idv_redis: invalid "server=127\.0\.0\.1"/,
        'an address without a port');
refused('idv_redis name=r server=no-such-host.invalid:6379;', 'store=redis:r',
        qr/\[emerg\] idv_redis: invalid "server=no-such-host\.invalid:6379"/,
        'a host that does not resolve');
refused('idv_redis name=r server=127.0.0.1:6399 user=app;', 'store=redis:r',
        qr/\[emerg\] idv_redis: "user=" needs "password_file="/,
        'a user without a password');
refused('idv_redis name=r server=127.0.0.1:6399 timeout=0;', 'store=redis:r',
        qr/\[emerg\] idv_redis: invalid "timeout=0"/, 'a zero timeout');
refused('idv_redis name=r server=127.0.0.1:6399 "prefix={x}";', 'store=redis:r',
        qr/\[emerg\] idv_redis: invalid "prefix="/, 'a prefix with a hash tag');
refused("$ok $ok", 'store=redis:r', qr/\[emerg\] idv_redis "r" is already declared/,
        'a name declared twice');
refused($ok, 'store=redis:r on_error=maybe',
        qr/\[emerg\] invalid "on_error=maybe" in "idv_cache_zone"/,
        'an unknown on_error policy');
{
    $t->write_config($t->standard_http(extra_http => <<'END',
    idv_redis name=r server=127.0.0.1:6399;
    idv_limit_zone zone=lr:1m store=redis:r;
    idv_limit_zone zone=ls:1m;
END
        extra_server => 'idv_limit zone=lr rate=10r/s; idv_limit zone=ls rate=10r/s;'));
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, 'nginx -t refuses the limits of a location in two stores');
    like($out, qr/\[emerg\] .*the "idv_limit" zones "lr" and "ls" are kept in different places/,
         'and says which zones') or diag $out;
}

refused($ok, 'on_error=open', qr/\[emerg\] "on_error=" of "idv_cache_zone" applies to a zone kept in Redis/,
        'on_error without store=');


# --- a password, an ACL user -----------------------------------------------------

$t->start_redis(password => $PASSWORD);
$t->redis('ACL', 'SETUSER', 'idv', 'on',
          '>acl-pa55-word', '~{idv}:*', '+evalsha', '+eval', '+script|load',
          '+set', '+get', '+time', '+hmget', '+pttl', '+hset', '+pexpireat',
          '+persist', '+del');

conf('idv_redis name=r server=127.0.0.1:%%REDIS_PORT%% password_file=%%TESTDIR%%/redis.pass;',
     'store=redis:r');
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts a password file') or diag $out;

my $T = IdvTest::_capture($t->nginx_binary, '-T', '-p', "$dir/",
                          '-c', "$dir/nginx.conf", '-e', "$dir/error.log");
like($T, qr/password_file=/, 'nginx -T shows the directive');
unlike($T, qr/\Q$PASSWORD\E/, 'nginx -T shows no password');

$t->start_nginx;
my $r = $t->post('/idv/ocr/initialize', { MerchantBizId => 'pw1',
                                          MerchantUserId => 'u1',
                                          DocType => '01000000',
                                          MetaInfo => '{}' });
isnt($r->{json}{Code} // '', 'Gateway.StateUnavailable',
     'with the password: the store serves');
ok(scalar(grep { /^\{idv\}:/ } split /\n/,
          $t->redis('KEYS', '*') // ''),
   'with the password: the gateway wrote to Redis');
$t->stop;

# the ACL user: only the commands and keys the module uses
conf('idv_redis name=r server=127.0.0.1:%%REDIS_PORT%% user=idv password_file=%%TESTDIR%%/acl.pass prefix=idv;',
     'store=redis:r');
$t->start_nginx;
$t->redis('FLUSHALL');
$r = $t->post('/idv/ocr/initialize', { MerchantBizId => 'acl1',
                                       MerchantUserId => 'u1',
                                       DocType => '01000000',
                                       MetaInfo => '{}' });
isnt($r->{json}{Code} // '', 'Gateway.StateUnavailable',
     'an ACL user with the commands docs/deployment.md lists suffices');
ok(scalar(grep { /^\{idv\}:c:/ } split /\n/,
          $t->redis('KEYS', '*') // ''),
   'its entries are in Redis');
$t->stop;

# a wrong password: the zone's policy (closed), an [error], nothing shown
file('redis.pass', "wrong-password\n");
conf('idv_redis name=r server=127.0.0.1:%%REDIS_PORT%% password_file=%%TESTDIR%%/redis.pass;',
     'store=redis:r');
$t->start_nginx;
$r = $t->post('/idv/ocr/initialize', { MerchantBizId => 'pw2',
                                       MerchantUserId => 'u1',
                                       DocType => '01000000',
                                       MetaInfo => '{}' });
is($r->{status}, 503, 'a wrong password: 503');
is($r->{json}{Code}, 'Gateway.StateUnavailable', 'Gateway.StateUnavailable');
like($t->error_log, qr/\[error\] .*idv redis "r": authentication refused by 127\.0\.0\.1:\d+/,
     'the log says the server refused the password');
unlike($t->error_log, qr/wrong-password|\Q$PASSWORD\E/, 'and shows none');
$t->ignore_log(qr/idv redis "r"|idv_cache_zone|unavailable/);
$t->stop;

done_testing;
