#!/usr/bin/env bash
# The chainwatch demo, on a fresh Debian bookworm machine with Rust:
#
#   sudo demo/demo.sh [--keep]
#
# --keep leaves the fleet up at the end to try `status`, `fleet` and
# `history` (it prints the commands); Ctrl-C tears it down.
# Installs what is missing (Debian packages, moto in a virtualenv), builds
# chainwatch, and runs examples/demo.rs: a fleet of five instances in
# network namespaces (frontend1, frontend2, backend1..3) with a real OpenVPN
# overlay, moto as EC2, MariaDB replicating over the overlay, RabbitMQ and
# the worker. It shows the fleet, kills backend1, and shows detection, fence,
# takeover, the event and the MySQL promotion as they happen, then the
# timings, and tears everything down (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/deps.sh
echo "building chainwatch (first build: a few minutes)"
cargo build --quiet --bin chainwatch --example demo
exec target/debug/examples/demo "$@"
