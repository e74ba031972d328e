package IdvTest;

# A small harness for testing ngx_http_idv_module: one temporary prefix per
# test object, nginx and the mock upstream as child processes that never
# outlive the test, HTTP helpers, and log checks.
#
#   use Test::More;
#   use lib 't/lib';
#   use IdvTest;
#
#   my $t = IdvTest->new;
#   $t->start_mock;
#   $t->write_config($t->standard_http);
#   $t->start_nginx;
#   my $r = $t->post('/idv/ekyc/initialize', { MerchantBizId => 'b1' });
#   is($r->{status}, 200, 'initialize answers 200');
#   $t->stop;
#   done_testing;
#
# Methods:
#   new                       temp prefix t/tmp/<test>-XXXXXX (removed if
#                             the test passes), test certs in t/tmp/certs
#   start_mock(keys => 'id:secret,…', args => [...]), stop_mock, mock_port
#   start_redis(args => [...]), stop_redis, redis_port, redis(@command)
#       (redis-cli's answer), pause_redis / resume_redis (SIGSTOP/CONT)
#   mock($method, $path, $body) and mock_stats, mock_reset,
#       mock_fault(%f), mock_complete(%args): the mock's /__mock/ API
#   write_config($http, master_process => 'off', worker_processes => 2,
#       log_level => 'debug', main => '…', module => 0)
#   standard_http(extra_server => '…', extra_http => '…',
#       signature => 'v1', credentials => '…')
#   substitute($text): %%PORT%% %%PORT2%% %%MOCK_PORT%% %%CA%%
#       %%OTHER_CA%% %%TESTDIR%% %%ROOT%%
#   nginx_t(env => {…}) -> (exit code, output)
#   start_nginx(env => {…}), reload (false if the new config failed),
#       stop (two tests: exit status 0, clean logs)
#   post($path, $body, %headers), get($path, %headers),
#       request($method, $path, $body, %headers)
#       -> {status, reason, headers (lower-case names), body, json};
#       keep_alive(1) reuses one connection; status 599 = no HTTP answer
#   raw($bytes, timeout => 5) -> everything nginx sent back
#   error_log, access_log, mock_log, check_logs, ignore_log(qr/…/)
#   backend_http, callback_locations: a backend on %%PORT2%% that logs
#       each body it gets, and the callback location that forwards to it;
#       delivered (the bodies it got), delivered_wait($n)
#   ocr_initialize($tenant, $biz, %params): an ID_OCR Initialize (path =>
#       another location), as the tenant (X-Tenant)
#   IdvTest::poll($seconds, sub { ... }): the first true value the sub
#       returns, tried every 0.1 s; undef after $seconds
#
# Environment: IDV_NGINX (default /usr/sbin/nginx), IDV_MODULE (default
# build/ngx_http_idv_module.so), IDV_ROOT (default: found from this file),
# IDV_KEEP=1 keeps the temporary directories of passing tests.
#
# Core modules only; HTTPS to the mock's control API needs IO::Socket::SSL
# (Debian libio-socket-ssl-perl, installed by ./build.sh test).

use strict;
use warnings;

use Config;
use Carp qw(croak);
use Cwd qw(abs_path);
use Fcntl qw(:flock);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::IP;
use JSON::PP;
use Digest::SHA qw(hmac_sha1);
use MIME::Base64 qw(encode_base64);
use POSIX qw(:sys_wait_h strftime);
use Scalar::Util qw(weaken);
use Test::More ();
use Time::HiRes qw(sleep time);


our $ROOT = abs_path($ENV{IDV_ROOT}
                     // File::Spec->catdir(dirname(abs_path(__FILE__)),
                                           '..', '..'));
our $TMP = "$ROOT/t/tmp";
our $CERTS = "$TMP/certs";

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

# live harness objects, for cleanup at exit or on a signal
my @LIVE;

# Tests decide which credentials nginx sees: a developer's real ones must
# not leak into a test through the environment.
delete @ENV{qw(ALIBABA_CLOUD_ACCESS_KEY_ID ALIBABA_CLOUD_ACCESS_KEY_SECRET
               ALIBABA_CLOUD_SECURITY_TOKEN)};

# test names and diagnostics carry UTF-8 values
binmode(Test::More->builder->$_, ':encoding(UTF-8)')
    for qw(output failure_output todo_output);

# a write to a connection nginx closed must not kill the test
$SIG{PIPE} = 'IGNORE';

for my $sig (qw(INT TERM HUP)) {
    next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT';
    $SIG{$sig} = sub {
        $_ && $_->{owner} == $$ && $_->_kill_children for @LIVE;
        $SIG{$sig} = 'DEFAULT';
        kill $sig, $$;
    };
}


sub new {
    my ($class, %opt) = @_;

    make_path($TMP);

    my $name = basename($0);
    $name =~ s/\.t$//;
    $name =~ s/[^A-Za-z0-9_.-]/_/g;

    my $dir = tempdir("$name-XXXXXX", DIR => $TMP, CLEANUP => 0);

    # nginx workers run as nobody when the tests run as root: they must
    # reach the temp paths below
    chmod 0755, $dir;

    my $self = bless {
        dir       => $dir,
        opt       => \%opt,
        nginx_pid => undef,
        mock_pid  => undef,
        ignore    => [],
        owner     => $$,
    }, $class;

    push @LIVE, $self;
    weaken($LIVE[-1]);

    $self->_make_certs if -f "$ROOT/t/lib/mkcerts.sh";

    return $self;
}


sub testdir { $_[0]{dir} }
sub root { $ROOT }
sub certs_dir { $CERTS }
sub port { $_[0]{port} //= free_port() }
sub port2 { $_[0]{port2} //= free_port() }
sub mock_port { $_[0]{mock_port} }
sub nginx_pid { $_[0]{nginx_pid} }


sub nginx_binary {
    my $bin = $ENV{IDV_NGINX} // '/usr/sbin/nginx';
    return $bin =~ m{/} ? File::Spec->rel2abs($bin, $ROOT) : $bin;
}


sub module_path {
    my $m = $ENV{IDV_MODULE} // 'build/ngx_http_idv_module.so';
    return File::Spec->rel2abs($m, $ROOT);
}


# a port nothing listens on, and that this process has not handed out
# before (the kernel may give a closed port again at once: two servers of
# one test on one port would answer each other's requests)
my %ports_given;

sub free_port {
    for (1 .. 50) {
        my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                    Proto => 'tcp', Listen => 1,
                                    ReuseAddr => 1)
            or croak "no free port: $@";
        my $port = $s->sockport;
        close $s;
        return $port unless $ports_given{$port}++;
    }

    croak "no free port that was not given out already";
}


# --- certificates ---------------------------------------------------------

# once per run for all tests (prove -j runs several at once): made under a
# lock, again only if missing or older than the script
sub _make_certs {
    my ($self) = @_;

    my $script = "$ROOT/t/lib/mkcerts.sh";

    make_path($TMP);
    open my $lock, '>', "$TMP/certs.lock" or croak "certs.lock: $!";
    flock($lock, LOCK_EX) or croak "flock: $!";

    my $ca = "$CERTS/ca.pem";
    my $fresh = -f $ca && -f "$CERTS/mock.pem" && -f "$CERTS/mock.key"
                && (stat $ca)[9] >= (stat $script)[9];

    unless ($fresh) {
        # mkcerts.sh does nothing while ca.pem exists
        unlink $ca;
        my @cmd = -x $script ? ($script) : ('bash', $script);
        my $out = _capture(@cmd, $CERTS);
        if ($? != 0) {
            croak "t/lib/mkcerts.sh $CERTS failed (exit " . ($? >> 8)
                  . "):\n$out";
        }
    }

    close $lock;
}


# --- the mock upstream ----------------------------------------------------

# start_mock(keys => '…', args => [...]): node t/mock/mock-aliyun.js on a
# free port, certificate for "localhost" from t/tmp/certs
sub start_mock {
    my ($self, %args) = @_;

    croak "the mock is already running" if $self->{mock_pid};

    my $js = "$ROOT/t/mock/mock-aliyun.js";
    croak "$js is missing" unless -f $js;
    croak "no test certificates ($CERTS)" unless -f "$CERTS/mock.pem";

    my @cmd = ('node', $js, '--port', 0,
               '--cert', "$CERTS/mock.pem", '--key', "$CERTS/mock.key");
    push @cmd, '--keys', $args{keys} if defined $args{keys};
    push @cmd, @{$args{args}} if $args{args};

    my $log = "$self->{dir}/mock.log";
    my $pid = $self->_spawn(\@cmd, $log, $args{env});
    $self->{mock_pid} = $pid;

    my $deadline = time + 10;

    while (time < $deadline) {
        my $text = _slurp($log) // '';
        if ($text =~ /mock-aliyun listening on (\d+)/) {
            $self->{mock_port} = $1;
            return $1;
        }

        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{mock_pid};
            croak "the mock exited (status $?):\n$text";
        }

        sleep 0.05;
    }

    $self->stop_mock;
    croak "the mock did not report its port within 10 s:\n"
          . (_slurp($log) // '');
}


sub stop_mock {
    my ($self) = @_;

    my $pid = delete $self->{mock_pid} or return;

    kill 'TERM', $pid;
    _reap($pid, 5) or do {
        kill 'KILL', -$pid;
        _reap($pid, 5);
    };
    delete $self->{mock_port};
}


# --- a real Redis ----------------------------------------------------------

# start_redis(args => [...], port => N, password => P): Debian's
# redis-server on a free loopback port (or the given one: a restart),
# nothing persisted; redis() then authenticates with P
sub start_redis {
    my ($self, %args) = @_;

    croak "redis is already running" if $self->{redis_pid};

    $self->{redis_password} = $args{password};

    my $port = $args{port} // $self->{redis_port} // free_port();
    my $dir = "$self->{dir}/redis";
    make_path($dir);

    my @cmd = ('redis-server', '--port', $port, '--bind', '127.0.0.1',
               '--save', '', '--appendonly', 'no', '--dir', $dir,
               '--daemonize', 'no', '--protected-mode', 'no',
               (defined $args{password}
                ? ('--requirepass', $args{password}) : ()),
               @{$args{args} // []});

    my $pid = $self->_spawn(\@cmd, "$dir/redis.log");
    $self->{redis_pid} = $pid;
    $self->{redis_port} = $port;

    for (1 .. 200) {
        my $pong = $self->redis('PING');
        return $port if defined $pong && $pong =~ /PONG/;

        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{redis_pid};
            croak "redis-server exited: " . (_slurp("$dir/redis.log") // '');
        }

        sleep 0.05;
    }

    croak "redis-server did not answer within 10 s";
}


sub stop_redis {
    my ($self) = @_;

    my $pid = delete $self->{redis_pid} or return;

    kill 'CONT', $pid;
    kill 'TERM', $pid;
    _reap($pid, 5) or do {
        kill 'KILL', -$pid;
        _reap($pid, 5);
    };
}

sub redis_port { $_[0]{redis_port} }
sub pause_redis { kill 'STOP', $_[0]{redis_pid} }
sub resume_redis { kill 'CONT', $_[0]{redis_pid} }

# redis(@command): redis-cli's answer (raw), undef if it failed
sub redis {
    my ($self, @cmd) = @_;

    my $pid = open(my $fh, '-|') // croak "fork: $!";

    if ($pid == 0) {
        open STDERR, '>', '/dev/null';
        { exec 'redis-cli', '-p', $self->{redis_port}, '--raw',
               (defined $self->{redis_password}
                ? ('-a', $self->{redis_password}, '--no-auth-warning')
                : ()), @cmd }
        POSIX::_exit(127);
    }

    local $/;
    my $out = <$fh>;
    close $fh;

    return $? == 0 ? $out : undef;
}


# mock($method, $path, $body): the mock's control API over HTTPS, verified
# against the test CA; returns the decoded JSON answer
sub mock {
    my ($self, $method, $path, $body) = @_;

    croak "the mock is not running" unless $self->{mock_port};

    unless (HTTP::Tiny->can_ssl) {
        croak "HTTPS to the mock needs IO::Socket::SSL: run ./build.sh test"
              . " or apt-get install libio-socket-ssl-perl";
    }

    my $ua = HTTP::Tiny->new(
        timeout    => 10,
        keep_alive => 0,
        verify_SSL => 1,
        SSL_options => {
            SSL_ca_file       => "$CERTS/ca.pem",
            SSL_verifycn_name => 'localhost',
            SSL_hostname      => 'localhost',
        },
    );

    my %req = (headers => {});

    if (defined $body) {
        $req{content} = ref $body ? $JSON->encode($body) : $body;
        $req{headers}{'Content-Type'} = 'application/json';
    }

    my $res = $ua->request($method,
                           "https://127.0.0.1:$self->{mock_port}$path",
                           \%req);

    unless ($res->{success}) {
        croak "mock $method $path: $res->{status} $res->{reason}\n"
              . ($res->{content} // '');
    }

    return undef unless length($res->{content} // '');

    my $json = eval { $JSON->decode($res->{content}) };
    croak "mock $method $path: not JSON: $res->{content}" if $@;

    return $json;
}


sub mock_stats { $_[0]->mock('GET', '/__mock/stats') }
sub mock_reset { $_[0]->mock('POST', '/__mock/reset', {}) }

sub mock_fault {
    my ($self, %f) = @_;
    return $self->mock('POST', '/__mock/fault', \%f);
}

sub mock_complete {
    my ($self, %args) = @_;
    return $self->mock('POST', '/__mock/complete', \%args);
}


# --- configuration --------------------------------------------------------

# write_config($http_text, master_process => 'on', worker_processes => 1,
#              log_level => 'info', main => '…', module => 1)
sub write_config {
    my ($self, $http, %opt) = @_;

    my $dir = $self->{dir};
    my $master = $opt{master_process} // 'on';
    my $workers = $opt{worker_processes} // 1;
    my $level = $opt{log_level} // 'info';
    my $load = ($opt{module} // 1)
               ? 'load_module ' . $self->module_path . ";\n" : '';
    my $main = $opt{main} // '';

    my $conf = <<"END";
${load}daemon off;
master_process $master;
worker_processes $workers;
pid $dir/nginx.pid;
lock_file $dir/nginx.lock;
error_log $dir/error.log $level;
$main
events {
    worker_connections 1024;
}

http {
    access_log $dir/access.log;

    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;

$http
}
END

    $conf = $self->substitute($conf);

    open my $fh, '>', "$dir/nginx.conf" or croak "nginx.conf: $!";
    print $fh $conf;
    close $fh;

    return "$dir/nginx.conf";
}


# %%PLACEHOLDER%% substitution; %%MOCK_PORT%% without a running mock is a
# port nothing listens on
sub substitute {
    my ($self, $text) = @_;

    my %v = (
        PORT      => sub { $self->port },
        PORT2     => sub { $self->port2 },
        MOCK_PORT => sub { $self->{mock_port} // ($self->{dead_port}
                                                  //= free_port()) },
        REDIS_PORT => sub { $self->{redis_port} // croak "no redis" },
        CA        => sub { "$CERTS/ca.pem" },
        OTHER_CA  => sub { "$CERTS/other-ca.pem" },
        TESTDIR   => sub { $self->{dir} },
        ROOT      => sub { $ROOT },
    );

    $text =~ s{%%([A-Z_0-9]+)%%}{
        $v{$1} ? $v{$1}->() : croak "unknown placeholder %%$1%%"
    }ge;

    return $text;
}


# standard_http(extra_server => '…', extra_http => '…', signature => 'v1',
#               credentials => '…')
sub standard_http {
    my ($self, %o) = @_;

    my $cred = $o{credentials}
               // "idv_access_key_id testid;\n"
                  . "    idv_access_key_secret testsecret;";
    my $sig = $o{signature} ? "idv_signature $o{signature};" : '';
    my $extra_http = $o{extra_http} // '';
    my $extra_server = $o{extra_server} // '';

    return <<"END";
    $cred
    idv_endpoint 127.0.0.1:%%MOCK_PORT%%;
    $sig

    upstream idv_mock {
        server 127.0.0.1:%%MOCK_PORT%%;
        keepalive 8;
    }

$extra_http

    server {
        listen 127.0.0.1:%%PORT%%;

        idv_pass /_idv_upstream;

        location = /_idv_upstream {
            internal;
            proxy_pass https://idv_mock/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$idv_host;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            subrequest_output_buffer_size 256k;
            proxy_connect_timeout 2s;
            proxy_read_timeout 3s;
        }

        location = /idv/ekyc/initialize {
            idv_action Initialize;
            idv_product_code eKYC;
        }

        location = /idv/idr/initialize {
            idv_action Initialize;
            idv_product_code IDR_GLOBAL;
        }

        location = /idv/ocr/initialize {
            idv_action Initialize;
            idv_product_code ID_OCR;
        }

        location = /idv/ekyc/verify {
            idv_action EkycVerify;
            idv_product_code eKYC_MIN;
        }

        location = /idv/result {
            idv_action CheckResult;
        }

        location = /idv/id2meta {
            idv_action Id2MetaVerifyIntl;
            idv_product_code ID_2META;
        }

$extra_server
    }
END
}


# --- nginx ----------------------------------------------------------------

# nginx_t(): nginx -t on the written config; returns (exit code, output).
# What it logs to error.log is moved into the output, so that an expected
# [emerg] does not fail check_logs later.
sub nginx_t {
    my ($self, %opt) = @_;

    my $dir = $self->{dir};
    my $log = "$dir/error.log";
    my $size = -s $log // 0;

    local %ENV = (%ENV, %{$opt{env} // {}});

    my $out = _capture($self->nginx_binary, '-t', '-p', "$dir/",
                       '-c', "$dir/nginx.conf", '-e', $log);
    my $rc = $? >> 8;

    if ((-s $log // 0) > $size) {
        open my $fh, '+<', $log or croak "$log: $!";
        seek $fh, $size, 0;
        local $/;
        $out = <$fh> . $out;
        truncate $fh, $size;
        close $fh;
    }

    return ($rc, $out);
}


# start_nginx(env => {NAME => value}): run nginx in the foreground (daemon
# off) and wait until it accepts on %%PORT%%
sub start_nginx {
    my ($self, %opt) = @_;

    croak "nginx is already running" if $self->{nginx_pid};

    my $dir = $self->{dir};
    croak "write_config first" unless -f "$dir/nginx.conf";

    my $pid = $self->_spawn([$self->nginx_binary, '-p', "$dir/",
                             '-c', "$dir/nginx.conf",
                             '-e', "$dir/error.log"],
                            "$dir/nginx.stderr", $opt{env});
    $self->{nginx_pid} = $pid;

    my $deadline = time + 10;

    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            my $status = $?;
            delete $self->{nginx_pid};
            croak "nginx exited at start (status $status):\n"
                  . $self->_logs_text;
        }

        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                    PeerPort => $self->port,
                                    Proto => 'tcp');
        if ($s) {
            close $s;
            return $pid;
        }

        sleep 0.05;
    }

    $self->_kill_nginx;
    croak "nginx does not accept on 127.0.0.1:" . $self->port
          . " after 10 s:\n" . $self->_logs_text;
}


# reload(): HUP, then wait until new workers run and the old ones were
# told to go.  Returns false if nginx rejected the new configuration.
sub reload {
    my ($self) = @_;

    my $pid = $self->{nginx_pid} or croak "nginx is not running";

    my $log = "$self->{dir}/error.log";
    my $before = _slurp($log) // '';
    my $starts = () = $before =~ /start worker process/g;
    my $quits = () = $before =~ /gracefully shutting down/g;
    my $len = length $before;

    kill 'HUP', $pid;

    my $deadline = time + 10;

    while (time < $deadline) {
        my $now = _slurp($log) // '';
        my $new = substr($now, $len);

        return 0 if $new =~ /\[emerg\]/;

        my $s = () = $now =~ /start worker process/g;
        my $q = () = $now =~ /gracefully shutting down/g;
        return 1 if $s > $starts && $q > $quits;

        # a log level above notice does not show the generations
        if ($self->_log_level_hides_notice) {
            sleep 1;
            return 1;
        }

        sleep 0.05;
    }

    croak "nginx did not reload within 10 s:\n" . $self->_logs_text;
}


sub _log_level_hides_notice {
    my ($self) = @_;
    my $conf = _slurp("$self->{dir}/nginx.conf") // '';
    my ($level) = $conf =~ /^error_log\s+\S+\s+(\w+);/m;
    return $level && $level =~ /^(warn|error|crit|alert|emerg)$/;
}


# stop(): graceful QUIT, exit status 0, clean logs (two tests)
sub stop {
    my ($self) = @_;

    my $pid = delete $self->{nginx_pid} or croak "nginx is not running";

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    kill 'QUIT', $pid;

    if (_reap($pid, 10)) {
        my $status = $?;
        Test::More::ok($status == 0, 'nginx exited with status 0')
            or Test::More::diag("exit status $status");
    } else {
        kill 'KILL', -$pid;
        _reap($pid, 5);
        Test::More::ok(0, 'nginx exited within 10 s of QUIT');
    }

    # workers left behind in nginx's process group
    if (kill 0, -$pid) {
        kill 'KILL', -$pid;
        Test::More::ok(0, 'no nginx process outlived the master');
    }

    $self->check_logs;
}


# --- a backend for forwarded callbacks --------------------------------------

# for http {}: a server on %%PORT2%% whose /ok logs each body it gets to
# backend.log (escape=json) and answers {"ok":true}
sub backend_http {
    return <<'END';
    log_format backend escape=json '$request_body';

    server {
        listen 127.0.0.1:%%PORT2%%;

        location = /ok {
            access_log %%TESTDIR%%/backend.log backend;
            proxy_pass http://127.0.0.1:%%PORT2%%/done;
        }

        location = /done { return 200 '{"ok":true}'; }
    }
END
}

# for server {}: /idv/callback forwarding verified results to that backend
sub callback_locations {
    return <<'END';
        location = /idv/callback {
            idv_callback;
            idv_callback_pass /app/result;
        }

        location = /app/result {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/ok;
        }
END
}

# the bodies the backend got, decoded
sub delivered {
    my ($self) = @_;

    my $log = _slurp("$self->{dir}/backend.log") // '';
    my $js = JSON::PP->new->allow_nonref;

    # escape=json: each line is the body as the inside of a JSON string
    return map { decode_json($js->decode(qq("$_"))) } grep { length }
           split /\n/, $log;
}

# the backend's log line is written when its request ends, which may be a
# moment after the callback was answered (more under the sanitizers)
sub delivered_wait {
    my ($self, $n) = @_;
    my @d;

    for (1 .. 100) {
        @d = $self->delivered;
        last if @d >= $n;
        sleep 0.05;
    }

    return @d;
}


# ocr_initialize($tenant, $biz, %params): an Initialize of the standard
# ID_OCR location (or path => another), as the tenant
sub ocr_initialize {
    my ($self, $tenant, $biz, %o) = @_;

    my $path = delete $o{path} // '/idv/ocr/initialize';

    return $self->post($path, { MerchantBizId => $biz, MerchantUserId => 'u1',
                                DocType => '01000000', MetaInfo => '{}', %o },
                       'X-Tenant' => $tenant);
}


# poll($seconds, $sub): a state reached in its own time (no timed
# assertion: the limit is only how long to wait for it)
sub poll {
    my ($limit, $cb) = @_;
    my $end = time + $limit;

    while (time < $end) {
        my $r = $cb->();
        return $r if $r;
        sleep 0.1;
    }

    return undef;
}


# --- HTTP -----------------------------------------------------------------

# keep_alive(1): later requests share one persistent connection
sub keep_alive {
    my ($self, $on) = @_;
    $self->{keep_alive} = $on;
    delete $self->{ua};
}


sub _ua {
    my ($self) = @_;
    return $self->{ua} //= HTTP::Tiny->new(
        keep_alive   => $self->{keep_alive} ? 1 : 0,
        timeout      => 15,
        max_redirect => 0,
        agent        => 'IdvTest/1',
    );
}


# request($method, $path, $body, %headers) -> {status, headers, body, json}
sub request {
    my ($self, $method, $path, $body, %headers) = @_;

    my %req = (headers => {%headers});

    if (defined $body) {
        if (ref $body) {
            $req{content} = $JSON->encode($body);
            $req{headers}{'Content-Type'} = 'application/json'
                unless grep { lc eq 'content-type' } keys %headers;
        } else {
            $req{content} = $body;
        }
    }

    my $res = $self->_ua->request($method,
                                  'http://127.0.0.1:' . $self->port . $path,
                                  \%req);

    my $r = {
        status  => $res->{status},
        reason  => $res->{reason},
        headers => $res->{headers},
        body    => $res->{content} // '',
    };

    $r->{json} = eval { $JSON->decode($r->{body}) } if length $r->{body};

    return $r;
}


# an SDK request signed as the official V1 SDKs sign it (RPC, HMAC-SHA1),
# POSTed to / with every parameter in the query string
sub sdk_v1 {
    my ($self, $id, $secret, %p) = @_;

    my $path = delete $p{_path} // '/';

    my $enc = sub {
        my ($v) = @_;
        $v =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
        return $v;
    };

    my %q = (Version => '2022-08-09', Format => 'json',
             SignatureMethod => 'HMAC-SHA1', SignatureVersion => '1.0',
             AccessKeyId => $id,
             Timestamp => strftime('%Y-%m-%dT%H:%M:%SZ', gmtime), %p);

    my $cq = join '&', map { $enc->($_) . '=' . $enc->($q{$_}) } sort keys %q;
    $q{Signature} = encode_base64(hmac_sha1('POST&%2F&' . $enc->($cq),
                                            "$secret&"), '');

    return $self->post("$path?" . join('&', map { $enc->($_) . '='
                                                  . $enc->($q{$_}) }
                                            sort keys %q), '');
}


sub post {
    my ($self, $path, $body, %headers) = @_;
    return $self->request('POST', $path, $body // '', %headers);
}


sub get {
    my ($self, $path, %headers) = @_;
    return $self->request('GET', $path, undef, %headers);
}


# raw($bytes, timeout => 5): send bytes as they are, return all that comes
# back until nginx closes (or the timeout)
sub raw {
    my ($self, $bytes, %opt) = @_;

    my $timeout = $opt{timeout} // 5;

    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
                                PeerPort => $self->port, Proto => 'tcp')
        or croak "connect to nginx: $@";

    $s->autoflush(1);
    print $s $bytes;

    my $sel = IO::Select->new($s);
    my $reply = '';
    my $deadline = time + $timeout;

    while ((my $left = $deadline - time) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $reply .= $buf;
    }

    close $s;
    return $reply;
}


# --- logs -----------------------------------------------------------------

sub error_log { _slurp("$_[0]{dir}/error.log") // '' }
sub access_log { _slurp("$_[0]{dir}/access.log") // '' }
sub mock_log { _slurp("$_[0]{dir}/mock.log") // '' }


# ignore_log(qr/…/): error.log lines a test expects, skipped by check_logs
sub ignore_log {
    my ($self, @re) = @_;
    push @{$self->{ignore}}, @re;
}


my $BAD = qr/\[(?:alert|emerg|crit)\]|AddressSanitizer|LeakSanitizer
            |runtime\ error:|open\ socket\ .*\ left/x;


sub check_logs {
    my ($self) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my @bad;

    for my $file ("$self->{dir}/error.log", "$self->{dir}/nginx.stderr") {
        my $text = _slurp($file) // next;
        LINE: for my $line (split /\n/, $text) {
            next unless $line =~ $BAD;
            for my $re (@{$self->{ignore}}) {
                next LINE if $line =~ $re;
            }
            push @bad, $line;
        }
    }

    Test::More::ok(!@bad, 'no alert, emerg, crit or sanitizer report in logs')
        or Test::More::diag(join "\n", @bad[0 .. ($#bad < 20 ? $#bad : 19)]);

    return !@bad;
}


sub _logs_text {
    my ($self) = @_;
    my $text = '';
    for my $f (qw(error.log nginx.stderr)) {
        my $t = _slurp("$self->{dir}/$f");
        $text .= "--- $f\n$t" if defined $t && length $t;
    }
    return $text;
}


# --- processes ------------------------------------------------------------

# fork and exec @$cmd in its own process group, stdout and stderr to $log;
# the child gets SIGTERM if this process dies first
sub _spawn {
    my ($self, $cmd, $log, $env) = @_;

    my $pid = fork // croak "fork: $!";
    return $pid if $pid;

    eval {
        POSIX::setpgid(0, 0);
        _parent_death_signal(15);

        $SIG{PIPE} = 'DEFAULT';
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or die "$log: $!";
        open STDERR, '>&', \*STDOUT;

        @ENV{keys %$env} = values %$env if $env;

        chdir $ROOT;
        exec @$cmd or die "exec $cmd->[0]: $!";
    };
    print STDERR $@;
    POSIX::_exit(127);
}


# prctl(PR_SET_PDEATHSIG) where the syscall number is known
sub _parent_death_signal {
    my ($sig) = @_;
    my %nr = ('x86_64-linux' => 157, 'aarch64-linux' => 167);
    my ($arch) = $Config{archname} =~ /^(x86_64-linux|aarch64-linux)/;
    syscall($nr{$arch}, 1, $sig) if $arch;
}


# wait for $pid up to $secs; true if reaped ($? holds the status)
sub _reap {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;

    while (time < $deadline) {
        my $r = waitpid($pid, WNOHANG);
        return 1 if $r == $pid;
        return 0 if $r < 0;
        sleep 0.02;
    }

    return 0;
}


sub _kill_nginx {
    my ($self) = @_;
    my $pid = delete $self->{nginx_pid} or return;
    kill 'KILL', -$pid;
    _reap($pid, 5);
}


sub _kill_children {
    my ($self) = @_;
    kill 'CONT', $self->{redis_pid} if $self->{redis_pid};

    for my $k (qw(nginx_pid mock_pid redis_pid)) {
        my $pid = delete $self->{$k} or next;
        kill 'KILL', -$pid;
        _reap($pid, 2);
    }
}


sub _cleanup {
    my ($self) = @_;

    # a process the test forked leaves nginx and the mock to the test
    return if $self->{owner} != $$;
    return if $self->{cleaned}++;

    if ($self->{nginx_pid}) {
        Test::More::diag("IdvTest: the test did not stop nginx; killed");
        $self->_kill_nginx;
        $self->check_logs;
        Test::More::ok(0, 'the test stopped nginx');
    }

    $self->stop_mock;
    $self->stop_redis;

    my $passing = Test::More->builder->is_passing;

    if ($passing && !$ENV{IDV_KEEP}) {
        remove_tree($self->{dir});
    } else {
        Test::More::diag("IdvTest: kept $self->{dir}");
    }
}


sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    $self->_cleanup;
}


END {
    local $?;
    $_ && $_->_cleanup for @LIVE;
}


# --- small helpers --------------------------------------------------------

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    local $/;
    my $text = <$fh>;
    close $fh;
    return $text // '';
}


# run a command, return its stdout and stderr together ($? is its status)
sub _capture {
    my (@cmd) = @_;

    my $pid = open(my $fh, '-|') // croak "fork: $!";

    unless ($pid) {
        $SIG{PIPE} = 'DEFAULT';
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', '/dev/null';
        exec @cmd or do { print "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }

    local $/;
    my $out = <$fh> // '';
    close $fh;
    return $out;
}


1;
