# The backend snippets of docs/examples/ (curl, Python, Node.js, Go, PHP),
# each run with its interpreter against "./build.sh demo", started as a
# user starts it (on free ports, in a directory of its own, so that a demo
# someone runs and a parallel test run are left alone).  Per language: the
# whole flow (Initialize, the same Initialize again, CheckResult), an error
# from the API (Code and Message, non-zero exit), and a throttled
# Initialize (429, Retry-After honoured, then success).  A language whose
# interpreter is absent is skipped, and the skip says so.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use HTTP::Tiny;
use IO::Socket::IP;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);


my $t = IdvTest->new;
my $root = $t->root;
my $dir = $t->testdir;
my $demo = "$dir/demo";
my $examples = "$root/docs/examples";

my $port = IdvTest::free_port();
my $mock_port = IdvTest::free_port();
$mock_port = IdvTest::free_port() while $mock_port == $port;

# the demo as a user runs it, against the mock: no real credentials, no
# real endpoint (IdvTest already dropped ALIBABA_CLOUD_*)
delete @ENV{qw(IDV_ENDPOINT IDV_DEMO_NO_CALL)};
$ENV{IDV_DEMO_PORT} = $port;
$ENV{IDV_DEMO_MOCK_PORT} = $mock_port;
$ENV{IDV_DEMO_DIR} = $demo;

# Under "./build.sh test --asan" the environment points at the sanitizer
# nginx in build/asan/; the demo builds and loads the plain module in
# build/, so it gets the plain nginx too.
if (($ENV{NGINX_CC_OPT} // '') =~ /sanitize/
    || ($ENV{IDV_MODULE} // '') =~ m{/asan/})
{
    delete @ENV{qw(NGINX_SRC NGINX_CC_OPT NGINX_LD_OPT IDV_NGINX
                   ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS)};
}

# the snippets talk to the gateway directly, never through a proxy
$ENV{no_proxy} = $ENV{NO_PROXY} = '127.0.0.1,localhost';

my $gateway = "http://127.0.0.1:$port";


# --- the demo -------------------------------------------------------------

my $demo_started;
my $child;                      # the snippet running, in its own group

sub demo_stop {
    return unless $demo_started;
    $demo_started = 0;
    system("cd '$root' && ./build.sh demo stop >> '$dir/demo.log' 2>&1");
    return $? == 0;
}

END { local $?; demo_stop() }

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub {
        kill 'KILL', -$child if $child;
        demo_stop();
        $SIG{$sig} = 'DEFAULT';
        kill $sig, $$;
    };
}

# a port already taken: the demo says which, and which variable picks
# another, before it starts anything (before, the mock was reported as
# started and the call failed with a TLS error from whatever answered)

for my $case ([ gateway => 'IDV_DEMO_PORT' ],
              [ mock => 'IDV_DEMO_MOCK_PORT' ])
{
    my ($what, $var) = @$case;

    my $busy = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                   Proto => 'tcp', Listen => 5)
        or die "listen: $@";
    my $p = $busy->sockport;

    local $ENV{$var} = $p;
    local $ENV{IDV_DEMO_DIR} = "$dir/demo-busy";
    my $out = `cd '$root' && ./build.sh demo 2>&1 < /dev/null`;

    isnt($?, 0, "the $what port in use: ./build.sh demo fails");
    like($out, qr/port $p is in use.*$var=PORT/,
         "the $what port in use: the message names the port and $var")
        or diag $out;
    unlike($out, qr/mock API on/, "the $what port in use: no mock started");
    close $busy;
}

my $started = time;
$demo_started = 1;
system("cd '$root' && ./build.sh demo > '$dir/demo.log' 2>&1 < /dev/null");

unless (is($?, 0, "./build.sh demo starts (port $port, mock $mock_port)")) {
    for my $f ("$dir/demo.log", "$demo/error.log") {
        my @l = split /\n/, IdvTest::_slurp($f) // '';
        my $from = @l > 30 ? @l - 30 : 0;
        diag("--- $f (last lines)\n" . join "\n", @l[$from .. $#l]);
    }
    done_testing;
    exit;
}
note(sprintf 'demo up in %.1f s', time - $started);


# --- helpers --------------------------------------------------------------

sub which {
    my ($cmd) = @_;
    for my $d (split /:/, $ENV{PATH} // '') {
        return "$d/$cmd" if length $d && -f "$d/$cmd" && -x _;
    }
    return undef;
}


# run(\@cmd, cwd => DIR, env => {…}, timeout => SECONDS)
#   -> {status (-1: timed out), out, err, secs}
sub run {
    my ($cmd, %o) = @_;

    my ($out, $err) = ("$dir/run.out", "$dir/run.err");
    my $t0 = time;

    my $pid = $child = fork // die "fork: $!";
    unless ($pid) {
        POSIX::setpgid(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>', $err or POSIX::_exit(126);
        @ENV{keys %{$o{env}}} = values %{$o{env}} if $o{env};
        chdir($o{cwd} // $examples) or POSIX::_exit(126);
        exec @$cmd or POSIX::_exit(127);
    }

    my $deadline = $t0 + ($o{timeout} // 20);
    my $status;
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) { $status = $? >> 8; last }
        if (time > $deadline) {
            kill 'KILL', -$pid;
            waitpid($pid, 0);
            $status = -1;
            last;
        }
        sleep 0.05;
    }
    $child = undef;

    return { status => $status, secs => time - $t0,
             out => IdvTest::_slurp($out) // '',
             err => IdvTest::_slurp($err) // '' };
}


sub show {
    my ($r) = @_;
    diag("exit $r->{status}\n--- stdout\n$r->{out}--- stderr\n$r->{err}");
}


# the demo's mock API: queue a fault (HTTPS, its own CA)
sub mock_fault {
    my (%f) = @_;
    my $ua = HTTP::Tiny->new(
        timeout => 10, verify_SSL => 1,
        SSL_options => { SSL_ca_file => "$demo/certs/ca.pem",
                         SSL_verifycn_name => 'localhost',
                         SSL_hostname => 'localhost' });
    my $res = $ua->post("https://127.0.0.1:$mock_port/__mock/fault", {
        content => encode_json(\%f),
        headers => { 'Content-Type' => 'application/json' } });
    return $res->{success};
}


# --- the snippets ---------------------------------------------------------

# file: the snippet; bin: its interpreter; cmd: how it runs (in dir, by
# default docs/examples/); check: undef, or why the interpreter cannot run
# it
my @cases = (
    { name => 'curl', file => 'curl.sh', bin => 'curl', package => 'curl',
      cmd => ['sh', 'curl.sh'] },
    { name => 'Python', file => 'python.py', bin => 'python3',
      package => 'python3',
      cmd => ['python3', 'python.py'] },
    { name => 'Node.js', file => 'node.mjs', bin => 'node',
      package => 'nodejs',
      cmd => ['node', 'node.mjs'],
      check => sub {
          system('node', '-e',
                 'process.exit(typeof fetch === "function" ? 0 : 1)') == 0
              ? undef : 'node has no built-in fetch (Node.js 18 or later)' } },
    # "go run" compiles first
    { name => 'Go', file => 'go/main.go', bin => 'go',
      package => 'golang-go',
      cmd => ['go', 'run', '.'], dir => "$examples/go", timeout => 90 },
    { name => 'PHP', file => 'php.php', bin => 'php',
      package => 'php-cli',
      cmd => ['php', 'php.php'],
      check => sub {
          system('php', '-r',
                 'exit(function_exists("json_decode") ? 0 : 1);') == 0
              ? undef : 'php has no JSON functions' } },
);

my %go_env;
unless ($ENV{GOCACHE} || $ENV{HOME} || $ENV{XDG_CACHE_HOME}) {
    $go_env{GOCACHE} = "$dir/gocache";
}

for my $c (@cases) {
    my $cmd = $c->{cmd};

    SKIP: {
        my $why = which($c->{bin})
                  ? ($c->{check} && $c->{check}->())
                  : "$c->{bin} is not installed (Debian: $c->{package})";
        if ($why) {
            # shown by a plain "prove" too, not only with -v
            diag("$c->{name} ($c->{file}) not run: $why");
            skip("$c->{name} ($c->{file}): $why", 1);
        }

        subtest "$c->{name} ($c->{file})" => sub {
            my %o = (cwd => $c->{dir}, timeout => $c->{timeout} // 20,
                     env => { IDV_GATEWAY => $gateway, %go_env });

            # the flow
            my $r = run($cmd, %o);
            is($r->{status}, 0, 'exit 0') or show($r);

            my ($tx) = $r->{out} =~ /^TransactionId: ([0-9a-f]{32})$/m;
            ok($tx, 'prints a 32-hex TransactionId') or show($r);
            like($r->{out}, qr{^TransactionUrl: https?://\S+$}m,
                 'prints the TransactionUrl');

            my ($tx2, $cached) = $r->{out} =~ /^Retry:\ TransactionId
                \ ([0-9a-f]{32}),\ Gateway\.cached\ (true|false)\b/mx;
            ok(defined $cached, 'the retry prints Gateway.cached') or show($r);
            if (defined $cached && $tx) {
                if ($cached eq 'true') {
                    is($tx2, $tx, 'cached: the same TransactionId');
                } else {
                    isnt($tx2, $tx, 'not cached: a second transaction');
                }
            }

            like($r->{out}, qr/^Passed: [YNTF], SubCode: \S+$/m,
                 'CheckResult: Passed and SubCode') or show($r);

            # an error of the API: a MerchantBizId longer than 32
            $r = run($cmd, %o, env => { %{$o{env}},
                                        IDV_MERCHANT_BIZ_ID => 'x' x 33 });
            ok($r->{status} > 0, 'an error: non-zero exit') or show($r);
            like($r->{err}, qr/HTTP 400 InvalidParameter: .*MerchantBizId/,
                 'an error: HTTP status, Code and Message') or show($r);
            unlike($r->{out}, qr/^Passed/m, 'an error: the flow stops');

            # throttled once: 429 with Retry-After, then the same call again
            ok(mock_fault(mode => 'throttle', action => 'Initialize'),
               'the mock throttles the next Initialize');
            $r = run($cmd, %o);
            is($r->{status}, 0, '429: exit 0 after waiting') or show($r);
            like($r->{err}, qr/429 Throttling\S*: retrying in 1 s/,
                 '429: waits Retry-After (1 s)') or show($r);
            ok($r->{secs} >= 0.9, sprintf('429: it did wait (%.2f s)',
                                          $r->{secs}));
            like($r->{out}, qr/^Passed: /m, '429: the flow completes');
        };
    }
}


# --- stop -----------------------------------------------------------------

my $log = IdvTest::_slurp("$demo/error.log") // '';
my @bad = grep { /\[(?:alert|emerg|crit)\]/ } split /\n/, $log;
ok(!@bad, "no alert, emerg or crit in the demo's error.log")
    or diag(join "\n", @bad);

ok(demo_stop(), './build.sh demo stop')
    or diag(IdvTest::_slurp("$dir/demo.log"));
ok(!-e "$demo/nginx.pid" && !-e "$demo/mock.pid"
   && !grep({ IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $_,
                                  Proto => 'tcp') } $port, $mock_port),
   'the demo is gone: no pid files, nothing listens on its ports');

note(sprintf 'took %.1f s', time - $started);

done_testing;
