#!/usr/bin/env bash
# The chainwatch demo: a small chain in network namespaces on this machine,
# with the built-in default layout (192.168.21.0/24).
#
#   sudo demo/demo.sh
#
# frontend1 (192.168.21.1, the witness), backend1 (.100, the peer) and
# backend2 (.101, running `chainwatch run --observe`) share a bridge. The
# demo shows backend2's status, cuts backend1's link, and shows chainwatch
# detect the death (3 missed rounds while the witness answers) and say what
# it would do; then it cuts the witness too and shows that a node that cannot
# see the witness accuses nobody. Everything is torn down at the end, also on
# Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces): sudo $0" >&2; exit 1; }
if ! command -v ip >/dev/null; then
    echo "demo: installing iproute2"
    apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi
echo "demo: building chainwatch"
(cd "$root" && cargo build --quiet)
export CHAINWATCH_BIN=$root/target/debug/chainwatch
source "$root/tests/support/netns.sh"

p=cwd$$
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    netns_down "$p"
    rm -rf "$work"
    echo "demo: torn down"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
status() { "$CHAINWATCH_BIN" --config "$work/chainwatch.toml" status "$@"; }
phase() { status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["phase"])'; }

say "three hosts on a bridge: frontend1 .1 (witness), backend1 .100, backend2 .101"
netns_up "$p"
netns_node_config "$work" backend 2
ip netns exec "${p}o" "$CHAINWATCH_BIN" --config "$work/chainwatch.toml" run --observe \
    2> >(sed -u 's/^/  backend2 | /') &
pids+=($!)
sleep 3
say "chainwatch status on backend2"
status

say "backend1's link goes down"
t0=$(date +%s.%N)
ip -n "${p}p" link set "${p}p" down
while [ "$(phase)" != fencing ]; do sleep 0.05; done
t1=$(date +%s.%N)
sleep 0.2
say "backend1 declared dead $(python3 -c "print(f'{$t1 - $t0:.2f}')") s after its link went down"
status

say "backend1 is back"
ip -n "${p}p" link set "${p}p" up
sleep 2

say "now frontend1 (the witness) and backend1 both go down: backend2 cannot tell who is cut off"
ip -n "${p}p" link set "${p}p" down
ip -n "${p}w" link set "${p}w" down
sleep 6
status
echo
echo "phase is '$(phase)': nobody was accused while the witness was silent."
