# shellcheck shell=bash
#
# scripts/debsrc.sh -- Debian source packages (nginx for the sanitizer
# build, cJSON for the fuzzers), fetched with apt-get source under a
# private source list and private apt state in build/apt-src/.
#
# Sourced by build.sh; uses ensure_pkgs (deps.sh).  For scripts/asan.sh
# and scripts/fuzz.sh.

# the mirror apt uses for the main suite of this release (deb822 or
# one-line sources), else deb.debian.org
debian_mirror() {
    local codename=$1 f uri=

    if [ -n "${IDV_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$IDV_DEBIAN_MIRROR"
        return 0
    fi

    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$codename" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") \
                    && uris != "" && !found) {
                    split(uris, u, " "); print u[1]; found = 1
                }
                types = ""; suites = ""; uris = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^Types:/   { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^Suites:/  { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^URIs:/    { sub(/^URIs:[ \t]*/, ""); uris = $0 }
            END { flush() }' "$f")
        [ -n "$uri" ] && break
    done

    if [ -z "$uri" ]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            uri=$(awk -v suite="$codename" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$f")
            [ -n "$uri" ] && break
        done
    fi

    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}


# apt_source DIR ARGS...: apt-get source ARGS in DIR with a private deb-src
# list (the release's main and -updates suites) and private apt state
# under build/apt-src/, so the system's apt configuration is not changed;
# apt checks what it fetches against the signed Release files
APT_SRC=$BUILD/apt-src
APT_SRC_READY=

apt_source() {
    local dir=$1 apt=$APT_SRC codename mirror keyring opts
    shift

    opts=(-o "Dir::Etc::SourceList=$apt/sources.list"
          -o "Dir::Etc::SourceParts=$apt/parts"
          -o "Dir::State::Lists=$apt/lists"
          -o "Dir::Cache=$apt/cache"
          -o "APT::Get::List-Cleanup=0")
    # apt's download sandbox user cannot write under build/
    [ "$(id -u)" -eq 0 ] && opts+=(-o "APT::Sandbox::User=root")

    if [ -z "$APT_SRC_READY" ]; then
        ensure_pkgs apt ca-certificates >&2

        codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
        [ -n "$codename" ] || codename=bookworm
        mirror=$(debian_mirror "$codename")

        keyring=
        [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] \
            && keyring="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "

        rm -rf "$apt"
        mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" \
                 "$apt/parts"
        {
            # the main suite only: the security suite's index can name
            # revisions whose files the reachable mirror does not hold,
            # and the orig tarballs (all that is built) are the same in
            # every revision
            printf 'deb-src %s%s %s main\n' "$keyring" "$mirror" "$codename"
            printf 'deb-src %s%s %s-updates main\n' "$keyring" "$mirror" \
                   "$codename"
        } > "$apt/sources.list"

        say "build.sh: reading Debian's source index ($mirror $codename)" >&2

        apt-get -q "${opts[@]}" update > "$apt/update.log" 2>&1 \
            || { cat "$apt/update.log" >&2
                 die "apt-get update (deb-src, see $apt/sources.list) failed"; }

        APT_SRC_READY=1
    fi

    mkdir -p "$dir"
    (cd "$dir" && apt-get -q "${opts[@]}" source "$@") \
        > "$apt/source.log" 2>&1 \
        || { cat "$apt/source.log" >&2
             die "apt-get source $* failed"; }
}
