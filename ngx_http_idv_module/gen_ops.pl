#!/usr/bin/perl

# gen_ops.pl: write the operations table of ngx_http_idv_module.
#
# Reads data/actions.json (the API metadata: parameter placement and type,
# result fields) and data/ops-overlay.json (hand-written: required sets,
# PII, image and URL checks, alternatives, billable, what the action does
# to transactions, retry safety, product codes, the documented form of
# values) next to this script and
# prints ngx_http_idv_ops_table.c on stdout:
#
#     perl ngx_http_idv_module/gen_ops.pl \
#         > ngx_http_idv_module/ngx_http_idv_ops_table.c
#
# With --check it prints nothing and exits 1 if the committed table
# differs from what it would generate (0 if it is up to date).
#
# Any inconsistency between the two files (an unknown action or
# parameter, an action without an overlay entry, a parameter both
# required and required per product, an action said to read by
# TransactionId without that parameter, ...) is fatal: the table is never
# generated from data that does not agree.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use JSON::PP;


my $DIR = dirname(File::Spec->rel2abs(__FILE__));

my $ACTIONS = File::Spec->catfile($DIR, 'data', 'actions.json');
my $OVERLAY = File::Spec->catfile($DIR, 'data', 'ops-overlay.json');
my $TABLE = File::Spec->catfile($DIR, 'ngx_http_idv_ops_table.c');

my %TYPES = (
    string  => 'NGX_HTTP_IDV_T_STRING',
    integer => 'NGX_HTTP_IDV_T_INTEGER',
    boolean => 'NGX_HTTP_IDV_T_BOOLEAN',
    array   => 'NGX_HTTP_IDV_T_ARRAY',
    object  => 'NGX_HTTP_IDV_T_OBJECT',
);

# output order of the flags of a parameter
my @PFLAGS = qw(BODY PII IMAGE URL HTTPS REQUIRED);

# by_name and per-action flag lists of the overlay
my %LISTS = (pii => 'PII', image => 'IMAGE', url => 'URL', https => 'HTTPS');

# the "chars" of a rule -> its character class
my %CHARS = (
    digit => { c => 'NGX_HTTP_IDV_C_DIGIT', re => qr/^[0-9]+$/ },
    alnum => { c => 'NGX_HTTP_IDV_C_ALNUM', re => qr/^[A-Za-z0-9]+$/ },
    word  => { c => 'NGX_HTTP_IDV_C_WORD',  re => qr/^[A-Za-z0-9_]+$/ },
);

# keys of a rule (besides "_" comments)
my %RULEKEYS = map { $_ => 1 } qw(min max chars values source);

# a documented value: printable ASCII that needs no escaping in C or in
# a message, no space (the list separator)
my $VALUE_RE = qr/^[A-Za-z0-9_.\-]+$/;

# lengths fit the table's uint16_t
my $LEN_MAX = 65535;

# true/false keys of an action's overlay entry -> operation flags
my @OPKEYS = (
    [billable   => 'BILLABLE'],
    [creates_tx => 'CREATES_TX'],
    [reads_tx   => 'READS_TX'],
    [reads_biz  => 'READS_BIZ'],
    [retry_safe => 'RETRY_SAFE'],
    [result     => 'RESULT'],
);

# output order of the flags of an operation (FORM is derived)
my @OPFLAGS = qw(BILLABLE FORM CREATES_TX READS_TX READS_BIZ RETRY_SAFE
                 RESULT);

my $NAME_RE = qr/^[A-Za-z][A-Za-z0-9_]*$/;
my $PRODUCT_RE = qr/^[A-Za-z0-9_.\-]+$/;

my $WIDTH = 80;


sub usage {
    print STDERR "usage: $0 [--check]\n";
    exit 2;
}


sub read_json {
    my ($path) = @_;

    open(my $fh, '<:raw', $path) or die "$path: $!\n";
    local $/;
    my $text = <$fh>;
    close($fh);

    my $data = eval { JSON::PP->new->utf8->relaxed(0)->decode($text) };
    die "$path: $@" if $@;

    return $data;
}


sub is_list_of_names {
    my ($v) = @_;

    return 0 unless ref $v eq 'ARRAY';

    for my $n (@$v) {
        return 0 if ref $n || !defined $n || $n !~ $NAME_RE;
    }

    return 1;
}


# actions.json -> { Action => { params => { Param => { body, type } },
#                                result_fields => { Field => 1 } } }

sub load_actions {
    my ($path) = @_;

    my $json = read_json($path);

    die "$path: no \"actions\" object\n"
        unless ref $json eq 'HASH' && ref $json->{actions} eq 'HASH';

    my %ops;

    for my $action (sort keys %{ $json->{actions} }) {
        my $meta = $json->{actions}{$action};

        die "$path: bad action name \"$action\"\n" if $action !~ $NAME_RE;
        die "$path: $action: no \"params\" array\n"
            unless ref $meta eq 'HASH' && ref $meta->{params} eq 'ARRAY';

        my %params;

        for my $p (@{ $meta->{params} }) {
            die "$path: $action: a parameter is not an object\n"
                unless ref $p eq 'HASH';

            my ($name, $in, $type) = @$p{qw(name in type)};

            die "$path: $action: bad parameter name\n"
                if !defined $name || ref $name || $name !~ $NAME_RE;
            die "$path: $action.$name: listed twice\n"
                if exists $params{$name};
            die "$path: $action.$name: unknown \"in\"\n"
                if !defined $in || ($in ne 'query' && $in ne 'formData');
            die "$path: $action.$name: unknown type\n"
                if !defined $type || !exists $TYPES{$type};

            $params{$name} = {
                body => $in eq 'formData' ? 1 : 0,
                type => $type,
            };
        }

        # the fields of Result in a successful answer

        my $rf = $meta->{result_fields} // [];

        die "$path: $action: \"result_fields\" is not a list of names\n"
            unless is_list_of_names($rf);

        $ops{$action} = {
            params => \%params,
            result_fields => { map { $_ => 1 } @$rf },
        };
    }

    die "$path: no actions\n" unless %ops;

    return \%ops;
}


# merge ops-overlay.json into the actions

sub apply_overlay {
    my ($ops, $path) = @_;

    my $ov = read_json($path);

    die "$path: not an object\n" unless ref $ov eq 'HASH';

    for my $k (sort keys %$ov) {
        next if $k =~ /^_/;
        die "$path: unknown key \"$k\"\n"
            unless $k eq 'by_name' || $k eq 'actions';
    }

    die "$path: no \"actions\" object\n" unless ref $ov->{actions} eq 'HASH';

    my $by_name = $ov->{by_name} // {};

    die "$path: \"by_name\" is not an object\n" unless ref $by_name eq 'HASH';

    # parameters the client's checkout lacks and a source states (a seed
    # document, a newer client.ts): added first, so that they get the
    # flags of by_name and of their action like the client's own

    add_documented($ops, $ov, $path);

    # every parameter starts with the flags of actions.json

    for my $action (keys %$ops) {
        for my $p (values %{ $ops->{$action}{params} }) {
            $p->{flags} = { BODY => $p->{body} };
            $p->{required_for} = undef;
            $p->{alternative} = undef;
            $p->{rule} = undef;
        }
    }

    for my $list (sort keys %$by_name) {
        next if $list =~ /^_/;

        die "$path: by_name: unknown list \"$list\"\n"
            unless exists $LISTS{$list};

        my $names = $by_name->{$list};

        die "$path: by_name.$list: not a list of parameter names\n"
            unless is_list_of_names($names);

        my %seen;

        for my $name (@$names) {
            die "$path: by_name.$list: \"$name\" listed twice\n"
                if $seen{$name}++;

            my $found = 0;

            for my $action (keys %$ops) {
                my $p = $ops->{$action}{params}{$name};

                next unless defined $p;

                $p->{flags}{ $LISTS{$list} } = 1;
                $found = 1;
            }

            die "$path: by_name.$list: \"$name\" is a parameter of no action\n"
                unless $found;
        }
    }

    for my $action (sort keys %{ $ov->{actions} }) {
        die "$path: \"$action\" is not an action of actions.json\n"
            unless exists $ops->{$action};
    }

    for my $action (sort keys %$ops) {
        my $entry = $ov->{actions}{$action};

        die "$path: no entry for action \"$action\"\n" unless defined $entry;
        die "$path: $action: not an object\n" unless ref $entry eq 'HASH';

        apply_action($ops, $action, $entry, $path);
    }

    # the callback confirms a verification with the one RESULT action

    my @result = grep { $ops->{$_}{flags}{RESULT} } sort keys %$ops;

    die "$path: \"result\" must be true for exactly one action, not "
        . (@result ? join(', ', @result) : 'none') . "\n"
        unless @result == 1;

    return $ops;
}


sub add_documented {
    my ($ops, $ov, $path) = @_;

    for my $action (sort keys %{ $ov->{actions} }) {
        my $entry = $ov->{actions}{$action};

        next unless ref $entry eq 'HASH' && exists $ops->{$action}
                    && defined $entry->{documented};

        my $params = $ops->{$action}{params};
        my $where = "$path: $action";

        die "$where.documented: not a list\n"
            unless ref $entry->{documented} eq 'ARRAY';

        for my $d (@{ $entry->{documented} }) {
            die "$where.documented: an entry needs name, in, type and"
                . " source\n"
                unless ref $d eq 'HASH' && defined $d->{name}
                       && defined $d->{in} && defined $d->{type}
                       && defined $d->{source};
            die "$where.documented: bad parameter name\n"
                if ref $d->{name} || $d->{name} !~ $NAME_RE;
            die "$where.documented.$d->{name}: the client has it now: drop "
                . "the entry\n"
                if exists $params->{ $d->{name} };
            die "$where.documented.$d->{name}: unknown \"in\"\n"
                if $d->{in} ne 'query' && $d->{in} ne 'formData';
            die "$where.documented.$d->{name}: unknown type\n"
                unless exists $TYPES{ $d->{type} };

            $params->{ $d->{name} } = {
                body => $d->{in} eq 'formData' ? 1 : 0,
                type => $d->{type},
            };
        }
    }
}


sub apply_action {
    my ($ops, $action, $entry, $path) = @_;

    my $params = $ops->{$action}{params};
    my $where = "$path: $action";

    my $exists = sub {
        my ($name, $key) = @_;

        die "$where.$key: \"$name\" is not a parameter of $action\n"
            unless exists $params->{$name};
    };

    my %opkey = map { $_->[0] => $_->[1] } @OPKEYS;

    for my $k (sort keys %$entry) {
        next if $k =~ /^_/;
        die "$where: unknown key \"$k\"\n"
            unless $k =~ /^(required|required_for|alternatives|products
                           |rules|documented)$/x
                   || exists $LISTS{$k} || exists $opkey{$k};
    }

    die "$where: \"billable\" must be given\n"
        unless exists $entry->{billable};

    # an action that names a transaction must say whether it reads it:
    # silence would let it past the checks of the readers

    die "$where: has a TransactionId parameter: \"reads_tx\" must be given\n"
        if exists $params->{TransactionId} && !exists $entry->{reads_tx};

    my $flags = $ops->{$action}{flags} = {};

    for my $pair (@OPKEYS) {
        my ($key, $flag) = @$pair;

        next unless exists $entry->{$key};

        my $v = $entry->{$key};

        die "$where: \"$key\" must be true or false\n"
            unless defined $v && JSON::PP::is_bool($v);

        $flags->{$flag} = $v ? 1 : 0;
    }

    die "$where: reads_tx without a TransactionId parameter\n"
        if $flags->{READS_TX} && !exists $params->{TransactionId};
    die "$where: reads_biz without a MerchantBizId parameter\n"
        if $flags->{READS_BIZ} && !exists $params->{MerchantBizId};
    die "$where: creates_tx, but actions.json lists no TransactionId"
        . " among its result fields\n"
        if $flags->{CREATES_TX}
           && !$ops->{$action}{result_fields}{TransactionId};
    die "$where: both retry_safe and billable\n"
        if $flags->{RETRY_SAFE} && $flags->{BILLABLE};
    die "$where: both retry_safe and creates_tx (a repeat creates two)\n"
        if $flags->{RETRY_SAFE} && $flags->{CREATES_TX};
    die "$where: both reads_biz and creates_tx\n"
        if $flags->{READS_BIZ} && $flags->{CREATES_TX};
    die "$where: result, but not reads_tx and retry_safe\n"
        if $flags->{RESULT} && !($flags->{READS_TX} && $flags->{RETRY_SAFE});

    my $products;

    if (exists $entry->{products}) {
        $products = $entry->{products};

        die "$where.products: the action has no ProductCode parameter\n"
            unless exists $params->{ProductCode};
        die "$where.products: not a non-empty list\n"
            unless ref $products eq 'ARRAY' && @$products;

        check_products("$where.products", $products);

        $ops->{$action}{products} = product_string($products);
    }

    for my $list (sort keys %LISTS) {
        next unless exists $entry->{$list};

        die "$where.$list: not a list of parameter names\n"
            unless is_list_of_names($entry->{$list});

        for my $name (@{ $entry->{$list} }) {
            $exists->($name, $list);
            $params->{$name}{flags}{ $LISTS{$list} } = 1;
        }
    }

    my $required = $entry->{required} // [];

    die "$where.required: not a list of parameter names\n"
        unless is_list_of_names($required);

    my %seen;

    for my $name (@$required) {
        $exists->($name, 'required');
        die "$where.required: \"$name\" listed twice\n" if $seen{$name}++;
        $params->{$name}{flags}{REQUIRED} = 1;
    }

    my $rf = $entry->{required_for} // {};

    die "$where.required_for: not an object\n" unless ref $rf eq 'HASH';

    for my $name (sort keys %$rf) {
        $exists->($name, 'required_for');

        die "$where.required_for: \"$name\" is also in \"required\"\n"
            if $params->{$name}{flags}{REQUIRED};

        my $codes = $rf->{$name};

        die "$where.required_for.$name: not a non-empty list\n"
            unless ref $codes eq 'ARRAY' && @$codes;

        check_products("$where.required_for.$name", $codes);

        if (defined $products) {
            my %known = map { $_ => 1 } @$products;

            for my $pc (@$codes) {
                die "$where.required_for.$name: \"$pc\" is not in"
                    . " \"products\"\n"
                    unless $known{$pc};
            }
        }

        $params->{$name}{required_for} = product_string($codes);
    }

    my $alts = $entry->{alternatives} // [];

    die "$where.alternatives: not a list\n" unless ref $alts eq 'ARRAY';

    for my $pair (@$alts) {
        die "$where.alternatives: each entry must be two parameter names\n"
            unless is_list_of_names($pair) && @$pair == 2;

        my ($x, $y) = @$pair;

        die "$where.alternatives: \"$x\" paired with itself\n" if $x eq $y;

        for my $name ($x, $y) {
            $exists->($name, 'alternatives');
            die "$where.alternatives: \"$name\" is in two pairs\n"
                if defined $params->{$name}{alternative};
        }

        $params->{$x}{alternative} = $y;
        $params->{$y}{alternative} = $x;
    }

    my $rules = $entry->{rules} // {};

    die "$where.rules: not an object\n" unless ref $rules eq 'HASH';

    for my $name (sort keys %$rules) {
        next if $name =~ /^_/;

        $exists->($name, 'rules');
        $params->{$name}{rule} = check_rule("$where.rules.$name",
                                            $rules->{$name});
    }

    for my $name (sort keys %$params) {
        my $p = $params->{$name};

        die "$where.$name: an image must be of type string\n"
            if $p->{flags}{IMAGE} && $p->{type} ne 'string';
        die "$where.$name: both an image and a URL\n"
            if $p->{flags}{IMAGE} && $p->{flags}{URL};
        die "$where.$name: https, but not a url\n"
            if $p->{flags}{HTTPS} && !$p->{flags}{URL};
        die "$where.$name: a rule for a parameter that is not a string\n"
            if $p->{rule} && $p->{type} ne 'string';
        die "$where.$name: a rule for an image or a URL (checked as such)\n"
            if $p->{rule} && ($p->{flags}{IMAGE} || $p->{flags}{URL});
    }
}


# a rule of the overlay: the documented form of a parameter's value

sub check_rule {
    my ($where, $r) = @_;

    die "$where: not an object\n" unless ref $r eq 'HASH';

    for my $k (sort keys %$r) {
        next if $k =~ /^_/;
        die "$where: unknown key \"$k\"\n" unless $RULEKEYS{$k};
    }

    # every rule says which document it comes from: a string, or a list
    # of strings (the lines of one)

    my $src = $r->{source};

    $src = join(' ', @$src)
        if ref $src eq 'ARRAY' && @$src && !grep { !defined || ref } @$src;

    die "$where: \"source\" must name the document\n"
        unless defined $src && !ref $src && $src =~ /\S/;

    my %rule = (min => 0, max => 0, chars => undef, values => undef);

    for my $k (qw(min max)) {
        next unless exists $r->{$k};

        my $n = $r->{$k};

        die "$where.$k: not an integer from 1 to $LEN_MAX\n"
            if !defined $n || ref $n || $n !~ /^[1-9][0-9]*$/
               || $n > $LEN_MAX;

        $rule{$k} = $n + 0;
    }

    die "$where: min over max\n"
        if $rule{min} && $rule{max} && $rule{min} > $rule{max};

    if (exists $r->{chars}) {
        my $c = $r->{chars};

        die "$where.chars: one of " . join(', ', sort keys %CHARS) . "\n"
            if !defined $c || ref $c || !exists $CHARS{$c};

        $rule{chars} = $c;
    }

    if (exists $r->{values}) {
        my $v = $r->{values};

        die "$where.values: not a non-empty list\n"
            unless ref $v eq 'ARRAY' && @$v;

        my %dup;

        for my $x (@$v) {
            die "$where.values: a value must match $VALUE_RE\n"
                if !defined $x || ref $x || $x !~ $VALUE_RE;
            die "$where.values: \"$x\" listed twice\n" if $dup{$x}++;

            # the set and the other limits must agree

            die "$where.values: \"$x\" is shorter than min\n"
                if $rule{min} && length($x) < $rule{min};
            die "$where.values: \"$x\" is longer than max\n"
                if $rule{max} && length($x) > $rule{max};
            die "$where.values: \"$x\" is not $rule{chars}\n"
                if defined $rule{chars} && $x !~ $CHARS{ $rule{chars} }{re};
        }

        $rule{values} = ' ' . join(' ', @$v) . ' ';
    }

    die "$where: none of min, max, chars, values\n"
        unless $rule{min} || $rule{max} || defined $rule{chars}
               || defined $rule{values};

    return \%rule;
}


# a list of product codes: each well-formed, none twice

sub check_products {
    my ($where, $codes) = @_;

    my %dup;

    for my $pc (@$codes) {
        die "$where: bad product code\n"
            if !defined $pc || ref $pc || $pc !~ $PRODUCT_RE;
        die "$where: \"$pc\" listed twice\n" if $dup{$pc}++;
    }
}


# case-insensitive order, then bytes: " eKYC IDR_GLOBAL KYC_GLOBAL "

sub product_string {
    my ($codes) = @_;

    my @sorted = sort { lc($a) cmp lc($b) or $a cmp $b } @$codes;

    return ' ' . join(' ', @sorted) . ' ';
}


# C output

sub flags_expr {
    my ($prefix, $indent, $trail, @flags) = @_;

    return '0' . $trail unless @flags;

    my @parts = map { "$prefix$_" } @flags;
    my $out = '';
    my $line = $indent . shift @parts;

    for my $part (@parts) {
        if (length($line) + 1 + length($part) + length($trail) > $WIDTH) {
            $out .= "$line\n";
            $line = "$indent|$part";

        } else {
            $line .= "|$part";
        }
    }

    $out .= $line . $trail;
    $out =~ s/^\Q$indent\E//;

    return $out;
}


sub c_string {
    my ($s, $indent, $trail) = @_;

    return 'NULL' . $trail unless defined $s;

    my $lit = "\"$s\"";

    return $lit . $trail
        if length($indent) + length($lit) + length($trail) <= $WIDTH;

    # split into adjacent literals at spaces

    my @words = split /(?<= )/, $s;
    my @lines;
    my $cur = '';

    for my $w (@words) {
        if ($cur ne ''
            && length($indent) + length($cur) + length($w) + 2 > $WIDTH - 1)
        {
            push @lines, $cur;
            $cur = '';
        }

        $cur .= $w;
    }

    push @lines, $cur;

    return join("\n$indent", map { "\"$_\"" } @lines) . $trail;
}


sub generate {
    my ($ops) = @_;

    my $out = <<'EOT';

/*
 * generated by gen_ops.pl, do not edit.
 *
 * ngx_http_idv_module: the rows of the operations table, one per action
 * of cloudauth-intl 2022-08-09: data/actions.json (placement and type)
 * merged with data/ops-overlay.json (required sets, PII, image and URL
 * checks, alternatives, billable, transactions, retry safety, product
 * codes, documented forms of values).  Regenerate from the repository
 * root:
 *
 *     perl ngx_http_idv_module/gen_ops.pl \
 *         > ngx_http_idv_module/ngx_http_idv_ops_table.c
 */


#include "ngx_http_idv_ops.h"

EOT

    # actions and their parameters in byte order (names are ASCII)

    my @actions = sort { $a cmp $b } keys %$ops;

    for my $action (@actions) {
        my $params = $ops->{$action}{params};
        my @names = sort { $a cmp $b } keys %$params;

        next unless @names;

        $out .= "\n/* $action */\n\n";

        # the rules of the action's parameters, in the order of the rows

        my @ruled = grep { $params->{$_}{rule} } @names;
        my %ref;

        if (@ruled) {
            $out .= "static const ngx_http_idv_op_rule_t\n";
            $out .= "    ngx_http_idv_rules_$action\[] = {\n";

            for my $k (0 .. $#ruled) {
                my $r = $params->{ $ruled[$k] }{rule};
                my $ind = ' ' x 6;
                my $chars = defined $r->{chars} ? $CHARS{ $r->{chars} }{c}
                                                : 'NGX_HTTP_IDV_C_ANY';

                $out .= "\n    /* $ruled[$k] */\n";
                $out .= "    { $r->{min}, $r->{max}, $chars,\n";
                $out .= $ind . c_string($r->{values}, $ind, ' },') . "\n";

                $ref{ $ruled[$k] } = "&ngx_http_idv_rules_$action\[$k]";
            }

            $out .= "};\n\n\n";
        }

        $out .= "static const ngx_http_idv_op_param_t\n";
        $out .= "    ngx_http_idv_params_$action\[] = {\n";

        for my $name (@names) {
            my $p = $params->{$name};
            my @flags = grep { $p->{flags}{$_} } @PFLAGS;
            my $ind = ' ' x 6;

            $out .= "\n";
            $out .= "    { ngx_http_idv_string(\"$name\"),\n";
            $out .= "$ind$TYPES{ $p->{type} },\n";
            $out .= $ind . flags_expr('NGX_HTTP_IDV_P_', $ind, ',', @flags)
                    . "\n";
            $out .= $ind . c_string($p->{required_for}, $ind, ',') . "\n";
            $out .= $ind . c_string($p->{alternative}, $ind, ',') . "\n";
            $out .= $ind . ($ref{$name} // 'NULL') . " },\n";
        }

        $out .= "};\n\n";
    }

    $out .= "\nconst ngx_http_idv_op_t  ngx_http_idv_ops[] = {\n";

    for my $action (@actions) {
        my $params = $ops->{$action}{params};
        my $n = scalar keys %$params;
        my $ind = ' ' x 6;
        my %set = %{ $ops->{$action}{flags} };

        $set{FORM} = 1 if grep { $_->{body} } values %$params;

        my @flags = grep { $set{$_} } @OPFLAGS;

        $out .= "\n";
        $out .= "    { ngx_http_idv_string(\"$action\"),\n";
        $out .= $ind . ($n ? "ngx_http_idv_params_$action" : 'NULL') . ",\n";
        $out .= "$ind$n,\n";
        $out .= $ind . flags_expr('NGX_HTTP_IDV_OP_', $ind, ',', @flags)
                . "\n";
        $out .= $ind . c_string($ops->{$action}{products}, $ind, ' },')
                . "\n";
    }

    $out .= "};\n\n\n";
    $out .= "const size_t  ngx_http_idv_nops =\n";
    $out .= "    sizeof(ngx_http_idv_ops) / sizeof(ngx_http_idv_op_t);\n";

    for my $line (split /\n/, $out) {
        die "internal error: generated line over $WIDTH columns: $line\n"
            if length($line) > $WIDTH;
    }

    return $out;
}


my $check = 0;

for my $arg (@ARGV) {
    if ($arg eq '--check') {
        $check = 1;

    } else {
        usage();
    }
}

my $ops = apply_overlay(load_actions($ACTIONS), $OVERLAY);
my $c = generate($ops);

if ($check) {
    my $old;

    if (open(my $fh, '<:raw', $TABLE)) {
        local $/;
        $old = <$fh>;
        close($fh);
    }

    if (!defined $old || $old ne $c) {
        print STDERR "$TABLE is out of date: run\n"
            . "    perl ngx_http_idv_module/gen_ops.pl"
            . " > ngx_http_idv_module/ngx_http_idv_ops_table.c\n";
        exit 1;
    }

    exit 0;
}

binmode(STDOUT, ':raw');
print $c;
