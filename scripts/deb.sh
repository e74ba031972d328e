# shellcheck shell=bash
# shellcheck disable=SC2164  # build.sh runs with set -e: a failed cd stops it
#
# scripts/deb.sh -- the Debian package libnginx-mod-http-idv, built the
# way Debian builds its own nginx modules: dpkg-buildpackage with
# debhelper's "nginx" sequence from nginx-dev (packaging/debian/rules),
# against the installed nginx; then checked (the ABI it depends on is the
# installed nginx's, every library it links has its licence in the
# copyright file, lintian finds no error) and copied to
# build/libnginx-mod-http-idv_VERSION_ARCH.deb.  "test" then runs
# t/95-deb.t, which installs it into this machine's nginx and purges it.
#
# Sourced by build.sh; uses lib.sh, ensure_pkgs and ensure_test_pkgs
# (deps.sh), module_signature (module.sh).  ./build.sh deb [test]

DEB_PKG=libnginx-mod-http-idv
DEB_OUT=$BUILD/deb

# what the package is built from: the source tree minus tests and builds
DEB_INPUTS="VERSION config README.md ngx_http_idv_module docs packaging/debian"


deb_version() {
    local v

    [ -f "$ROOT/VERSION" ] || die "VERSION is missing"
    v=$(tr -d ' \t\n' < "$ROOT/VERSION")

    # a Debian native version: digits first, then letters, digits, . + ~
    [[ $v =~ ^[0-9][A-Za-z0-9.+~]*$ ]] \
        || die "VERSION: \"$v\" is not a Debian version (like 1.2.3)"
    printf '%s\n' "$v"
}


# deb_changelog VERSION CONTROL: debian/changelog for VERSION, signed by
# CONTROL's maintainer, dated by the last commit (the same tree builds the
# same package)
deb_changelog() {
    local maint date rev=''

    maint=$(sed -n 's/^Maintainer: //p' "$2")
    date=$(git -C "$ROOT" log -1 --format=%cD 2>/dev/null) || date=
    [ -n "$date" ] || date=$(date -R)
    rev=$(git -C "$ROOT" describe --always --dirty 2>/dev/null) || rev=

    cat <<EOF
$DEB_PKG ($1) unstable; urgency=medium

  * ngx_http_idv_module $1${rev:+ (git $rev)}.

 -- $maint  $date
EOF
}


# the package is newer than everything it is built from (and than this
# script), and for the maintainer asked for
deb_fresh() {
    local deb=$1 f

    [ -f "$deb" ] || return 1
    [ -z "${IDV_DEB_MAINTAINER:-}" ] \
        || [ "$(dpkg-deb -f "$deb" Maintainer)" = "$IDV_DEB_MAINTAINER" ] \
        || return 1
    for f in $DEB_INPUTS scripts/deb.sh; do
        [ -n "$(find "$ROOT/$f" -newer "$deb" -print -quit)" ] && return 1
    done
    return 0
}


deb_build() {
    local version=$1 arch=$2 src f

    src=$DEB_OUT/$DEB_PKG-$version

    rm -rf "$DEB_OUT"
    mkdir -p "$src"

    for f in $DEB_INPUTS; do
        [ "$f" = packaging/debian ] && continue
        cp -a "$ROOT/$f" "$src/"
    done
    cp -a "$ROOT/packaging/debian" "$src/debian"

    if [ -n "${IDV_DEB_MAINTAINER:-}" ]; then
        f=$IDV_DEB_MAINTAINER \
            perl -pi -e 's/^Maintainer: .*/Maintainer: $ENV{f}/' \
            "$src/debian/control"
    fi
    deb_changelog "$version" "$src/debian/control" > "$src/debian/changelog"

    say "build.sh: dpkg-buildpackage $DEB_PKG $version (log:" \
        "$DEB_OUT/build.log)"

    (
        cd "$src"
        DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
            dpkg-buildpackage -b -us -uc
    ) > "$DEB_OUT/build.log" 2>&1 \
        || { tail -n 30 "$DEB_OUT/build.log" >&2
             die "dpkg-buildpackage failed (full log: $DEB_OUT/build.log)"; }

    [ -f "$DEB_OUT/${DEB_PKG}_${version}_$arch.deb" ] \
        || die "dpkg-buildpackage made no ${DEB_PKG}_${version}_$arch.deb"
}


# deb_check DEB: what dpkg-buildpackage cannot know about this machine
deb_check() {
    local deb=$1 depends abi nginx_pkg provides so sig_mod sig_ref p tmp

    depends=$(dpkg-deb -f "$deb" Depends)

    # the ABI it depends on is the one the installed nginx provides
    abi=$(printf '%s\n' "$depends" | grep -o 'nginx-abi-[^ ,]*') \
        || die "$deb: Depends has no nginx-abi-*: $depends"
    nginx_pkg=$(dpkg -S "$SYSTEM_NGINX" | cut -d: -f1)
    provides=$(dpkg-query -W -f='${Provides}' "$nginx_pkg")
    [[ ", $provides," == *", $abi,"* ]] \
        || die "$deb depends on $abi, but $nginx_pkg provides: $provides"

    # and the module's binary signature is that nginx's
    tmp=$(mktemp -d)
    dpkg-deb -x "$deb" "$tmp"
    so=$tmp/usr/lib/nginx/modules/ngx_http_idv_module.so
    sig_mod=$(module_signature "$so" 2>/dev/null) || sig_mod=
    sig_ref=$(module_signature "$SYSTEM_NGINX")
    rm -rf "$tmp"
    if [ -z "$sig_mod" ] || [ "$sig_mod" != "$sig_ref" ]; then
        die "$deb: module signature '$sig_mod' differs from" \
            "$SYSTEM_NGINX's '$sig_ref'"
    fi

    # every library it links (shlibs) has its licence in the copyright file
    for p in $(printf '%s\n' "$depends" | tr ',|' '\n' \
               | sed 's/(.*//; s/[[:space:]]//g' | grep -v '^nginx-abi-'); do
        [ "$p" = libc6 ] && continue
        grep -q "[[:space:]]${p}[[:space:]]" "$ROOT/packaging/debian/copyright" \
            || die "$deb links $p, which packaging/debian/copyright does" \
                   "not name: add its licence there"
    done

    say "build.sh: Depends: $depends"
}


deb_lint() {
    local deb=$1 rc=0

    lintian --fail-on error --tag-display-limit 0 "$deb" \
        > "$DEB_OUT/lintian.log" 2>&1 || rc=$?

    # its advice not to run as root is about the machine, not the package
    sed -i '/^running with root privileges/d' "$DEB_OUT/lintian.log"
    if [ -s "$DEB_OUT/lintian.log" ]; then
        say "build.sh: lintian (docs/deployment.md explains each warning):"
        sed 's/^/  /' "$DEB_OUT/lintian.log"
    fi
    [ $rc -eq 0 ] || die "lintian found errors in $deb"
}


cmd_deb() {
    local what=${1:-build} version arch deb

    case $what in
        build|test) ;;
        *) die "usage: ./build.sh deb [test]" ;;
    esac

    if [ -n "${IDV_DEB_MAINTAINER:-}" ] \
       && ! [[ $IDV_DEB_MAINTAINER =~ ^[^\<\>]+\ \<[^\<\>\ ]+@[^\<\>\ ]+\>$ ]]
    then
        die "IDV_DEB_MAINTAINER: not like \"Name <address>\""
    fi

    ensure_pkgs binutils gcc make dpkg-dev debhelper lintian \
                nginx-core nginx-dev libcjson-dev libssl-dev libhiredis-dev

    version=$(deb_version)
    arch=$(dpkg --print-architecture)
    deb=$BUILD/${DEB_PKG}_${version}_$arch.deb

    mkdir -p "$BUILD"
    exec 8> "$BUILD/.deb.lock"
    flock 8

    if deb_fresh "$deb"; then
        say "build.sh: $deb is up to date"
    else
        deb_build "$version" "$arch"
        deb_check "$DEB_OUT/${DEB_PKG}_${version}_$arch.deb"
        deb_lint "$DEB_OUT/${DEB_PKG}_${version}_$arch.deb"
        cp "$DEB_OUT/${DEB_PKG}_${version}_$arch.deb" "$deb.tmp"
        mv -f "$deb.tmp" "$deb"
    fi

    exec 8>&-

    say "$deb"

    [ "$what" = test ] || return 0

    ensure_test_pkgs
    cd "$ROOT"
    IDV_ROOT=$ROOT IDV_DEB=$deb exec prove -It/lib t/95-deb.t
}
