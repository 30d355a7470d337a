#!/usr/bin/env bash
# Wall time of the OpenVPN hook `chainwatch client-connect FILE`, as OpenVPN
# runs it (fork+exec, common_name in the environment), with hyperfine.
#
#   bench/client_connect.sh [runs]     (default 1000)
set -euo pipefail
runs=${1:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/chainwatch
[ -x "$bin" ] || (cd "$root" && cargo build --release)
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "# accepted client (writes the answer file)"
common_name=backend2 hyperfine -N --warmup 50 --runs "$runs" \
    "$bin --config /dev/null client-connect $out/answer"
echo "# refused client"
common_name=frontend0 hyperfine -N -i --warmup 50 --runs "$runs" \
    "$bin --config /dev/null client-connect $out/answer"
echo "# for scale: /bin/true"
hyperfine -N --warmup 50 --runs "$runs" /bin/true
