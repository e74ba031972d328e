# Operability: idv_metrics serves Prometheus text aggregated across
# workers from shared memory (checked with a strict parser after a known
# sequence of calls, and across a reload); the $idv_* variables give one
# access-log line per request with the right values and no PII.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use JSON::PP;


# a strict reader of the text exposition format 0.0.4

sub parse_prometheus {
    my ($text) = @_;

    my (%type, %help, @samples, @errors);
    my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
    my $n = 0;

    push @errors, 'does not end with a newline' unless $text =~ /\n\z/;

    for my $line (split /\n/, $text) {
        $n++;

        if ($line =~ /^# HELP ($name_re) (.+)$/) {
            push @errors, "line $n: second HELP for $1" if $help{$1}++;
            next;
        }

        if ($line =~ /^# TYPE ($name_re) (counter|gauge|histogram|summary|untyped)$/) {
            push @errors, "line $n: second TYPE for $1" if $type{$1};
            push @errors, "line $n: TYPE after samples of $1"
                if grep { $_->{family} eq $1 } @samples;
            $type{$1} = $2;
            next;
        }

        if ($line =~ /^#/) {
            push @errors, "line $n: malformed comment: $line";
            next;
        }

        unless ($line =~ /^($name_re)(?:\{(.*)\})? (\S+)$/) {
            push @errors, "line $n: malformed sample: $line";
            next;
        }

        my ($name, $labels, $value) = ($1, $2 // '', $3);
        my %l;

        while (length $labels) {
            unless ($labels =~ s/^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)//) {
                push @errors, "line $n: malformed labels: $labels";
                last;
            }
            push @errors, "line $n: duplicate label $1" if exists $l{$1};
            $l{$1} = $2;
        }

        push @errors, "line $n: value $value is not a number"
            unless $value =~ /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$/;

        (my $family = $name) =~ s/_(bucket|sum|count)$//
            if $name =~ /_(bucket|sum|count)$/ && $type{$name =~ s/_(bucket|sum|count)$//r};
        $family //= $name;
        $family = $name unless $type{$family};

        push @errors, "line $n: sample of $family without TYPE"
            unless $type{$family};

        push @samples, { name => $name, family => $family, labels => \%l,
                         value => $value };
    }

    # histograms: cumulative buckets ending in +Inf == _count

    my %hist;
    for my $s (grep { ($type{$_->{family}} // '') eq 'histogram' } @samples) {
        my $key = join ',', map { "$_=$s->{labels}{$_}" }
                            sort grep { $_ ne 'le' } keys %{$s->{labels}};
        push @{$hist{"$s->{family}|$key"}{$s->{name} =~ /_bucket$/ ? 'b'
              : $s->{name} =~ /_count$/ ? 'c' : 's'}}, $s;
    }

    for my $h (sort keys %hist) {
        my @b = @{$hist{$h}{b} // []};
        my $prev = 0;
        for my $b (@b) {
            push @errors, "$h: buckets not cumulative" if $b->{value} < $prev;
            $prev = $b->{value};
        }
        push @errors, "$h: last bucket is not +Inf"
            unless @b && $b[-1]{labels}{le} eq '+Inf';
        push @errors, "$h: +Inf bucket != _count"
            unless $hist{$h}{c} && @b && $b[-1]{value} == $hist{$h}{c}[0]{value};
    }

    return (\@samples, \@errors, \%type);
}

sub value {
    my ($samples, $name, %l) = @_;

    for my $s (@$samples) {
        next unless $s->{name} eq $name;
        next if grep { ($s->{labels}{$_} // '') ne $l{$_} } keys %l;
        return $s->{value};
    }

    return undef;
}


my $t = IdvTest->new;
$t->start_mock;
$t->write_config($t->standard_http(
    extra_http => <<'END',
    idv_metrics_zone 256k tenants=2;
    idv_callback_zone zone=idv_cb:256k;
    idv_tenancy_zone zone=idv_owners:256k;
    idv_cache_zone zone=idv_tx:256k;
    idv_limit_zone zone=idv_lim:64k;

    log_format idvjson escape=json
        '{"action":"$idv_action","tenant":"$idv_tenant","code":"$idv_code",'
        '"transaction_id":"$idv_transaction_id",'
        '"merchant_biz_id":"$idv_merchant_biz_id",'
        '"upstream_time":"$idv_upstream_time","attempts":"$idv_attempts",'
        '"status":"$status"}';
END
    extra_server => <<'END'), worker_processes => 2);
        idv_tenant $http_x_tenant;
        access_log %%TESTDIR%%/idv.log idvjson;

        location = /metrics { idv_metrics; access_log off; }
        location = /idv/callback { idv_callback; }
END
$t->start_nginx;

my %ekyc = (MerchantBizId => 'm0001', MerchantUserId => 'PIIUser42',
            DocType => '01000000', MetaInfo => '{"PIImeta":1}');

my @seq = (
    [ '/idv/ekyc/initialize', { %ekyc }, 'acme', 200 ],
    [ '/idv/ekyc/initialize', { %ekyc, MerchantBizId => 'm0002' }, 'acme', 200 ],
    [ '/idv/ocr/initialize', { MerchantBizId => 'm0003', MerchantUserId => 'u1',
                               DocType => '01000000', MetaInfo => '{}' },
      'beta', 400, 'OcrFail' ],
    [ '/idv/ekyc/initialize', { MerchantBizId => 'm0004' }, 'gamma', 400 ],
    [ '/idv/result', { MerchantBizId => 'm0005', TransactionId => 'tx5' },
      'delta', 200, 'throttle-once' ],
);

for my $s (@seq) {
    my ($path, $body, $tenant, $status, $fault) = @$s;

    if (($fault // '') eq 'OcrFail') {
        $t->mock_fault(mode => 'code', code => 'OcrFail');
    } elsif (($fault // '') eq 'throttle-once') {
        $t->mock_fault(mode => 'throttle');
    }

    my $r = $t->post($path, $body, 'X-Tenant' => $tenant);
    is($r->{status}, $status, "$path for $tenant: $status") or diag $r->{body};
}

my $r = $t->get('/idv/callback?callbackToken=AAAAAAAA&transactionId=tx9');
is($r->{status}, 403, 'a forged callback');


for my $phase ('before reload', 'after reload') {

    $r = $t->get('/metrics');
    is($r->{status}, 200, "$phase: scrape 200");
    is($r->{headers}{'content-type'}, 'text/plain; version=0.0.4',
       "$phase: exposition content type");

    my ($samples, $errors, $type) = parse_prometheus($r->{body});
    is_deeply($errors, [], "$phase: the exposition parses strictly")
        or diag $r->{body};

    is(value($samples, 'idv_requests_total', action => 'Initialize',
             product => 'eKYC', code => 'Success'), 2,
       "$phase: Initialize eKYC Success = 2");
    is(value($samples, 'idv_requests_total', action => 'Initialize',
             product => 'ID_OCR', code => 'OcrFail'), 1,
       "$phase: Initialize ID_OCR OcrFail = 1");
    is(value($samples, 'idv_requests_total', action => 'Initialize',
             product => 'eKYC', code => 'MissingParameter'), 1,
       "$phase: a local rejection counts with its code");
    is(value($samples, 'idv_requests_total', action => 'CheckResult',
             product => '', code => 'Success'), 1,
       "$phase: CheckResult Success = 1");
    is(value($samples, 'idv_upstream_duration_seconds_count',
             action => 'Initialize'), 3,
       "$phase: 3 Initialize calls timed");
    is(value($samples, 'idv_upstream_duration_seconds_bucket',
             action => 'Initialize', le => '+Inf'), 3,
       "$phase: histogram +Inf bucket");
    is(value($samples, 'idv_upstream_retries_total', action => 'CheckResult'),
       1, "$phase: one retry of CheckResult");
    is(value($samples, 'idv_callbacks_total', outcome => 'malformed')
       + value($samples, 'idv_callbacks_total', outcome => 'forged'), 1,
       "$phase: one rejected callback");
    is(value($samples, 'idv_tenant_requests_total', tenant => 'acme'), 2,
       "$phase: tenant acme");
    is(value($samples, 'idv_tenant_requests_total', tenant => 'beta'), 1,
       "$phase: tenant beta");
    is(value($samples, 'idv_tenant_requests_total', tenant => 'other'), 2,
       "$phase: tenants beyond tenants=2 count as other");
    ok(!defined value($samples, 'idv_tenant_requests_total',
                      tenant => 'gamma'),
       "$phase: label cardinality is bounded");
    ok(defined value($samples, 'idv_zone_used_ratio', zone => 'idv_cb',
                     kind => 'callback'),
       "$phase: zone occupancy");

    # every zone of the module, once: the stores and the others

    my %zones = map { ("$_->{labels}{zone}/$_->{labels}{kind}" => 1) }
                grep { $_->{name} eq 'idv_zone_used_ratio' } @$samples;
    is_deeply([sort keys %zones],
              [qw(idv_cb/callback idv_lim/limit idv_metrics/metrics
                  idv_owners/tenancy idv_tx/cache)],
              "$phase: every zone's occupancy, each once");
    is(scalar(grep { $_->{name} eq 'idv_zone_used_ratio' } @$samples), 5,
       "$phase: no zone twice");

    for my $s (grep { $_->{name} eq 'idv_zone_used_ratio' } @$samples) {
        ok($s->{value} > 0 && $s->{value} <= 1,
           "$phase: $s->{labels}{zone} used ratio $s->{value} in (0, 1]");
    }

    for my $name (qw(idv_store_full_total idv_store_evictions_total)) {
        is($type->{$name}, 'counter', "$phase: $name is a counter");
        is(value($samples, $name, zone => 'idv_cb', kind => 'callback'), 0,
           "$phase: $name of the callback zone");
        is(value($samples, $name, zone => 'idv_tx', kind => 'cache'), 0,
           "$phase: $name of the cache zone");
        is(value($samples, $name, zone => 'idv_lim', kind => 'limit'), 0,
           "$phase: $name of the limit zone");
        ok(!defined value($samples, $name, zone => 'idv_metrics'),
           "$phase: $name: not for a zone that is not a store");
    }

    is($type->{idv_store_entries}, 'gauge', "$phase: idv_store_entries");
    ok(defined value($samples, 'idv_store_entries', zone => 'idv_cb'),
       "$phase: the callback zone's entries");
    unlike($r->{body}, qr/PII/, "$phase: no PII in metrics");

    $t->reload if $phase eq 'before reload';
}


# access log: one line per request, the right values, no PII

$t->stop;

my @lines = grep { length } split /\n/,
            (IdvTest::_slurp($t->testdir . '/idv.log') // '');
is(scalar @lines, 6, 'one access-log line per request');

my @j = map { decode_json($_) } @lines;
is($j[0]{action}, 'Initialize', 'log: action');
is($j[0]{tenant}, 'acme', 'log: tenant');
is($j[0]{code}, 'Success', 'log: code');
like($j[0]{transaction_id}, qr/^[0-9a-f]{32}$/, 'log: transaction id');
is($j[0]{merchant_biz_id}, 'm0001', 'log: merchant biz id');
like($j[0]{upstream_time}, qr/^\d+\.\d{3}$/, 'log: upstream time');
is($j[0]{attempts}, '1', 'log: attempts');
is($j[2]{code}, 'OcrFail', 'log: the upstream code of a failure');
is($j[3]{code}, 'MissingParameter', 'log: a local rejection');
is($j[3]{upstream_time}, '', 'log: no upstream time without a call');
# the last two may be written in either order by two workers
my @tail = sort { ($a->{code} // '') cmp ($b->{code} // '') } @j[4, 5];
is($tail[0]{code}, 'Callback.InvalidToken', 'log: a rejected callback');
is($tail[1]{attempts}, '2', 'log: a retried call');
unlike(join("\n", @lines), qr/PII/, 'log: no PII');

done_testing;
