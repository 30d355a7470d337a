# Sourced by .ci/deps.sh: a TLS listener for RabbitMQ on 127.0.0.1:5671,
# with a server certificate from a test CA made here (never trusted system
# wide; the amqps test points SSL_CERT_FILE at it). Sets CHAINWATCH_TEST_CA
# and, when the listener is new, stops a running broker so that deps.sh
# starts it with the new listener.

tls=/var/lib/chainwatch-ci/tls
export CHAINWATCH_TEST_CA=$tls/ca.pem
if [ ! -s "$tls/server.pem" ] || [ ! -s "$tls/ca.pem" ]; then
    echo "making a test CA and RabbitMQ's server certificate in $tls"
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=chainwatch test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
    chmod 600 "$tls/ca.key"
    chgrp rabbitmq "$tls/server.key" && chmod 640 "$tls/server.key"
    chmod 755 "$tls" "$(dirname "$tls")"
fi
conf=/etc/rabbitmq/rabbitmq.conf
if ! grep -q '^listeners.ssl' "$conf" 2>/dev/null; then
    echo "adding a TLS listener (127.0.0.1:5671) to $conf"
    mkdir -p "$(dirname "$conf")"
    cat >>"$conf" <<CONF
listeners.ssl.local = 127.0.0.1:5671
ssl_options.cacertfile = $tls/ca.pem
ssl_options.certfile = $tls/server.pem
ssl_options.keyfile = $tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
    if rabbitmqctl -q status >/dev/null 2>&1; then
        echo "stopping RabbitMQ to start it with the TLS listener"
        rabbitmqctl -q stop >/dev/null 2>&1 || true
        for _ in $(seq 30); do rabbitmqctl -q status >/dev/null 2>&1 || break; sleep 1; done
    fi
fi
