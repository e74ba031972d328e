#!/bin/sh
# mkcerts.sh DIR -- create the TLS test material for the idv module tests.
#
# Creates in DIR (EC P-256 keys, SHA-256 signatures, 10 years validity):
#   ca.pem / ca.key         test CA
#   mock.pem / mock.key     server cert signed by the test CA,
#                           SAN DNS:localhost, DNS:mock.idv.test, IP:127.0.0.1
#   other-ca.pem            an unrelated CA (other-ca.key is kept as well)
#   other.pem / other.key   server cert (same SANs) signed by the unrelated CA,
#                           for TLS-verification-failure tests
#
# Idempotent: does nothing when DIR/ca.pem already exists.  Everything is
# generated in a private temporary directory inside DIR and moved into place
# at the end, ca.pem last, so a half-finished run never looks complete.
# Quiet on success; on failure prints openssl's output and exits non-zero.

set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi

DIR=$1
OPENSSL=${OPENSSL:-openssl}

[ -f "$DIR/ca.pem" ] && exit 0

mkdir -p "$DIR"
TMP=$(mktemp -d "$DIR/.mkcerts.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
LOG=$TMP/openssl.log
: >"$LOG"

fail() {
    echo "mkcerts.sh: $*" >&2
    cat "$LOG" >&2
    exit 1
}

run() {
    "$OPENSSL" "$@" >>"$LOG" 2>&1 || fail "openssl $1 failed"
}

cat >"$TMP/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = dn
prompt             = no
[ dn ]
CN = placeholder
[ v3_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
[ v3_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth, clientAuth
subjectAltName         = DNS:localhost, DNS:mock.idv.test, IP:127.0.0.1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer
EOF

genkey() {
    run genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# mkca NAME CN
mkca() {
    genkey "$TMP/$1.key"
    run req -new -x509 -config "$TMP/openssl.cnf" -extensions v3_ca \
        -key "$TMP/$1.key" -sha256 -days 3650 \
        -set_serial "0x$("$OPENSSL" rand -hex 16)" \
        -subj "/O=idv module tests/CN=$2" -out "$TMP/$1.pem"
}

# mkleaf NAME CA-NAME CN
mkleaf() {
    genkey "$TMP/$1.key"
    run req -new -config "$TMP/openssl.cnf" -key "$TMP/$1.key" \
        -subj "/O=idv module tests/CN=$3" -out "$TMP/$1.csr"
    run x509 -req -in "$TMP/$1.csr" -CA "$TMP/$2.pem" -CAkey "$TMP/$2.key" \
        -set_serial "0x$("$OPENSSL" rand -hex 16)" -sha256 -days 3650 \
        -extfile "$TMP/openssl.cnf" -extensions v3_server -out "$TMP/$1.pem"
}

mkca ca "idv test CA"
mkleaf mock ca "localhost"
mkca other-ca "unrelated test CA"
mkleaf other other-ca "localhost"

run verify -CAfile "$TMP/ca.pem" "$TMP/mock.pem"
run verify -CAfile "$TMP/other-ca.pem" "$TMP/other.pem"

chmod 600 "$TMP"/*.key
chmod 644 "$TMP"/*.pem

for f in mock.key mock.pem other-ca.key other-ca.pem other.key other.pem \
         ca.key ca.pem; do
    mv -f "$TMP/$f" "$DIR/$f" || fail "cannot move $f into $DIR"
done

exit 0
