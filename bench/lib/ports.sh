# shellcheck shell=bash
#
# bench/lib/ports.sh -- loopback ports: a free one to listen on.
#
# Sourced by bench/run.sh and bench/soak.sh; needs perl (IO::Socket::IP).

free_port() {
    perl -MIO::Socket::IP -e '
        my $s = IO::Socket::IP->new(LocalHost => "127.0.0.1",
                                    LocalPort => 0, Listen => 1)
            or die "no free port: $@\n";
        print $s->sockport, "\n";'
}
