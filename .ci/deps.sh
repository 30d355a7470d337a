# Installs and starts what chainwatch's tests, demo and benchmarks need on a
# fresh Debian bookworm machine with the Rust toolchain (as root). Sourced
# by .ci/run and demo/demo.sh; sets CHAINWATCH_VENV.

[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces, packages)" >&2; exit 1; }

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
command -v sysctl >/dev/null || need+=(procps)
command -v nft >/dev/null || need+=(nftables)
command -v openvpn >/dev/null || need+=(openvpn)
command -v openssl >/dev/null || need+=(openssl)
command -v ansible-playbook >/dev/null || need+=(ansible)
/usr/bin/python3 -c 'import pymysql' 2>/dev/null || need+=(python3-pymysql)
command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v rabbitmqctl >/dev/null || need+=(rabbitmq-server)
command -v cloud-init >/dev/null || need+=(cloud-init)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v keepalived >/dev/null || need+=(keepalived)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }

source "$(dirname "${BASH_SOURCE[0]}")/rabbitmq-tls.sh"
if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "RabbitMQ is not running: starting it"
    rabbitmq-server -detached
    for _ in $(seq 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
fi
rabbitmqctl -q await_startup
rabbitmqctl -q start_app >/dev/null 2>&1 || true

export CHAINWATCH_VENV=${CHAINWATCH_VENV:-/opt/chainwatch-venv}
if ! "$CHAINWATCH_VENV/bin/python" -c 'import moto, boto3' 2>/dev/null; then
    echo "installing moto (the EC2 and CloudWatch Logs emulator) into $CHAINWATCH_VENV"
    python3 -m venv "$CHAINWATCH_VENV"
    "$CHAINWATCH_VENV/bin/pip" install -q --upgrade pip
    "$CHAINWATCH_VENV/bin/pip" install -q 'moto[server]>=5.1,<6' boto3
fi
