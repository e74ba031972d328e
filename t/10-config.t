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


conf_fails('no credentials',
           server('idv_action Initialize; idv_product_code eKYC;'),
           qr/"idv_action Initialize" has no credentials/);

conf_fails('no idv_pass',
           server('idv_action Initialize;',
                  no_pass => 1,
                  http => 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/needs "idv_pass"/);

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
           qr/needs both access_key_id and access_key_secret/);

conf_fails('credentials file and static keys on one level',
           server('idv_action CheckResult;',
                  http => "idv_credentials $dir/credentials; "
                          . 'idv_access_key_id a; idv_access_key_secret b;'),
           qr/conflicts with "idv_credentials"/);

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
