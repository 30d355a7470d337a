#!/usr/bin/env bash
# Build a PKI for chainwatch's OpenVPN overlay with openssl, in the layout
# chainwatch expects (vpn.pki_dir):
#
#   DIR/ca.crt                 the CA certificate
#   DIR/ca.key                 the CA key (keep it off the instances)
#   DIR/ta.key                 tls-crypt key (OpenVPN static key)
#   DIR/members.key            the members' channel key (HMAC, mode 0600)
#   DIR/issued/<cn>.crt        one certificate per common name
#   DIR/private/<cn>.key       its key
#
#   openvpn/make-test-pki.sh DIR [MAX_FRONTENDS] [MAX_BACKENDS]
#
# frontend1's certificate is the server's (serverAuth); all others are
# clients (clientAuth). Every frontend needs frontend1's pair too, since any
# of them may become the server. For tests and the local demo: keys are
# unencrypted and the CA lives beside them.
set -euo pipefail
dir=${1:?usage: make-test-pki.sh DIR [MAX_FRONTENDS] [MAX_BACKENDS]}
maxf=${2:-5}
maxb=${3:-5}
mkdir -p "$dir/issued" "$dir/private"
chmod 700 "$dir/private"
cd "$dir"
days=825
if [ ! -f ca.key ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days "$days" -subj "/CN=chainwatch test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
issue() {
    local cn=$1 eku=$2
    [ -f "issued/$cn.crt" ] && return
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "private/$cn.key" -out "$cn.csr" -subj "/CN=$cn" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\n' "$eku" > "$cn.ext"
    openssl x509 -req -in "$cn.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "issued/$cn.crt" -days "$days" -extfile "$cn.ext" 2>/dev/null
    rm -f "$cn.csr" "$cn.ext"
    chmod 600 "private/$cn.key"
}
issue frontend1 serverAuth
for i in $(seq 2 "$maxf"); do issue "frontend$i" clientAuth; done
for i in $(seq 1 "$maxb"); do issue "backend$i" clientAuth; done
[ -f ta.key ] || openvpn --genkey secret ta.key
[ -f members.key ] || (umask 077 && openssl rand -hex 32 > members.key)
echo "PKI in $dir: $(ls issued | wc -l) certificates"
