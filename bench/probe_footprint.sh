#!/usr/bin/env bash
# Resident memory and CPU of `chainwatch run --observe` while it probes a
# live peer and the witness once a second, in network namespaces.
#
#   sudo bench/probe_footprint.sh [seconds]      (default 60)
#
# Uses target/release/chainwatch (built if missing). Prints VmRSS/VmHWM and
# the CPU time the daemon used over the window.
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
export CHAINWATCH_BIN=$root/target/release/chainwatch
[ -x "$CHAINWATCH_BIN" ] || (cd "$root" && cargo build --release)
source "$root/tests/support/netns.sh"
p=cwb$$
work=$(mktemp -d)
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
    netns_down "$p"
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
netns_up "$p"
netns_node_config "$work" backend 2
ip netns exec "${p}o" "$CHAINWATCH_BIN" --config "$work/chainwatch.toml" run --observe 2>"$work/log" &
pid=$!
sleep 2
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu)
sleep "$secs"
c1=$(cpu)
rounds=$("$CHAINWATCH_BIN" --config "$work/chainwatch.toml" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rounds"])')
echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "window: ${secs} s, rounds evaluated: $rounds"
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
awk -v a="$c0" -v b="$c1" -v t="$ticks" -v s="$secs" \
    'BEGIN { printf "cpu: %.3f s over %d s = %.3f %% of one core\n", (b-a)/t, s, 100*(b-a)/t/s }'
