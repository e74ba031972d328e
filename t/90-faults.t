# Fault injection: the faults t/30-errors.t and t/31-retry.t do not cover.
# TLS verification failures, DNS failures of the upstream name, answers
# that arrive late, at the buffer's edge or cut short on reads, clients
# that leave mid-body, mid-call, mid-retry and mid-callback (with the
# cache's single flight and the callbacks' replay guard released), bodies
# sent slowly, pipelined requests, HEAD and GET.  Each gives a clear JSON
# error or a clean close; no worker crashes, nothing is logged at [alert]
# or [crit], and no connection is left open (IdvTest's stop() fails on
# "open socket ... left").  Two workers, so that the cache's waiters run
# both in the flight's worker and in the other one.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use IO::Select;
use IO::Socket::IP;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);


my $JSON = JSON::PP->new->utf8->canonical;

my $t = IdvTest->new;
$t->start_mock;


# --- a DNS server of our own, on loopback ---------------------------------
#
# Answers A 127.0.0.1 for mock.idv.test (a name in the mock's certificate)
# and NXDOMAIN for every other name: the resolver path of nginx works
# without any network, and the failure is a real "Host not found".

sub start_dns {
    my $sock = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                   Proto => 'udp')
        or die "dns socket: $@";
    my $port = $sock->sockport;

    my $pid = fork // die "fork: $!";

    if ($pid == 0) {
        $SIG{ALRM} = sub { POSIX::_exit(0) };
        alarm 600;                      # never outlives a stuck test

        while (1) {
            my $from = $sock->recv(my $q, 512) // next;
            next if length $q < 17;

            my ($id, $flags) = unpack 'n n', $q;
            my $pos = 12;
            my @labels;

            while ($pos < length $q) {
                my $len = ord substr($q, $pos, 1);
                $pos++;
                last if $len == 0;
                push @labels, lc substr($q, $pos, $len);
                $pos += $len;
            }

            my $question = substr($q, 12, $pos + 4 - 12);
            my ($qtype) = unpack 'n', substr($q, $pos, 2);
            my $name = join '.', @labels;
            my $known = $name eq 'mock.idv.test';
            my $answer = ($known && $qtype == 1)
                ? pack('n n n N n C4', 0xc00c, 1, 1, 1, 4, 127, 0, 0, 1) : '';

            my $reply = pack('n n n n n n', $id,
                             0x8580 | ($flags & 0x0100) | ($known ? 0 : 3),
                             1, length($answer) ? 1 : 0, 0, 0)
                        . $question . $answer;

            $sock->send($reply, 0, $from);
        }
    }

    close $sock;
    return ($pid, $port);
}

my ($dns_pid, $dns_port) = start_dns();

END { kill 'TERM', $dns_pid if $dns_pid; }

# a UDP port nothing listens on: the resolver gets no answer at all
my $dead_dns = do {
    my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => 0,
                                Proto => 'udp') or die "udp: $@";
    my $p = $s->sockport;
    close $s;
    $p;
};


# --- the configuration ----------------------------------------------------

my $PROXY = <<'END';
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $idv_host;
            proxy_ssl_verify on;
            subrequest_output_buffer_size 256k;
            proxy_connect_timeout 2s;
END

my $OCR = "idv_action Initialize; idv_product_code ID_OCR;";

my $spread = IdvTest::free_port();

$t->write_config($t->standard_http(extra_http => <<"END", extra_server => <<"END"), worker_processes => 2);
    idv_cache_zone zone=idv_faults:1m;
    idv_callback_zone zone=idv_cb:1m;

    log_format faults '\$pid \$status \$uri \$idv_code '
                      'cache=\$idv_cache_status biz=\$idv_merchant_biz_id';

    # one upstream block per TLS policy (docs/directives.md)
    upstream idv_mock_other_ca {
        server 127.0.0.1:%%MOCK_PORT%%;
    }

    upstream idv_mock_wrong_name {
        server 127.0.0.1:%%MOCK_PORT%%;
    }

    server {                            # connections spread over workers
        listen 127.0.0.1:$spread reuseport;
        idv_pass /_idv_upstream;
        access_log %%TESTDIR%%/faults.log faults;

        location = /idv/cached/initialize { $OCR idv_cache idv_faults; }

        location = /_idv_upstream {
            internal;
            proxy_pass https://idv_mock/;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name localhost;
$PROXY
            proxy_read_timeout 5s;
        }
    }

    server {                            # the backend receiving callbacks
        listen 127.0.0.1:%%PORT2%%;
        access_log %%TESTDIR%%/backend.log faults;
        location = /ok { return 200 '{"ok":true}'; }
    }
END
        access_log %%TESTDIR%%/faults.log faults;

        # TLS: a CA that did not sign the mock's certificate
        location = /idv/badca/initialize { $OCR idv_pass /_idv_badca; }
        location = /idv/badca/result {
            idv_action CheckResult;
            idv_pass /_idv_badca;
        }
        location = /_idv_badca {
            internal;
            proxy_pass https://idv_mock_other_ca/;
            proxy_ssl_trusted_certificate %%OTHER_CA%%;
            proxy_ssl_name localhost;
$PROXY
            proxy_read_timeout 3s;
        }

        # TLS: the right CA, a name the certificate does not carry
        location = /idv/badname/initialize { $OCR idv_pass /_idv_badname; }
        location = /_idv_badname {
            internal;
            proxy_pass https://idv_mock_wrong_name/;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name wrong.idv.test;
$PROXY
            proxy_read_timeout 3s;
        }

        # DNS at run time: a variable in proxy_pass makes nginx resolve
        location = /idv/dns-ok/initialize { $OCR idv_pass /_idv_dns_ok; }
        location = /_idv_dns_ok {
            internal;
            resolver 127.0.0.1:$dns_port ipv6=off valid=1s;
            resolver_timeout 2s;
            set \$idv_up mock.idv.test:%%MOCK_PORT%%;
            proxy_pass https://\$idv_up/?\$args;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name mock.idv.test;
$PROXY
            proxy_read_timeout 3s;
        }

        location = /idv/dns-nx/initialize { $OCR idv_pass /_idv_dns_nx; }
        location = /idv/dns-nx/result {
            idv_action CheckResult;
            idv_pass /_idv_dns_nx;
        }
        location = /_idv_dns_nx {
            internal;
            resolver 127.0.0.1:$dns_port ipv6=off valid=1s;
            resolver_timeout 2s;
            set \$idv_up nosuch.idv.test:%%MOCK_PORT%%;
            proxy_pass https://\$idv_up/?\$args;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name nosuch.idv.test;
$PROXY
            proxy_read_timeout 3s;
        }

        location = /idv/dns-dead/initialize { $OCR idv_pass /_idv_dns_dead; }
        location = /_idv_dns_dead {
            internal;
            resolver 127.0.0.1:$dead_dns ipv6=off;
            resolver_timeout 1s;
            set \$idv_up mock.idv.test:%%MOCK_PORT%%;
            proxy_pass https://\$idv_up/?\$args;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name mock.idv.test;
$PROXY
            proxy_read_timeout 3s;
        }

        # a short read timeout, for answers that come late
        location = /idv/t1/initialize { $OCR idv_pass /_idv_t1; }
        location = /idv/t1/result {
            idv_action CheckResult;
            idv_pass /_idv_t1;
        }
        location = /_idv_t1 {
            internal;
            proxy_pass https://idv_mock/;
            proxy_ssl_trusted_certificate %%CA%%;
            proxy_ssl_name localhost;
$PROXY
            proxy_read_timeout 1s;
        }

        # the cache's single flight
        location = /idv/cached/initialize { $OCR idv_cache idv_faults; }

        # callbacks
        location = /idv/cb/initialize {
            $OCR
            idv_callback_url https://gateway.example/idv/callback;
        }
        location = /idv/callback {
            idv_callback;
            idv_callback_pass /app/result;
        }
        location = /app/result {
            internal;
            proxy_pass http://127.0.0.1:%%PORT2%%/ok;
        }

        # many retries over a long budget: a client can leave meanwhile
        location = /idv/patient/result {
            idv_action CheckResult;
            idv_retries 10;
            idv_retry_budget 10s;
        }

        # bodies that arrive slowly, or stop
        location = /idv/slowbody/initialize {
            $OCR
            client_body_timeout 1s;
        }
END
$t->start_nginx;

my %ocr = (MerchantBizId => 'flt0001', MerchantUserId => 'u1',
           DocType => '01000000', MetaInfo => '{}');
my %q = (MerchantBizId => 'flt0001', TransactionId => 'tx-faults');


# --- helpers --------------------------------------------------------------

sub gateway_error {
    my ($r, $status, $code, $name, $msg) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    is($r->{status}, $status, "$name: HTTP $status") or diag $r->{body};
    is($r->{json}{Code}, $code, "$name: Code $code");
    like($r->{json}{Message} // '', $msg, "$name: the message explains")
        if $msg;
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON body");
    ok(exists $r->{json}{Gateway}, "$name: Gateway object");
}

sub calls { $t->mock_stats->{calls} }

sub request_bytes {
    my ($method, $path, $body, %h) = @_;

    $body = $JSON->encode($body) if ref $body;
    my $head = "$method $path HTTP/1.1\r\nHost: gateway\r\n";
    $head .= "Content-Type: application/json\r\n" if defined $body;
    $head .= "Content-Length: " . length($body) . "\r\n" if defined $body;
    $head .= "$_: $h{$_}\r\n" for sort keys %h;

    return "$head\r\n" . ($body // '');
}

sub connect_nginx {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $t->port,
                                Proto => 'tcp')
        or die "connect: $@";
    $s->autoflush(1);
    return $s;
}

# read $n HTTP/1.1 responses from $s; the methods tell which have no body
sub read_responses {
    my ($s, $methods, $timeout) = @_;

    my $sel = IO::Select->new($s);
    my $buf = '';
    my @out;
    my $deadline = time + ($timeout // 10);
    my $eof = 0;

    for my $method (@$methods) {
        my $r;

        while (1) {
            if (!$r && $buf =~ s/\A(HTTP\/1\.[01]) (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n//) {
                $r = { status => $2, headers => {} };
                for (split /\r\n/, $3) {
                    my ($k, $v) = split /:\s*/, $_, 2;
                    $r->{headers}{lc $k} = $v;
                }
            }

            if ($r) {
                my $len = $method eq 'HEAD' ? 0
                          : $r->{headers}{'content-length'} // 0;
                if (length $buf >= $len) {
                    $r->{body} = substr($buf, 0, $len, '');
                    $r->{json} = eval { $JSON->decode($r->{body}) }
                        if length $r->{body};
                    push @out, $r;
                    last;
                }
            }

            my $left = $deadline - time;
            last if $eof || $left <= 0 || !$sel->can_read($left);
            my $n = sysread($s, my $chunk, 65536);
            $eof = 1 unless $n;
            $buf .= $chunk if $n;
        }

        last unless $r && defined $r->{body};
    }

    return (\@out, $buf, $eof);
}

# the nginx workers: children of the master
sub workers {
    my $master = $t->nginx_pid;
    my @w;

    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        my ($pid, $ppid) = $line =~ /^(\d+) \(.*\) \S+ (\d+)/ or next;
        push @w, $pid if $ppid == $master;
    }

    return sort { $a <=> $b } @w;
}

# the access log's lines for $uri
sub logged {
    my ($uri) = @_;
    return [grep { ((split / /)[2] // '') eq $uri }
            split /\n/, IdvTest::_slurp($t->testdir . '/faults.log') // ''];
}

# wait until the access log has $n more lines for $uri than $before (the
# request ended); returns the new lines
sub wait_logged {
    my ($uri, $before, $n, $secs) = @_;
    my $deadline = time + ($secs // 10);

    while (time < $deadline) {
        my $l = logged($uri);
        return [@$l[$before .. $#$l]] if @$l >= $before + $n;
        sleep 0.05;
    }

    return undef;
}

sub nlogged { scalar @{logged($_[0])} }

# (under the sanitizers a worker may take a moment to start)
my @workers = workers();
for (1 .. 100) {
    last if @workers == 2;
    sleep 0.1;
    @workers = workers();
}
is(scalar @workers, 2, 'two workers running');


# --- TLS verification failure --------------------------------------------

$t->mock_reset;
my $r = $t->post('/idv/badca/initialize', \%ocr);
gateway_error($r, 502, 'Gateway.UpstreamError', 'untrusted upstream CA',
              qr/call to ID Verification failed/);
is($r->{json}{Gateway}{attempts}, 1, 'untrusted CA: one attempt (billable)');
is(calls(), 0, 'untrusted CA: nothing reached the API');
like($t->error_log, qr/\[error\].*upstream SSL certificate verify error/,
     'untrusted CA: error.log says why');

$r = $t->post('/idv/badca/result', \%q);
gateway_error($r, 502, 'Gateway.UpstreamError',
              'untrusted CA on a read: retried, then 502');
is($r->{json}{Gateway}{attempts}, 3, 'untrusted CA on a read: 3 attempts');
is(calls(), 0, 'untrusted CA on a read: nothing reached the API');

$r = $t->post('/idv/badname/initialize', \%ocr);
gateway_error($r, 502, 'Gateway.UpstreamError', 'certificate for another name');
is(calls(), 0, 'certificate for another name: nothing reached the API');
like($t->error_log, qr/upstream SSL certificate does not match "wrong\.idv\.test"/,
     'certificate for another name: error.log says why');

# a verified connection and session of the right block are not reused by
# the location that trusts another CA
$r = $t->post('/idv/ocr/initialize', \%ocr);
is($r->{status}, 200, 'the verifying location works') or diag $r->{body};
$r = $t->post('/idv/badca/initialize', \%ocr);
is($r->{status}, 502, 'untrusted CA after a good call: still 502');
is(calls(), 1, 'untrusted CA after a good call: nothing reached the API');


# --- DNS ------------------------------------------------------------------

$t->mock_reset;
$r = $t->post('/idv/dns-ok/initialize', \%ocr);
is($r->{status}, 200, 'resolved at run time by our DNS: 200')
    or diag $r->{body};
is(calls(), 1, 'resolved at run time: one call');

my $t0 = time;
$r = $t->post('/idv/dns-nx/initialize', \%ocr);
gateway_error($r, 502, 'Gateway.UpstreamError', 'upstream name does not exist',
              qr/call to ID Verification failed/);
ok(time - $t0 < 1.9, 'NXDOMAIN: answered before resolver_timeout');
like($t->error_log, qr/nosuch\.idv\.test could not be resolved \(3: Host not found\)/,
     'NXDOMAIN: error.log names the host');

$r = $t->post('/idv/dns-nx/result', \%q);
gateway_error($r, 502, 'Gateway.UpstreamError',
              'NXDOMAIN on a read: retried, then 502');
is($r->{json}{Gateway}{attempts}, 3, 'NXDOMAIN on a read: 3 attempts');

$t0 = time;
$r = $t->post('/idv/dns-dead/initialize', \%ocr);
gateway_error($r, 502, 'Gateway.UpstreamError', 'no DNS server answers');
ok(time - $t0 >= 0.9 && time - $t0 < 5,
   'no DNS server: answered after resolver_timeout');
like($t->error_log, qr/mock\.idv\.test could not be resolved \(110: Operation timed out\)/,
     'no DNS server: error.log says it timed out');
is(calls(), 1, 'DNS failures: nothing reached the API');


# --- answers that come late (the timeout itself is in t/30-errors.t) ------

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 400, action => 'Initialize');
$r = $t->post('/idv/t1/initialize', \%ocr);
is($r->{status}, 200, 'slow answer within proxy_read_timeout: 200');

$t->mock_fault(mode => 'slow', delay_ms => 2000, action => 'Initialize');
$r = $t->post('/idv/t1/initialize', \%ocr);
gateway_error($r, 504, 'Gateway.UpstreamTimeout',
              'a valid answer after proxy_read_timeout',
              qr/did not answer in time/);
is(calls(), 2, 'late answer to a billable call: not repeated');

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 2000, action => 'CheckResult');
$r = $t->post('/idv/t1/result', \%q);
is($r->{status}, 200, 'late answer to a read: retried to success')
    or diag $r->{body};
is($r->{json}{Gateway}{attempts}, 2, 'late answer to a read: 2 attempts');
is(calls(), 2, 'late answer to a read: 2 calls');


# --- reads cut short or unusable (t/31-retry.t has throttling and 5xx) ---

for my $case (['reset', 200, 2, 'reset before the answer: retried'],
              ['reset_mid', 200, 2, 'reset mid-answer: retried'],
              ['garbage', 502, 1, 'garbage: not an envelope, not retried'],
              ['truncated', 502, 1, 'truncated JSON: not retried'])
{
    my ($mode, $status, $n, $name) = @$case;

    $t->mock_reset;
    $t->mock_fault(mode => $mode, action => 'CheckResult');
    $r = $t->post('/idv/result', \%q);

    # docs/security.md, finding F2 (fixed): an answer cut after its headers
    # is a transport failure, which a read retries
    is($r->{status}, $status, "CheckResult, $name: $status")
        or diag $r->{body};
    is(calls(), $n, "CheckResult, $name: $n call(s)");
    is($r->{json}{Code}, 'Gateway.UpstreamError', "CheckResult, $name: code")
        if $status == 502;
}


# --- answers at the edge of subrequest_output_buffer_size (256k) ----------
#
# t/41-checkresult.t has one far over and one far under; here the exact
# edge, and that a read is not repeated after an answer too large.

my $overhead = length('{"RequestId":"' . ('X' x 36) . '","Code":"Success",'
                      . '"Message":"success","Result":{"Action":'
                      . '"CheckResult","Big":""}}');

$t->mock_reset;
$t->mock_fault(mode => 'big', bytes => 262144 - $overhead,
               action => 'CheckResult');
$r = $t->post('/idv/result', \%q);
is($r->{status}, 200, 'an answer of exactly the buffer size: 200')
    or diag substr($r->{body}, 0, 300);
is(length($r->{json}{Result}{Big} // ''), 262144 - $overhead,
   'an answer of exactly the buffer size: complete');

$t->mock_reset;
$t->mock_fault(mode => 'big', bytes => 262145 - $overhead,
               action => 'CheckResult');
$r = $t->post('/idv/result', \%q);
gateway_error($r, 502, 'Gateway.UpstreamError', 'one byte over the buffer',
              qr/too large for subrequest_output_buffer_size/);
is(calls(), 1, 'an answer too large: a read is not repeated');


# --- the client leaves mid-body -------------------------------------------

$t->mock_reset;
my $before = nlogged('/idv/slowbody/initialize');
{
    my $body = $JSON->encode({ %ocr, MetaInfo => 'x' x 1000 });
    my $s = connect_nginx();
    print $s "POST /idv/slowbody/initialize HTTP/1.1\r\nHost: gateway\r\n"
             . "Content-Type: application/json\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n"
             . substr($body, 0, length($body) >> 1);
    sleep 0.2;
    close $s;
}
ok(wait_logged('/idv/slowbody/initialize', $before, 1),
   'client gone mid-body: the request ended');

# ... and one that stops sending: closed after client_body_timeout
{
    my $body = $JSON->encode(\%ocr);
    my $s = connect_nginx();
    print $s "POST /idv/slowbody/initialize HTTP/1.1\r\nHost: gateway\r\n"
             . "Content-Type: application/json\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n"
             . substr($body, 0, 10);
    $t0 = time;
    my ($out, $rest, $eof) = read_responses($s, ['POST'], 5);
    ok($eof && !@$out && $rest eq '',
       'client stalls mid-body: closed without an answer');
    ok(time - $t0 < 3, 'client stalls mid-body: after client_body_timeout');
    close $s;
}

# ... and one that sends a chunked body and leaves inside a chunk
$before = nlogged('/idv/slowbody/initialize');
{
    my $s = connect_nginx();
    print $s "POST /idv/slowbody/initialize HTTP/1.1\r\nHost: gateway\r\n"
             . "Content-Type: application/json\r\n"
             . "Transfer-Encoding: chunked\r\n\r\n" . "400\r\n" . ('{' x 100);
    sleep 0.2;
    close $s;
}
ok(wait_logged('/idv/slowbody/initialize', $before, 1),
   'client gone inside a chunk: the request ended');
is(calls(), 0, 'bodies that never arrived: nothing sent upstream');


# --- bodies sent slowly ---------------------------------------------------

$t->mock_reset;
{
    my $body = $JSON->encode({ %ocr, MerchantBizId => 'slow0001' });
    my $s = connect_nginx();
    print $s "POST /idv/slowbody/initialize HTTP/1.1\r\nHost: gateway\r\n"
             . "Content-Type: application/json\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n";

    my $piece = int(length($body) / 10) + 1;
    for my $i (0 .. 9) {
        sleep 0.1;
        print $s substr($body, $i * $piece, $piece);
    }

    my ($out) = read_responses($s, ['POST'], 10);
    is($out->[0]{status}, 200, 'body in 10 pieces 100 ms apart: 200')
        or diag explain $out;
    is($out->[0]{json}{Code}, 'Success', 'body in pieces: the API answered');
    close $s;
}

{
    my $body = $JSON->encode({ %ocr, MerchantBizId => 'slow0002' });
    my $s = connect_nginx();
    print $s "POST /idv/slowbody/initialize HTTP/1.1\r\nHost: gateway\r\n"
             . "Content-Type: application/json\r\n"
             . "Transfer-Encoding: chunked\r\n\r\n";

    my $piece = int(length($body) / 10) + 1;
    for my $i (0 .. 9) {
        sleep 0.1;
        my $chunk = substr($body, $i * $piece, $piece);
        next unless length $chunk;
        print $s sprintf("%x\r\n%s\r\n", length $chunk, $chunk);
    }
    print $s "0\r\n\r\n";

    my ($out) = read_responses($s, ['POST'], 10);
    is($out->[0]{status}, 200, 'chunked body in 10 chunks 100 ms apart: 200')
        or diag explain $out;
    close $s;
}
is(calls(), 2, 'slow bodies: one call each');
is($t->mock_stats->{requests}[-1]{code}, 'Success',
   'slow bodies: the call was signed over the whole body');


# --- pipelining, HEAD and GET ---------------------------------------------

$t->mock_reset;
{
    my $s = connect_nginx();
    print $s request_bytes('POST', '/idv/ocr/initialize',
                           { %ocr, MerchantBizId => 'pipe0001' })
             . request_bytes('GET', '/idv/ocr/initialize', 'ignored')
             . request_bytes('HEAD', '/idv/result')
             . request_bytes('POST', '/idv/idr/initialize',
                             { %ocr, MerchantBizId => 'pipe0002',
                               MerchantUserId => 'u-1' },
                             Connection => 'close');

    my ($out, $rest, $eof) = read_responses($s, [qw(POST GET HEAD POST)], 10);

    is(scalar @$out, 4, 'pipelined: four answers on one connection');
    is(join(' ', map { $_->{status} } @$out), '200 405 405 200',
       'pipelined: in order');
    is($out->[0]{json}{Gateway}{productCode}, 'ID_OCR',
       'pipelined: the first answer is the first request\'s');
    is($out->[3]{json}{Gateway}{productCode}, 'IDR_GLOBAL',
       'pipelined: the last answer is the last request\'s');
    is($out->[1]{json}{Code}, 'Gateway.MethodNotAllowed',
       'pipelined GET with a body: 405 JSON, the body discarded');
    is($out->[2]{headers}{allow}, 'POST', 'pipelined HEAD: Allow: POST');
    like($out->[2]{headers}{'content-type'} // '', qr{^application/json},
         'pipelined HEAD: the JSON error\'s headers');
    is($rest, '', 'pipelined: no stray bytes');
    ok($eof || (IO::Select->new($s)->can_read(3) && !sysread($s, my $x, 1)),
       'pipelined: closed after Connection: close');
    close $s;
}
is(calls(), 2, 'pipelined: two upstream calls');

{
    my $s = connect_nginx();
    print $s request_bytes('HEAD', '/idv/ekyc/verify', undef,
                           Connection => 'close');
    my ($out, $rest, $eof) = read_responses($s, ['HEAD'], 5);
    is($out->[0]{status}, 405, 'HEAD to an action location: 405');
    ok($out->[0]{headers}{'content-length'} > 0,
       'HEAD: the length of the JSON error');
    is($rest, '', 'HEAD: no body');
    close $s;
}

$r = $t->get('/idv/id2meta');
gateway_error($r, 405, 'Gateway.MethodNotAllowed', 'GET to an action location');

$r = $t->post('/idv/callback', {});
gateway_error($r, 405, 'Gateway.MethodNotAllowed',
              'POST to the callback location');


# --- the client leaves mid-call -------------------------------------------

sub leave_after {
    my ($bytes, $secs) = @_;
    my $s = connect_nginx();
    print $s $bytes;
    sleep $secs;
    close $s;
}

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 2000, action => 'Initialize');
$before = nlogged('/idv/ocr/initialize');
leave_after(request_bytes('POST', '/idv/ocr/initialize',
                          { %ocr, MerchantBizId => 'gone0001' }), 0.2);
my $l = wait_logged('/idv/ocr/initialize', $before, 1, 5);
ok($l, 'client gone mid-call: the request ended');
like($l->[-1] // '', qr/ Success /,
     'client gone mid-call: the call ran to its end (the service has it)');
is(calls(), 1, 'client gone mid-call: exactly one upstream call');

$r = $t->post('/idv/ocr/initialize', { %ocr, MerchantBizId => 'gone0002' });
is($r->{status}, 200, 'the next request after a client left: 200');


# ... with the cache: the flight's client leaves (a backend that gave up
# and retries), the flight goes on and its answer lands in the cache

$t->mock_reset;
my %cached = (%ocr, MerchantBizId => 'gonecache1');
$t->mock_fault(mode => 'slow', delay_ms => 2000, action => 'Initialize');
$before = nlogged('/idv/cached/initialize');
leave_after(request_bytes('POST', '/idv/cached/initialize', \%cached), 0.2);

$r = $t->post('/idv/cached/initialize', \%cached);
is($r->{status}, 200, 'cache: the retry of a client that gave up: 200')
    or diag $r->{body};
is($r->{json}{Gateway}{cached}, JSON::PP::true,
   'cache: it got the answer of the flight the first client left');
my $tx = $r->{json}{Result}{TransactionId};
ok(wait_logged('/idv/cached/initialize', $before, 2, 5),
   'cache: both requests ended');

$r = $t->post('/idv/cached/initialize', \%cached);
is($r->{json}{Gateway}{cached}, JSON::PP::true,
   'cache: the next one is answered from the cache');
is($r->{json}{Result}{TransactionId}, $tx, 'cache: the same transaction');
is(calls(), 1, 'cache: one billable call in all');


# ... two identical requests, one of them leaves: the waiter while the
# flight goes on, or the flight while the waiter waits (then the waiter
# takes the flight over).  Through a reuseport listener, so that the two
# land in the same worker or in different ones (the waiter is woken, or
# polls the zone); repeated until both have happened.

sub connect_spread {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $spread,
                                Proto => 'tcp')
        or die "connect: $@";
    $s->autoflush(1);
    return $s;
}

# the worker that served MerchantBizId $biz with cache status $status
sub served_by {
    my ($biz, $status) = @_;
    my ($line) = grep { / cache=$status biz=\Q$biz\E$/ }
                 @{logged('/idv/cached/initialize')};
    return $line ? (split / /, $line)[0] : 0;
}

my %seen;

for my $i (1 .. 12) {

    # the waiter leaves

    $t->mock_reset;
    my %p = (%ocr, MerchantBizId => "gonewait$i");
    $t->mock_fault(mode => 'slow', delay_ms => 600, action => 'Initialize');

    my $flight = connect_spread();
    print $flight request_bytes('POST', '/idv/cached/initialize', \%p);
    sleep 0.15;
    my $waiter = connect_spread();
    print $waiter request_bytes('POST', '/idv/cached/initialize', \%p);
    sleep 0.2;
    close $waiter;

    my ($out) = read_responses($flight, ['POST'], 10);
    is($out->[0]{status}, 200, "cache, waiter $i left: the flight answers 200");
    close $flight;

    $r = $t->post('/idv/cached/initialize', \%p);
    is($r->{json}{Gateway}{cached}, JSON::PP::true,
       "cache, waiter $i left: the answer was kept");
    is(calls(), 1, "cache, waiter $i left: one call");

    my ($f, $w) = (served_by($p{MerchantBizId}, 'MISS'),
                   served_by($p{MerchantBizId}, 'SHARED'));
    $seen{'waiter left, ' . ($f == $w ? 'same worker' : 'other worker')}++
        if $f && $w;

    # the flight leaves

    $t->mock_reset;
    %p = (%ocr, MerchantBizId => "goneflight$i");
    $t->mock_fault(mode => 'slow', delay_ms => 3000, action => 'Initialize');

    $flight = connect_spread();
    print $flight request_bytes('POST', '/idv/cached/initialize', \%p);
    sleep 0.15;
    $waiter = connect_spread();
    print $waiter request_bytes('POST', '/idv/cached/initialize', \%p);
    sleep 0.2;
    $t0 = time;
    close $flight;

    ($out) = read_responses($waiter, ['POST'], 10);
    is($out->[0]{status}, 200,
       "cache, flight $i left: the waiter got 200")
        or diag explain $out;
    is(calls(), 1,
       "cache, flight $i left: the flight went on, the waiter shared it");
    close $waiter;

    sleep 0.3;                          # the flight's line is written
    my @l = grep { /biz=\Q$p{MerchantBizId}\E$/ }
            @{logged('/idv/cached/initialize')};
    my ($gone) = grep { / cache=MISS / } @l;
    my ($took) = grep { / cache=SHARED / } @l;
    $seen{'flight left, ' . ((split / /, $gone)[0] == (split / /, $took)[0]
                             ? 'same worker' : 'other worker')}++
        if $gone && $took;

    last if $i >= 4 && keys %seen == 4;
}

note("cache cases seen: $_ x$seen{$_}") for sort keys %seen;


# ... the client leaves while a read is being retried

$t->mock_reset;
$t->mock_fault(mode => 'throttle', action => 'CheckResult', count => 10);
$before = nlogged('/idv/patient/result');
leave_after(request_bytes('POST', '/idv/patient/result', \%q), 0.25);
ok(wait_logged('/idv/patient/result', $before, 1, 15),
   'client gone during retries: the request ended');
my $n = calls();
ok($n >= 1 && $n <= 11, "client gone during retries: $n calls, at most 11");
sleep 1;
is(calls(), $n, 'client gone during retries: no call after the end');

$t->mock_reset;
$r = $t->post('/idv/patient/result', \%q);
is($r->{status}, 200, 'the next read after that: 200');


# ... the callback's caller leaves while CheckResult confirms the result

$t->mock_reset;
$r = $t->post('/idv/cb/initialize', { %ocr, MerchantBizId => 'cbgone1' });
is($r->{status}, 200, 'callback: a transaction') or diag $r->{body};
$tx = $r->{json}{Result}{TransactionId};

my $cb_url = 'http://127.0.0.1:' . $t->port . '/idv/callback';
$t->mock_fault(mode => 'slow', delay_ms => 2000, action => 'CheckResult');
$before = nlogged('/idv/callback');
my $c = $t->mock_complete(transactionId => $tx, url => $cb_url,
                          timeout_ms => 300);
ok(!$c->{fired}, 'callback: the caller gave up after 300 ms');
$l = wait_logged('/idv/callback', $before, 1, 5);
ok($l, 'callback: the request ended');
like($l->[-1] // '', qr/ Success /,
     'callback: the confirmation and the delivery ran to their end');

$c = $t->mock_complete(transactionId => $tx, url => $cb_url);
is($c->{status}, 200, 'callback again: 200') or diag explain $c;
like($c->{body}, qr/already delivered/,
     'callback again: already delivered, not delivered twice');

my @delivered = grep { m{ /ok } } split /\n/,
                IdvTest::_slurp($t->testdir . '/backend.log') // '';
is(scalar @delivered, 1, 'callback: delivered to the backend once');


# --- many clients leaving at once -----------------------------------------

$t->mock_reset;
$t->mock_fault(mode => 'slow', delay_ms => 500, count => 20);
{
    my @keep;

    for my $i (1 .. 20) {
        my $s = connect_nginx();
        print $s request_bytes('POST', '/idv/ocr/initialize',
                               { %ocr, MerchantBizId => "storm$i" },
                               Connection => 'close');
        push @keep, $s;
    }

    sleep 0.1;
    close $keep[$_] for grep { $_ % 2 } 0 .. $#keep;

    my $ok = 0;
    for my $i (grep { !($_ % 2) } 0 .. $#keep) {
        my ($out) = read_responses($keep[$i], ['POST'], 10);
        $ok++ if @$out && $out->[0]{status} == 200;
        close $keep[$i];
    }

    is($ok, 10, 'storm: the 10 clients that stayed got 200');
}
sleep 0.6;
$n = calls();
ok($n >= 10 && $n <= 20, "storm: $n calls, none repeated");

$r = $t->post('/idv/ocr/initialize', { %ocr, MerchantBizId => 'after01' });
is($r->{status}, 200, 'after the storm: 200');


# --- no worker died --------------------------------------------------------

is_deeply([workers()], \@workers, 'the same two workers ran throughout');

$t->stop;

unlike($t->error_log, qr/exited on signal|exited with (?:fatal )?code [1-9]/,
       'error.log: no worker exited');

done_testing;
