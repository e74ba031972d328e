#!/usr/bin/perl

# gen_actions.pl: write data/actions.json, the API metadata the operations
# table is generated from, out of a checkout of the official TypeScript
# client (github.com/aliyun/alibabacloud-typescript-sdk, folder
# cloudauth-intl-20220809):
#
#     perl ngx_http_idv_module/gen_actions.pl [--commit HASH] DIR \
#         > ngx_http_idv_module/data/actions.json
#     perl ngx_http_idv_module/gen_ops.pl \
#         > ngx_http_idv_module/ngx_http_idv_ops_table.c
#
# DIR is the folder cloudauth-intl-20220809 or a directory holding it.
# The commit recorded is --commit, or else the last commit that touched
# the folder when DIR is inside a git work tree; without either the
# script refuses.
#
#     perl ngx_http_idv_module/gen_actions.pl [--commit HASH] \
#         --only A,B --base ngx_http_idv_module/data/actions.json DIR
#
# takes only the actions A and B from DIR (a newer client, or a copy of
# it of which only the files these actions need are known to be that
# commit's) and every other action as it is in the --base file.  The
# base's "source" stays the client the whole table came from; its
# "partial" list records, per client version and commit, the actions
# taken from that client alone.  A named action that DIR's client.ts
# lacks, that has no request model, or that sends a name its model does
# not declare stops it, as in a full run.
#
# Facts read, nothing else:
#   package.json          the client's version;
#   src/client.ts         each action's xxxWithOptions: the request model
#                         it takes, the names it puts in "query" and in
#                         "body" (formData), the HTTP method;
#   src/models/*.ts       each model's wire names (names()) and types
#                         (types()); the fields of <Action>ResponseBodyResult
#                         are the action's result fields.
#
# Any name the client sends that its request model does not declare, an
# action without a request model's types, a type not understood: fatal.

use strict;
use warnings;

use File::Spec;
use JSON::PP;


my $FOLDER = 'cloudauth-intl-20220809';
my $PACKAGE = '@alicloud/cloudauth-intl20220809';
my $REPOSITORY = 'github.com/aliyun/alibabacloud-typescript-sdk';
my $NAME_RE = qr/^[A-Za-z][A-Za-z0-9_]*$/;


sub usage {
    print STDERR "usage: $0 [--commit HASH]"
                 . " [--only ACTION,... --base ACTIONS.JSON] DIR\n";
    exit 2;
}


sub slurp {
    my ($path) = @_;

    open(my $fh, '<:raw', $path) or die "$path: $!\n";
    local $/;
    my $text = <$fh>;
    close($fh);

    return $text;
}


# the body of "static NAME() { return { ... }; }" in a class body

sub static_map {
    my ($body, $name) = @_;

    return undef
        unless $body =~ /static\s+$name\(\)\s*:\s*\{[^}]*\}\s*
                          \{\s*return\s*\{(.*?)\n\s*\};/sx;

    my $map = $1;
    my @pairs;

    for my $line (split /\n/, $map) {
        next unless $line =~ /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.+?),?\s*$/;
        push @pairs, [$1, $2];
    }

    return \@pairs;
}


# every "export class X extends $dara.Model" of src/models:
# { X => { names => { field => Wire }, types => { field => type } } }

sub load_models {
    my ($dir) = @_;

    my %models;
    my $mdir = File::Spec->catdir($dir, 'src', 'models');

    opendir(my $dh, $mdir) or die "$mdir: $!\n";
    my @files = sort grep { /\.ts$/ } readdir($dh);
    closedir($dh);

    for my $file (@files) {
        my $text = slurp(File::Spec->catfile($mdir, $file));
        my @parts = split /^export class /m, $text;

        shift @parts;

        for my $part (@parts) {
            next unless $part =~ /^(\w+)\s+extends\s+\$dara\.Model/;

            my $class = $1;
            my $names = static_map($part, 'names');
            my $types = static_map($part, 'types');

            die "$file: $class: no names() or types()\n"
                unless defined $names && defined $types;
            die "$file: $class: declared twice\n" if exists $models{$class};

            $models{$class} = {
                names => { map { $_->[0] => unquote($_->[1]) } @$names },
                types => { map { $_->[0] => $_->[1] } @$types },
                order => [ map { $_->[0] } @$names ],
            };
        }
    }

    return \%models;
}


sub unquote {
    my ($s) = @_;

    die "not a quoted name: $s\n" unless $s =~ /^'([^'\\]*)'$/;

    return $1;
}


# a type of types() -> a type of actions.json

sub api_type {
    my ($t, $where) = @_;

    return 'string' if $t eq "'string'";
    return 'integer' if $t eq "'number'";
    return 'boolean' if $t eq "'boolean'";
    return 'array' if $t =~ /^\{\s*'type'\s*:\s*'array'/;
    return 'object' if $t =~ /^\{\s*'type'\s*:\s*'map'/;
    return 'object' if $t =~ /^[A-Z]\w*$/;

    die "$where: type $t not understood\n";
}


# src/client.ts -> { Action => { model, query => [wire], body => [wire],
#                                method } }

sub load_client {
    my ($dir) = @_;

    my $path = File::Spec->catfile($dir, 'src', 'client.ts');
    my $text = slurp($path);
    my %actions;

    my $fn_re = qr/^\ \ async\ (\w+)WithOptions\(([^)]*)\)[^{]*\{\n
                   (.*?)^\ \ \}\n/msx;

    while ($text =~ /$fn_re/g) {
        my ($fn, $args, $body) = ($1, $2, $3);

        my $model;

        if ($args =~ /^\s*(?:tmpReq|request)\s*:\s*\$_model\.(\w+)\s*,/) {
            $model = $1;

        } elsif ($args !~ /^\s*runtime\s*:/) {
            die "$path: ${fn}WithOptions: arguments not understood\n";
        }

        die "$path: ${fn}WithOptions: no action name\n"
            unless $body =~ /\baction:\s*"(\w+)"/;

        my $action = $1;

        die "$path: $action: method not understood\n"
            unless $body =~ /\bmethod:\s*"(\w+)"/;

        my $method = lc $1;

        die "$path: $action: style is not RPC\n"
            unless $body =~ /\bstyle:\s*"RPC"/;

        my (@query, @form, %seen);

        while ($body =~ /^\s*(query|body)\["([^"]+)"\]\s*=/mg) {
            my ($where, $wire) = ($1, $2);

            die "$path: $action: \"$wire\" placed twice\n" if $seen{$wire}++;

            push @{ $where eq 'query' ? \@query : \@form }, $wire;
        }

        # a request model's fields all placed, or none: the action takes
        # its whole request some other way this script does not know

        die "$path: $action: listed twice\n" if exists $actions{$action};
        die "$path: $action: a request model but no placements\n"
            if defined $model && !@query && !@form;

        $actions{$action} = {
            model => $model,
            query => \@query,
            body => \@form,
            method => $method,
        };
    }

    die "$path: no actions found\n" unless %actions;

    return \%actions;
}


sub folder_commit {
    my ($dir) = @_;

    my @cmd = ('git', '-C', $dir, 'log', '-1', '--format=%H', '--', '.');

    # git's complaint about a directory outside a work tree is not ours

    open(my $saved, '>&', \*STDERR) or return undef;
    open(STDERR, '>', File::Spec->devnull()) or return undef;
    my $ok = open(my $fh, '-|', @cmd);
    open(STDERR, '>&', $saved) or die "stderr: $!\n";
    return undef unless $ok;
    my $out = <$fh>;
    close($fh);

    return undef if $? != 0 || !defined $out;

    chomp $out;

    return $out =~ /^[0-9a-f]{40}$/ ? $out : undef;
}


# one action of the client as a member of "actions"

sub action_entry {
    my ($action, $client, $models) = @_;

    my $c = $client->{$action};

    die "$action: bad action name\n" if $action !~ $NAME_RE;

    my @params;

    if (defined $c->{model}) {
        my $m = $models->{ $c->{model} }
            // die "$action: no model $c->{model}\n";
        my %field = map { $m->{names}{$_} => $_ } keys %{ $m->{names} };

        for my $where (qw(query body)) {
            for my $wire (@{ $c->{$where} }) {
                my $f = $field{$wire}
                    // die "$action: \"$wire\" is not a field of"
                           . " $c->{model}\n";
                my $t = $m->{types}{$f}
                    // die "$action: $c->{model}.$f has no type\n";

                die "$action: bad parameter name \"$wire\"\n"
                    if $wire !~ $NAME_RE;

                push @params, {
                    name => $wire,
                    in => $where eq 'query' ? 'query' : 'formData',
                    type => api_type($t, "$action.$wire"),
                };
            }
        }

        # a declared field the client never sends would be a field this
        # script misread

        my %sent = map { $_ => 1 } @{ $c->{query} }, @{ $c->{body} };

        for my $f (@{ $m->{order} }) {
            die "$action: $c->{model}.$f ($m->{names}{$f}) is never sent\n"
                unless $sent{ $m->{names}{$f} };
        }
    }

    my $result = $models->{"${action}ResponseBodyResult"};
    my @rf = $result ? map { $result->{names}{$_} } @{ $result->{order} } : ();

    return {
        methods => [ $c->{method} ],
        params => \@params,
        result_fields => \@rf,
    };
}


my ($commit, $dir, $only, $base);

while (@ARGV) {
    my $arg = shift @ARGV;

    if ($arg eq '--commit') {
        $commit = shift @ARGV // usage();
        die "--commit: not a 40-digit hex commit\n"
            unless $commit =~ /^[0-9a-f]{40}$/;

    } elsif ($arg eq '--only') {
        $only = shift @ARGV // usage();

    } elsif ($arg eq '--base') {
        $base = shift @ARGV // usage();

    } elsif ($arg =~ /^-/ || defined $dir) {
        usage();

    } else {
        $dir = $arg;
    }
}

usage() unless defined $dir;
usage() if defined $only != defined $base;

$dir = File::Spec->catdir($dir, $FOLDER)
    if -d File::Spec->catdir($dir, $FOLDER);

die "$dir: no src/client.ts: not a checkout of $FOLDER\n"
    unless -f File::Spec->catfile($dir, 'src', 'client.ts');

$commit //= folder_commit($dir);

die "$dir: not in a git work tree: give the folder's commit with --commit\n"
    unless defined $commit;

my $pkg = JSON::PP->new->decode(slurp(File::Spec->catfile($dir,
                                                          'package.json')));

die "$dir/package.json: not $PACKAGE\n"
    unless ($pkg->{name} // '') eq $PACKAGE;
die "$dir/package.json: no version\n"
    unless ($pkg->{version} // '') =~ /^[0-9][0-9A-Za-z.\-+]*$/;

my $models = load_models($dir);
my $client = load_client($dir);

my $source = {
    repository => $REPOSITORY,
    folder => $FOLDER,
    package => $PACKAGE,
    version => $pkg->{version},
    commit => $commit,
};

my %out;

if (defined $only) {
    my @named = split /,/, $only, -1;
    my %named;

    die "--only: no action named\n" unless @named;

    for my $action (@named) {
        die "--only: \"$action\" is not an action name\n"
            if $action !~ $NAME_RE;
        die "--only: $action named twice\n" if $named{$action}++;
        die "--only: $action: not in $dir/src/client.ts\n"
            unless exists $client->{$action};
        die "--only: $action: no request model in $dir/src/client.ts\n"
            unless defined $client->{$action}{model};
    }

    my $bj = JSON::PP->new->utf8->decode(slurp($base));
    my $bs = $bj->{source} // die "$base: no source\n";

    for my $k (qw(repository folder package)) {
        die "$base: source.$k is not $source->{$k}\n"
            unless ($bs->{$k} // '') eq $source->{$k};
    }

    die "$base: not the actions of $FOLDER\n"
        unless ($bj->{product} // '') eq 'Cloudauth-intl'
               && ($bj->{version} // '') eq '2022-08-09'
               && ($bj->{style} // '') eq 'RPC'
               && ref $bj->{actions} eq 'HASH';

    %out = %{ $bj->{actions} };
    $out{$_} = action_entry($_, $client, $models) for @named;

    # the named actions now come from this client: out of the entries of
    # earlier partial runs, into one of their own unless this is the
    # base's own client

    my @partial;

    for my $p (@{ $bs->{partial} // [] }) {
        my @left = grep { !$named{$_} } @{ $p->{actions} };

        push @partial, { %$p, actions => \@left } if @left;
    }

    push @partial, {
        version => $source->{version},
        commit => $commit,
        actions => [ sort @named ],
    } unless $commit eq ($bs->{commit} // '');

    $source = { %$bs };
    delete $source->{partial};
    $source->{partial} = \@partial if @partial;

} else {
    $out{$_} = action_entry($_, $client, $models) for keys %$client;
}

my $json = JSON::PP->new->utf8->canonical->indent->indent_length(1)
    ->space_after;

# the members in a fixed order: the source first

my $text = $json->encode({
    source => $source,
    product => 'Cloudauth-intl',
    version => '2022-08-09',
    style => 'RPC',
    actions => \%out,
});

binmode(STDOUT, ':raw');
print $text;
