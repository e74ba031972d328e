# The Debian package in this machine's nginx: "apt-get install" puts the
# module where Debian's own modules are and enables it; the README's
# configuration, as a conf.d file pointed at the mock, passes the system's
# "nginx -t" and, run by the system nginx binary, makes an Initialize the
# mock verifies; upgrades keep the link, a link the admin removed stays
# removed; remove sets it aside for a later install; and "apt-get purge"
# leaves nothing behind.
#
# Run by "./build.sh deb test" (root: it installs into the system), which
# builds the package and names it in IDV_DEB; "./build.sh test" skips it.
# One run at a time on the machine (a lock), on free ports, nginx with its
# own pid file and logs, the package purged at the end whatever happens.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use IdvTest;
use Fcntl qw(:flock);
use File::Spec;


my $deb = $ENV{IDV_DEB};

plan skip_all => 'the package test runs with ./build.sh deb test'
    unless defined $deb && length $deb;
plan skip_all => 'installing a package needs root' if $> != 0;

$deb = File::Spec->rel2abs($deb, IdvTest::root());
BAIL_OUT("IDV_DEB=$deb: no such file") unless -f $deb;

my $PKG = 'libnginx-mod-http-idv';
my $ENABLED = '/etc/nginx/modules-enabled';
my $LINK = "$ENABLED/50-mod-http-idv.conf";
my $AVAILABLE = '/usr/share/nginx/modules-available/mod-http-idv.conf';
my $SO = '/usr/lib/nginx/modules/ngx_http_idv_module.so';
my $DOC = "/usr/share/doc/$PKG";
my $NGINX = '/usr/sbin/nginx';


# the package, /etc/nginx and the system nginx are the machine's: one run
# of this test at a time, whichever checkout it comes from
my $lockdir = -d '/run/lock' ? '/run/lock' : '/tmp';
open my $lock, '>', "$lockdir/idv-deb-test.lock" or die "lock: $!";
flock($lock, LOCK_EX) or die "flock: $!";

BAIL_OUT("$PKG is on this machine already (" . pkg_status() . "): this"
         . " test installs and purges it; remove it first")
    if pkg_status() ne '';

my @enabled_before = enabled();
my $conf_d = "/etc/nginx/conf.d/idv-pkgtest-$$.conf";
my $installed;

END {
    # leave the machine as it was, also after a failure
    local $?;
    unlink $conf_d if $conf_d;
    apt('purge', $PKG) if $installed && pkg_status() ne '';
}


# --- install ------------------------------------------------------------

my ($rc, $out) = apt('install', $deb);
is($rc, 0, 'apt-get install ./build/...deb') or diag $out;
$installed = 1;

is(pkg_status(), 'install ok installed', 'the package is installed');
ok(-f $SO, "the module is in /usr/lib/nginx/modules/");
is(slurp($AVAILABLE), "load_module modules/ngx_http_idv_module.so;\n",
   'mod-http-idv.conf in modules-available loads it');
is(readlink($LINK), $AVAILABLE, 'installed enabled: 50-mod-http-idv.conf');
ok(-f "$DOC/copyright", 'copyright in /usr/share/doc');
ok(-f "$DOC/examples/nginx.conf", 'the example configuration is there');
ok(-f "$DOC/README.md.gz" || -f "$DOC/README.md", 'the README is there');

my ($abi) = (qx(dpkg-query -W -f='\${Depends}' $PKG) =~ /(nginx-abi-[^ ,]+)/);
my $nginx_pkg = (split /:/, qx(dpkg -S $NGINX))[0];
my $provides = qx(dpkg-query -W -f='\${Provides}' $nginx_pkg);
ok($abi && $provides =~ /(?:^|, )\Q$abi\E(?:,|$)/,
   "depends on the ABI the installed nginx provides ($abi)")
    or diag "Depends: $abi; $nginx_pkg provides: $provides";


# --- the README's configuration against the mock --------------------------

my $t = IdvTest->new;
$t->start_mock;

my $dir = $t->testdir;
write_file("$dir/credentials", 0600, "[default]\ntype = access_key\n"
           . "access_key_id = testid\naccess_key_secret = testsecret\n");
write_file($conf_d, 0644, readme_conf($t));

($rc, $out) = run($NGINX, '-t');
is($rc, 0, "the system's nginx -t passes with the package and the conf.d"
           . " file") or diag $out;
unlike($out, qr/\[(?:emerg|alert|crit|warn)\]/, '... and says nothing else')
    or diag $out;

# the system binary on its own pid file and logs, loading the module the
# way /etc/nginx/nginx.conf does; "modules/" is relative to the prefix,
# which here is the test's: the same link as Debian's /usr/share/nginx
symlink '/usr/lib/nginx/modules', "$dir/modules" or die "$dir/modules: $!";
$t->write_config("    include $conf_d;\n", module => 0,
                 main => "include $ENABLED/*.conf;");
($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t on the test prefix') or diag $out;

$t->start_nginx;

my $r = $t->post('/idv/ekyc/initialize', {
    MerchantBizId => 'deb0001', MerchantUserId => 'user-deb',
    DocType => '01000000', MetaInfo => '{"deviceType":"h5"}' });

is($r->{status}, 200, 'Initialize through the packaged module: 200')
    or diag $r->{body};
is($r->{json}{Code}, 'Success', '... Code Success');
like($r->{json}{Result}{TransactionId} // '', qr/^[0-9a-f]{32}$/,
     '... with a TransactionId');
is($r->{json}{Gateway}{action}, 'Initialize', '... and the Gateway object');

my $s = $t->mock_stats;
is($s->{calls}, 1, 'exactly one upstream call');
is($s->{accepted}, 1, 'the mock verified its signature');
is($s->{requests}[-1]{query}{ProductCode}, 'eKYC', 'ProductCode eKYC');

$t->stop;

unlink $conf_d;


# --- upgrades keep the link as it is -------------------------------------

# the same package under a higher version: a real upgrade (prerm upgrade,
# postinst configure with the old version)
my $version = qx(dpkg-deb -f $deb Version);
chomp $version;
my $upgrade = "$dir/upgrade.deb";
($rc, $out) = run('sh', '-c', 'dpkg-deb -R "$1" "$2/up" && sed -i'
                  . ' "s/^Version: .*/Version: $3/" "$2/up/DEBIAN/control"'
                  . ' && dpkg-deb -b "$2/up" "$4"', 'sh', $deb, $dir,
                  "$version+upgrade", $upgrade);
is($rc, 0, "a package of version $version+upgrade") or diag $out;

($rc, $out) = apt('install', $upgrade);
is($rc, 0, 'apt-get install: an upgrade') or diag $out;
is(pkg_version(), "$version+upgrade", 'the upgrade is installed');
is(readlink($LINK), $AVAILABLE, 'an upgrade keeps the module enabled');

unlink $LINK or die "$LINK: $!";
($rc, $out) = apt('install', '--reinstall', $upgrade);
is($rc, 0, 'apt-get install --reinstall') or diag $out;
ok(!-e $LINK && !-l $LINK, 'a link the admin removed is not recreated');
is(pkg_status(), 'install ok installed', 'the package is installed');


# --- remove keeps the admin's enabling for a later install ---------------

symlink $AVAILABLE, $LINK or die "$LINK: $!";
($rc, $out) = apt('remove', $PKG);
is($rc, 0, 'apt-get remove') or diag $out;
ok(!-e $LINK && !-l $LINK, 'remove disables the module');
ok(-l "$LINK.removed", '... and sets the link aside');
ok(!-e $SO, 'remove deletes the module');
($rc, $out) = apt('install', $upgrade);
is($rc, 0, 'apt-get install after remove') or diag $out;
is(readlink($LINK), $AVAILABLE, 'an install after remove enables it again');
ok(!-e "$LINK.removed" && !-l "$LINK.removed", '... from what was set aside');


# --- purge --------------------------------------------------------------

($rc, $out) = apt('purge', $PKG);
is($rc, 0, 'apt-get purge') or diag $out;
is(pkg_status(), '', 'the package is gone from dpkg');
ok(!-e $_ && !-l $_, "$_ is gone") for $SO, $AVAILABLE, $DOC;
is_deeply([enabled()], \@enabled_before,
          '/etc/nginx/modules-enabled is as it was');
is_deeply([grep { /idv/ } enabled()], [], '... with nothing of the module');
$installed = 0 if pkg_status() eq '';

done_testing;


# --- helpers ------------------------------------------------------------

# the README's nginx block, pointed at the mock: the test follows the
# README, and fails if a line it points elsewhere changed
sub readme_conf {
    my ($t) = @_;

    my $readme = slurp(IdvTest::root() . '/README.md');
    my ($conf) = $readme =~ /^```nginx\n(.*?)^```/ms
        or die "README.md has no ```nginx block";

    my $port = $t->port;
    my $mock = $t->mock_port;
    my $certs = IdvTest::certs_dir();

    my @subst = (
        [ 'idv_credentials /etc/nginx/idv/credentials;',
          "idv_credentials $dir/credentials;" ],
        [ 'listen 127.0.0.1:8080;', "listen 127.0.0.1:$port;" ],
        [ 'proxy_pass https://cloudauth-intl.cn-hongkong.aliyuncs.com/;',
          "proxy_pass https://127.0.0.1:$mock/;" ],
        # an address: the certificate is checked for a name it carries
        [ 'proxy_ssl_verify on;', 'proxy_ssl_verify on;'
                                  . ' proxy_ssl_name localhost;' ],
        [ 'proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;',
          "proxy_ssl_trusted_certificate $certs/ca.pem;" ],
    );

    for my $s (@subst) {
        my $n = () = $conf =~ /\Q$s->[0]\E/g;
        die "README.md's nginx block: '$s->[0]' found $n times, not once"
            unless $n == 1;
        $conf =~ s/\Q$s->[0]\E/$s->[1]/;
    }

    return $conf;
}


# apt(ARGS...) -> (exit code, output): apt-get with no service started
# (scripts/deps.sh's without_services), waiting for another apt's lock
sub apt {
    my (@args) = @_;
    my $root = IdvTest::root();

    return run('bash', '-c', '. "$0/scripts/lib.sh"; . "$0/scripts/deps.sh";'
               . ' without_services "$@"', $root,
               'env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', '-y', '-q',
               '-o', 'DPkg::Lock::Timeout=300', @args);
}


# "install ok installed", "deinstall ok config-files", ... or '' if unknown
sub pkg_status {
    my $s = qx(dpkg-query -W -f='\${Status}' $PKG 2>/dev/null);
    return $? == 0 && $s !~ /not-installed$/ ? $s : '';
}


sub pkg_version {
    return scalar qx(dpkg-query -W -f='\${Version}' $PKG 2>/dev/null);
}


sub enabled {
    opendir my $d, $ENABLED or return ();
    my @e = sort grep { !/^\.\.?$/ } readdir $d;
    closedir $d;
    return @e;
}


# run(CMD...) -> (exit code, stdout and stderr)
sub run {
    my $out = IdvTest::_capture(@_);
    return ($? >> 8, $out);
}


sub slurp { IdvTest::_slurp(@_) }


sub write_file {
    my ($file, $mode, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh or die "$file: $!";
    chmod $mode, $file or die "$file: $!";
}
