#!/usr/bin/perl

# The C unit tests of the pure core (t/unit/test_*.c, built into
# build/unit/ by ./build.sh unit): each binary is one test here, passing
# when it exits 0, prints a plan and reports no "not ok".

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(basename dirname);
use File::Temp ();
use JSON::PP;
use Test::More;

my $root = abs_path($ENV{IDV_ROOT} // dirname(abs_path($0)) . '/..');
chdir $root or die "$root: $!";

# the data each binary reads, relative to the repository root
my %args = (
    test_sign => ['t/data'],
    test_ops  => ['ngx_http_idv_module/data/actions.json',
                  'ngx_http_idv_module/data/ops-overlay.json'],
);

my @bins = grep { -f && -x && !/\.[a-z]+$/ } glob('build/unit/test_*');

ok(scalar @bins, 'there are unit test binaries (./build.sh unit)')
    or diag('no unit test binaries in build/unit: run ./build.sh unit');

for my $bin (@bins) {
    my $name = basename($bin);
    my @cmd = ($bin, @{$args{$name} // []});

    my $run = run_cmd(@cmd);
    my @out = split /^/m, $run->{output};
    my $status = $run->{status} << 8;

    my $plan = grep { /^1\.\.(\d+)/ } @out;
    my ($n) = map { /^1\.\.(\d+)/ ? $1 : () } @out;
    $n //= 0;
    my $oks = grep { /^ok \d+/ } @out;
    my $not = grep { /^not ok \d+/ } @out;

    my $pass = $status == 0 && $plan == 1 && !$not && $n == $oks && $n > 0;

    ok($pass, "$name: $n cases pass")
        or diag(sprintf "%s exited with status %d, plan %s, %d ok, %d not ok"
                        . "\n%s", "@cmd", $status >> 8,
                        $plan ? "1..$n" : 'missing', $oks, $not,
                        join '', @out);
}

# the committed operations table is what gen_ops.pl makes of the data,
# and the data say which client they come from

{
    my $out = run_cmd('perl', 'ngx_http_idv_module/gen_ops.pl',
                              '--check');

    is($out->{status}, 0, 'gen_ops.pl --check: the table is up to date')
        or diag($out->{output});

    open(my $fh, '<:raw', 'ngx_http_idv_module/data/actions.json')
        or die "actions.json: $!";
    my $json = JSON::PP->new->utf8->decode(do { local $/; <$fh> });
    close $fh;

    my $src = $json->{source} // {};

    is($src->{folder}, 'cloudauth-intl-20220809',
       'actions.json: generated from the client folder');
    like($src->{version} // '', qr/^\d+\.\d+\.\d+$/,
         'actions.json: records the client version');
    like($src->{commit} // '', qr/^[0-9a-f]{40}$/,
         'actions.json: records the folder\'s commit');

    # actions taken alone from another client (gen_actions.pl --only):
    # each entry names its version, commit and actions, every one of them
    # in the table, none in two entries

    my %seen;

    for my $p (@{ $src->{partial} // [] }) {
        my $v = $p->{version} // '';

        like($v, qr/^\d+\.\d+\.\d+$/, "actions.json: partial $v: a version");
        like($p->{commit} // '', qr/^[0-9a-f]{40}$/,
             "actions.json: partial $v: a commit");
        ok(@{ $p->{actions} // [] }, "actions.json: partial $v: actions");
        ok(exists $json->{actions}{$_} && !$seen{$_}++,
           "actions.json: partial $v: $_ is in the table, once")
            for @{ $p->{actions} // [] };
    }
}

# gen_actions.pl --only over a made-up client (t/data/gen-actions): the
# named action from the checkout, every other from the base, the source
# saying which; a named action sending an undeclared name stops it, as it
# stops a full run

{
    my $dir = 't/data/gen-actions';
    my @gen = ('perl', 'ngx_http_idv_module/gen_actions.pl',
               '--commit', '2' x 40);
    my @base = ('--base', "$dir/base.json");

    my $out = run_cmd(@gen, '--only', 'NewAction', @base, $dir);

    is($out->{status}, 0, 'gen_actions.pl --only NewAction: runs')
        or diag($out->{output});

    my $j = eval { JSON::PP->new->utf8->decode($out->{output}) } // {};
    my $acts = $j->{actions} // {};
    my $bj = JSON::PP->new->utf8->decode(do {
        open(my $fh, '<:raw', "$dir/base.json") or die "base.json: $!";
        local $/;
        <$fh>;
    });

    is_deeply([sort keys %$acts], [qw(BadAction NewAction OldAction)],
              '--only: the base\'s actions and the named one');
    is_deeply($acts->{OldAction}, $bj->{actions}{OldAction},
              '--only: an action not named stays as in the base');
    is_deeply($acts->{BadAction}, $bj->{actions}{BadAction},
              '--only: one the checkout has but not named, too');
    is_deeply([map { "$_->{name} $_->{in}" } @{ $acts->{NewAction}{params} }],
              ['ProductCode query', 'PictureUrl formData'],
              '--only: the named action placed as its client places it');
    is_deeply($j->{source},
              { %{ $bj->{source} },
                partial => [{ version => '9.1.0', commit => '2' x 40,
                              actions => ['NewAction'] }] },
              '--only: source is the base\'s, the action under partial');

    $out = run_cmd(@gen, '--only', 'BadAction', @base, $dir);
    isnt($out->{status}, 0, '--only BadAction: an undeclared name stops it');
    like($out->{output}, qr/"NewField" is not a field of BadActionRequest/,
         '--only BadAction: the name and the model said');

    $out = run_cmd(@gen, $dir);
    isnt($out->{status}, 0, 'a full run over the same checkout stops too');

    $out = run_cmd(@gen, '--only', 'NoSuchAction', @base, $dir);
    like($out->{output}, qr/NoSuchAction: not in/,
         '--only: an action the client lacks stops it');

    $out = run_cmd(@gen, '--only', 'NewAction', $dir);
    is($out->{status}, 2, '--only without --base: usage');
}

# a full run over a sound made-up client (t/data/gen-actions without its
# BadAction, in a copy): the whole table from it, the version from
# package.json, the commit given or taken from git, nothing partial

{
    my $gen = 'ngx_http_idv_module/gen_actions.pl';
    my %src = (folder => 'cloudauth-intl-20220809',
               package => '@alicloud/cloudauth-intl20220809',
               repository => 'github.com/aliyun/alibabacloud-typescript-sdk',
               version => '9.1.0');

    my $tmp = File::Temp::tempdir('idv-gen-actions-XXXXXX', TMPDIR => 1,
                                  CLEANUP => 1);
    my $client = "$tmp/cloudauth-intl-20220809/src/client.ts";

    system("cp -R t/data/gen-actions/cloudauth-intl-20220809 $tmp/") == 0
        or BAIL_OUT("cannot copy to $tmp");
    unlink("$tmp/cloudauth-intl-20220809/src/models/BadActionRequest.ts")
        or BAIL_OUT("BadActionRequest.ts: $!");
    {
        open(my $fh, '+<:raw', $client) or BAIL_OUT("$client: $!");
        my $ts = do { local $/; <$fh> };
        $ts =~ s/\n  async badActionWithOptions\(.*?\n  \}\n//s
            or BAIL_OUT('no badActionWithOptions in the fixture');
        seek($fh, 0, 0);
        truncate($fh, 0);
        print $fh $ts;
        close $fh;
    }

    my $out = run_cmd('perl', $gen, '--commit', '3' x 40, $tmp);
    is($out->{status}, 0, 'gen_actions.pl, a full run: runs')
        or diag($out->{output});

    my $j = eval { JSON::PP->new->utf8->decode($out->{output}) } // {};

    is_deeply($j->{source}, { %src, commit => '3' x 40 },
              'a full run: source names the client, its version and commit');
    is_deeply($j->{actions},
              { NewAction => {
                    methods => ['post'],
                    params => [ { in => 'query', name => 'ProductCode',
                                  type => 'string' },
                                { in => 'formData', name => 'PictureUrl',
                                  type => 'string' } ],
                    result_fields => ['TransactionId'] } },
              'a full run: every action, placed and typed as the client '
              . 'has it, with its result fields');

    # a copy outside any git work tree needs --commit; inside one, the
    # last commit that touched the folder is taken

    my $git = "git -C $tmp -c user.name=t -c user.email=t\@t";

    $out = run_cmd('perl', $gen, $tmp);
    isnt($out->{status}, 0, 'a full run outside git without --commit stops');
    like($out->{output}, qr/not in a git work tree: give the folder's commit/,
         'a full run outside git: says to give --commit');

    system("$git init -q && $git add -A && $git commit -q -m fixture") == 0
        or BAIL_OUT("cannot make a git work tree in $tmp");
    chomp(my $head = `git -C $tmp rev-parse HEAD`);

    $out = run_cmd('perl', $gen, $tmp);
    $j = eval { JSON::PP->new->utf8->decode($out->{output}) } // {};
    is($j->{source}{commit}, $head,
       'a full run in a git work tree records the folder\'s last commit');
}

done_testing;


# runs a command: { status => exit code, output => stdout and stderr }

sub run_cmd {
    my @cmd = @_;

    my $pid = open(my $fh, '-|') // die "fork: $!";
    unless ($pid) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd or do { print "exec $cmd[0]: $!\n"; exit 127 };
    }
    my $output = join '', <$fh>;
    close $fh;

    return { status => $? >> 8, output => $output };
}
