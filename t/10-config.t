# Configuration: the module loads into Debian's nginx, and every incomplete
# or contradictory configuration is refused at "nginx -t" with an [emerg]
# that names the problem.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;


my $t = IdvTest->new;
my $dir = $t->testdir;

sub conf_ok {
    my ($name, $http, %opt) = @_;

    $t->write_config($http);
    my ($rc, $out) = $t->nginx_t(%opt);

    is($rc, 0, "$name: nginx -t passes") or diag $out;
}

sub conf_fails {
    my ($name, $http, $re, %opt) = @_;

    $t->write_config($http);
    my ($rc, $out) = $t->nginx_t(%opt);

    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr/\[emerg\].*$re/, "$name: the [emerg] says why");
    unlike($out, qr/testsecret|s3cr3t-from-file/,
           "$name: the message does not show a secret");
}

sub server {
    my ($inside, %o) = @_;

    my $pass = $o{no_pass} ? '' : 'idv_pass /_idv_upstream;';
    my $http = $o{http} // "";

    return <<"END";
    $http
    server {
        listen 127.0.0.1:%%PORT%%;
        $pass
        location = /_idv_upstream { internal; proxy_pass https://127.0.0.1:%%PORT2%%/; }
        location = /idv { $inside }
    }
END
}


conf_ok('static keys',
        server('idv_action Initialize; idv_product_code eKYC;',
               http => 'idv_access_key_id testid; '
                       . 'idv_access_key_secret testsecret;'));

conf_ok('keys in the environment',
        server('idv_action CheckResult;'),
        env => { ALIBABA_CLOUD_ACCESS_KEY_ID => 'envid',
                 ALIBABA_CLOUD_ACCESS_KEY_SECRET => 'envsecret' });

open my $fh, '>', "$dir/credentials" or die;
print $fh <<'END';
# Alibaba Cloud credentials
[default]
type = access_key
access_key_id = fileid
access_key_secret = s3cr3t-from-file

[other]
access_key_id = otherid
END
close $fh;
chmod 0600, "$dir/credentials";

conf_ok('credentials file',
        server('idv_action Initialize; idv_product_code ID_OCR;',
               http => "idv_credentials $dir/credentials;"));

conf_ok('credentials file, explicit profile',
        server('idv_action Initialize; idv_product_code ID_OCR;',
               http => "idv_credentials $dir/credentials profile=default;"));

conf_ok('every action of the API can be served',
        server('idv_action KeepaliveIntl;',
               http => 'idv_access_key_id a; idv_access_key_secret b;'));

conf_ok('a product code around an action that takes none is ignored',
        server('idv_action CheckResult;',
               http => 'idv_access_key_id a; idv_access_key_secret b; '
                       . 'idv_product_code eKYC;'));

conf_ok('no action, no credentials needed',
        server('return 200;'));


# nginx reports the errors of merge time at the closing brace of http:
# the message names the location and the file:line of its directive

sub line_of {
    my ($re) = @_;

    open my $fh, '<', "$dir/nginx.conf" or die "nginx.conf: $!";
    while (<$fh>) {
        return $. if /$re/;
    }
    return 0;
}

sub where {
    my ($directive) = @_;

    my $line = line_of(qr/\Q$directive\E/);
    return qr/location = "\/idv" \(\Q$dir\E\/nginx\.conf:$line, /
           . qr/"\Q$directive\E"\)/;
}

my $at = qr/location = "\/idv" \(\S*nginx\.conf:\d+, "idv_action Initialize"\)/;

conf_fails('no credentials',
           server('idv_action Initialize; idv_product_code eKYC;'),
           qr/$at has no credentials/);

conf_fails('no idv_pass',
           server('idv_action Initialize;',
                  no_pass => 1,
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/$at needs "idv_pass"/);

# the file:line is the directive's, not the closing brace of http

{
    $t->write_config(server("\n        idv_action CheckResult;\n"));
    my ($rc, $out) = $t->nginx_t;
    my $re = where('idv_action CheckResult');

    isnt($rc, 0, 'an action on a line of its own: nginx -t fails');
    like($out, qr/\[emerg\] $re has no credentials/,
         'the [emerg] names the location and the file:line of idv_action');
}

{
    $t->write_config(server("\n        idv_action CheckResult;\n"
                            . "        idv_product_code eKYC;\n",
                            http => 'idv_access_key_id a; '
                                    . 'idv_access_key_secret b;'));
    my ($rc, $out) = $t->nginx_t;
    my $re = where('idv_action CheckResult');

    like($out, qr/\[emerg\] $re: "idv_product_code eKYC" does not apply/,
         'a product code that does not apply: the [emerg] names the '
         . 'location and the file:line of idv_action');
}

for my $case (
    [ 'idv_sdk_gateway',
      qr/: "idv_sdk_gateway" needs "idv_sdk_zone zone=NAME:SIZE"/ ],
    [ 'idv_callback', qr/: "idv_callback" needs "idv_callback_zone"/ ],
) {
    my ($directive, $why) = @$case;

    $t->write_config(server("\n        $directive;\n",
                            http => 'idv_access_key_id a; '
                                    . 'idv_access_key_secret b;'));
    my ($rc, $out) = $t->nginx_t;
    my $re = where($directive);

    isnt($rc, 0, "$directive without its zone: nginx -t fails");
    like($out, qr/\[emerg\] $re$why/,
         "$directive without its zone: the [emerg] names the location and "
         . "the file:line of $directive");
}

{
    $t->write_config(server('idv_action CheckResult;',
                            http => "\n    idv_access_key_id testid;\n"));
    my ($rc, $out) = $t->nginx_t;
    my $line = line_of(qr/idv_access_key_id testid/);

    isnt($rc, 0, 'a lone key id: nginx -t fails');
    my $re = qr/server \(\Q$dir\E\/nginx\.conf:\d+\): /
             . qr/"idv_access_key_id" and "idv_access_key_secret" must /
             . qr/be set together, but only "idv_access_key_id" /
             . qr/\(\Q$dir\E\/nginx\.conf:$line\) is/;

    like($out, qr/\[emerg\] $re/,
         'a lone key id: the [emerg] names the server and the key\'s '
         . 'file:line');
}

conf_fails('unknown action',
           server('idv_action InitialiseEverything;',
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/unknown action "InitialiseEverything"/);

conf_fails('action name is case-sensitive',
           server('idv_action initialize;',
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/unknown action "initialize"/);

conf_fails('key id without secret',
           server('idv_action CheckResult;',
                  http => 'idv_access_key_id testid;'),
           qr/must be set together/);

conf_fails('secret without key id',
           server('idv_action CheckResult;',
                  http => 'idv_access_key_secret testsecret;'),
           qr/must be set together/);

conf_fails('unreadable credentials file',
           server('idv_action CheckResult;',
                  http => "idv_credentials $dir/no-such-file;"),
           qr/idv_credentials: cannot open ".*no-such-file"/);

conf_fails('credentials file without the profile',
           server('idv_action CheckResult;',
                  http => "idv_credentials $dir/credentials profile=prod;"),
           qr/has no profile \[prod\]/);

conf_fails('credentials profile without a secret',
           server('idv_action CheckResult;',
                  http => "idv_credentials $dir/credentials profile=other;"),
           qr/idv_credentials: \Q$dir\E\/credentials:7: profile \[other\] needs both access_key_id and access_key_secret/);

conf_fails('credentials file and static keys on one level',
           server('idv_action CheckResult;',
                  http => "idv_credentials $dir/credentials; "
                          . 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/conflicts with "idv_credentials"/);


# the secrets files' common reader (ngx_http_idv_conf_file.c): a regular
# file of bounded size, lines named FILE:LINE, never their text

sub write_file {
    my ($name, $text, $mode) = @_;

    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $text;
    close $fh;
    chmod $mode // 0600, "$dir/$name";

    return "$dir/$name";
}

sub credentials_in {
    my ($file) = @_;
    return server('idv_action CheckResult;',
                  http => "idv_credentials $file;");
}

# a malformed line: FILE:LINE and what is wrong, not the line
sub bad_line {
    my ($name, $text, $line, $what) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $file = write_file('cred-bad', $text);
    conf_fails($name, credentials_in($file),
               qr/idv_credentials: \Q$file\E:$line: $what/);
}

bad_line('a credentials line that is not "key = value"',
         "[default]\naccess_key_id = fileid\n"
         . "access_key_secret s3cr3t-from-file\n",
         3, qr/expected "key = value"/);

bad_line('a profile header without "]"',
         "; comment\n[default\naccess_key_id = fileid\n"
         . "access_key_secret = s3cr3t-from-file\n",
         2, qr/expected "\[profile\]"/);

my $file;

$file = write_file('cred-crlf', "; written on Windows\r\n\r\n"
                                . "  [default]  \r\n"
                                . "\taccess_key_id\t=\tfileid \r\n"
                                . "access_key_secret=s3cr3t-from-file\r\n");
conf_ok('credentials with CRLF line ends, blanks and ";" comments',
        credentials_in($file));

mkdir "$dir/cred-dir";

conf_fails('a credentials "file" that is a directory',
           credentials_in("$dir/cred-dir"),
           qr/idv_credentials: "\Q$dir\E\/cred-dir" is not a regular file/);

SKIP: {
    skip 'no mkfifo', 3 unless eval { require POSIX;
                                      POSIX::mkfifo("$dir/cred-fifo", 0600) };

    conf_fails('a FIFO in place of the credentials file, without hanging',
               credentials_in("$dir/cred-fifo"),
               qr/idv_credentials: "\Q$dir\E\/cred-fifo" is not a regular file/);
}

conf_fails('a credentials file over 64k',
           credentials_in(write_file('cred-big',
                                     "[default]\n" . ("# padding\n" x 7000))),
           qr/idv_credentials: "\Q$dir\E\/cred-big" is larger than 64k/);


# who else may read or change a secrets file: one [warn] per problem,
# naming it; the configuration still loads

sub warns {
    my ($name, $http, $re, %opt) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    $t->write_config($http, main => $opt{main} // '');
    my ($rc, $out) = $t->nginx_t;

    is($rc, 0, "$name: nginx -t passes") or diag $out;

    if (defined $re) {
        like($out, qr/\[warn\] $re/, "$name: the [warn] says why");
    } else {
        unlike($out, qr/\[warn\] idv_/, "$name: no [warn]");
    }

    for my $not (@{$opt{not} // []}) {
        unlike($out, $not, "$name: and nothing else") or diag $out;
    }

    unlike($out, qr/s3cr3t-from-file/,
           "$name: the message does not show a secret");
}

my $cred = write_file('cred-mode', "[default]\naccess_key_id = fileid\n"
                                   . "access_key_secret = s3cr3t-from-file\n");
my $cred_re = qr/idv_credentials: "\Q$cred\E"/;

chmod 0644, $cred;
warns('a credentials file readable by other users',
      credentials_in($cred),
      qr/$cred_re is readable by other users; chmod 600 or 640 it/);

chmod 0602, $cred;
warns('a credentials file writable, not readable, by other users',
      credentials_in($cred),
      qr/$cred_re is writable by other users; chmod 600 or 640 it/,
      not => [qr/readable by other users/]);

chmod 0606, $cred;
warns('a credentials file readable and writable by other users',
      credentials_in($cred),
      qr/$cred_re is readable and writable by other users/);

chmod 0600, $cred;
warns('a credentials file of mode 600', credentials_in($cred), undef);

my $keyfile = write_file('callback-key', ('k' x 48) . "\n", 0666);
warns('the same check guards idv_callback_key',
      server('return 200;', http => "idv_callback_key $keyfile;"),
      qr/idv_callback_key: "\Q$keyfile\E" is readable and writable by other users/);

$file = write_file('callback-short', ('k' x 31) . "\n");
conf_fails('a callback key of fewer than 32 bytes',
           server('return 200;', http => "idv_callback_key $file;"),
           qr/idv_callback_key: "\Q$file\E" holds fewer than 32 bytes/);

# the workers' group and user: only when root loads the configuration,
# for otherwise the workers are that user, whom no mode keeps out

SKIP: {
    my $group = (grep { defined getgrnam($_) } qw(nogroup nobody))[0];
    my $user = defined getpwnam('nobody') ? 'nobody' : undef;

    skip 'needs root and a user nobody', 15 if $> != 0 || !$group || !$user;

    my $gid = getgrnam($group);
    my $uid = getpwnam($user);
    my $main = "user $user $group;";

    chown 0, $gid, $cred;

    chmod 0640, $cred;
    warns("a credentials file readable by the workers' group",
          credentials_in($cred),
          qr/$cred_re is readable by group "$group", the workers' group; chmod 600 it or give it another group/,
          main => $main);

    chmod 0620, $cred;
    warns("a credentials file writable by the workers' group",
          credentials_in($cred),
          qr/$cred_re is writable by group "$group", the workers' group/,
          main => $main);

    chmod 0600, $cred;
    warns("a credentials file of the workers' group, mode 600",
          credentials_in($cred), undef, main => $main);

    chown 0, 0, $cred;
    chmod 0640, $cred;
    warns("a credentials file readable by another group (640 root:root)",
          credentials_in($cred), undef, main => $main);

    chown $uid, 0, $cred;
    chmod 0600, $cred;
    warns("a credentials file that belongs to the workers' user",
          credentials_in($cred),
          qr/$cred_re belongs to user "$user", the workers' user; chown it to root/,
          main => $main);

    chown 0, 0, $cred;
}

# nginx -T prints the configuration files nginx parsed; the secrets
# files are the module's, not among them

{
    $file = write_file('cred-T', "[default]\naccess_key_id = LTAIfromfileT\n"
                                 . "access_key_secret = s3cr3t-from-file-T\n");

    $t->write_config(credentials_in($file));
    my $out = IdvTest::_capture($t->nginx_binary, '-T', '-p', "$dir/",
                                '-c', "$dir/nginx.conf",
                                '-e', "$dir/T.log");

    is($? >> 8, 0, 'nginx -T with idv_credentials passes') or diag $out;
    like($out, qr/idv_credentials \Q$file\E;/,
         'nginx -T shows the directive');
    unlike($out, qr/s3cr3t-from-file-T|LTAIfromfileT/,
           'nginx -T shows no key from the file');
}

conf_fails('product code on an action without one',
           server('idv_action CheckResult; idv_product_code eKYC;',
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/action CheckResult takes no ProductCode/);

conf_fails('endpoint given as a URL',
           server('idv_action CheckResult;',
                  http => 'idv_access_key_id a; idv_access_key_secret b; '
                          . 'idv_endpoint https://example.com;'),
           qr/takes a host\[:port\]/);

conf_fails('unknown signature version',
           server('idv_action CheckResult; idv_signature v2;',
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/invalid value "v2"/);

conf_fails('idv_pass that is not a URI',
           server('idv_action CheckResult; idv_pass _idv;',
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/"idv_pass" takes the URI/);

conf_fails('idv_retries beyond its bound',
           server('idv_action CheckResult; idv_retries 11;',
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/must be between 0 and 10/);

conf_fails('two actions in one location',
           server('idv_action CheckResult; idv_action Initialize;',
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/"idv_action" directive is duplicate/);


# the module's signature matches Debian's binary: it loads and serves

$t->write_config(server('idv_action CheckResult;',
                        http => 'idv_access_key_id a; '
                                . 'idv_access_key_secret b;'));
$t->start_nginx;
my $r = $t->get('/idv');
is($r->{status}, 405, 'the loaded module answers in its location');
$t->stop;

done_testing;
