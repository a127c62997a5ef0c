#!/usr/bin/env bash
# A local certificate authority and a `localhost` certificate signed by it, for trying
# DBX over TLS (wss://, https://) on one machine. Needs openssl.
#
#   scripts/dev-cert.sh [DIR]      (default DIR: ./dev-certs)
#
# Writes DIR/ca.pem (trust this in clients: dbx-bench --ca, the JS client's `ca`,
# Python's ssl.create_default_context(cafile=…)), DIR/ca-key.pem, DIR/cert.pem
# (leaf + CA chain) and DIR/key.pem (PKCS#8). Then:
#   DBX_TLS_CERT=DIR/cert.pem DBX_TLS_KEY=DIR/key.pem dbx
# and connect to wss://localhost:8080/ws. Also DIR/client.pem / DIR/client-key.pem, a
# client certificate from the same CA, for trying mutual TLS (DBX_TLS_CLIENT_CA=DIR/ca.pem).
# Never use these files in production: the CA key sits next to them.
set -euo pipefail
DIR=${1:-./dev-certs}
DAYS=${DAYS:-825}
command -v openssl >/dev/null || { echo "dev-cert.sh: openssl is required (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$DIR"
cd "$DIR"
umask 077
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=DBX development CA" -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
leaf() { # name subject extensions
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$1-key.tmp" -out "$1.csr" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$1-key.tmp" -out "$1-key.pem"
  rm -f "$1-key.tmp"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$DAYS" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
leaf server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
leaf client "dbx-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
cat server.crt ca.pem > cert.pem
mv server-key.pem key.pem
cat client.crt ca.pem > client.pem
rm -f server.crt client.crt ca.srl
chmod 644 ca.pem cert.pem client.pem
echo "dev-cert.sh: wrote $(pwd)/{ca.pem,cert.pem,key.pem,client.pem,client-key.pem}"
