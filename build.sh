#!/usr/bin/env bash
#
# Build, test and demo ngx_http_idv_module.
#
#   ./build.sh [build]          build build/ngx_http_idv_module.so
#   ./build.sh unit             build the C unit tests into build/unit/
#   ./build.sh test [ARGS...]   build, unit, then prove (ARGS: prove
#                               options and/or test files; default t/)
#   ./build.sh test --asan [ARGS...]
#                               the same against nginx 1.22.1 built from
#                               Debian's source with ASan and UBSan (and
#                               the module with the same flags), in
#                               build/asan/; any sanitizer report fails
#   ./build.sh asan             only build that nginx and module
#   ./build.sh fuzz [SECONDS] [TARGET...]
#                               build the libFuzzer targets
#                               t/fuzz/fuzz_TARGET.c (clang, ASan, UBSan)
#                               and run each (default: all) for SECONDS
#                               (default 30) on a copy of its seed corpus
#                               t/fuzz/corpus/TARGET; any crash fails
#   ./build.sh demo [stop]      start (or stop) nginx with the module on
#                               127.0.0.1:8080 in front of the mock API
#   ./build.sh deb [test]       build the Debian package
#                               build/libnginx-mod-http-idv_VERSION_ARCH.deb
#                               (dpkg-buildpackage, lintian); "test" then
#                               installs it into this machine's nginx,
#                               runs it against the mock, and purges it
#                               (t/95-deb.t, root only)
#
# Environment:
#   NGINX_SRC=DIR        build against a full nginx source tree instead of
#                        Debian's nginx-dev; the nginx binary is built too
#                        (build/objs/nginx) and is the one tested
#   NGINX_CC_OPT, NGINX_LD_OPT
#                        extra --with-cc-opt/--with-ld-opt (NGINX_SRC only,
#                        e.g. sanitizers)
#   IDV_NGINX            nginx binary for tests (default /usr/sbin/nginx,
#                        or build/objs/nginx with NGINX_SRC)
#   IDV_DEMO_PORT        demo listen port (default 8080)
#   IDV_DEMO_MOCK_PORT   port of the demo's mock API (default 8443)
#   IDV_DEMO_DIR         the demo's files and logs, an absolute path
#                        (default build/demo)
#   IDV_DEMO_NO_CALL=1   the demo prints the example call without making it
#   IDV_KEEP=1           keep the t/tmp/ directories of passing tests
#   IDV_DEBIAN_MIRROR
#                        Debian mirrors for the source packages (nginx for
#                        --asan, cjson for fuzz; default: those apt uses)
#   IDV_FUZZ_JOBS        fuzz targets run at a time (default: nproc)
#   IDV_ASAN_KEEP_MODULES=1
#                        test --asan: nginx never unloads the module, so
#                        leak reports name its frames (debugging only)
#   IDV_DEB_MAINTAINER="Name <address>"
#                        deb: the package's Maintainer (default: the
#                        placeholder in packaging/debian/control)
#   ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
#   IDV_ENDPOINT         all three set: the demo talks to the real API

# The work is done by the parts in scripts/, each with one job:
#
#   scripts/lib.sh      paths, messages, shared helpers
#   scripts/deps.sh     Debian packages (apt-get)
#   scripts/debsrc.sh   Debian source packages (nginx, cJSON)
#   scripts/module.sh   configure and make: build/ngx_http_idv_module.so
#   scripts/unit.sh     the C unit tests
#   scripts/test.sh     the suite (prove)
#   scripts/asan.sh     the ASan and UBSan nginx and its settings
#   scripts/fuzz.sh     the libFuzzer targets
#   scripts/demo.sh     the demo
#   scripts/deb.sh      the Debian package

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"
# shellcheck source=scripts/debsrc.sh
. "$ROOT/scripts/debsrc.sh"
# shellcheck source=scripts/module.sh
. "$ROOT/scripts/module.sh"
# shellcheck source=scripts/unit.sh
. "$ROOT/scripts/unit.sh"
# shellcheck source=scripts/test.sh
. "$ROOT/scripts/test.sh"
# shellcheck source=scripts/asan.sh
. "$ROOT/scripts/asan.sh"
# shellcheck source=scripts/fuzz.sh
. "$ROOT/scripts/fuzz.sh"
# shellcheck source=scripts/demo.sh
. "$ROOT/scripts/demo.sh"
# shellcheck source=scripts/deb.sh
. "$ROOT/scripts/deb.sh"

case ${1:-build} in
    build)  cmd_build ;;
    unit)   cmd_unit ;;
    test)   shift; cmd_test "$@" ;;
    asan)   cmd_asan ;;
    fuzz)   shift; cmd_fuzz "$@" ;;
    demo)   shift; cmd_demo "$@" ;;
    deb)    shift; cmd_deb "$@" ;;
    -h|--help|help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0" ;;
    *)      die "unknown command '$1' (build, unit, test, asan, fuzz, demo, demo stop, deb, deb test)" ;;
esac
