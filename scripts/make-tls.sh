#!/usr/bin/env bash
# Makes a private CA and a server certificate for the TLS overlay
# (deploy/kubernetes/overlays/tls), for a cluster without its own PKI:
#
#   scripts/make-tls.sh [--force] [DIR]     DIR: deploy/kubernetes/overlays/tls/secrets
#
#   DIR/ca.crt    the CA the agents trust (--ca-file); DIR/ca.key stays here,
#                 to sign the next server certificate, and goes nowhere else
#   DIR/tls.crt   the server's certificate, for the names the Service has
#                 (podflame-server, .podflame, .podflame.svc, .podflame.svc.cluster.local),
#                 valid 825 days
#   DIR/tls.key   its private key (--tls-key)
#
# With your own CA or cert-manager, put those three files there instead.
# Existing files are kept unless --force is given. Needs openssl.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
force=""
if [ "${1:-}" = "--force" ]; then
    force=1
    shift
fi
dir="${1:-$root/deploy/kubernetes/overlays/tls/secrets}"
service="${PODFLAME_SERVICE:-podflame-server}"
namespace="${PODFLAME_NAMESPACE:-podflame}"

if [ -z "$force" ] && [ -e "$dir/tls.crt" ]; then
    echo "make-tls: $dir/tls.crt exists; keeping it (--force makes a new CA and certificate)" >&2
    exit 0
fi

umask 077
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The CA: constraints and key usage marked critical, as strict verifiers
# (OpenSSL's X509_STRICT, the default in Python 3.13 and later) demand.
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=podflame CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null

names="DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc"
names="$names,DNS:$service.$namespace.svc.cluster.local"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$service.$namespace.svc" -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
cat >"$work/extensions" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$names
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EXT
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 825 -extfile "$work/extensions" -out "$work/tls.crt" 2>/dev/null

mv "$work/ca.key" "$work/ca.crt" "$work/tls.key" "$work/tls.crt" "$dir/"
echo "make-tls: wrote $dir/ca.crt, tls.crt, tls.key (and ca.key, which stays here)" >&2
